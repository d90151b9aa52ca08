"""loadtests.bench.servers: every server of a run uses the bench's own interpreter, and the report says
which build that is (the build of Python moves every Python server by about a fifth, BENCHMARKS.md)."""

from __future__ import annotations

import sys
from pathlib import Path

from loadtests.bench import servers


def test_uwsgi_is_the_one_beside_the_interpreter_when_there_is_one(tmp_path, monkeypatch):
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.touch()
    monkeypatch.setattr(sys, "executable", str(python))
    assert servers.uwsgi_binary() == "uwsgi"  # none beside it: the first on PATH
    (tmp_path / "bin" / "uwsgi").touch()
    assert servers.uwsgi_binary() == str(tmp_path / "bin" / "uwsgi")


def test_python_build_names_the_interpreter_and_how_libpython_is_linked():
    build = servers.python_build()
    assert build.startswith(sys.executable + ", libpython ")
    shared = "libpython" in Path("/proc/self/maps").read_text()
    assert build.endswith("shared" if shared else "static")

"""Packaging: the wheel installs only the ``webcluster`` package (``webcluster.cluster``,
``webcluster.worker``, the welcome page) and the ``webcluster`` console script, so it can sit beside
supervisord (``supervisor``) and the PyPI projects named ``cluster`` and ``worker``.

Builds the wheel from this tree, installs it into a fresh venv together with those three projects
from PyPI, then runs ``webcluster --version`` and serves a request, from a directory outside the
checkout so nothing is imported from it. Needs PyPI (pip); about a minute.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, http_get, poll
from webcluster.worker.version import VERSION

pytestmark = pytest.mark.timeout(900)

NEIGHBOURS = ("supervisor", "cluster", "worker")  # PyPI projects with our old top-level names


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def expected_packages() -> set[str]:
    """Every directory of cluster/ and worker/ with an __init__.py, as an installed package name."""
    found = {"webcluster"}
    for top in ("cluster", "worker"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add(".".join(("webcluster", *rel.parts)))
    return found


def test_pyproject_lists_every_package() -> None:
    """setuptools maps webcluster to the repository root, so the package list is explicit."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"webcluster": "."}
    assert set(tool["packages"]) | {"webcluster"} == expected_packages()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-q", "-w", out)
    (found,) = out.glob("webcluster-*.whl")
    return found


def test_the_wheel_holds_only_the_webcluster_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"webcluster"}, tops
    assert "webcluster/worker/welcome/index.html" in names
    assert "webcluster/cluster/cli.py" in names
    assert not [n for n in names if "/tests/" in n or "loadtests" in n]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert re.search(r"^webcluster = webcluster\.cluster\.cli:main$", text, re.M), text


def test_installed_beside_supervisord_cluster_and_worker(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, script = env_dir / "bin" / "python", env_dir / "bin" / "webcluster"
    run(python, "-m", "pip", "install", "-q", wheel, *NEIGHBOURS)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    assert (site / "supervisor" / "supervisord.py").exists()  # supervisord's, not a file of ours
    assert not (site / "supervisor.py").exists() and not (site / "loadtests").exists()
    (record,) = site.glob("webcluster-*.dist-info/RECORD")
    # pyproject.toml takes the version from worker/version.py (setuptools' dynamic version)
    assert f"\nVersion: {VERSION}\n" in (record.parent / "METADATA").read_text()
    ours = {line.split(",")[0] for line in record.read_text().splitlines()}
    foreign = {p for p in ours if not p.startswith(("webcluster/", "webcluster-", "../../../bin/"))}
    assert not foreign, foreign  # every file the wheel installed is under webcluster/
    assert "webcluster/cluster/arbiter.py" in ours and "../../../bin/webcluster" in ours
    assert not (site / "cluster" / "lifecycle.py").exists()  # PyPI's cluster is left alone
    assert not (site / "worker" / "handlers").exists()  # and so is PyPI's worker

    outside = tmp_path / "elsewhere"  # nothing importable from the checkout
    outside.mkdir()
    version = VERSION
    assert run(script, "--version", cwd=outside).startswith(f"webcluster {version} ")
    (outside / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hello from the wheel']\n"
    )
    run(script, "--check-config", "hello:app", cwd=outside)
    serve(script, outside, tmp_path / "server.log")


def serve(script: Path, cwd: Path, log: Path) -> None:
    """Start the installed server, GET the app and the welcome page's asset, stop it with TERM."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [script, "hello:app", "--bind", "127.0.0.1:0", "--admin", "off", "--procs", "1",
             "--static", f"/welcome={package_welcome(script)}"],
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        match = poll(
            "the banner",
            lambda: (
                proc.poll() is None
                and re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())
            ),
            timeout=60,
        )
        port = int(match.group(1))
        assert http_get(port, "/") == (200, b"hello from the wheel")
        status, body = http_get(port, "/welcome/index.html")
        assert status == 200 and b"webcluster" in body
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def package_welcome(script: Path) -> str:
    python = script.parent / "python"
    code = "from webcluster.worker.handlers.dispatch import default_root; print(default_root())"
    return run(python, "-c", code).strip()

"""The command-line commands over real processes: ``--version``, ``--check-config``,
``--print-config``, and serving an app given as the positional APP argument."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT
from tests.system.test_supervisor import get
from webcluster.worker.version import VERSION

pytestmark = pytest.mark.timeout(60)


def webcluster(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WEBCLUSTER_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "supervisor.py", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_version() -> None:
    result = webcluster("--version")
    assert result.returncode == 0, result.stderr
    version = VERSION
    assert result.stdout.startswith(f"webcluster {version} (cpython ")


def test_check_config_good_app_exits_0() -> None:
    result = webcluster("--check-config", "tests.apps.basic:app", "-w", "3")
    assert result.returncode == 0, result.stderr
    assert "configuration OK: app tests.apps.basic:app imported, 3 workers" in result.stdout


def test_check_config_broken_app_exits_3_with_the_import_error(tmp_path) -> None:
    (tmp_path / "broken.py").write_text("def app(environ, start_response)\n    pass\n")
    result = webcluster("--check-config", "--chdir", str(tmp_path), "broken:app")
    assert result.returncode == 3, result
    assert re.search(r"importing 'broken' raised SyntaxError: .* at .*broken\.py:1", result.stderr)
    assert "configuration OK" not in result.stdout


def test_check_config_bad_setting_exits_2() -> None:
    result = webcluster("--check-config", "tests.apps.basic:app", env={"WEBCLUSTER_THREADS": "0"})
    assert result.returncode == 2
    assert result.stderr.startswith("webcluster: error: setting threads: ")
    assert "WEBCLUSTER_THREADS" in result.stderr


def test_print_config_names_every_source(tmp_path) -> None:
    conf = tmp_path / "w.toml"
    conf.write_text("threads = 6\nkeepalive = 3\n")
    result = webcluster(
        "--print-config", "--config", str(conf), "-t", "8", "tests.apps.basic:app",
        env={"WEBCLUSTER_KEEPALIVE": "4"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^threads = 8 +# cli --threads$", out, re.M)
    assert re.search(r"^keepalive = 4\.0 +# env WEBCLUSTER_KEEPALIVE$", out, re.M)
    assert re.search(r"^app = \"tests\.apps\.basic:app\" +# cli APP$", out, re.M)
    assert re.search(r"^backlog = 2048 +# default$", out, re.M)
    assert tomllib.loads(out)["threads"] == 8


def test_positional_app_serves(run_supervisor) -> None:
    sup = run_supervisor("tests.apps.basic:app", "--procs", "1", "--threads", "2")
    resp = get(sup.port, "/")
    assert resp.status == 200 and resp.body == b"hello"

"""--preload over real processes: the app is imported once, by the supervisor, before the fork; a HUP
then keeps that code (new workers fork from the supervisor), while without --preload a HUP loads the
code on disk. --reload with --preload is refused at start."""

from __future__ import annotations

import signal

import pytest

from tests.system.test_supervisor import get

pytestmark = pytest.mark.timeout(90)

APP = """\
import os

VERSION = "{version}"
LOADED_BY = os.getpid()


def app(environ, start_response):
    body = f"{{VERSION}} {{LOADED_BY}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def answer(sup) -> tuple[str, int, int]:
    version, loaded_by, served_by = get(sup.port, "/").body.decode().split()
    return version, int(loaded_by), int(served_by)


def write_app(tmp_path, version: str) -> None:
    (tmp_path / "preload_app.py").write_text(APP.format(version=version))
    for stale in (tmp_path / "__pycache__").glob("preload_app*"):
        stale.unlink()  # the source may change within the same second as the cached bytecode


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_who_imports_the_app_and_what_hup_reloads(run_supervisor, tmp_path, preload) -> None:
    write_app(tmp_path, "v1")
    flags = ["--preload"] if preload else []
    sup = run_supervisor(
        "--procs", "2", "--threads", "2", "--chdir", str(tmp_path), "preload_app:app", *flags
    )
    before = sup.wait_workers(2)
    version, loaded_by, served_by = answer(sup)
    assert version == "v1" and served_by in before
    assert loaded_by == (sup.pid if preload else served_by)  # imported once, before the fork
    write_app(tmp_path, "v2-longer")
    sup.signal(signal.SIGHUP)
    after = sup.wait_workers(2, exclude=before)
    version, loaded_by, served_by = answer(sup)
    assert served_by in after
    if preload:  # new workers are forks of the supervisor, which holds the code it loaded at start
        assert (version, loaded_by) == ("v1", sup.pid)
    else:
        assert (version, loaded_by) == ("v2-longer", served_by)


def test_preload_import_error_exits_3_before_binding(run_supervisor) -> None:
    sup = run_supervisor(
        "--preload", "--procs", "2", "--admin", "off", "tests.apps.no_such_module:app", ready=False
    )
    assert sup.wait(20) == 3
    assert "cannot preload the app: --app 'tests.apps.no_such_module:app'" in sup.stderr()
    assert "listening on" not in sup.stdout() and sup.worker_pids() == []


def test_reload_with_preload_is_refused(run_supervisor) -> None:
    sup = run_supervisor("--preload", "--reload", "tests.apps.basic:app", ready=False)
    assert sup.wait(20) == 2
    assert "setting reload: --reload re-imports the app" in sup.stderr()

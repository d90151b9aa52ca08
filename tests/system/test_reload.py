"""--reload over real processes: an edit reloads the workers, a syntax error keeps the old code
serving (the error printed once), a fix reloads again; --reload-extra-file and --reload-dir count."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import poll
from tests.system.test_supervisor import get

pytestmark = pytest.mark.timeout(120)

APP = """\
import helper

def app(environ, start_response):
    body = helper.VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def served(sup) -> str:
    return get(sup.port, "/").body.decode()


def test_edit_then_syntax_error_then_fix(run_supervisor, tmp_path) -> None:
    (tmp_path / "reload_app.py").write_text(APP)
    helper = tmp_path / "helper.py"  # a module the app imports, not the app module itself
    helper.write_text('VERSION = "one"\n')
    sup = run_supervisor(
        "--procs", "2", "--threads", "2", "--reload", "--chdir", str(tmp_path), "reload_app:app"
    )
    first = sup.wait_workers(2)
    assert served(sup) == "one"
    sup.wait_for_output(r"--reload: watching \d+ files")

    helper.write_text('VERSION = "two"\n')  # same size as "one": the bytecode must not be reused
    poll("the edit served", lambda: served(sup) == "two", timeout=20)
    second = sup.wait_workers(2, exclude=first)

    helper.write_text('VERSION = "three"\ndef broken(:\n')
    sup.wait_for_output(r"not reloading, the workers keep the old code: .*SyntaxError", timeout=20)
    time.sleep(3)  # three more polls of the broken file: still one message, still the old workers
    assert len(re.findall("not reloading", sup.stderr())) == 1, sup.stderr()
    assert served(sup) == "two" and sup.wait_workers(2) == second

    helper.write_text('VERSION = "four"\n')
    poll("the fix served", lambda: served(sup) == "four", timeout=20)
    sup.wait_workers(2, exclude=second)
    assert sup.stats()["generation"] == 3
    assert "worker failed to boot" not in sup.stderr()


def test_extra_file_and_dir_trigger_a_reload(run_supervisor, tmp_path) -> None:
    extra = tmp_path / "settings.env"
    extra.write_text("A=1\n")
    templates = tmp_path / "templates" / "sub"
    templates.mkdir(parents=True)
    sup = run_supervisor(
        "--procs", "1", "--threads", "2", "--reload", "tests.apps.basic:app",
        "--reload-extra-file", str(extra), "--reload-dir", str(tmp_path / "templates"),
    )  # fmt: skip
    first = sup.wait_workers(1)
    extra.write_text("A=2\n")
    second = sup.wait_workers(1, exclude=first)
    (templates / "page.html").write_text("<p>new</p>")  # a new file under the dir
    sup.wait_workers(1, exclude=second)
    assert sup.stats()["generation"] == 3
    assert get(sup.port, "/").body == b"hello"

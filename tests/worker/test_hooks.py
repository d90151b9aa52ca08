"""--hooks: loading the module (by name or file), calling only what it defines, absorbing what raises."""

from __future__ import annotations

import logging
import sys

import pytest

from webcluster.worker.hooks import HooksError, RequestHooks, ResponseInfo, WorkerInfo, load_hooks


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_no_spec_no_hooks() -> None:
    assert load_hooks(None) is None and load_hooks("") is None


def test_from_a_file_only_the_defined_functions(tmp_path) -> None:
    path = write(
        tmp_path, "h1.py", "calls = []\ndef on_starting(server):\n    calls.append(server)\n"
    )
    hooks = load_hooks(path)
    assert set(hooks.functions) == {"on_starting"} and not hooks.per_request
    hooks.call("on_starting", "srv")
    hooks.call("post_fork", "srv", "w")  # not defined: nothing happens
    assert sys.modules["webcluster_hooks_h1"].calls == ["srv"]


def test_by_module_name_from_the_search_directory(tmp_path, monkeypatch) -> None:
    write(tmp_path, "myhooks_by_name.py", "def pre_request(worker, req):\n    pass\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    hooks = load_hooks("myhooks_by_name", str(tmp_path))
    assert hooks.per_request


def test_a_raising_hook_is_logged_not_raised(tmp_path, caplog) -> None:
    path = write(tmp_path, "h2.py", "def on_reload(server):\n    raise RuntimeError('boom')\n")
    hooks = load_hooks(path)
    with caplog.at_level(logging.ERROR, logger="webcluster.error"):
        hooks.call("on_reload", object())
    assert "hook on_reload" in caplog.text and "boom" in caplog.text


def test_request_hooks_get_the_worker_and_a_response(tmp_path) -> None:
    path = write(
        tmp_path,
        "h3.py",
        "seen = []\n"
        "def pre_request(worker, req):\n    seen.append(('pre', worker.slot, req))\n"
        "def post_request(worker, req, resp):\n    seen.append(('post', req, resp))\n",
    )
    hooks = load_hooks(path)
    bound = RequestHooks(hooks, WorkerInfo(pid=1, slot=2, generation=3, cfg=None))
    bound.before("REQ")
    bound.after("REQ", 201, [("X", "y")], 5, 0.25)
    assert sys.modules["webcluster_hooks_h3"].seen == [
        ("pre", 2, "REQ"),
        ("post", "REQ", ResponseInfo(201, [("X", "y")], 5, 0.25)),
    ]


@pytest.mark.parametrize(
    ("spec", "text", "message"),
    [
        ("missing_hooks_module_xyz", None, "no module named 'missing_hooks_module_xyz'"),
        ("/nonexistent/hooks.py", None, "no such file"),
        ("bad_syntax.py", "def on_starting(:\n", "SyntaxError"),
        ("not_callable.py", "post_fork = 3\n", "post_fork is a int, not a function"),
    ],
)
def test_errors_name_the_fix(tmp_path, spec, text, message) -> None:
    if text is not None:
        spec = write(tmp_path, spec, text)
    with pytest.raises(HooksError, match=message):
        load_hooks(spec)

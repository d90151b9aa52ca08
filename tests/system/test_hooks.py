"""--hooks under a REAL supervisor: each hook runs in the process and at the point README documents, and
a hook that raises is logged while the request is still answered by the same worker."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import http_get, poll

pytestmark = pytest.mark.timeout(90)

HOOKS = """
import os

LOG = os.environ["HOOK_LOG"]


def _note(*parts):
    with open(LOG, "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\\n")


def on_starting(server):
    _note("on_starting", os.getpid(), server.cfg.procs)


def on_reload(server):
    _note("on_reload", os.getpid(), server.generation)


def post_fork(server, worker):
    _note("post_fork", worker.pid, worker.slot, worker.generation, server.pid, os.getpid())


def worker_exit(server, worker):
    _note("worker_exit", worker.pid)


def pre_request(worker, req):
    _note("pre_request", worker.pid, req.method, req.target)
    if "boom=pre" in req.target:
        raise RuntimeError("pre hook failed")


def post_request(worker, req, resp):
    _note("post_request", worker.pid, req.target, resp.status, resp.sent)
    if "boom=post" in req.target:
        raise RuntimeError("post hook failed")
"""


def events(log: Path, name: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split()[1:] for line in log.read_text().splitlines() if line.split()[0] == name]


def test_hooks_run_at_their_points_and_errors_never_fail_a_request(run_supervisor, tmp_path):
    module = tmp_path / "myhooks.py"
    module.write_text(HOOKS)
    log = tmp_path / "hooks.log"
    sup = run_supervisor(
        "--procs", "1", "--threads", "2", "--app", "tests.apps.basic:app", "--hooks", str(module),
        env={"HOOK_LOG": str(log)},
    )  # fmt: skip
    [worker] = sup.wait_workers(1)
    assert events(log, "on_starting") == [[str(sup.pid), "1"]]
    assert events(log, "post_fork") == [[str(worker), "0", "1", str(sup.pid), str(worker)]]

    status, body = http_get(sup.port, "/pid")
    assert (status, body) == (200, str(worker).encode())
    poll("post_request", lambda: events(log, "post_request"))
    assert events(log, "pre_request") == [[str(worker), "GET", "/pid"]]
    assert events(log, "post_request") == [[str(worker), "/pid", "200", str(len(body))]]

    for which in ("pre", "post"):
        assert http_get(sup.port, f"/pid?boom={which}") == (200, str(worker).encode())
        sup.wait_for_output(rf"hook {which}_request in .*raised(.|\n)*{which} hook failed")
    assert http_get(sup.port, "/pid") == (200, str(worker).encode())  # the same worker still serves

    sup.signal(signal.SIGHUP)
    [new] = sup.wait_workers(1, exclude=[worker])
    poll("on_reload and the old worker's exit", lambda: events(log, "worker_exit"))
    assert events(log, "on_reload") == [[str(sup.pid), "2"]]
    assert events(log, "post_fork")[-1][:3] == [str(new), "0", "2"]
    assert events(log, "worker_exit") == [[str(worker)]]

    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    assert events(log, "worker_exit") == [[str(worker)], [str(new)]]


def test_a_hooks_module_that_does_not_import_stops_the_start(run_supervisor, tmp_path):
    module = tmp_path / "broken.py"
    module.write_text("import not_a_module_anywhere_xyz\n")
    sup = run_supervisor("--procs", "1", "--hooks", str(module), ready=False)
    assert sup.wait(20) == 2
    assert "--hooks" in sup.stderr() and "not_a_module_anywhere_xyz" in sup.stderr()

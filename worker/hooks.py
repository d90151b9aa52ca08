"""``--hooks MODULE``: user functions called at fixed points of the server's life (gunicorn's server hooks).

The module (a dotted name importable from the working directory, or a path to a ``.py`` file) may define
any of these; a missing one costs nothing:

- ``on_starting(server)``: in the supervisor, before the sockets are bound;
- ``on_reload(server)``: in the supervisor, on HUP once the new configuration is read;
- ``post_fork(server, worker)``: in a new worker, before it imports the app (``--preload``: already
  imported by the supervisor);
- ``worker_exit(server, worker)``: in a worker, after it served its last request;
- ``pre_request(worker, req)``: on the pool thread, before the handler runs;
- ``post_request(worker, req, resp)``: on the pool thread, after the response was handed to the kernel.

``server`` is the supervisor's ``Arbiter`` in the supervisor (``.cfg``, ``.generation``, ``.desired``)
and a :class:`ServerInfo` in a worker; ``worker`` a :class:`WorkerInfo`; ``req`` the parsed request
(``.method``, ``.target``, ``.http_version``, ``.headers``, ``.get(name)``); ``resp`` a
:class:`ResponseInfo`. A hook that raises is logged with its traceback and the server carries on: a
request is still answered, a worker still serves (a hook never takes a worker down mid-request).

The supervisor imports the module once at start; workers are forked with it already imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("webcluster.error")

NAMES = ("on_starting", "on_reload", "post_fork", "worker_exit", "pre_request", "post_request")


class HooksError(Exception):
    """The ``--hooks`` module cannot be imported; ``str(exc)`` says what to fix."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """The supervisor as a worker's hooks see it."""

    cfg: Any
    pid: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The worker a hook runs in."""

    pid: int
    slot: int
    generation: int
    cfg: Any


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What ``post_request`` learns about the response."""

    status: int
    headers: Sequence[tuple[str, str]]  # as the handler gave them
    sent: int  # body bytes
    duration: float  # seconds, from the complete head to the last byte queued


class Hooks:
    """The hook functions of one module; ``call`` runs one if defined and absorbs its exceptions."""

    def __init__(self, module: Any, name: str) -> None:
        self.name = name
        self.functions: dict[str, Callable[..., Any]] = {}
        for hook in NAMES:
            fn = getattr(module, hook, None)
            if fn is None:
                continue
            if not callable(fn):
                raise HooksError(f"--hooks {name}: {hook} is a {type(fn).__name__}, not a function")
            self.functions[hook] = fn

    @property
    def per_request(self) -> bool:
        """True when pre_request or post_request is defined (the pool threads then call them)."""
        return "pre_request" in self.functions or "post_request" in self.functions

    def call(self, hook: str, *args: Any) -> None:
        fn = self.functions.get(hook)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("hook %s in %s raised; carrying on", hook, self.name)


def load_hooks(spec: str | None, search: str | None = None) -> Hooks | None:
    """Import the ``--hooks`` module (``search``: a directory tried first, e.g. ``--chdir``).

    Raises HooksError naming the fix; None without a spec."""
    if not spec:
        return None
    try:
        if spec.endswith(".py") or os.sep in spec:
            module = _from_file(spec)
        else:
            module = _from_name(spec, search)
    except HooksError:
        raise
    except Exception as exc:  # SyntaxError, ImportError, anything the module raises at import
        raise HooksError(
            f"--hooks {spec}: importing it raised {type(exc).__name__}: {exc}; fix the module"
        ) from exc
    return Hooks(module, spec)


def _from_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise HooksError(f"--hooks {path}: no such file; give a module name or a .py file")
    name = "webcluster_hooks_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so forked workers and pickling find it under one name
    spec.loader.exec_module(module)
    return module


def _from_name(name: str, search: str | None) -> Any:
    for directory in (search, os.getcwd()):
        if directory and directory not in sys.path:
            sys.path.insert(0, directory)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise HooksError(
                f"--hooks {name}: no module named {exc.name!r}; check the name, --chdir, or give "
                "the path of a .py file"
            ) from exc
        raise


class RequestHooks:
    """``pre_request``/``post_request`` bound to the worker they run in (the Runner holds one only
    when the module defines either, so requests without hooks pay a single ``is None`` check)."""

    __slots__ = ("_hooks", "worker")

    def __init__(self, hooks: Hooks, worker: WorkerInfo) -> None:
        self._hooks = hooks
        self.worker = worker

    def before(self, request: Any) -> None:
        self._hooks.call("pre_request", self.worker, request)

    def after(
        self,
        request: Any,
        status: int,
        headers: Sequence[tuple[str, str]],
        sent: int,
        duration: float,
    ) -> None:
        if "post_request" in self._hooks.functions:
            resp = ResponseInfo(status, headers, sent, duration)
            self._hooks.call("post_request", self.worker, request, resp)

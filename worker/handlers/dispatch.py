"""Choose the handler for a request, and load the WSGI application named by ``--app``.

``build_handler`` is called once per worker process at boot (before the pool threads start); the handler
it returns is immutable and called from every pool thread. ``load_app`` raises ``AppImportError`` with a
one-line message that names the fix, which the worker reports to the supervisor, which then exits
non-zero instead of forking the same failure again (docs/ARCHITECTURE.md, Processes).
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from webcluster.worker.handlers.base import Exchange, Handler
from webcluster.worker.handlers.forwarded import ForwardedPolicy
from webcluster.worker.handlers.static import StaticHandler
from webcluster.worker.handlers.target import split_target
from webcluster.worker.handlers.wsgi import WSGIHandler
from webcluster.worker.http.memo import remember

# The route memo holds at most this many targets of at most this many characters (emptied when full)
_ROUTES_MAX = 1024
_ROUTE_KEY_MAX = 256
_DEFAULT_ATTR = "application"  # PEP 3333 / mod_wsgi / gunicorn convention
_USUAL_NAMES = ("application", "app", "create_app", "make_app", "get_app", "wsgi_app")


class AppImportError(Exception):
    """``--app`` does not name a usable WSGI callable; ``str(exc)`` says what to fix."""


def default_root() -> str:
    """The bundled welcome page directory (served when neither ``--app`` nor ``--root`` is given)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "welcome")


def load_app(spec: str) -> Callable[..., Any]:
    """Import ``"module:attr"`` and return the WSGI callable.

    ``attr`` may be dotted (``pkg.mod:obj.wsgi_app``); a bare ``"module"`` means ``module:application``;
    ``"module:create_app()"`` calls the factory (literal arguments allowed: ``create_app("prod")``).
    """
    module_name, _, expr = spec.partition(":")
    module_name, expr = module_name.strip(), expr.strip() or _DEFAULT_ATTR
    if not module_name:
        raise AppImportError(f"--app {spec!r}: missing module name; use --app MODULE:CALLABLE")
    module = _import(module_name, spec)
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        node = None
    call = node if isinstance(node, ast.Call) else None
    path = _dotted(call.func if call else node)
    if path is None:
        raise AppImportError(
            f"--app {spec!r}: {expr!r} is neither an attribute name nor a factory call like 'create_app()'"
        )
    obj = _lookup(module, module_name, path, spec)
    if call is not None:
        obj = _call_factory(obj, call, spec)
    if not callable(obj):
        raise AppImportError(
            f"--app {spec!r}: {expr} is a {type(obj).__name__}, not a WSGI callable; point --app at the "
            "application object, or at its factory with '()'"
        )
    return obj


def _import(name: str, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppImportError(
                f"--app {spec!r}: no module named {exc.name!r}; check the name, --chdir, or "
                f"PYTHONPATH (searched from {sys.path[0] or os.getcwd()!r})"
            ) from exc
        raise AppImportError(
            f"--app {spec!r}: importing {name!r} failed: {exc}; install the missing dependency"
        ) from exc
    except Exception as exc:  # SyntaxError, or anything the module raises at import time
        raise AppImportError(
            f"--app {spec!r}: importing {name!r} raised {type(exc).__name__}: {exc}{_where(exc)}; "
            "fix the module"
        ) from exc


def _where(exc: BaseException) -> str:
    """`` at file:line`` of the innermost frame (or of the syntax error), for the one-line message."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" at {exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _dotted(node: ast.expr | None) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None for anything that is not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _lookup(module: Any, module_name: str, path: list[str], spec: str) -> Any:
    obj = module
    for depth, part in enumerate(path):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = ".".join(path[: depth + 1])
            found = [name for name in _USUAL_NAMES if hasattr(module, name)]
            hint = (
                f"; found {', '.join(found)}: try --app {module_name}:{found[0]}" if found else ""
            )
            raise AppImportError(
                f"--app {spec!r}: module {module_name!r} has no attribute {where!r}{hint} "
                f"(without ':NAME', --app looks for '{_DEFAULT_ATTR}')"
            ) from None
    return obj


def _call_factory(factory: Any, call: ast.Call, spec: str) -> Any:
    if not callable(factory):
        raise AppImportError(
            f"--app {spec!r}: the factory is a {type(factory).__name__}, not callable"
        )
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except ValueError:
        raise AppImportError(f"--app {spec!r}: factory arguments must be Python literals") from None
    try:
        return factory(*args, **kwargs)
    except Exception as exc:
        raise AppImportError(
            f"--app {spec!r}: calling the factory raised {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc


class Dispatcher:
    """Route by path prefix: ``--static`` mounts (longest prefix first), then the fallback handler."""

    def __init__(self, mounts: list[tuple[str, Handler]], fallback: Handler) -> None:
        self.mounts = tuple(sorted(mounts, key=lambda mount: len(mount[0]), reverse=True))
        self.fallback = fallback
        # Target -> handler, as in the core's memo dicts: clients repeat targets, and each request is
        # routed twice (the loop asks whether its handler may run there, then the call dispatches).
        self._routes: dict[str, Handler] = {}

    def route(self, target: str) -> Handler:
        """The handler for a request-target (a mount matches whole segments: /static, /static/...)."""
        handler = self._routes.get(target)
        if handler is None:
            handler = self._find(target)
            if len(target) <= _ROUTE_KEY_MAX:
                remember(self._routes, target, handler, _ROUTES_MAX)
        return handler

    def _find(self, target: str) -> Handler:
        if target.startswith("/"):  # origin-form: the path is a prefix of the target
            for prefix, _ in self.mounts:
                if target.startswith(prefix):
                    break
            else:
                return self.fallback  # no mount can match: the usual application request
        path = split_target(target)[0]
        for prefix, handler in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return handler
        return self.fallback

    def __call__(self, exchange: Exchange) -> None:
        self.route(exchange.request.target)(exchange)


def _directory(path: str, flag: str) -> str:
    if not os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} is not a directory")
    return os.path.abspath(path)


def _prefix(prefix: str) -> str:
    if not prefix.startswith("/"):
        raise ValueError(
            f"--static: the prefix {prefix!r} must start with '/' (e.g. /assets=./assets)"
        )
    return prefix.rstrip("/")


def build_handler(
    *,
    app: str | Callable[..., Any] | None = None,
    root: str | None = None,
    static_mounts: tuple[tuple[str, str], ...] = (),
    root_path: str = "",
    multiprocess: bool = False,
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1"),
    server_software: str = "webcluster",
) -> Handler:
    """The worker's request handler.

    ``app`` is an ``--app`` spec (loaded with ``load_app``) or a WSGI callable; ``static_mounts`` are
    ``(prefix, directory)`` pairs. With an app, paths outside the mounts go to it (``root`` is unused);
    without one, to the files under ``root``, or the bundled welcome page when ``root`` is None.
    Raises ``AppImportError`` or ``ValueError`` (bad directory or prefix), naming the setting.
    """
    mounts: list[tuple[str, Handler]] = []
    for prefix, directory in static_mounts:
        prefix = _prefix(prefix)
        if any(prefix == seen for seen, _ in mounts):
            raise ValueError(f"--static: the prefix {prefix or '/'!r} is mounted twice")
        mounts.append((prefix, StaticHandler(_directory(directory, "--static"), prefix=prefix)))
    fallback: Handler
    if app is not None:
        application = load_app(app) if isinstance(app, str) else app
        fallback = WSGIHandler(
            application,
            root_path=root_path,
            multiprocess=multiprocess,
            forwarded=ForwardedPolicy(forwarded_allow_ips),
            server_software=server_software,
        )
    else:
        fallback = StaticHandler(_directory(root, "--root") if root else default_root())
    return Dispatcher(mounts, fallback) if mounts else fallback

"""The settings table: one ``Setting`` row per configuration value, the one place it is declared.

A row gives the name (the ``Config`` attribute, the TOML key, ``WEBCLUSTER_<NAME>`` and
``--<name>``), the type, the default, the parser and validator, the section, the flags and the help.
Everything else is derived from the table: ``cluster.config.Config`` (a frozen dataclass with one
field per row, in this order), the command line and ``--help``, the environment and TOML layers, and
the README settings table.

How to add a setting:

1. Add one row to ``SETTINGS`` below, in its section. Reuse a parser from ``cluster/parsers.py`` (or
   add a pure one there) so that a bad value says what is wrong and how to fix it.
2. Read it where it is used. In the supervisor: ``cfg.<name>``. A worker never imports this package,
   so its components get values as constructor arguments; a component with a settings dataclass
   (``worker.http.protocol.Limits``, ``LoopSettings``) gets a field with the *same name*, which
   ``worker.main.from_settings`` fills by name (no mapping to edit). Where such a component owns
   the default (``Limits``, ``LoopSettings``), the row takes the default from there rather than
   writing the value twice.
3. Regenerate the README table: ``python -m webcluster.cluster.config --write-readme``
   (``tests/cluster/test_config.py`` fails while it is stale).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webcluster.cluster import addresses as addr
from webcluster.cluster import parsers as p
from webcluster.worker.http.protocol import Limits
from webcluster.worker.tlscommon import DEFAULT_CIPHERS
from webcluster.worker.transport import LoopSettings
from webcluster.worker.version import server_software

SECTIONS = (
    "server", "workers", "HTTP limits", "timeouts", "logging", "TLS", "security", "admin",
    "development", "hooks and metrics",
)  # fmt: skip
ENV_PREFIX = "WEBCLUSTER_"


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration value and everything needed to read, check and document it."""

    name: str  # Config attribute, TOML key, and (upper-cased) env var suffix
    type: str  # the Config annotation, e.g. "tuple[str, ...]" (checked by a test)
    default: Any  # the value, or a zero-argument callable computing it (e.g. the CPU count)
    parse: p.Parser  # raw str (CLI/env) or TOML value -> typed value; raises InvalidValue
    section: str
    flags: tuple[str, ...]
    metavar: str | None
    help: str
    validate: p.Validator | None = None
    repeatable: bool = False  # CLI flag may be given several times (values accumulate)
    switch: bool = False  # boolean flag with a --no-<name> negation instead of a value
    in_file: bool = True  # may be set in the TOML file (False for `config` itself)
    default_doc: str | None = None  # how to show a callable or None default in --help and README

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``WEBCLUSTER_THREADS``."""
        return ENV_PREFIX + self.name.upper()

    def default_value(self) -> Any:
        """The default, computing it now when it is a callable."""
        return self.default() if callable(self.default) else self.default

    def convert(self, raw: object) -> Any:
        """Parse and validate one raw value; raises ``parsers.InvalidValue``."""
        value = self.parse(raw)
        if self.validate is not None:
            self.validate(value)
        return value


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _parse_log_format(value: object) -> str | None:
    """An ``--access-log-format``, checked by compiling it; empty = the default (Apache combined)."""
    from webcluster.worker.logformat import (
        compile_format,  # the worker's own compiler: one definition
    )

    text = p.parse_optional_text(value)
    if text is None:
        return None
    try:
        compile_format(text)
    except ValueError as exc:
        problem, _, fix = str(exc).partition("; ")
        raise p.InvalidValue(problem, fix or "see the atoms in README, Logs") from None
    return text


def _parse_statsd_host(value: object) -> str | None:
    """``HOST:PORT`` or ``[IPv6]:PORT`` of a statsd daemon (UDP); empty = off."""
    text = p.parse_optional_text(value)
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise p.InvalidValue(f"{text!r} is not HOST:PORT", "write e.g. 127.0.0.1:8125")
    return text


_OPT = "str | None"
# Values a worker component owns are declared there, with the reason for them; the rows read them.
_LIMITS = Limits()  # the HTTP core's limits, with their precedents (worker/http/protocol.py)
_LOOP = LoopSettings()  # the loop's timeouts and caps (worker/transport.py)
_SECONDS = "SECONDS"
_N = "N"
_BYTES = "BYTES"


def _s(
    name: str, type_: str, default: Any, parse: p.Parser, section: str, flag: str, **kw: Any
) -> Setting:
    """Shorthand: ``flag`` is "--long" or "--long/-x" (extra short alias)."""
    flags = tuple(reversed(flag.split("/")))  # short alias first, as argparse users expect
    return Setting(name, type_, default, parse, section, flags, **kw)


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    _s("bind", "tuple[str, ...]", ("127.0.0.1:8080",), addr.parse_bind, "server", "--bind/-b",
       metavar="ADDR", repeatable=True,
       help="Address to listen on: HOST:PORT, [IPv6]:PORT, unix:/path or fd://N (an inherited "
       "socket). Repeat the flag (comma list in the environment) to listen on several. Under systemd "
       "socket activation (LISTEN_FDS) the sockets systemd passes replace it."),
    _s("procs", "int", _cpu_count, p.parse_int, "workers", "--procs/-w", metavar=_N,
       validate=p.at_least(1), default_doc="number of CPUs",
       help="Number of worker processes (slots)."),
    _s("threads", "int", 32, p.parse_int, "workers", "--threads/-t", metavar=_N,
       validate=p.at_least(1), help="Application threads per worker process."),
    _s("inline_budget", "float", _LOOP.inline_budget, p.parse_duration, "workers", "--inline-budget",
       metavar=_SECONDS, validate=p.at_least(0, "0 sends every request through the thread pool"),
       help="A request without a body first runs on the worker's poller thread, with no hand-off to "
            "a pool thread. One found blocked after running this long (checked every 20 ms), or computing "
            "for 25 times as long (at least 50 ms), moves the poller to a standby thread, and the "
            "worker uses the pool for the next second (doubling while it recurs). 0 = always the "
            "pool."),
    _s("app", _OPT, None, p.parse_app, "server", "--app", metavar="MODULE:CALLABLE",
       default_doc="none: serve static files",
       help="WSGI application to serve, e.g. myproject.wsgi:application."),
    _s("root", _OPT, None, p.optional_dir, "server", "--root", metavar="DIR",
       default_doc="bundled welcome page",
       help="Directory of static files served when there is no --app."),
    _s("static", "tuple[tuple[str, str], ...]", (), p.parse_static, "server", "--static",
       metavar="/PREFIX=DIR", repeatable=True,
       help="Serve DIR under URL /PREFIX beside the app (repeatable; DIR must exist)."),
    _s("root_path", "str", "", p.parse_root_path, "server", "--root-path", metavar="PATH",
       help="URL prefix the app is mounted under (WSGI SCRIPT_NAME), e.g. /app."),
    _s("chdir", _OPT, None, p.optional_dir, "server", "--chdir", metavar="DIR",
       help="Change to DIR (and add it to sys.path) in each worker before importing the app."),
    _s("keepalive", "float", _LOOP.keepalive, p.parse_duration, "timeouts",
       "--keepalive", metavar=_SECONDS,
       validate=p.at_least(0, "0 disables keep-alive"),
       help="How long an idle keep-alive connection is kept open; 0 disables keep-alive."),
    _s("keepalive_requests", "int", _LOOP.keepalive_requests, p.parse_int, "HTTP limits",
       "--keepalive-requests",
       metavar=_N, validate=p.at_least(1),
       help="Requests served on one connection before it is closed (nginx's default)."),
    _s("header_timeout", "float", _LOOP.header_timeout, p.parse_duration, "timeouts",
       "--header-timeout",
       metavar=_SECONDS, validate=p.above_zero,
       help="The whole request head must arrive within this time, or 408."),
    _s("body_timeout", "float", _LOOP.body_timeout, p.parse_duration, "timeouts", "--body-timeout",
       metavar=_SECONDS, validate=p.above_zero,
       help="Bodies up to 64 KiB (read by the poller) must arrive within this time in total; "
            "larger ones may wait this long for each next piece. Otherwise 408."),
    _s("body_min_rate", "int", _LOOP.body_min_rate, p.parse_size, "timeouts", "--body-min-rate",
       metavar="BYTES_PER_S", validate=p.at_least(0),
       help="Minimum average upload rate of a request body, or 408; 0 = off."),
    _s("send_timeout", "float", _LOOP.send_timeout, p.parse_duration, "timeouts", "--send-timeout",
       metavar=_SECONDS, validate=p.above_zero,
       help="Longest wait for a client to accept more response bytes before closing."),
    _s("max_connections", "int", _LOOP.max_connections, p.parse_int, "workers",
       "--max-connections", metavar=_N,
       validate=p.at_least(1),
       help="Open connections per worker; above it the worker stops accepting."),
    _s("defer_accept", "int", _LOOP.defer_accept, p.parse_int, "server", "--defer-accept",
       metavar=_SECONDS, validate=p.at_least(0, "0 = off"),
       help="Hold a new TCP connection in the kernel until its first bytes arrive, at most this many "
       "seconds (TCP_DEFER_ACCEPT, as Apache httpd on Linux); a silent one is accepted then. 0 = off."),
    _s("backlog", "int", 2048, p.parse_int, "server", "--backlog", metavar=_N,
       validate=p.at_least(1), help="Listen backlog of each listening socket."),
    _s("max_body", "int", _LIMITS.max_body, p.parse_size, "HTTP limits", "--max-body",
       metavar=_BYTES,
       validate=p.at_least(0, "0 = unlimited"),
       help="Largest request body, or 413; 0 = unlimited."),
    _s("limit_request_line", "int", _LIMITS.limit_request_line, p.parse_size, "HTTP limits",
       "--limit-request-line",
       metavar=_BYTES, validate=p.at_least(1), help="Longest request line, or 414."),
    _s("limit_request_fields", "int", _LIMITS.limit_request_fields, p.parse_int, "HTTP limits",
       "--limit-request-fields",
       metavar=_N, validate=p.at_least(1), help="Most header fields in a request, or 431."),
    _s("limit_request_field_size", "int", _LIMITS.limit_request_field_size, p.parse_size,
       "HTTP limits", "--limit-request-field-size", metavar=_BYTES, validate=p.at_least(1),
       help="Longest header field line, or 431."),
    _s("limit_request_head", "int", _LIMITS.limit_request_head, p.parse_size, "HTTP limits",
       "--limit-request-head",
       metavar=_BYTES, validate=p.at_least(1),
       help="Largest request head (request line + all fields), or 431."),
    _s("access_log", _OPT, None, p.optional_output, "logging", "--access-log", metavar="FILE",
       default_doc="off",
       help="Access log file (- = stdout), in Apache combined format unless --access-log-format."),
    _s("access_log_format", _OPT, None, _parse_log_format, "logging", "--access-log-format",
       metavar="FORMAT", default_doc="Apache combined",
       help="Access-log line in gunicorn's syntax, e.g. '%(h)s \"%(r)s\" %(s)s %(M)sms'; atoms: h l "
       "u t r m U q H s B b f a T M D L p {Header}i {Header}o {VAR}e (README, Logs)."),
    _s("error_log", "str", "-", p.log_output, "logging", "--error-log", metavar="FILE",
       help="Error log file; - = stderr."),
    _s("log_level", "str", "info", p.parse_choice("debug", "info", "warning", "error", "critical"),
       "logging", "--log-level", metavar="LEVEL",
       help="Lowest level written to the error log: debug, info, warning, error or critical."),
    _s("server_header", "str", server_software, p.parse_header_text, "server", "--server-header",
       metavar="TEXT", default_doc="webcluster/VERSION, e.g. webcluster/0.1.0",
       help='Value of the Server response header; "" omits the header.'),
    _s("graceful_timeout", "float", _LOOP.graceful_timeout, p.parse_duration, "timeouts",
       "--graceful-timeout",
       metavar=_SECONDS, validate=p.at_least(0),
       help="On stop or reload, time workers get to finish in-flight requests before SIGKILL."),
    _s("timeout", "float", 30.0, p.parse_duration, "timeouts", "--timeout", metavar=_SECONDS,
       validate=p.above_zero,
       help="A worker silent (no heartbeat) this long is killed and replaced."),
    _s("request_timeout", "float", 0.0, p.parse_duration, "timeouts", "--request-timeout",
       metavar=_SECONDS, validate=p.at_least(0, "0 = off"),
       help="A request running longer than this is logged with its Python stack and counted; a "
       "worker whose every thread is stuck (or whose queue waited this long) stops accepting, "
       "answers its queue 503 and is replaced gracefully. 0 = off."),
    _s("queue_timeout", "float", 0.0, p.parse_duration, "timeouts", "--queue-timeout",
       metavar=_SECONDS, validate=p.at_least(0, "0 = off"),
       help="A request that waited longer than this for a pool thread gets 503 with Retry-After "
       "and never reaches the app (load shedding). 0 = off."),
    _s("max_requests", "int", 0, p.parse_int, "workers", "--max-requests", metavar=_N,
       validate=p.at_least(0, "0 = off"),
       help="Recycle a worker after this many requests; 0 = off."),
    _s("max_requests_jitter", "int", 0, p.parse_int, "workers", "--max-requests-jitter",
       metavar=_N, validate=p.at_least(0),
       help="Add a random 0..N to --max-requests per worker so they do not recycle together."),
    _s("max_worker_memory", "int", 0, p.parse_int, "workers", "--max-worker-memory",
       metavar="MIB", validate=p.at_least(0, "0 = off"),
       help="Recycle a worker whose RSS exceeds this many MiB; 0 = off."),
    _s("reuse_port", "bool", True, p.parse_bool, "server", "--reuse-port", metavar=None,
       switch=True,
       help="One SO_REUSEPORT listening socket per worker slot (--no-reuse-port: one shared socket)."),
    _s("admin", "str", "127.0.0.1:9180", addr.parse_admin, "admin", "--admin", metavar="ADDR",
       help="Address of the admin endpoint (/metrics, /stats, /healthz, dashboard), or off."),
    _s("config", _OPT, None, p.optional_file, "server", "--config", metavar="FILE",
       in_file=False, help="TOML file of settings (keys = setting names); CLI and env override it."),
    _s("pid", _OPT, None, p.optional_output, "server", "--pid", metavar="FILE",
       help="Write the supervisor's pid to FILE."),
    _s("user", _OPT, None, p.parse_user, "security", "--user", metavar="NAME/UID",
       help="Switch to this user after binding (supervisor started as root)."),
    _s("group", _OPT, None, p.parse_group, "security", "--group", metavar="NAME/GID",
       help="Switch to this group after binding."),
    _s("umask", "int | None", None, p.parse_umask, "security", "--umask", metavar="OCTAL",
       default_doc="unchanged", help="File mode creation mask, in octal (e.g. 027)."),
    _s("certfile", _OPT, None, p.optional_file, "TLS", "--certfile", metavar="FILE",
       help="PEM certificate chain; serving TLS needs it and --keyfile."),
    _s("keyfile", _OPT, None, p.optional_file, "TLS", "--keyfile", metavar="FILE",
       help="PEM private key for --certfile."),
    _s("ca_certs", _OPT, None, p.optional_file, "TLS", "--ca-certs", metavar="FILE",
       help="PEM CA bundle used to verify client certificates."),
    _s("cert_reqs", "str", "none", p.parse_choice("none", "optional", "required"), "TLS",
       "--cert-reqs", metavar="MODE",
       help="Client certificate verification: none, optional or required (these two need --ca-certs)."),
    _s("ciphers", "str", DEFAULT_CIPHERS, p.parse_ciphers, "TLS", "--ciphers", metavar="LIST",
       default_doc="ECDHE with AES-GCM or ChaCha20-Poly1305 (Mozilla intermediate)",
       help="OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are unaffected), "
       "e.g. ECDHE+AESGCM."),
    _s("tls_min_version", "str", "1.2", p.parse_choice("1.2", "1.3"), "TLS", "--tls-min-version",
       metavar="VERSION", help="Oldest TLS version accepted: 1.2 or 1.3."),
    _s("forwarded_allow_ips", "tuple[str, ...]", ("127.0.0.1", "::1"), p.parse_ip_list,
       "security", "--forwarded-allow-ips", metavar="LIST",
       help="Comma list of proxy IPs/networks whose X-Forwarded-*/Forwarded headers are trusted; "
       "* = all, empty = none."),
    _s("preload", "bool", False, p.parse_bool, "workers", "--preload", metavar=None, switch=True,
       help="Import the app once in the supervisor, before forking: workers share its memory "
       "(copy-on-write) and start faster, but HUP keeps the code loaded at start (USR2 or a restart "
       "loads new code)."),
    _s("reload", "bool", False, p.parse_bool, "development", "--reload", metavar=None,
       switch=True,
       help="Reload the workers gracefully when a module the app imported, a --reload-extra-file or "
       "a file under --reload-dir changes (polled every second). An app that no longer imports "
       "keeps the old workers serving. Not with --preload."),
    _s("reload_extra_file", "tuple[str, ...]", (), p.parse_file_list, "development",
       "--reload-extra-file", metavar="FILE", repeatable=True,
       help="With --reload, also watch FILE (templates, .env...); repeatable."),
    _s("reload_dir", "tuple[str, ...]", (), p.parse_dir_list, "development", "--reload-dir",
       metavar="DIR", repeatable=True,
       help="With --reload, also watch every file under DIR (recursively); repeatable."),
    _s("proxy_protocol", "bool", False, p.parse_bool, "security", "--proxy-protocol",
       metavar=None, switch=True,
       help="Every connection starts with a PROXY protocol v1/v2 header from a load balancer in "
       "--forwarded-allow-ips; its client address becomes REMOTE_ADDR. Others are closed."),
    _s("drain_delay", "float", 0.0, p.parse_duration, "timeouts", "--drain-delay",
       metavar=_SECONDS, validate=p.at_least(0),
       help="On SIGTERM, /healthz answers 503 and the server keeps serving (keep-alive responses "
       "carry Connection: close) this long before the graceful stop, so a load balancer stops "
       "sending first. At least its check interval x fall + one interval; 0 = off."),
    _s("admin_allow_ips", "tuple[str, ...]", ("127.0.0.1", "::1"), p.parse_ip_list, "admin",
       "--admin-allow-ips", metavar="LIST",
       help="Comma list of IPs/networks that may read /stats, /metrics and the dashboard (others "
       "get 403; /healthz answers anyone); * = all."),
    _s("hooks", _OPT, None, p.parse_optional_text, "hooks and metrics", "--hooks",
       metavar="MODULE",
       help="Module (dotted name, or a .py file) whose optional functions on_starting, on_reload, "
       "post_fork, worker_exit, pre_request and post_request are called (README, Hooks)."),
    _s("statsd_host", _OPT, None, _parse_statsd_host, "hooks and metrics", "--statsd-host",
       metavar="HOST:PORT", default_doc="off",
       help="Send gunicorn's statsd metrics (gunicorn.requests, gunicorn.request.duration, "
       "gunicorn.request.status.<code>, gunicorn.workers...) over UDP to HOST:PORT."),
    _s("statsd_prefix", "str", "", p.parse_header_text, "hooks and metrics", "--statsd-prefix",
       metavar="PREFIX", help="Prefix of every statsd metric name, e.g. myapp (a dot is added)."),
)
# fmt: on

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def describe_default(setting: Setting) -> str:
    """The default as shown to people: a TOML literal, or the setting's own description."""
    if setting.default_doc is not None:
        return setting.default_doc
    return toml_literal(setting.default)


def toml_literal(value: object) -> str:
    """``value`` written as TOML (only the types settings use)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return repr(value)


def default_fn(name: str) -> Callable[[], Any]:
    """A zero-argument callable giving the default of ``name`` (for dataclass default_factory)."""
    return BY_NAME[name].default_value

"""webcluster's configuration: the settings table (cluster/settings.py) turned into a frozen ``Config``.

Sources, highest precedence first: command-line flags, ``WEBCLUSTER_<NAME>`` environment variables, the
TOML file named by ``--config`` / ``WEBCLUSTER_CONFIG`` (keys = setting names), then defaults. Only the
winning value of each setting is parsed; every problem raises ``ConfigError`` whose message reads
``setting <name>: <what is wrong>; <how to fix>``. Nothing here has side effects beyond reading the
config file and checking that named paths exist.

``python -m webcluster.cluster.config --markdown`` prints the README settings table; ``--write-readme`` updates it
(cluster/settings_doc.py renders it).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import field, make_dataclass
from typing import Any, NamedTuple, NoReturn

from webcluster.cluster.parsers import InvalidValue
from webcluster.cluster.settings import BY_NAME, ENV_PREFIX, SECTIONS, SETTINGS, Setting, default_fn
from webcluster.cluster.settings import describe_default as _describe_default


class ConfigError(Exception):
    """An invalid configuration; ``str(exc)`` is ``setting <name>: <what is wrong>; <how to fix>``."""


def _make_config() -> type:
    """The ``Config`` dataclass, one field per row of the settings table, in the table's order."""
    fields: list[tuple[str, Any, Any]] = [
        (s.name, s.type, field(default_factory=default_fn(s.name))) for s in SETTINGS
    ]
    fields.append(("argv", "tuple[str, ...]", field(default=(), repr=False, compare=False)))
    cls = make_dataclass("Config", fields, frozen=True, slots=True)
    cls.__module__ = __name__
    cls.__doc__ = """Every setting, validated: one attribute per row of cluster/settings.py, named,
    typed and defaulted by that row. Build it with ``load_config``; constructing ``Config(...)``
    directly (handy in tests) gives the table's defaults but skips validation. ``argv`` holds the
    command line it came from, so ``reload_config`` keeps the CLI overrides; it is not a setting and
    does not take part in equality."""
    return cls


Config = _make_config()


class _Raw(NamedTuple):
    value: object  # str from CLI/env, list from a repeated flag, native value from TOML
    source: str  # where it came from, for error messages: "--threads", "WEBCLUSTER_THREADS", a file


# --- entry points ----------------------------------------------------------------------------


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build the ``Config`` from ``argv`` (default ``sys.argv[1:]``), ``environ`` (default
    ``os.environ``) and the TOML file they name. Raises ``ConfigError``; ``--help`` prints the help
    and raises ``SystemExit(0)`` (argparse's behaviour)."""
    return explain_config(argv, environ)[0]


def explain_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Config, dict[str, str]]:
    """``load_config`` plus where each setting's value came from: ``"cli --threads"``,
    ``"env WEBCLUSTER_THREADS"``, ``"file /etc/webcluster.toml"`` or ``"default"``."""
    args = tuple(sys.argv[1:] if argv is None else argv)
    cli = _cli_layer(args)
    env = _env_layer(os.environ if environ is None else environ)
    path = _resolve(BY_NAME["config"], cli.get("config") or env.get("config"))
    file = _file_layer(path) if path else {}
    raw = {**file, **env, **cli}
    values = {s.name: _resolve(s, raw.get(s.name)) for s in SETTINGS}
    _check_together(values)
    origins = {}
    for name in values:
        kind = "cli" if name in cli else "env" if name in env else "file" if name in file else ""
        origins[name] = f"{kind} {raw[name].source}" if kind else "default"
    return Config(**values, argv=args), origins


def reload_config(cfg: Config, environ: Mapping[str, str] | None = None) -> Config:
    """Re-read the config file and the environment (default ``os.environ``), keeping the command-line
    arguments ``cfg`` was built from (``cfg.argv``), so CLI overrides still win. Used on SIGHUP."""
    return load_config(cfg.argv, environ)


# --- the three sources -----------------------------------------------------------------------


def _resolve(setting: Setting, raw: _Raw | None) -> Any:
    if raw is None:
        return setting.default_value()
    try:
        return setting.convert(raw.value)
    except InvalidValue as exc:
        raise ConfigError(
            f"setting {setting.name}: {exc.problem} (from {raw.source}); {exc.fix}"
        ) from None


def _cli_layer(args: Sequence[str]) -> dict[str, _Raw]:
    given = vars(build_parser().parse_args(list(args)))
    layer = {n: _Raw(v, BY_NAME[n].flags[-1]) for n, v in given.items() if n in BY_NAME}
    positional = given.get(APP_ARGUMENT)
    if positional is not None:
        if "app" in layer and layer["app"].value != positional:
            raise ConfigError(
                f"setting app: given twice ({positional!r} and --app {layer['app'].value!r}); "
                "pass the application once"
            )
        layer["app"] = _Raw(positional, "APP")
    return layer


def _env_layer(environ: Mapping[str, str]) -> dict[str, _Raw]:
    # The WEBCLUSTER_ prefix is reserved for settings: a misspelt variable is an error, not ignored.
    layer: dict[str, _Raw] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in BY_NAME:
            raise ConfigError(
                f"setting {name}: unknown environment variable {key}; {_suggest(name, ENV_PREFIX)}"
            )
        layer[name] = _Raw(value, key)
    return layer


def _file_layer(path: str) -> dict[str, _Raw]:
    # tomllib and difflib (below) are imported where used: whatever the supervisor imports, every
    # worker it forks carries, and most runs have no config file and no misspelled setting.
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(
            f"setting config: cannot read {path}: {exc.strerror}; fix the path"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"setting config: {path} is not valid TOML ({exc}); fix the syntax"
        ) from None
    for key in data:
        if key not in BY_NAME:
            raise ConfigError(f"setting {key}: unknown key in {path}; {_suggest(key)}")
        if not BY_NAME[key].in_file:
            raise ConfigError(
                f"setting {key}: cannot be set inside the config file {path}; "
                f"use --{key.replace('_', '-')} or {BY_NAME[key].env}"
            )
    return {key: _Raw(value, path) for key, value in data.items()}


def _suggest(name: str, prefix: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(name, BY_NAME, n=1)
    hint = f"did you mean {prefix}{close[0].upper() if prefix else close[0]}? " if close else ""
    return hint + "valid names are listed by --help"


def _check_together(v: dict[str, Any]) -> None:
    """Rules between settings, checked after every source is merged."""
    if (v["certfile"] is None) != (v["keyfile"] is None):
        missing = "keyfile" if v["keyfile"] is None else "certfile"
        raise ConfigError(
            f"setting {missing}: TLS needs both --certfile and --keyfile; set --{missing} or neither"
        )
    if v["cert_reqs"] != "none" and (v["certfile"] is None or v["ca_certs"] is None):
        raise ConfigError(
            f"setting cert_reqs: {v['cert_reqs']} client certificates need TLS and --ca-certs; "
            "set --certfile, --keyfile and --ca-certs, or use --cert-reqs none"
        )
    if v["reload"] and v["preload"]:
        raise ConfigError(
            "setting reload: --reload re-imports the app in new workers, but --preload keeps the "
            "supervisor's copy; drop --preload while developing"
        )
    if v["admin"] in v["bind"] and not v["admin"].endswith(":0"):  # port 0: each gets its own port
        raise ConfigError(
            f"setting admin: {v['admin']} is also a --bind address; use another address or off"
        )


# --- argparse --------------------------------------------------------------------------------

_EPILOG = """\
Precedence: command line > WEBCLUSTER_<NAME> environment variables > --config TOML file > defaults.
Durations are seconds (2.5) or take a unit: 500ms, 30s, 2m, 1h. Sizes are bytes or take a binary
suffix: 64k, 1m, 1g. Lists are comma-separated in the environment and arrays in TOML.

systemd socket activation: when LISTEN_PID is this process, the LISTEN_FDS sockets systemd passes
(from fd 3) replace --bind; --bind fd://N serves any other inherited listening socket. All workers
share such a socket (README, "systemd").

Signals (kill -SIGNAL $(cat PIDFILE), to the supervisor):
  HUP        graceful reload: re-read the config file and environment, replace the workers
             slot by slot (each new worker is ready before the old one drains)
  TERM       graceful stop: finish in-flight requests (at most --graceful-timeout), exit 0
  INT, QUIT  fast stop
  TTIN/TTOU  one worker slot more / less
  USR1       reopen the log files (after logrotate); forwarded to the workers
  USR2       binary upgrade: start a new supervisor (new code, new Python) on the same sockets;
             the old one drains and exits once the new workers are ready, or keeps serving if
             the new one fails to boot

Exit status: 0 stopped, 1 cannot bind, 2 invalid configuration, 3 the app cannot be imported."""

#: ``dest`` of the optional positional APP argument (the same as ``--app``).
APP_ARGUMENT = "APP"
#: ``dest`` of the commands that do something else than serving (see cluster/cli.py).
COMMANDS = ("check_config", "print_config")


class _Version(argparse.Action):
    """``--version``: print the version and exit 0, before any setting is read (gunicorn's -v)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        from webcluster.worker.version import (
            version,  # lazily: only --version reads package metadata
        )

        python = f"{sys.implementation.name} {'.'.join(map(str, sys.version_info[:3]))}"
        print(f"webcluster {version()} ({python}, {sys.executable})")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"argument ([^:]+): (.*)", message)
        flags = set(match.group(1).split("/")) if match else set()
        setting = next((s for s in SETTINGS if flags & set(s.flags)), None)
        if setting is None or match is None:
            raise ConfigError(f"command line: {message}; see {self.prog} --help")
        raise ConfigError(f"setting {setting.name}: {match.group(2)}; see {self.prog} --help")


def build_parser(prog: str = "webcluster") -> argparse.ArgumentParser:
    """The command-line parser, one option per setting, grouped by section. Options that are not
    given are absent from the namespace (``argparse.SUPPRESS``), values are left as strings."""
    parser = _Parser(
        prog=prog,
        description="Multi-process, multithreaded HTTP/1.1 and WSGI server.",
        epilog=_EPILOG,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for section in SECTIONS:
        group = parser.add_argument_group(section)
        for s in (s for s in SETTINGS if s.section == section):
            kwargs: dict[str, Any] = {"dest": s.name, "default": argparse.SUPPRESS}
            if s.switch:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs.update(metavar=s.metavar, action="append" if s.repeatable else "store")
            info = f"[default: {_describe_default(s)}; env {s.env}]"
            group.add_argument(*s.flags, help=f"{s.help} {info}".replace("%", "%%"), **kwargs)
    _add_commands(parser)
    return parser


def _add_commands(parser: argparse.ArgumentParser) -> None:
    """The positional APP and the flags that are commands rather than settings."""
    parser.add_argument(
        APP_ARGUMENT,
        nargs="?",
        default=argparse.SUPPRESS,
        metavar="APP",
        help="WSGI application, MODULE:CALLABLE: the same as --app (gunicorn's positional APP).",
    )
    group = parser.add_argument_group("commands (do not serve)")
    group.add_argument("--version", action=_Version, help="Print the version and exit.")
    group.add_argument(
        "--check-config",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Validate the settings, load TLS files and import the app, then exit: 0 when all "
        "is well, else the exit status the server would have (2 settings, 3 app).",
    )
    group.add_argument(
        "--print-config",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Print the effective settings as TOML, each with where it came from "
        "(default, file, env or cli), then exit.",
    )


if __name__ == "__main__":  # the README's settings table: see cluster/settings_doc.py
    from webcluster.cluster.settings_doc import main

    sys.exit(main())

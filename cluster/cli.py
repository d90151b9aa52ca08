"""The ``webcluster`` command: read the configuration, then serve or run one of the commands.

``--version`` is answered while the command line is parsed (cluster/config.py). ``--check-config``
validates the settings, loads the TLS files and imports the app exactly as a worker would, then exits
with the status the server would have had (0 good, 2 settings, 3 app). ``--print-config`` prints the
effective settings as a TOML file, each line commented with where its value came from.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from webcluster.cluster.config import COMMANDS, Config, ConfigError, build_parser, explain_config
from webcluster.cluster.settings import SETTINGS, toml_literal
from webcluster.worker.ipc import EXIT_BOOT_ERROR as EXIT_APP

EXIT_CONFIG = 2  # a bad setting (argparse's usage-error status)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve (the default) or run the command named on the command line; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    from webcluster.cluster.upgrade import remember_command

    remember_command()  # before --preload's --chdir: USR2 runs this command again from here
    try:
        cfg, origins = explain_config(args)
    except ConfigError as exc:
        print(f"webcluster: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SystemExit as exc:  # --help or --version printed its text
        return exc.code if isinstance(exc.code, int) else 0
    commands = {k for k in vars(build_parser().parse_args(args)) if k in COMMANDS}
    if "print_config" in commands:
        sys.stdout.write(render_config(cfg, origins))
    if "check_config" in commands:
        return check_config(cfg)
    if commands:
        return 0
    from webcluster.cluster.arbiter import (
        Arbiter,  # imported late: config errors need no server code
    )

    target = None
    if cfg.preload:
        target = preload(cfg)
        if target is None:
            return EXIT_APP
    return Arbiter(cfg, worker_target=target).run()


def preload(cfg: Config) -> Any:
    """--preload: import the app here, once; the workers forked later share it (copy-on-write).
    Returns the worker target carrying the app, or None (the error printed) when it cannot load."""
    import functools
    import gc

    from webcluster.worker.handlers.dispatch import AppImportError
    from webcluster.worker.main import preload_app, run

    try:
        preloaded = preload_app(cfg)
    except AppImportError as exc:
        print(f"webcluster: error: cannot preload the app: {exc}", file=sys.stderr)
        return None
    # Out of the collector's sight: a collection in a worker would otherwise write to every object
    # header it walks and turn the shared pages into private copies (gc.freeze's documented use).
    gc.freeze()
    return functools.partial(run, preloaded=preloaded)


def check_config(cfg: Config) -> int:
    """Load what a worker loads at boot (TLS context, hooks, the app, static mounts) here."""
    from webcluster.cluster.boot import plural
    from webcluster.worker.handlers.dispatch import AppImportError
    from webcluster.worker.hooks import HooksError, load_hooks
    from webcluster.worker.main import load_handler, tls_from
    from webcluster.worker.tlscommon import TLSConfigError

    try:
        tls_from(cfg)
        load_hooks(cfg.hooks, cfg.chdir)
    except (TLSConfigError, HooksError) as exc:
        print(f"webcluster: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        load_handler(cfg, multiprocess=cfg.procs > 1)
    except AppImportError as exc:
        print(f"webcluster: error: {exc}", file=sys.stderr)
        return EXIT_APP
    serving = f"app {cfg.app}" if cfg.app else "static files"
    print(
        f"webcluster: configuration OK: {serving} imported, {plural(cfg.procs, 'worker')} x "
        f"{plural(cfg.threads, 'thread')} on {', '.join(cfg.bind)}"
    )
    return 0


def render_config(cfg: Config, origins: dict[str, str]) -> str:
    """The effective settings as TOML that ``--config`` accepts back; unset ones commented out."""
    lines = ["# webcluster: effective settings (value  # where it came from)"]
    rows: list[tuple[str, str]] = []
    for s in SETTINGS:
        value = getattr(cfg, s.name)
        if value is None:  # TOML has no null
            text = f"# {s.name} unset"
        else:  # `config` is commented out: the file cannot name itself
            text = ("" if s.in_file else "# ") + f"{s.name} = {_toml(s.name, value)}"
        rows.append((text, origins[s.name]))
    # The origins line up in one column, but one long value (a cipher list) must not push that column
    # out for every line: longer lines just get theirs after two spaces.
    width = max((len(text) for text, _ in rows if len(text) <= ORIGIN_COLUMN), default=0)
    lines += [f"{text.ljust(width)}  # {origin}" for text, origin in rows]
    return "\n".join(lines) + "\n"


ORIGIN_COLUMN = 48  # --print-config: the widest line the origin comments are aligned after


def _toml(name: str, value: Any) -> str:
    if name == "static":  # the TOML table form parse_static accepts
        return "{" + ", ".join(f"{toml_literal(p)} = {toml_literal(d)}" for p, d in value) + "}"
    if name == "umask":
        return f"0o{value:03o}"
    return toml_literal(value)

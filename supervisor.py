"""webcluster entry point: command line -> Config -> cluster.arbiter.Arbiter(cfg).run() -> exit code."""

from __future__ import annotations

import sys

from cluster.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit code (2 for a bad configuration)."""
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        print(f"webcluster: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help printed the help
        return exc.code if isinstance(exc.code, int) else 0
    from cluster.arbiter import Arbiter  # imported late: config errors need no server code

    return Arbiter(cfg).run()


if __name__ == "__main__":
    sys.exit(main())

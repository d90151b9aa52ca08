"""webcluster entry point from a checkout: ``python supervisor.py [APP] [options]``.

The command itself (configuration, commands, serving) is cluster/cli.py's ``main``.
"""

from __future__ import annotations

import sys

from cluster.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

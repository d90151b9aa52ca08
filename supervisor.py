"""webcluster from a checkout: ``python supervisor.py [APP] [options]``.

Installed, the code is the ``webcluster`` package (``webcluster.cluster``, ``webcluster.worker``) and
the command is the ``webcluster`` console script. In a checkout, this file makes the repository root
that package before anything is imported from it, so ``python supervisor.py``, the tests and the load
tests run the checkout's code, whatever copy may be installed. The command itself is
``webcluster.cluster.cli.main``.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def use_checkout() -> None:
    """Make ``webcluster`` the repository root: a package whose ``__path__`` is this directory."""
    root = os.path.dirname(os.path.abspath(__file__))
    loaded = sys.modules.get("webcluster")
    if loaded is not None:
        if root not in list(getattr(loaded, "__path__", [])):
            loaded.__path__ = [root, *loaded.__path__]  # an installed copy came first: ours wins
        return
    spec = importlib.util.spec_from_loader("webcluster", loader=None, is_package=True)
    assert spec is not None
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [root]
    sys.modules["webcluster"] = package


use_checkout()

from webcluster.cluster.cli import main  # noqa: E402 - the package exists only from here on

__all__ = ["main", "use_checkout"]

if __name__ == "__main__":
    sys.exit(main())

"""The package version, for the banner, ``--version``, the Server header and ``SERVER_SOFTWARE``.

Shared by both sides: the supervisor imports it, and the worker (which never imports ``cluster``) too.
``VERSION`` is the one place the version is written: pyproject.toml reads it from here when a wheel is
built (``[tool.setuptools.dynamic]``), so an installed copy and a checkout agree without a look-up in
the package metadata at run time (``importlib.metadata`` and the email parser it loads would otherwise
sit in the supervisor before it forks, and so in every worker).
"""

from __future__ import annotations

VERSION = "0.1.0"


def version() -> str:
    """This copy's version."""
    return VERSION


def server_software() -> str:
    """``webcluster/<version>``: the default Server header and the WSGI ``SERVER_SOFTWARE``."""
    return f"webcluster/{VERSION}"

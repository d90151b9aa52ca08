"""The package version, for the banner, ``--version``, the Server header and ``SERVER_SOFTWARE``.

Shared by both sides: the supervisor imports it, and the worker (which never imports ``cluster``) too.
"""

from __future__ import annotations

import functools
import importlib.metadata
import tomllib
from pathlib import Path


@functools.cache
def version() -> str:
    """The installed package version, else pyproject.toml's (running from a checkout); cached."""
    try:
        return importlib.metadata.version("webcluster")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
        return tomllib.loads(text)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "dev"


def server_software() -> str:
    """``webcluster/<version>``: the default Server header and the WSGI ``SERVER_SOFTWARE``."""
    return f"webcluster/{version()}"

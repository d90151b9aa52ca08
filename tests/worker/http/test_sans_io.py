"""HARD RULE: nothing under worker/http touches I/O - no socket, selectors, threading, ssl or asyncio."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

HTTP_DIR = Path(__file__).resolve().parents[3] / "worker" / "http"
FORBIDDEN = {
    "socket",
    "selectors",
    "select",
    "threading",
    "_thread",
    "ssl",
    "asyncio",
    "multiprocessing",
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth (incl. inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("<dynamic>")  # __import__("socket") would dodge the scan: forbid the idiom
    return names


SOURCES = sorted(HTTP_DIR.glob("*.py"))


def test_sources_found() -> None:
    assert {p.name for p in SOURCES} >= {"protocol.py", "readers.py", "writers.py", "events.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_io_imports_in_source(path: Path) -> None:
    bad = imported_modules(path) & (FORBIDDEN | {"<dynamic>", "importlib"})
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.system  # starts a fresh interpreter
def test_no_io_modules_loaded() -> None:
    """Importing the whole package in a fresh interpreter loads none of them.

    ``-S`` skips site.py, which would load threading itself and hide an import from the package.
    """
    forbidden = sorted(FORBIDDEN - {"_thread"})  # _thread is built in and always loaded
    root = HTTP_DIR.parents[1]
    # Without site.py no installed copy is found: make the checkout the ``webcluster`` package by
    # hand, as supervisor.py does (importing supervisor.py would load the whole server).
    code = (
        "import sys, json, types; before = set(sys.modules);"
        f"assert not before & set({forbidden!r}), sorted(before);"
        f"pkg = types.ModuleType('webcluster'); pkg.__path__ = [{str(root)!r}];"
        "sys.modules['webcluster'] = pkg;"
        "import webcluster.worker.http.protocol, webcluster.worker.http.readers,"
        " webcluster.worker.http.writers, webcluster.worker.http.headers,"
        " webcluster.worker.http.state, webcluster.worker.http.grammar,"
        " webcluster.worker.http.events, webcluster.worker.http.errors;"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = {name.removeprefix("webcluster.").split(".")[0] for name in json.loads(out.stdout)}
    assert "worker" in loaded  # the probe really imported something
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)

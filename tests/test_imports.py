"""The import rules of docs/ARCHITECTURE.md ("Import rules"), checked on the source of every module.

* ``worker/http`` imports nothing from the project outside ``worker/http`` (the sans-IO core stands
  alone; tests/worker/http/test_sans_io.py checks it imports no I/O module either);
* ``worker`` never imports ``cluster`` at runtime (a type-only import under ``TYPE_CHECKING`` is
  fine): a worker gets its values as arguments, and what both sides use lives in ``worker``;
* nothing in ``cluster`` or ``worker`` imports the tests, the load tests or the entry script.

Imports inside functions count: a lazy import is still a runtime dependency.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"cluster", "worker", "tests", "loadtests", "supervisor"}


@functools.cache
def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, _short(alias.name)) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            found.extend((node.lineno, _short(f"{base}.{alias.name}")) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _short(name: str) -> str:
    """The rules speak of cluster and worker; installed, they are webcluster.cluster/.worker."""
    return name.removeprefix("webcluster.")


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def project_imports(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in runtime_imports(path)
        if name.split(".")[0] in PROJECT
    ]


def test_the_packages_are_found() -> None:
    assert len(modules("worker/http")) >= 8 and len(modules("cluster")) >= 8


@pytest.mark.parametrize("path", modules("worker/http"), ids=lambda p: p.name)
def test_worker_http_imports_only_itself(path: Path) -> None:
    bad = [
        imp
        for imp in project_imports(path)
        if not imp.split(" imports ")[1].startswith("worker.http")
    ]
    assert not bad, bad


@pytest.mark.parametrize("path", modules("worker"), ids=lambda p: str(p.relative_to(ROOT)))
def test_worker_does_not_import_cluster_at_runtime(path: Path) -> None:
    bad = [imp for imp in project_imports(path) if " imports cluster" in imp]
    assert not bad, bad


@pytest.mark.parametrize(
    "path", modules("worker") + modules("cluster"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_server_does_not_import_tests_or_tools(path: Path) -> None:
    bad = [
        imp
        for imp in project_imports(path)
        if imp.split(" imports ")[1].split(".")[0] in {"tests", "loadtests", "supervisor"}
    ]
    assert not bad, bad


def test_the_checker_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from cluster.config import Config\n"
        "def f():\n    from cluster.settings import SETTINGS\n"
        "def g():\n    from webcluster.worker.ipc import EXIT_BOOT_ERROR\n"
    )
    assert [name for _, name in runtime_imports(source)] == [
        "typing.TYPE_CHECKING",
        "cluster.settings.SETTINGS",
        "worker.ipc.EXIT_BOOT_ERROR",
    ]

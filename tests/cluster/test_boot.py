"""Start-up helpers of the supervisor that are pure: the banner's plurals, the --root-path hint, the
default Server header."""

from __future__ import annotations

import logging

from cluster.boot import plural, root_path_hint
from cluster.config import Config, load_config
from worker.version import version


def test_plural() -> None:
    assert plural(1, "worker") == "1 worker"
    assert plural(2, "worker") == "2 workers"
    assert plural(0, "thread") == "0 threads"


def test_no_hint_without_root_path_or_app() -> None:
    assert root_path_hint(Config(app="a:b")) is None
    assert root_path_hint(Config(root_path="/app")) is None  # static site: nothing generates links


def test_hint_names_the_mount_to_add() -> None:
    level, text = root_path_hint(Config(app="a:b", root_path="/app"))
    assert level == logging.INFO and "--static /app/static=DIR" in text


def test_mount_outside_the_root_path_is_a_warning() -> None:
    level, text = root_path_hint(Config(app="a:b", root_path="/app", static=(("/static", "d"),)))
    assert level == logging.WARNING
    assert "/static outside it" in text and "--static /app/static=DIR" in text


def test_mount_under_the_root_path_needs_no_hint() -> None:
    assert (
        root_path_hint(Config(app="a:b", root_path="/app", static=(("/app/static", "d"),))) is None
    )
    # /application is not under /app: prefixes match whole segments
    assert root_path_hint(Config(app="a:b", root_path="/app", static=(("/application", "d"),)))


def test_server_header_default_carries_the_version() -> None:
    assert load_config([], {}).server_header == f"webcluster/{version()}"
    assert load_config(["--server-header", "edge"], {}).server_header == "edge"

"""cluster/cli.py and the command-line additions in cluster/config.py: the positional APP, where each
setting came from (--print-config), and the signals in the --help epilog. Pure: no processes."""

from __future__ import annotations

import dataclasses
import re
import signal
import tomllib
from pathlib import Path

import pytest

from webcluster.cluster import cli
from webcluster.cluster.config import ConfigError, build_parser, explain_config, load_config
from webcluster.cluster.signals import HANDLED

REPO = Path(__file__).resolve().parents[2]


def test_positional_app_is_the_same_as_the_flag() -> None:
    assert load_config(["tests.apps.basic:app"], {}).app == "tests.apps.basic:app"
    assert load_config(["-w", "2", "tests.apps.basic:app", "-t", "3"], {}).threads == 3
    same = load_config(["tests.apps.basic:app", "--app", "tests.apps.basic:app"], {})
    assert same.app == "tests.apps.basic:app"


def test_positional_app_beats_env_and_a_conflict_is_an_error() -> None:
    env = {"WEBCLUSTER_APP": "other:app"}
    assert load_config(["tests.apps.basic:app"], env).app == "tests.apps.basic:app"
    with pytest.raises(ConfigError, match=r"^setting app: given twice .*pass the application once"):
        load_config(["a:app", "--app", "b:app"], {})
    with pytest.raises(ConfigError, match=r"^setting app: .* is not MODULE:CALLABLE"):
        load_config(["not an app"], {})


def test_a_second_positional_is_refused() -> None:
    with pytest.raises(ConfigError, match="unrecognized arguments: b:app"):
        load_config(["a:app", "b:app"], {})


def test_origins_name_each_source(tmp_path) -> None:
    path = tmp_path / "w.toml"
    path.write_text("threads = 6\nprocs = 5\nkeepalive = 1\n")
    argv = ["--config", str(path), "--threads", "7", "tests.apps.basic:app"]
    cfg, origins = explain_config(argv, {"WEBCLUSTER_PROCS": "3"})
    assert (cfg.threads, cfg.procs, cfg.keepalive) == (7, 3, 1.0)
    assert origins["threads"] == "cli --threads"
    assert origins["procs"] == "env WEBCLUSTER_PROCS"
    assert origins["keepalive"] == f"file {path}"
    assert origins["app"] == "cli APP"
    assert origins["backlog"] == "default"


def test_print_config_is_toml_that_loads_back_to_the_same_config(tmp_path) -> None:
    (tmp_path / "pub").mkdir()
    argv = [
        "--static",
        f"/a={tmp_path / 'pub'}",
        "--umask",
        "027",
        "-t",
        "9",
        "tests.apps.basic:app",
    ]
    cfg, origins = explain_config(argv, {"WEBCLUSTER_KEEPALIVE": "2s"})
    text = cli.render_config(cfg, origins)
    assert re.search(r"^threads = 9 +# cli --threads$", text, re.M)
    assert re.search(r"^keepalive = 2\.0 +# env WEBCLUSTER_KEEPALIVE$", text, re.M)
    assert re.search(r"^# pid unset +# default$", text, re.M)
    data = tomllib.loads(text)
    assert "pid" not in data and "config" not in data
    path = tmp_path / "printed.toml"
    path.write_text(text)
    loaded = load_config(["--config", str(path)], {})
    assert dataclasses.replace(loaded, config=None) == cfg


def test_print_config_aligns_origins_without_padding_to_the_longest_value() -> None:
    cfg, origins = explain_config(["--ciphers", "ECDHE-RSA-AES128-GCM-SHA256:" * 8 + "HIGH"], {})
    lines = cli.render_config(cfg, origins).splitlines()[1:]
    long = [line for line in lines if line.startswith("ciphers = ")]
    assert long and long[0].endswith(
        'HIGH"  # cli --ciphers'
    )  # a long value: its origin right after
    columns = {
        line.index("  # ") for line in lines if len(line.split("  # ")[0]) <= cli.ORIGIN_COLUMN
    }
    assert len(columns) == 1 and columns.pop() <= cli.ORIGIN_COLUMN  # the others line up, narrowly
    assert max(len(line) for line in lines if line not in long) <= 100


def test_commands_are_not_settings() -> None:
    args = vars(build_parser().parse_args(["--check-config", "--print-config"]))
    assert args == {"check_config": True, "print_config": True}
    cfg = load_config(["--check-config", "--print-config"], {})
    assert cfg == load_config([], {})


def test_help_epilog_lists_every_signal_the_supervisor_handles() -> None:
    text = build_parser().format_help()
    epilog = text[text.index("Signals") :]
    for sig in HANDLED:
        if sig is not signal.SIGCHLD:  # reaping is internal
            assert re.search(rf"\b{sig.name.removeprefix('SIG')}\b", epilog), sig.name
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### Signals") :]
    table = table[: table.index("\n\n", table.index("|"))]
    for name in re.findall(r"^\| `(\w+)`", table, re.M):  # README's table and --help agree
        assert re.search(rf"\b{name}\b", epilog), name


def test_version_exits_zero_before_reading_settings(capsys) -> None:
    assert cli.main(["--version", "--threads", "0"]) == 0
    assert re.match(r"webcluster \S+ \(cpython \d+\.\d+\.\d+, ", capsys.readouterr().out)

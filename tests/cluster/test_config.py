"""cluster/config.py, cluster/settings.py, cluster/parsers.py and supervisor.py's config handling.

Pure tests (no sockets, no sleeps) except two subprocess runs of ``supervisor.py`` (marked ``system``).
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

import supervisor
from webcluster.cluster import settings_doc
from webcluster.cluster.config import (
    Config,
    ConfigError,
    build_parser,
    load_config,
    reload_config,
)
from webcluster.cluster.parsers import InvalidValue
from webcluster.cluster.settings import BY_NAME, SECTIONS, SETTINGS
from webcluster.cluster.settings_doc import (
    README_END,
    README_START,
    readme_section,
    render_markdown,
    write_readme,
)
from webcluster.worker.http.protocol import Limits
from webcluster.worker.loop import LoopSettings
from webcluster.worker.main import loop_settings_from

REPO = Path(__file__).resolve().parents[2]


def write_toml(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- the table and the dataclass agree ------------------------------------------------------


def test_config_has_one_field_per_row_named_and_typed_by_it() -> None:
    fields = [f for f in dataclasses.fields(Config) if f.name != "argv"]
    assert [(f.name, f.type) for f in fields] == [(s.name, s.type) for s in SETTINGS]
    assert len(SETTINGS) == len(BY_NAME), "two rows with one name"


def test_worker_settings_are_filled_by_name_from_config() -> None:
    """Every field of Limits/LoopSettings named like a setting gets the setting's value, and has the
    table's default (so a component built without a Config behaves like the default server)."""
    mapped = {}
    for cls in (Limits, LoopSettings):
        for f in dataclasses.fields(cls):
            if f.name in BY_NAME and f.name != "server_header":  # encoded to bytes on the way
                mapped[f.name] = cls
                assert getattr(cls(), f.name) == BY_NAME[f.name].default_value(), f.name
    assert {"limit_request_fields", "max_body", "keepalive", "send_timeout"} <= set(mapped)
    # a distinct non-default value for each, and every one arrives where it is used
    changed = {}
    for name in mapped:
        value = BY_NAME[name].default_value()
        changed[name] = value + 1 if isinstance(value, int | float) else value
    settings = loop_settings_from(dataclasses.replace(Config(), server_header="x/1", **changed))
    for name, cls in mapped.items():
        owner = settings.limits if cls is Limits else settings
        assert getattr(owner, name) == changed[name], name
    assert settings.server_header == b"x/1"


def test_every_setting_is_documented_and_its_default_is_valid() -> None:
    for s in SETTINGS:
        assert s.section in SECTIONS, s.name
        assert s.env == "WEBCLUSTER_" + s.name.upper()
        assert s.flags[-1] == "--" + s.name.replace("_", "-"), s.name
        assert s.help.strip(), s.name
        if s.default is not None:
            assert s.convert(s.default_value()) == s.default_value(), s.name
    assert {s.section for s in SETTINGS} == set(SECTIONS)


def test_defaults_without_any_source() -> None:
    cfg = load_config([], {})
    assert cfg == Config()
    assert cfg.bind == ("127.0.0.1:8080",)
    assert cfg.procs == (os.cpu_count() or 1)
    assert cfg.threads == 32 and cfg.max_body == 1 << 30 and cfg.keepalive == 5.0
    assert cfg.admin == "127.0.0.1:9180" and cfg.reuse_port is True
    assert cfg.forwarded_allow_ips == ("127.0.0.1", "::1")
    assert cfg.argv == ()


def test_config_is_frozen_and_hashable() -> None:
    cfg = load_config(["-t", "4"], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.threads = 5  # type: ignore[misc]
    assert hash(cfg) == hash(dataclasses.replace(cfg))
    assert dataclasses.replace(cfg, threads=8).threads == 8


# --- precedence ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "env", "file", "expected"),
    [
        (None, None, None, 32),
        (None, None, "3", 3),
        (None, "4", "3", 4),
        ("5", "4", "3", 5),
        ("5", None, "3", 5),
        ("5", "4", None, 5),
        (None, "4", None, 4),
    ],
)
def test_precedence_cli_env_file_default(tmp_path, cli, env, file, expected) -> None:
    environ = {"WEBCLUSTER_CONFIG": write_toml(tmp_path / "c.toml", f"threads = {file or 32}\n")}
    if file is None:
        environ = {}
    if env is not None:
        environ["WEBCLUSTER_THREADS"] = env
    argv = ["--threads", cli] if cli is not None else []
    assert load_config(argv, environ).threads == expected


def test_config_path_from_cli_beats_env(tmp_path) -> None:
    a = write_toml(tmp_path / "a.toml", "threads = 7\n")
    b = write_toml(tmp_path / "b.toml", "threads = 9\n")
    cfg = load_config(["--config", b], {"WEBCLUSTER_CONFIG": a})
    assert cfg.threads == 9 and cfg.config == b
    assert load_config([], {"WEBCLUSTER_CONFIG": a}).threads == 7


def test_cli_list_replaces_lower_sources_instead_of_appending(tmp_path) -> None:
    env = {"WEBCLUSTER_BIND": "127.0.0.1:1,127.0.0.1:2"}
    assert load_config([], env).bind == ("127.0.0.1:1", "127.0.0.1:2")
    cfg = load_config(["-b", "127.0.0.1:3", "--bind", "unix:/tmp/x.sock"], env)
    assert cfg.bind == ("127.0.0.1:3", "unix:/tmp/x.sock")


def test_only_the_winning_value_is_parsed() -> None:
    # A bad env value hidden by a CLI value does not stop the server.
    assert load_config(["--threads", "2"], {"WEBCLUSTER_THREADS": "lots"}).threads == 2


# --- parsers: good values --------------------------------------------------------------------

GOOD = [
    ("threads", "8", 8),
    ("threads", 8, 8),
    ("procs", " 3 ", 3),
    ("max_body", "0", 0),
    ("max_body", "64k", 65536),
    ("max_body", "1M", 1 << 20),
    ("max_body", "2g", 2 << 30),
    ("max_body", 123, 123),
    ("limit_request_head", "32K", 32768),
    ("body_min_rate", "1k", 1024),
    ("keepalive", "0", 0.0),
    ("keepalive", "2.5", 2.5),
    ("keepalive", "500ms", 0.5),
    ("header_timeout", "2m", 120.0),
    ("graceful_timeout", "1h", 3600.0),
    ("timeout", 7, 7.0),
    ("timeout", ".5", 0.5),
    ("reuse_port", "no", False),
    ("reuse_port", "ON", True),
    ("reuse_port", "0", False),
    ("reuse_port", False, False),
    ("log_level", "DEBUG", "debug"),
    ("cert_reqs", "required", "required"),
    ("ciphers", " ECDHE+AESGCM ", "ECDHE+AESGCM"),
    ("tls_min_version", "1.3", "1.3"),
    ("umask", "027", 0o27),
    ("threads", "4\x1c", 4),  # found by fuzzing: str.strip() and int() disagreed on whitespace
    ("umask", "5\x1e", 0o5),
    ("umask", "0o027", 0o27),
    ("umask", 0o077, 0o77),
    ("umask", "", None),
    ("admin", "off", "off"),
    ("admin", "OFF", "off"),
    ("admin", "[::1]:9999", "[::1]:9999"),
    ("admin", "unix:/run/admin.sock", "unix:/run/admin.sock"),
    ("bind", "0.0.0.0:80", ("0.0.0.0:80",)),
    ("bind", "localhost:0", ("localhost:0",)),
    ("bind", "[::]:65535", ("[::]:65535",)),
    ("bind", "[fe80::1%eth0]:8080", ("[fe80::1%eth0]:8080",)),
    ("bind", "unix:/tmp/w.sock,fd://3", ("unix:/tmp/w.sock", "fd://3")),
    ("bind", ["example.com:443", "10.0.0.1:8080"], ("example.com:443", "10.0.0.1:8080")),
    ("forwarded_allow_ips", "*", ("*",)),
    ("forwarded_allow_ips", "10.0.0.0/8, ::1", ("10.0.0.0/8", "::1")),
    ("forwarded_allow_ips", "", ()),
    ("app", "pkg.mod:app", "pkg.mod:app"),
    ("app", "mod:factory.attr", "mod:factory.attr"),
    ("app", "", None),
    ("root_path", "/app/", "/app"),
    ("root_path", "/", ""),
    ("root_path", "", ""),
    ("server_header", "", ""),
    ("server_header", "my server/1.0", "my server/1.0"),
    ("access_log", "-", "-"),
    ("error_log", "-", "-"),
    ("user", "0", "0"),
    ("group", 0, "0"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), GOOD)
def test_parser_accepts(name, raw, expected) -> None:
    assert BY_NAME[name].convert(raw) == expected


def test_path_parsers_resolve_and_check_existence(tmp_path, monkeypatch) -> None:
    (tmp_path / "pub").mkdir()
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    monkeypatch.chdir(tmp_path)
    assert BY_NAME["root"].convert("pub") == str(tmp_path / "pub")
    assert BY_NAME["chdir"].convert(str(tmp_path)) == str(tmp_path)
    assert BY_NAME["static"].convert(["/assets/=pub", "/m=./pub"]) == (
        ("/assets", str(tmp_path / "pub")),
        ("/m", str(tmp_path / "pub")),
    )
    assert BY_NAME["static"].convert({"/a": "pub"}) == (("/a", str(tmp_path / "pub")),)
    assert BY_NAME["certfile"].convert("cert.pem") == str(cert)
    assert BY_NAME["access_log"].convert("access.log") == str(tmp_path / "access.log")
    assert BY_NAME["pid"].convert("run.pid") == str(tmp_path / "run.pid")


def test_user_and_group_names_are_looked_up() -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    mine = grp.getgrgid(os.getgid()).gr_name
    assert BY_NAME["user"].convert(me) == me
    assert BY_NAME["group"].convert(mine) == mine


# --- parsers: bad values ---------------------------------------------------------------------

BAD = [
    ("threads", "0"),
    ("threads", "-1"),
    ("threads", "four"),
    ("threads", "4.0"),
    ("threads", True),
    ("threads", 4.5),
    ("procs", ""),
    ("max_body", "-1"),
    ("max_body", "10x"),
    ("max_body", "1.5m"),
    ("limit_request_line", "0"),
    ("keepalive", "-1"),
    ("keepalive", "5 minutes"),
    ("keepalive", "nan"),
    ("keepalive", float("inf")),
    ("header_timeout", "0"),
    ("timeout", "0s"),
    ("reuse_port", "maybe"),
    ("reuse_port", 1),
    ("log_level", "verbose"),
    ("cert_reqs", "always"),
    ("ciphers", "NO-SUCH-CIPHER"),
    ("ciphers", 5),
    ("tls_min_version", "1.1"),
    ("umask", "8"),
    ("umask", "0o1000"),
    ("umask", "rwx"),
    ("admin", "fd://3"),
    ("admin", "9180"),
    ("bind", ""),
    ("bind", "8080"),
    ("bind", ":8080"),
    ("bind", "::1:8080"),
    ("bind", "[::1]"),
    ("bind", "[::g]:80"),
    ("bind", "127.0.0.1:65536"),
    ("bind", "127.0.0.1:-1"),
    ("bind", "127.0.0.1:http"),
    ("bind", "300.1.1.1:80"),
    ("bind", "bad_host!:80"),
    ("bind", "unix:"),
    ("bind", "fd://x"),
    ("bind", "127.0.0.1:80,127.0.0.1:80"),
    ("bind", 8080),
    ("forwarded_allow_ips", "10.0.0.0/33"),
    ("forwarded_allow_ips", "proxy.example"),
    ("app", "module"),
    ("app", "mod:"),
    ("app", "1mod:app"),
    ("app", "mod:app()"),
    ("root_path", "app"),
    ("server_header", "evil\r\nSet-Cookie: x"),
    ("server_header", "caf\u00e9"),
    ("root_path", "/a\x00b"),
    ("static", "assets=/tmp"),
    ("static", "/=/tmp"),
    ("static", "/x="),
    ("static", "/x=/nonexistent/dir"),
    ("static", "/x=/tmp,/x/=/tmp"),
    ("root", "/nonexistent/dir"),
    ("chdir", "/nonexistent/dir"),
    ("certfile", "/nonexistent/cert.pem"),
    ("access_log", "/nonexistent/dir/access.log"),
    ("error_log", ""),
    ("pid", "/nonexistent/dir/x.pid"),
    ("user", "no-such-user-webcluster"),
    ("group", "no-such-group-webcluster"),
    ("group", "\xff\x00)o#\x00"),  # found by tests/fuzz/fuzz_config.py: ValueError, not a refusal
    ("user", "root\x00"),
    ("certfile", "cert\x00.pem"),
    ("root", "/tmp\x00"),
    ("server_header", "a\x00b"),
]


@pytest.mark.parametrize(("name", "raw"), BAD)
def test_parser_rejects(name, raw) -> None:
    with pytest.raises(InvalidValue) as info:
        BY_NAME[name].convert(raw)
    assert info.value.problem and info.value.fix


@pytest.mark.parametrize(("name", "raw"), [b for b in BAD if isinstance(b[1], str) and b[1]])
def test_bad_value_from_env_names_setting_and_source(name, raw) -> None:
    env = BY_NAME[name].env
    with pytest.raises(ConfigError) as info:
        load_config([], {env: raw})
    message = str(info.value)
    assert message.startswith(f"setting {name}: ")
    assert f"(from {env}); " in message


def test_bad_cli_value_error_message() -> None:
    with pytest.raises(
        ConfigError, match=r"^setting threads: 0 is too small \(from --threads\); use 1"
    ):
        load_config(["-t", "0"], {})


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--threads"], r"^setting threads: expected one argument"),
        (["--no-such-flag"], r"^command line: unrecognized arguments: --no-such-flag"),
        (["--reuse-port=yes"], r"^setting reuse_port: "),
        (["--thread", "3"], r"^command line: unrecognized"),  # no abbreviations
    ],
)
def test_command_line_syntax_errors_raise_config_error(argv, pattern) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(argv, {})


def test_switch_and_repeatable_flags(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    cfg = load_config(
        ["--no-reuse-port", "--static", f"/a={tmp_path / 'a'}", "--static", f"/b={tmp_path}"], {}
    )
    assert cfg.reuse_port is False
    assert cfg.static == (("/a", str(tmp_path / "a")), ("/b", str(tmp_path)))
    assert load_config(["--reuse-port"], {"WEBCLUSTER_REUSE_PORT": "false"}).reuse_port is True


# --- settings that depend on each other ------------------------------------------------------


def test_tls_rules(tmp_path) -> None:
    cert = tmp_path / "c.pem"
    key = tmp_path / "k.pem"
    ca = tmp_path / "ca.pem"
    for f in (cert, key, ca):
        f.write_text("x")
    with pytest.raises(ConfigError, match=r"^setting keyfile: .*; set --keyfile or neither"):
        load_config(["--certfile", str(cert)], {})
    with pytest.raises(ConfigError, match=r"^setting certfile: "):
        load_config(["--keyfile", str(key)], {})
    with pytest.raises(ConfigError, match=r"^setting cert_reqs: "):
        load_config(["--certfile", str(cert), "--keyfile", str(key), "--cert-reqs", "required"], {})
    cfg = load_config(
        [
            "--certfile",
            str(cert),
            "--keyfile",
            str(key),
            "--ca-certs",
            str(ca),
            "--cert-reqs",
            "optional",
        ],
        {},
    )
    assert (cfg.certfile, cfg.keyfile, cfg.ca_certs, cfg.cert_reqs) == (
        str(cert),
        str(key),
        str(ca),
        "optional",
    )


def test_admin_cannot_share_a_bind_address() -> None:
    with pytest.raises(ConfigError, match=r"^setting admin: "):
        load_config(["-b", "127.0.0.1:9180"], {})
    assert load_config(["-b", "127.0.0.1:9180", "--admin", "off"], {}).admin == "off"


# --- the TOML file ---------------------------------------------------------------------------


def test_toml_native_types(tmp_path) -> None:
    (tmp_path / "pub").mkdir()
    path = write_toml(
        tmp_path / "w.toml",
        f"""
bind = ["127.0.0.1:8001", "[::1]:8001"]
threads = 4
keepalive = 2.5
header_timeout = "500ms"
max_body = "10m"
reuse_port = false
umask = 0o027
forwarded_allow_ips = ["10.0.0.0/8"]
log_level = "warning"
static = {{ "/pub" = "{tmp_path / "pub"}" }}
""",
    )
    cfg = load_config(["--config", path], {})
    assert cfg.bind == ("127.0.0.1:8001", "[::1]:8001")
    assert (cfg.threads, cfg.keepalive, cfg.header_timeout) == (4, 2.5, 0.5)
    assert (cfg.max_body, cfg.reuse_port, cfg.umask) == (10 << 20, False, 0o27)
    assert cfg.forwarded_allow_ips == ("10.0.0.0/8",) and cfg.log_level == "warning"
    assert cfg.static == (("/pub", str(tmp_path / "pub")),)


def test_toml_unknown_key_is_named(tmp_path) -> None:
    path = write_toml(tmp_path / "w.toml", "threads = 4\nthread = 5\n")
    with pytest.raises(
        ConfigError, match=r"^setting thread: unknown key in .*w\.toml; did you mean threads\?"
    ):
        load_config(["--config", path], {})


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('threads = "many"\n', r"^setting threads: 'many' is not a whole number \(from .*\); "),
        ("threads = true\n", r"^setting threads: "),
        ("keepalive = true\n", r"^setting keepalive: "),
        ("reuse_port = 1\n", r"^setting reuse_port: "),
        ("bind = 8080\n", r"^setting bind: "),
        ('config = "other.toml"\n', r"^setting config: cannot be set inside the config file"),
        ("threads = \n", r"^setting config: .* is not valid TOML"),
        ("[server]\nthreads = 4\n", r"^setting server: unknown key"),
    ],
)
def test_toml_bad_values(tmp_path, text, pattern) -> None:
    path = write_toml(tmp_path / "w.toml", text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(["--config", path], {})


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(
        ConfigError, match=r"^setting config: .*does not exist.*\(from WEBCLUSTER_CONFIG\)"
    ):
        load_config([], {"WEBCLUSTER_CONFIG": str(tmp_path / "absent.toml")})


# --- environment variables -------------------------------------------------------------------


def test_env_values_are_parsed_like_the_command_line(tmp_path) -> None:
    env = {
        "WEBCLUSTER_THREADS": "6",
        "WEBCLUSTER_REUSE_PORT": "off",
        "WEBCLUSTER_BIND": "127.0.0.1:8001, unix:/tmp/w.sock",
        "WEBCLUSTER_FORWARDED_ALLOW_IPS": "*",
        "WEBCLUSTER_KEEPALIVE": "250ms",
        "WEBCLUSTER_MAX_BODY": "1k",
        "WEBCLUSTER_ADMIN": "off",
        "WEBCLUSTER_UMASK": "022",
        "WEBCLUSTER_ACCESS_LOG": "-",
        "WEBCLUSTER_ROOT": str(tmp_path),
        "OTHER_VARIABLE": "ignored",
    }
    cfg = load_config([], env)
    assert (cfg.threads, cfg.reuse_port, cfg.keepalive, cfg.max_body) == (6, False, 0.25, 1024)
    assert cfg.bind == ("127.0.0.1:8001", "unix:/tmp/w.sock")
    assert (cfg.forwarded_allow_ips, cfg.admin, cfg.umask) == (("*",), "off", 0o22)
    assert (cfg.access_log, cfg.root) == ("-", str(tmp_path))


def test_empty_env_value_unsets_an_optional_setting(tmp_path) -> None:
    path = write_toml(tmp_path / "w.toml", 'access_log = "-"\n')
    assert load_config(["--config", path], {}).access_log == "-"
    assert load_config(["--config", path], {"WEBCLUSTER_ACCESS_LOG": ""}).access_log is None


def test_unknown_webcluster_env_var_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"^setting thread: .*WEBCLUSTER_THREAD; did you mean WEBCLUSTER_THREADS"
    ):
        load_config([], {"WEBCLUSTER_THREAD": "4"})


def test_default_environ_is_os_environ(monkeypatch) -> None:
    monkeypatch.setenv("WEBCLUSTER_THREADS", "3")
    assert load_config([]).threads == 3


# --- reload ----------------------------------------------------------------------------------


def test_reload_keeps_cli_overrides_and_picks_up_file_changes(tmp_path) -> None:
    path = tmp_path / "w.toml"
    write_toml(path, "threads = 4\nkeepalive = 1\nmax_requests = 10\n")
    cfg = load_config(["--config", str(path), "--threads", "2"], {"WEBCLUSTER_MAX_REQUESTS": "20"})
    assert (cfg.threads, cfg.keepalive, cfg.max_requests) == (2, 1.0, 20)
    assert cfg.argv == ("--config", str(path), "--threads", "2")

    write_toml(path, "threads = 8\nkeepalive = 9\nmax_requests = 30\n")
    new = reload_config(cfg, {"WEBCLUSTER_MAX_REQUESTS": "40"})
    assert (new.threads, new.keepalive, new.max_requests) == (2, 9.0, 40)
    assert new.argv == cfg.argv

    write_toml(path, "threads = 8\nkeepalive = -1\n")
    with pytest.raises(ConfigError, match=r"^setting keepalive: "):
        reload_config(cfg, {})


def test_argv_defaults_to_sys_argv(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["webcluster", "-t", "7"])
    cfg = load_config(None, {})
    assert cfg.threads == 7 and cfg.argv == ("-t", "7")


# --- help and README -------------------------------------------------------------------------


def test_help_lists_every_flag_with_default_env_and_section() -> None:
    text = " ".join(build_parser().format_help().split())  # undo line wrapping
    for s in SETTINGS:
        for flag in s.flags:
            assert flag in text, flag
        assert s.env in text, s.env
    assert "--no-reuse-port" in text
    assert "[default: 32; env WEBCLUSTER_THREADS]" in text
    for section in SECTIONS:
        assert f"{section}:" in text


def test_readme_settings_section_is_in_sync() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_section(text) == render_markdown(), (
        "run: python -m webcluster.cluster.config --write-readme"
    )


def test_markdown_has_a_row_per_setting() -> None:
    md = render_markdown()
    for s in SETTINGS:
        assert f"| `{s.name}` |" in md
        assert f"`{s.env}`" in md
    assert md.count("| Setting |") == len(SECTIONS)


def test_write_readme_touches_only_the_marked_section(tmp_path) -> None:
    path = tmp_path / "README.md"
    path.write_text("# Title\n\nSome text.\n", encoding="utf-8")
    assert write_readme(path) is True
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nSome text.\n\n" + README_START + "\n")
    assert readme_section(text) == render_markdown()
    assert write_readme(path) is False  # idempotent

    stale = text.replace(README_START + "\n", README_START + "\nold table\n") + "\n## After\n"
    path.write_text(stale, encoding="utf-8")
    assert write_readme(path) is True
    text = path.read_text(encoding="utf-8")
    assert readme_section(text) == render_markdown()
    assert text.startswith("# Title\n") and text.endswith(README_END + "\n\n## After\n")


def test_module_main_prints_markdown(capsys, tmp_path) -> None:
    assert settings_doc.main(["--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown()
    readme = tmp_path / "R.md"
    assert settings_doc.main(["--write-readme", str(readme)]) == 0
    assert readme_section(readme.read_text(encoding="utf-8")) == render_markdown()


# --- supervisor.py ---------------------------------------------------------------------------


def test_supervisor_main_returns_2_on_bad_config(capsys) -> None:
    assert supervisor.main(["--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("webcluster: error: setting threads: ")


def _run_supervisor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBCLUSTER_")}
    return subprocess.run(
        [sys.executable, str(REPO / "supervisor.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(90)
@pytest.mark.system
def test_supervisor_help_subprocess() -> None:
    result = _run_supervisor("--help")
    assert result.returncode == 0, result.stderr
    for s in SETTINGS:
        for flag in s.flags:
            assert flag in result.stdout, flag


@pytest.mark.timeout(90)
@pytest.mark.system
def test_supervisor_bad_value_subprocess() -> None:
    result = _run_supervisor("--threads", "0")
    assert result.returncode == 2
    assert result.stderr.startswith("webcluster: error: setting threads: ")
    assert result.stdout == ""


def test_admin_and_bind_may_both_ask_for_an_ephemeral_port():
    cfg = load_config(["--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"], {})
    assert cfg.admin == "127.0.0.1:0" and cfg.bind == ("127.0.0.1:0",)

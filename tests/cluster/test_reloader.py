"""cluster/reloader.py with a fake probe (no fork): what is watched, when poll() says reload."""

from __future__ import annotations

import importlib.util
import os
import py_compile

from webcluster.cluster.config import Config
from webcluster.cluster.reloader import Reloader, drop_bytecode, snapshot, watched


class FakeProbe:
    def __init__(self, files: list[str]) -> None:
        self.files, self.error, self.calls = files, None, 0

    def __call__(self, cfg: Config) -> tuple[list[str], str | None]:
        self.calls += 1
        return (list(self.files), None) if self.error is None else ([], self.error)


def bump(path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_watched_covers_modules_extra_files_dirs_and_config(tmp_path) -> None:
    (tmp_path / "d" / ".git").mkdir(parents=True)
    (tmp_path / "d" / "__pycache__").mkdir()
    for name in ("d/a.html", "d/.git/HEAD", "d/__pycache__/x.pyc", "extra", "c.toml"):
        (tmp_path / name).write_text("x")
    cfg = Config(
        reload_extra_file=(str(tmp_path / "extra"),),
        reload_dir=(str(tmp_path / "d"),),
        config=str(tmp_path / "c.toml"),
    )
    paths = watched(cfg, ["/m.py"])
    assert paths == {"/m.py", *(str(tmp_path / n) for n in ("extra", "d/a.html", "c.toml"))}


def test_poll_reloads_on_a_change_and_not_on_a_broken_app(tmp_path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("A = 1\n")
    probe = FakeProbe([str(mod)])
    reloader = Reloader(Config(), probe)
    assert probe.calls == 1 and not reloader.poll(Config()) and probe.calls == 1
    bump(mod)
    assert reloader.poll(Config()) and probe.calls == 2
    probe.error = "SyntaxError"
    bump(mod)
    assert not reloader.poll(Config()) and probe.calls == 3
    assert not reloader.poll(Config()) and probe.calls == 3  # unchanged: no second probe, no log
    probe.error = None
    mod.unlink()  # a vanished file is a change too
    assert reloader.poll(Config())


def test_new_modules_from_the_probe_are_watched(tmp_path) -> None:
    first, later = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("")
    later.write_text("")
    probe = FakeProbe([str(first)])
    reloader = Reloader(Config(), probe)
    probe.files = [str(first), str(later)]  # the edit made the app import b.py
    bump(first)
    assert reloader.poll(Config())
    bump(later)
    assert reloader.poll(Config())


def test_snapshot_and_drop_bytecode(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text("A = 1\n")
    py_compile.compile(str(src))
    pyc = importlib.util.cache_from_source(str(src))
    assert os.path.exists(pyc)
    assert snapshot([str(src), str(tmp_path / "gone")])[str(tmp_path / "gone")] is None
    drop_bytecode([str(src), str(tmp_path / "other.txt")])
    assert not os.path.exists(pyc)

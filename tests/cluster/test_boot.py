"""cluster.boot start-up checks that need no process: the descriptor budget of --procs."""

from __future__ import annotations

import pytest

from webcluster.cluster.boot import FD_PER_SLOT, FD_RESERVE, StartupError, check_fd_limit


def test_procs_within_the_descriptor_limit_pass():
    check_fd_limit(procs=100, binds=2, limit=20000)
    check_fd_limit(procs=1, binds=1, limit=FD_RESERVE + 1 + 1 + FD_PER_SLOT)


def test_procs_above_the_descriptor_limit_name_the_setting_and_the_fix():
    with pytest.raises(StartupError) as info:
        check_fd_limit(procs=100000, binds=1, limit=20000)
    text = str(info.value)
    assert text.startswith("setting procs: 100000 workers need about 300065 file descriptors")
    assert "limit of 20000 (RLIMIT_NOFILE)" in text and "lower --procs" in text
    assert "ulimit -n" in text and "LimitNOFILE=" in text

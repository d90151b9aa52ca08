"""Play systemd socket activation: bind a listening socket, put it at fd 3, set LISTEN_PID/LISTEN_FDS
for the process we become, then exec ``supervisor.py`` with our arguments (sd_listen_fds(3))."""

from __future__ import annotations

import os
import socket
import sys


def main() -> None:
    fd = socket.create_server(("127.0.0.1", 0), backlog=128).detach()
    if fd != 3:  # SD_LISTEN_FDS_START
        os.dup2(fd, 3)
        os.close(fd)
    os.set_inheritable(3, True)
    os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
    os.environ["LISTEN_FDS"] = "1"
    os.execv(sys.executable, [sys.executable, "supervisor.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()

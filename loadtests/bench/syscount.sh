#!/bin/bash
# System calls a connection of a 2-worker webcluster under wrk Connection: close (BENCHMARKS.md, fourteenth
# pass), counted by `perf stat` tracepoints, which, unlike `strace` (syscalls.sh), do not slow the worker
# down and so do not change when requests arrive relative to accepts.
# usage: loadtests/bench/syscount.sh PORT [EXTRA SUPERVISOR FLAGS...]   (from the repository root; needs perf
# (apt-get install linux-perf), wrk, curl, nstat (iproute2); root). Divide each count by sendto (one per
# response). Also prints the TCP segments a connection over the same seconds (nstat).
set -eu
PORT=$1; shift
python supervisor.py --procs 2 --threads 32 --app hello:app --chdir loadtests \
    --bind "127.0.0.1:$PORT" --admin off "$@" > /dev/null 2>&1 &
SUP=$!
trap 'kill $SUP 2>/dev/null; wait $SUP 2>/dev/null' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
WORKERS=$(pgrep -P $SUP | paste -sd,)
wrk -t1 -c64 -d2s -H "Connection: close" "http://127.0.0.1:$PORT/" > /dev/null
wrk -t1 -c64 -d8s -H "Connection: close" "http://127.0.0.1:$PORT/" > /dev/null &
WRK=$!
sleep 1
EVENTS=""
for call in accept4 recvfrom sendto epoll_ctl epoll_wait close ioctl getsockname futex; do
    EVENTS="$EVENTS,syscalls:sys_enter_$call"
done
nstat -n > /dev/null  # TCP segments over the same 5 s (both ends: the loopback counts client and server)
perf stat -e "${EVENTS#,}" -p "$WORKERS" -- sleep 5 2>&1 | grep -E "syscalls|elapsed"
nstat TcpOutSegs TcpPassiveOpens | awk '/TcpOutSegs/ {s = $2} /TcpPassiveOpens/ {c = $2}
    END {printf "%d connections, %.2f TCP segments a connection (both directions)\n", c, s / c}'
wait $WRK

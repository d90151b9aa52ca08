#!/bin/bash
# Syscalls per request of one webcluster worker under wrk (BENCHMARKS.md, "Where the time goes").
# usage: loadtests/bench/syscalls.sh PORT [THREADS] [close]    (from the repository root; needs strace, wrk)
# Starts one worker, warms it up, runs wrk -t1 -c64 for 8 s and attaches `strace -c -f` to the worker for
# 5 s of it; prints strace's table. Divide each count by the sendto calls (one per hello response).
set -eu
PORT=$1; THREADS=${2:-32}; HDR=(); [ "${3:-}" = close ] && HDR=(-H "Connection: close")
python supervisor.py --procs 1 --threads "$THREADS" --app hello:app --chdir loadtests \
    --bind "127.0.0.1:$PORT" --admin off > /dev/null 2>&1 &
SUP=$!
trap 'kill $SUP 2>/dev/null; wait $SUP 2>/dev/null' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
WORKER=$(pgrep -P $SUP | head -1)
wrk -t1 -c64 -d2s "${HDR[@]}" "http://127.0.0.1:$PORT/" > /dev/null
wrk -t1 -c64 -d8s "${HDR[@]}" "http://127.0.0.1:$PORT/" > /dev/null &
WRK=$!
sleep 1
OUT=$(mktemp)
timeout -s INT 5 strace -c -f -q -p "$WORKER" -o "$OUT" || true
wait $WRK
cat "$OUT"
rm -f "$OUT"

"""The fleet run's summary: what Locust sent, what HAProxy counted, what each host counted, and whether
the three agree. Pure functions over the run's files and records (tested without processes).

How the numbers add up: every request Locust sends reaches HAProxy's frontend (``req_tot``); HAProxy
forwards it to one host, which counts it in its /stats once answered. A host's count is summed over its
lives (a restart starts the supervisor's counters from zero): the total a stopped supervisor logs at exit,
or, for a life that crashed or still runs, the runner's last reading of its /stats.
So with no failure ``Locust == HAProxy frontend == sum over hosts``, exactly. A request cut off by a
host crash may have been counted by neither the host (its last reading died with it) nor answered; a
crash also loses that host's requests since the runner's last /stats reading, so then hosts <= HAProxy.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from loadtests.report import classify, per_request_rows

REPORT_LAG_S = 3.0  # a failure reaches Locust's history CSV within ~2 s (worker report + CSV flush)


def _int(row: dict[str, str], key: str) -> int:
    try:
        return int(float(row.get(key) or 0))
    except ValueError:
        return 0


def failures_after(history: list[dict[str, str]], when: float) -> int:
    """Failures Locust recorded later than ``when`` (unix time) plus the reporting lag."""
    rows = [r for r in history if r.get("Name") == "Aggregated"]
    if not rows:
        return 0
    final = _int(rows[-1], "Total Failure Count")
    before = [r for r in rows if float(r["Timestamp"]) <= when + REPORT_LAG_S]
    return final - (_int(before[-1], "Total Failure Count") if before else 0)


def crash_checks(
    faults: list[dict[str, Any]], history: list[dict[str, str]], load_start: float, failures: int
) -> list[dict[str, Any]]:
    """For each crash: the requests HAProxy lost on the crashed host, the connections the host held when
    killed, the failure bound (the larger of the two), when it was marked down (against inter x fall)
    and the failures after.

    Both counts bound the loss, and neither is always the larger. HAProxy's (``eresp`` + ``econ``)
    misses one case: a request it sends on a pooled idle connection that the kill reset before any
    response byte gets no 502; HAProxy closes the client's connection without a response, as after a
    keep-alive race, so the client may retry, and none of that server's counters moves (seen once in CI:
    one ``RemoteDisconnected`` at the crash, h3's eresp, econ and srv_abrt all 0). Every lost request
    was on a connection the host held, so that count bounds it from the host's side."""
    out = []
    for crash in (f for f in faults if f["kind"] == "crash"):
        down = next((f for f in faults if f["kind"] == "marked_down" and f["host"] == crash["host"]
                     and f["t"] >= crash["t"]), {})  # fmt: skip
        in_flight = down.get("in_flight", 0)
        bound = max(in_flight, crash.get("connections_held") or 0)
        down_at = load_start + crash["t"] + down["after_s"] if down.get("after_s") else None
        out.append({
            "host": crash["host"],
            "in_flight": in_flight,
            "connections_held": crash.get("connections_held"),
            "failures": failures,
            "failure_bound": bound,
            "failures_within_bound": failures <= bound,
            "marked_down_after_s": down.get("after_s"),
            "bound_s": down.get("bound_s"),
            "failures_after_marked_down": failures_after(history, down_at) if down_at else None,
        })  # fmt: skip
    return out


def summarize(
    *,
    stats_rows: list[dict[str, str]],
    failure_rows: list[dict[str, str]],
    history: list[dict[str, str]],
    haproxy: dict[str, Any],
    hosts: dict[str, dict[str, Any]],
    faults: list[dict[str, Any]],
    load_start: float,
    duration_s: float,
) -> dict[str, Any]:
    """The summary document (summary.json)."""
    agg = next((r for r in stats_rows if r.get("Name") == "Aggregated"), {})
    requests, failures = _int(agg, "Request Count"), _int(agg, "Failure Count")
    kinds: Counter[str] = Counter()
    for row in failure_rows:
        kinds[classify(row.get("Error", ""))] += _int(row, "Occurrences")
    hosts_sum = sum(h["requests"] for h in hosts.values())
    front = haproxy.get("frontend_requests")
    crashed = any(f["kind"] == "crash" for f in faults)
    exact = requests == front == hosts_sum
    if exact:
        verdict = "exact: Locust = HAProxy = sum over hosts"
    elif (
        crashed
        and front is not None
        and abs(front - requests) <= failures <= requests
        and (hosts_sum <= front)
    ):
        verdict = (f"consistent with the crash: Locust {requests}, HAProxy {front} (differ by at most "
                   f"the {failures} broken requests), hosts {front - hosts_sum} short (a crashed "
                   "host's counts since the runner's last /stats reading died with it)")  # fmt: skip
    else:
        verdict = f"MISMATCH: Locust {requests}, HAProxy {front}, hosts {hosts_sum}"
    return {
        "duration_s": round(duration_s, 1),
        "requests": requests,
        "failures": failures,
        "failures_by_kind": dict(kinds),
        "rps": round(requests / duration_s, 1) if duration_s else None,
        "p50_ms": _int(agg, "50%"),
        "p95_ms": _int(agg, "95%"),
        "p99_ms": _int(agg, "99%"),
        "by_request": per_request_rows(stats_rows),
        "failure_rows": failure_rows,
        "hosts": hosts,
        "hosts_sum": hosts_sum,
        "haproxy": haproxy,
        "counts_agree": exact,
        "agreement": verdict,
        "faults": faults,
        "crashes": crash_checks(faults, history, load_start, failures),
    }


def render_markdown(s: dict[str, Any]) -> str:
    """Tables for the README and summary.md."""
    lines = [
        f"**{s['requests']:,} requests in {s['duration_s']:g} s ({s['rps']} req/s), "
        f"p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms, "
        f"{s['failures']} failed** ({_kinds(s['failures_by_kind'])}).",
        "",
        "| Request | Requests | Failures | p50 | p95 | p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in s["by_request"]:
        lines.append(f"| `{r['name']}` | {r['requests']} | {r['failures']} | {r['p50_ms']} ms "
                     f"| {r['p95_ms']} ms | {r['p99_ms']} ms |")  # fmt: skip
    lines += ["", "| Counted by | Requests |", "|---|---:|",
              f"| Locust (sent) | {s['requests']} |",
              f"| HAProxy frontend (`req_tot`) | {s['haproxy'].get('frontend_requests')} |",
              f"| HAProxy, responses from the hosts | {s['haproxy'].get('server_responses')} |"]  # fmt: skip
    for name, h in sorted(s["hosts"].items()):
        lives = "+".join(str(n) for n in h["lives"])
        lines.append(f"| host {name} (/stats, per life: {lives}) | {h['requests']} |")
    lines += [f"| **sum over hosts** | **{s['hosts_sum']}** |", "", f"Counts: {s['agreement']}."]
    if s["crashes"]:
        lines.append("")
        for c in s["crashes"]:
            lines.append(
                f"Crash of {c['host']}: {c['failures']} failed, bound {c['failure_bound']} (HAProxy lost "
                f"{c['in_flight']} requests on it; it held {c['connections_held']} connections at the "
                f"kill); marked down after {c['marked_down_after_s']} s (inter x fall = "
                f"{c['bound_s']} s); {c['failures_after_marked_down']} failures after that."
            )
    return "\n".join(lines) + "\n"


def render_text(s: dict[str, Any]) -> str:
    return render_markdown(s).replace("**", "").replace("`", "")


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"

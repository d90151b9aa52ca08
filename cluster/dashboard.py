"""The admin dashboard: one self-contained HTML page (inline CSS, inline JS drawing inline SVG).

It loads nothing from anywhere else (the admin server also sends a Content-Security-Policy that forbids
it) and polls ``stats`` (the /stats JSON of cluster.snapshot.StatsSnapshot.to_dict) once a second.
Hooks for tests: worker rows are ``<tr data-pid=... data-slot=...>`` in ``#workers``; the charts are
``svg#chart-rps`` and ``svg#chart-latency`` with ``data-points`` / ``data-last-t`` / ``data-scale`` /
``data-plot-top`` / ``data-plot-bottom``, one ``path[data-series]`` per series and a
``circle[data-series]`` for each point without neighbours; ``body[data-updates]`` counts successful
refreshes, and ``body[data-scroll-width]`` / ``body[data-client-width]`` tell whether the page scrolls
sideways, ``body[data-table-overflow]`` by how many pixels the workers table is wider than its card.

The latency chart is on a log scale (whole decades around the data): a p50 of 1 ms and a p99 of 2 s
both stay readable, where a linear axis sized to the outlier flattens the median onto the floor.

Kept as a Python string so it ships inside the package without package-data configuration.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>webcluster</title>
<style>
:root { --bg:#f4f6f9; --card:#fff; --ink:#1d2430; --muted:#6b7585; --line:#e3e7ee;
        --accent:#2f6fde; --p50:#2f9e6b; --p95:#e0a100; --p99:#d9483b; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       background:var(--bg); color:var(--ink); }
header { display:flex; align-items:center; gap:12px; padding:12px 24px; background:#1d2430; color:#fff; }
header h1 { font-size:18px; margin:0; font-weight:600; letter-spacing:.3px; }
#status { margin-left:auto; font-size:12px; color:#c6cede; }
#status::before { content:""; display:inline-block; width:8px; height:8px; border-radius:50%;
                  margin-right:6px; background:#888; vertical-align:middle; }
#status.ok::before { background:#3cc47c; } #status.err::before { background:#e5534b; }
main { padding:20px 24px; max-width:1400px; margin:0 auto; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(128px,1fr)); gap:12px; }
.tile, .card { background:var(--card); border:1px solid var(--line); border-radius:8px; }
.tile { padding:12px 14px; }
.tile .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.5px; }
.tile .value { font-size:22px; font-weight:600; margin-top:2px; font-variant-numeric:tabular-nums;
               white-space:nowrap; }
.tile .sub { font-size:13px; font-weight:400; color:var(--muted); margin-left:4px; }
.charts { display:grid; grid-template-columns:repeat(auto-fit,minmax(min(520px,100%),1fr)); gap:12px; margin:16px 0; }
.card { padding:12px 14px; }
.card h2 { font-size:14px; margin:0 0 6px; font-weight:600; }
.legend { font-size:12px; color:var(--muted); margin-left:8px; font-weight:400; }
.legend i { display:inline-block; width:10px; height:3px; margin:0 4px 3px 10px; vertical-align:middle; }
svg.chart { width:100%; height:auto; display:block; }
svg.chart text { font-size:11px; fill:var(--muted); }
svg.chart .grid { stroke:var(--line); stroke-width:1; }
svg.chart .grid.minor { stroke-dasharray:2 3; }
svg.chart path { fill:none; stroke-width:2; stroke-linejoin:round; }
svg.chart path.area { stroke:none; fill:var(--accent); fill-opacity:.12; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { padding:6px 8px; text-align:right; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:500; font-size:11px; text-transform:uppercase; letter-spacing:.3px;
     white-space:normal; vertical-align:bottom; }
.table-wrap { overflow-x:auto; }  /* many workers or huge numbers scroll the table, never the page */
@media (max-width: 1100px) {
  main { padding:16px 12px; }
  header { padding:10px 12px; }
  table { font-size:13px; }
  th, td { padding:5px 5px; }
}
th:nth-child(4), td:nth-child(4) { text-align:left; }
tbody tr:hover { background:#f8fafc; }
.state { padding:1px 8px; border-radius:10px; font-size:12px; background:#e8ecf3; }
.state-running { background:#dff5e9; color:#17663f; }
.state-booting { background:#e3edff; color:#214f9e; }
.state-retiring, .state-draining, .state-stopping { background:#fff3d6; color:#805b00; }
.state-boot_error { background:#fde2e0; color:#9e2a22; }
.empty { color:var(--muted); text-align:center; padding:18px; }
</style>
</head>
<body data-updates="0">
<header><h1>webcluster</h1><span id="status">connecting…</span></header>
<main>
<section class="tiles">
  <div class="tile"><div class="label">Requests / s</div><div class="value" id="t-rps">–</div></div>
  <div class="tile"><div class="label">p95 latency</div><div class="value" id="t-p95">–</div></div>
  <div class="tile"><div class="label">Workers</div><div class="value" id="t-workers">–</div></div>
  <div class="tile"><div class="label">Generation</div><div class="value" id="t-gen">–</div></div>
  <div class="tile"><div class="label">Uptime</div><div class="value" id="t-uptime">–</div></div>
  <div class="tile"><div class="label">Requests</div><div class="value" id="t-requests">–</div></div>
  <div class="tile"><div class="label">5xx</div><div class="value" id="t-errors">–</div></div>
  <div class="tile"><div class="label">Connections</div><div class="value"><span id="t-conns">–</span><span class="sub" id="t-idle"></span></div></div>
  <div class="tile"><div class="label">Memory (RSS)</div><div class="value" id="t-rss">–</div></div>
</section>
<section class="charts">
  <div class="card"><h2>Requests / s</h2>
    <svg class="chart" id="chart-rps" viewBox="0 0 640 220" role="img" aria-label="requests per second"></svg></div>
  <div class="card"><h2>Latency <small class="legend">(log scale)</small><span class="legend"><i style="background:var(--p50)"></i>p50
    <i style="background:var(--p95)"></i>p95<i style="background:var(--p99)"></i>p99</span></h2>
    <svg class="chart" id="chart-latency" viewBox="0 0 640 220" role="img" aria-label="latency"></svg></div>
</section>
<section class="card">
  <h2>Workers</h2>
  <div class="table-wrap"><table id="workers">
    <thead><tr><th>Slot</th><th>PID</th><th>Gen</th><th>State</th><th>Requests</th><th>Req/s</th>
      <th>Busy threads</th><th>Connections</th><th>RSS</th><th>CPU</th><th>FDs</th><th>Restarts</th>
      <th>Heartbeat</th></tr></thead>
    <tbody><tr><td class="empty" colspan="13">waiting for data…</td></tr></tbody>
  </table></div>
</section>
<noscript><p>This dashboard needs JavaScript; the data is at <a href="stats">/stats</a>.</p></noscript>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
const DASH = "\\u2013";

function fmtNum(n) {
  if (n == null) return DASH;
  if (n >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n));
}
function fmtRate(r) { return r == null ? DASH : r >= 100 ? r.toFixed(0) : r.toFixed(1); }
function fmtDur(s) {
  if (s == null) return DASH;
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " \\u00b5s";
  if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms";
  return s.toFixed(2) + " s";
}
function fmtTick(s) { return fmtDur(s).replace(/\\.0+(?= )/, ""); }  // "1 ms", not "1.00 ms"
function fmtBytes(b) {
  if (!b) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return b.toFixed(i && b < 100 ? 1 : 0) + " " + units[i];
}
function fmtUptime(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60), sec = s % 60;
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + sec + "s" : sec + "s";
}

function renderTiles(st) {
  const t = st.totals;
  $("t-rps").textContent = fmtRate(t.requests_per_s);
  $("t-p95").textContent = fmtDur(t.p95_s);
  $("t-workers").textContent = String(t.workers);
  $("t-gen").textContent = String(st.generation);
  $("t-uptime").textContent = fmtUptime(st.uptime_s);
  $("t-requests").textContent = fmtNum(t.requests);
  $("t-errors").textContent = fmtNum(t.status["5xx"]);
  $("t-conns").textContent = String(t.active_connections);
  $("t-idle").textContent = "+ " + t.idle_connections + " idle";
  $("t-rss").textContent = fmtBytes(t.rss_bytes);
}

const COLUMNS = [
  (w) => w.slot, (w) => w.pid, (w) => w.generation, null,
  (w) => fmtNum(w.requests), (w) => fmtRate(w.requests_per_s),
  (w) => w.busy_threads + " / " + w.threads,
  (w) => w.active_connections + " + " + w.idle_connections + " idle",
  (w) => fmtBytes(w.rss_bytes), (w) => w.cpu_percent.toFixed(1) + " %", (w) => w.open_fds || DASH,
  (w) => w.restarts,
  (w) => w.heartbeat_age_s == null ? DASH : w.heartbeat_age_s.toFixed(1) + " s",
];

function renderWorkers(workers) {
  const body = document.createElement("tbody");
  for (const w of workers) {
    const tr = body.insertRow();
    tr.dataset.pid = w.pid;
    tr.dataset.slot = w.slot;
    for (const col of COLUMNS) {
      const td = tr.insertCell();
      if (col === null) {
        const pill = document.createElement("span");
        pill.className = "state state-" + w.state;
        pill.textContent = w.state;
        td.appendChild(pill);
      } else {
        td.textContent = String(col(w));
      }
    }
  }
  if (!workers.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = COLUMNS.length; td.className = "empty"; td.textContent = "no live workers";
  }
  $("workers").tBodies[0].replaceWith(body);
}

function niceMax(v, floor) {
  if (!(v > floor)) return floor;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Vertical scales: y(v) maps a value to a pixel row, ticks() gives [value, label, major] grid lines.
function linearScale(vmax, floor, fmt, top, bottom) {
  const ymax = niceMax(vmax, floor);
  const y = (v) => top + (1 - v / ymax) * (bottom - top);
  const ticks = [0, 1, 2, 3, 4].map((i) => [ymax * i / 4, i ? fmt(ymax * i / 4) : "0", true]);
  return {y: y, ticks: ticks, min: 0, max: ymax};
}
// Whole decades around the data (at least one), so a 1 ms median and a 2 s outlier both show.
function logScale(vmin, vmax, fmt, top, bottom) {
  const lo = Math.floor(Math.log10(Math.max(vmin, 1e-6)));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(vmax, 1e-6))));
  const y = (v) => top + (1 - (Math.log10(Math.max(v, Math.pow(10, lo))) - lo) / (hi - lo)) *
                   (bottom - top);
  const ticks = [];
  for (let d = lo; d <= hi; d++) {
    ticks.push([Math.pow(10, d), fmt(Math.pow(10, d)), true]);
    if (d < hi && hi - lo <= 3) {  // few decades: 2x and 5x lines too
      for (const m of [2, 5]) ticks.push([m * Math.pow(10, d), hi - lo <= 1 ? fmt(m * Math.pow(10, d)) : "", false]);
    }
  }
  return {y: y, ticks: ticks, min: Math.pow(10, lo), max: Math.pow(10, hi)};
}

// The runs of consecutive non-null values of one series, as arrays of [x, y].
function runs(history, key, x, y) {
  const out = [];
  let run = null;
  for (const p of history) {
    const v = p[key];
    if (v == null) { run = null; continue; }
    if (!run) out.push(run = []);
    run.push([x(p.t), y(v)]);
  }
  return out;
}

// Draw series (each {key, color}) of history points into svg; opts: {fmt, floor, area, log}.
function drawChart(svg, history, series, opts) {
  const W = 640, H = 220, L = 58, R = 10, T = 10, B = 24;
  svg.replaceChildren();
  if (!history.length) {
    svg.appendChild(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "waiting for data"));
    return;
  }
  const tmax = history[history.length - 1].t;
  const span = Math.max(60, tmax - history[0].t);
  let vmin = Infinity, vmax = 0;
  for (const p of history) for (const s of series) {
    const v = p[s.key];
    if (v != null) { vmax = Math.max(vmax, v); if (v > 0) vmin = Math.min(vmin, v); }
  }
  const scale = opts.log && vmax > 0 ? logScale(vmin, vmax, opts.fmt, T, H - B)
                                     : linearScale(vmax, opts.floor, opts.fmt, T, H - B);
  const x = (t) => L + (t - (tmax - span)) / span * (W - L - R);
  for (const [v, label, major] of scale.ticks) {
    const gy = scale.y(v).toFixed(1);
    svg.appendChild(el("line", {class: major ? "grid" : "grid minor", x1: L, x2: W - R, y1: gy, y2: gy}));
    if (label) svg.appendChild(el("text", {x: L - 6, y: +gy + 4, "text-anchor": "end"}, label));
  }
  for (let i = 0; i <= 4; i++) {
    const ago = span * (4 - i) / 4;
    const label = ago ? "-" + (ago >= 120 ? Math.round(ago / 60) + "m" : Math.round(ago) + "s") : "now";
    svg.appendChild(el("text", {x: x(tmax - ago), y: H - 6, "text-anchor": "middle"}, label));
  }
  const floorY = scale.y(scale.min).toFixed(1);
  for (const s of series) {
    const parts = runs(history, s.key, x, scale.y);
    const d = parts.map((run) => run.map((pt, i) => (i ? "L" : "M") + pt[0].toFixed(1) + "," +
                                             pt[1].toFixed(1)).join("")).join("");
    if (opts.area) {
      for (const run of parts) {
        if (run.length < 2) continue;
        const first = run[0][0].toFixed(1), last = run[run.length - 1][0].toFixed(1);
        svg.appendChild(el("path", {class: "area", d: "M" + first + "," + floorY +
          run.map((pt) => "L" + pt[0].toFixed(1) + "," + pt[1].toFixed(1)).join("") +
          "L" + last + "," + floorY + "Z"}));
      }
    }
    svg.appendChild(el("path", {d: d, stroke: s.color, "data-series": s.key}));
    for (const run of parts) {
      if (run.length !== 1) continue;  // a path of one move-to draws nothing: mark the point
      svg.appendChild(el("circle", {cx: run[0][0].toFixed(1), cy: run[0][1].toFixed(1), r: 3,
                                    fill: s.color, "data-series": s.key}));
    }
  }
  svg.dataset.points = history.length;
  svg.dataset.lastT = tmax;
  svg.dataset.scale = opts.log ? "log" : "linear";
  svg.dataset.plotTop = T;
  svg.dataset.plotBottom = H - B;
}

function render(st) {
  renderTiles(st);
  renderWorkers(st.workers);
  drawChart($("chart-rps"), st.history, [{key: "requests_per_s", color: "var(--accent)"}],
            {fmt: fmtRate, floor: 1, area: true, log: false});
  drawChart($("chart-latency"), st.history, [
    {key: "p50_s", color: "var(--p50)"}, {key: "p95_s", color: "var(--p95)"},
    {key: "p99_s", color: "var(--p99)"}], {fmt: fmtTick, floor: 0.001, area: false, log: true});
  // For the layout test: the page must not scroll sideways (at 900 px neither).
  const root = document.documentElement;
  document.body.dataset.scrollWidth = root.scrollWidth;
  document.body.dataset.clientWidth = root.clientWidth;
  const wrap = document.querySelector(".table-wrap");
  document.body.dataset.tableOverflow = wrap.scrollWidth - wrap.clientWidth;
}

function setStatus(ok, text) {
  const s = $("status");
  s.className = ok ? "ok" : "err";
  s.textContent = text;
}

async function poll() {
  try {
    const resp = await fetch("stats", {cache: "no-store"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    document.body.dataset.updates = Number(document.body.dataset.updates) + 1;
    setStatus(true, "live \\u00b7 " + new Date().toLocaleTimeString());
  } catch (err) {
    setStatus(false, "stale: " + err.message);
  } finally {
    setTimeout(poll, 1000);
  }
}
poll();
</script>
</body>
</html>
"""

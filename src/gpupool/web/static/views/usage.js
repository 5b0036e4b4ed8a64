// Usage: allocated GPU-hours over a window (last 24 h, 7 days, 30 days) by team, user or
// queue (GET /usage), the same over time as a stacked bar chart (GET /usage/series), each
// queue's allocation against its quota now (GET /queues), each GPU's allocated share now
// (GET /nodes), each GPU's utilisation over the last 6 hours and the idle holders now
// (GET /usage/gpus, from NVML). Users see their own team's usage, admins everyone's.

import { api, query } from "../api.js";
import { changeTracker, emptyRow, fill, gpus, h, td, when } from "../dom.js";
import { usageBar } from "./queues.js";
import { colours, hours, stackedChart } from "./usage_chart.js";

const WINDOWS = {
  "24h": { label: "Last 24 hours", seconds: 86400, step: 3600 },
  "7d": { label: "Last 7 days", seconds: 7 * 86400, step: 6 * 3600 },
  "30d": { label: "Last 30 days", seconds: 30 * 86400, step: 86400 },
};
const BY = { team: "Team", user: "User", queue: "Queue" };
const QUOTA_COLUMNS = ["Queue", "Used", "Quota", "Borrowed", "Allocation"];

/**
 * The window of whole buckets that ends with the bucket holding now: buckets start on the
 * local hour (or 6 hours, or midnight), so the chart's bars are hours and days, and the
 * table sums exactly what the chart draws.
 */
export function windowOf(choice, nowMs = Date.now()) {
  const { seconds, step } = WINDOWS[choice];
  const now = nowMs / 1000;
  const offset = -new Date(nowMs).getTimezoneOffset() * 60; // local time − UTC, in seconds
  const end = Math.floor((now + offset) / step) * step - offset + step;
  return { since: end - seconds, until: end, step };
}

const iso = (unix) => new Date(unix * 1000).toISOString();

function picker(id, options, chosen) {
  return h("select", { id, name: id },
    Object.entries(options).map(([value, o]) => h("option", { value, selected: value === chosen }, o.label || o)));
}

function reportRows(rows, label) {
  const total = rows.reduce((sum, r) => sum + r.gpu_seconds, 0);
  const [c0, c1, c2, c3, c4] = [label, "GPU-hours", "Used", "Jobs", "Share"];
  if (!rows.length) return [emptyRow(5, "No GPU usage in this window.")];
  return rows.map((r) => h("tr", { "data-testid": "usage-row", "data-key": r.key, "data-gpu-seconds": r.gpu_seconds,
    "data-jobs": r.jobs },
  td(c0, { class: "name" }, r.key),
  td(c1, { class: "num", "data-testid": "usage-hours", title: `${r.gpu_seconds} GPU-seconds` }, hours(r.gpu_seconds)),
  td(c2, { class: "num", "data-testid": "usage-used",
    title: r.gpu_seconds_used === null ? "not measured (no NVML utilisation)" : `${r.gpu_seconds_used} GPU-seconds used` },
  r.gpu_seconds_used === null ? "—" : hours(r.gpu_seconds_used)),
  td(c3, { class: "num" }, String(r.jobs)),
  td(c4, { class: "num" }, total > 0 ? `${((100 * r.gpu_seconds) / total).toFixed(1)}%` : "—")));
}

// One row of 5-minute cells per GPU, the last 6 hours, darker as the GPU computed more
// (GET /usage/gpus, from NVML).
function heatRows(heat) {
  const first = heat.buckets.length ? when(heat.buckets[0]) : "";
  return heat.gpus.map((g) => h("div", { class: "heat-row", "data-testid": "heat-row", "data-node": g.node, "data-gpu": g.gpu },
    h("span", { class: "heat-label" }, `${g.node} · GPU ${g.gpu}`),
    h("div", { class: "heat-cells", role: "img",
      "aria-label": `${g.node} GPU ${g.gpu}: utilisation per 5 minutes since ${first}` },
    g.utilization.map((u, i) => h("span", { class: u === null ? "heat-cell none" : "heat-cell",
      title: `${when(heat.buckets[i])}: ${u === null ? "no sample" : `${Math.round(100 * u)} %`}`,
      style: u === null ? {} : { background: `hsl(24 85% ${Math.round(96 - 56 * u)}%)` } })))));
}

function legend(keys, series, what) {
  const colour = colours(keys);
  return keys.map((k) => h("span", { class: "legend-item", "data-testid": "usage-legend-item", "data-key": k },
    h("span", { class: "swatch", style: { background: colour.get(k) } }),
    `${what} ${k} · ${hours(series.values[k].reduce((a, b) => a + b, 0))} GPU-h`));
}

function quotaRow(q) {
  const [c0, c1, c2, c3, c4] = QUOTA_COLUMNS;
  return h("tr", { "data-testid": "quota-row", "data-queue": q.name, "data-team": q.team },
    td(c0, { class: "name" }, q.name, q.team !== q.name ? h("div", { class: "hint" }, `team ${q.team}`) : null),
    td(c1, { class: "num", "data-testid": "quota-used" }, gpus(q.used_gpus)),
    td(c2, { class: "num", "data-testid": "quota-quota" }, gpus(q.quota_gpus)),
    td(c3, { class: "num", "data-testid": "quota-borrowed" }, gpus(q.borrowed_gpus)),
    td(c4, { class: "usage-quota-bar" }, usageBar(q)));
}

function gpuCell(node, gpu) {
  const share = Math.min(1000, gpu.allocated_milli) / 1000;
  const words = `${node.name} · GPU ${gpu.index} (${gpu.model}) · ${gpus(share)} of 1 allocated`
    + ` · ${gpu.jobs.length} job${gpu.jobs.length === 1 ? "" : "s"}`;
  return h("div", { class: share > 0.5 ? "gpu-cell busy" : "gpu-cell", role: "img", title: words, "aria-label": words,
    "data-testid": "gpu-cell", "data-node": node.name, "data-gpu": gpu.index, "data-share": gpus(share),
    style: { background: `hsl(212 62% ${Math.round(96 - 52 * share)}%)` } },
  h("span", { class: "gpu-cell-index" }, String(gpu.index)),
  h("span", { class: "gpu-cell-share" }, `${Math.round(100 * share)}%`));
}

export function mount(root, ctx) {
  const params = ctx.params;
  let choice = WINDOWS[params.get("window")] ? params.get("window") : "24h";
  let by = BY[params.get("by")] ? params.get("by") : "team";
  const windowPick = picker("usage-window", WINDOWS, choice);
  const byPick = picker("usage-by", BY, by);
  const reportTitle = h("h2", { id: "usage-report-title" });
  const span = h("p", { class: "hint", "data-testid": "usage-span" });
  const keyHead = h("th", { scope: "col" }, BY[by]);
  const body = h("tbody", {}, emptyRow(5, "Loading…"));
  const chartTitle = h("h2", { id: "usage-chart-title" });
  const chart = h("div", { class: "usage-chart-wrap" });
  const chartLegend = h("div", { class: "legend", "data-testid": "usage-legend" });
  const quotaBody = h("tbody", {}, emptyRow(QUOTA_COLUMNS.length, "Loading…"));
  const grid = h("div", { class: "gpu-grids", "data-testid": "gpu-grid" }, h("p", { class: "muted" }, "Loading…"));
  const heat = h("div", { class: "heat" }, h("p", { class: "muted" }, "Loading…"));
  const idleList = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const table = (testid, head, tbody) => h("div", { class: "table-wrap" }, h("table", { class: "table stack", "data-testid": testid },
    h("thead", {}, h("tr", {}, head)), tbody));
  const th = (c, num) => h("th", { scope: "col", class: num ? "num" : null }, c);

  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Usage"),
      h("p", { class: "muted" }, "Allocated GPU-hours: the GPUs each job held × the hours it held them "
        + "(a running job counts until now). You see your team's usage; an admin sees every team's.")),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Window", windowPick), h("label", {}, "Group by", byPick)),
    h("section", { class: "card", "aria-labelledby": "usage-report-title" }, reportTitle, span,
      table("usage-table", [keyHead, th("GPU-hours", true), th("Used", true), th("Jobs", true), th("Share", true)], body),
      h("p", { class: "hint" }, "Used: utilisation × GPUs × time, where NVML measures it (real GPUs); — where it "
        + "does not (e.g. fake GPUs).")),
    h("section", { class: "card", "aria-labelledby": "usage-chart-title" }, chartTitle, chart, chartLegend),
    h("section", { class: "card", "aria-labelledby": "usage-quota-title", "data-testid": "usage-quota" },
      h("h2", { id: "usage-quota-title" }, "Allocation vs quota now"),
      h("p", { class: "hint" }, "GPUs each queue's jobs hold now, its guaranteed quota, and what it borrows beyond it "
        + "(striped in the bar; the line marks the quota)."),
      table("quota-table", QUOTA_COLUMNS.map((c, i) => th(c, i > 0 && i < 4)), quotaBody)),
    h("section", { class: "card", "aria-labelledby": "usage-gpus-title" },
      h("h2", { id: "usage-gpus-title" }, "Allocation per GPU now"),
      h("p", { class: "hint", "data-testid": "gpu-grid-note" }, "Each cell is a GPU, darker as more of it is allocated. "
        + "This is allocation, not utilisation: what the GPUs compute is in the heat map below."),
      grid),
    h("section", { class: "card", "aria-labelledby": "usage-heat-title", "data-testid": "usage-heat" },
      h("h2", { id: "usage-heat-title" }, "GPU utilisation, last 6 hours"), heat),
    h("section", { class: "card", "aria-labelledby": "usage-idle-title", "data-testid": "usage-idle" },
      h("h2", { id: "usage-idle-title" }, "Idle GPU holders now"),
      h("p", { class: "hint" }, "Running jobs whose GPUs have shown under 5 % utilisation for the server's idle "
        + "window (30 minutes unless set otherwise)."), idleList));

  let changed = changeTracker();
  let latest = 0; // the newest refresh; an older one still in flight renders nothing

  async function refresh() {
    const mine = (latest += 1);
    const w = windowOf(choice);
    const range = { by, since: iso(w.since), until: iso(w.until) };
    const [rows, series, queues, nodes, gpuHeat] = await Promise.all([
      api(`usage${query(range)}`), api(`usage/series${query({ ...range, step_s: w.step })}`),
      api("queues"), api("nodes"), api("usage/gpus")]);
    if (mine !== latest) return;
    const what = by;
    if (changed("report", [what, choice, w.since, rows])) {
      fill(reportTitle, `GPU-hours by ${what}`);
      fill(span, `${WINDOWS[choice].label}: from ${when(iso(w.since))} to now.`);
      fill(keyHead, BY[what]);
      fill(body, reportRows(rows, BY[what]));
    }
    if (changed("series", [what, choice, series])) {
      // Stacked largest first (at the bottom), as the table lists them.
      const total = (k) => series.values[k].reduce((a, b) => a + b, 0);
      const keys = Object.keys(series.values).filter((k) => total(k) > 0)
        .sort((a, b) => total(b) - total(a) || a.localeCompare(b));
      const spanWords = WINDOWS[choice].label.toLowerCase();
      fill(chartTitle, `GPU-hours over time, per ${what}`);
      fill(chart, stackedChart(series, keys, what, spanWords));
      fill(chartLegend, legend(keys, series, what));
    }
    if (changed("queues", queues)) {
      fill(quotaBody, queues.length ? queues.map(quotaRow) : emptyRow(QUOTA_COLUMNS.length, "No queues you may see."));
    }
    renderHeat(gpuHeat);
    const cells = nodes.map((n) => [n.name, n.gpus.map((g) => [g.index, g.model, g.allocated_milli, g.jobs.length])]);
    if (changed("nodes", cells)) {
      const many = nodes.length > 1;
      fill(grid, nodes.some((n) => n.gpus.length)
        ? nodes.filter((n) => n.gpus.length).map((n) => h("div", { class: "gpu-grid-node" },
          many ? h("div", { class: "hint" }, n.name) : null,
          h("div", { class: "gpu-grid" }, n.gpus.map((g) => gpuCell(n, g)))))
        : h("p", { class: "muted" }, "No GPUs in the pool yet."));
    }
  }

  function renderHeat(gpuHeat) {
    if (!changed("heat", gpuHeat)) return;
    if (!gpuHeat.measured) {
      const words = "Not measured: utilisation comes from NVML, which this pool does not have (e.g. fake GPUs).";
      fill(heat, h("p", { class: "muted", "data-testid": "heat-note" }, words));
      fill(idleList, h("p", { class: "muted" }, words));
      return;
    }
    fill(heat, gpuHeat.gpus.length ? heatRows(gpuHeat) : h("p", { class: "muted", "data-testid": "heat-note" }, "No sample yet."));
    fill(idleList, gpuHeat.idle.length
      ? h("ul", {}, gpuHeat.idle.map((j) => h("li", { "data-testid": "idle-holder" },
        h("a", { href: `#/jobs/${j.job}` }, `job ${j.job}`), ` · team ${j.team}`)))
      : h("p", { class: "muted" }, "None: every running job's GPUs are busy."));
  }

  function choose() {
    choice = windowPick.value;
    by = byPick.value;
    const hash = `#/usage${query({ window: choice === "24h" ? "" : choice, by: by === "team" ? "" : by })}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    changed = changeTracker(); // render the new choice even if it equals an older one
    fill(body, emptyRow(5, "Loading…"));
    refresh().catch((err) => ctx.showBanner(err.message));
  }
  windowPick.addEventListener("change", choose);
  byPick.addEventListener("change", choose);

  return { title: "Usage", refresh, interval: 10000 };
}

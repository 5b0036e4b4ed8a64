// Simulator: compare scheduling policies on a trace in the FGD protocol (tasks arrive until
// `tune` × the cluster's GPUs have been asked for). Trace files live in the data dir's
// traces/ folder; they can be uploaded here (the API checks every row and names the first
// bad one). A run is polled every second until it is done; its result is drawn as an inline
// SVG chart of unallocated GPUs against arrived demand, and summed up in a table.

import { ApiError, api, getToken } from "../api.js";
import { bytes, changeTracker, fill, formatCount, h, td, timeCell } from "../dom.js";

/** Policies offered as checkboxes, as the API's SimRunCreate lists them (its OpenAPI enum;
 * the API has the last word and its message is shown). */
export const POLICIES = ["random", "dotprod", "clustering", "packing", "bestfit", "fgd", "binpack", "spread", "gpupool"];
/** Ticked at first: gpupool's own policy (what `gpupool up` schedules with) against the FGD
 * paper's two strongest. */
const DEFAULT_POLICIES = new Set(["bestfit", "fgd", "gpupool"]);
const COLOURS = {
  random: "#8a94a3", dotprod: "#e07b00", clustering: "#8e44ad", packing: "#0f9bb0", bestfit: "#2f62d8",
  fgd: "#d0342c", binpack: "#1f8a4c", spread: "#a0652a", gpupool: "#18202c",
};
const EXTRA_COLOURS = ["#c2185b", "#5c6bc0", "#00897b", "#6d4c41"];
const SYNTHETIC = "synthetic";
const FINAL = new Set(["done", "failed"]);
const X_MIN = 70;
const X_MAX = 130;
const TABLE_AT = [90, 95, 100, 110, 130];
const SVG = "http://www.w3.org/2000/svg";
const RUNS_SHOWN = 10;

function colour(policy, index) {
  return COLOURS[policy] || EXTRA_COLOURS[index % EXTRA_COLOURS.length];
}

/** An SVG element; attributes only (presentation attributes, never inline styles: CSP). */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function pct(value, digits = 1) {
  return value === null || value === undefined || !Number.isFinite(Number(value)) ? "—" : Number(value).toFixed(digits);
}

function traceLabel(request) {
  return request.nodes === SYNTHETIC ? `synthetic (scale ${request.scale})` : `${request.nodes} + ${request.pods}`;
}

/** PUT a file's bytes as the raw body; resolves to the TraceFile, rejects with ApiError. */
async function uploadTrace(file) {
  const url = new URL(`api/v1/sim/traces/${encodeURIComponent(file.name)}`, document.baseURI);
  const headers = { Accept: "application/json", "Content-Type": "text/csv" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, { method: "PUT", headers, body: file, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `cannot reach the gpupool server (${err.message})`);
  }
  let data = null;
  try {
    data = JSON.parse(await response.text());
  } catch {
    data = null;
  }
  if (!response.ok) {
    let detail = `the server answered HTTP ${response.status}`;
    if (data && typeof data.detail === "string") detail = data.detail;
    else if (data && Array.isArray(data.detail)) detail = data.detail.map((d) => (d && d.msg) || String(d)).join("; ");
    if (response.status === 401) window.dispatchEvent(new CustomEvent("gpupool:unauthorized", { detail }));
    throw new ApiError(response.status, detail);
  }
  return data;
}

// ---- the chart --------------------------------------------------------------------------

function niceStep(span, ticks) {
  const raw = span / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

/** The points (x, y) of one bucketed curve within X_MIN..X_MAX, nulls left out. */
function points(curve) {
  const out = [];
  for (let x = X_MIN; x <= X_MAX; x += 1) {
    const v = curve ? curve[String(x)] : null;
    if (v !== null && v !== undefined && Number.isFinite(Number(v))) out.push([x, Number(v)]);
  }
  return out;
}

/**
 * An SVG line chart of unallocated GPU % against arrived demand %, one line per policy and
 * the dashed ideal y = max(0, 100 − x). Its viewBox follows the width it is drawn at, so
 * text keeps about its CSS size on a laptop and on a phone.
 */
export function chart(policies, width) {
  const W = Math.round(Math.max(300, Math.min(width || 640, 900)));
  const narrow = W < 480;
  const H = Math.round(Math.max(240, Math.min(W * (narrow ? 0.8 : 0.56), 400)));
  const m = { left: narrow ? 40 : 52, right: 16, top: 12, bottom: narrow ? 40 : 46 };
  const lines = Object.entries(policies).map(([name, p], i) => ({ name, colour: colour(name, i), pts: points(p.unallocated_gpu_pct) }));
  const highest = Math.max(100 - X_MIN, ...lines.flatMap((l) => l.pts.map(([, y]) => y)));
  const yStep = niceStep(highest, narrow ? 4 : 6);
  const yMax = Math.ceil(highest / yStep) * yStep;
  const px = (x) => m.left + ((x - X_MIN) / (X_MAX - X_MIN)) * (W - m.left - m.right);
  const py = (y) => m.top + (1 - y / yMax) * (H - m.top - m.bottom);
  const path = (pts) => pts.map(([x, y], i) => `${i ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "sim-chart", role: "img", "data-testid": "sim-chart",
    "aria-label": `Unallocated GPUs (%) against arrived GPU demand (% of the cluster) for ${lines.map((l) => l.name).join(", ")}`,
  });
  const grid = s("g", { class: "sim-grid" });
  const axes = s("g", { class: "sim-axes" });
  for (let y = 0; y <= yMax + 1e-9; y += yStep) {
    grid.append(s("line", { x1: m.left, x2: W - m.right, y1: py(y), y2: py(y) }));
    axes.append(s("text", { x: m.left - 6, y: py(y), "text-anchor": "end", "dominant-baseline": "middle" }, String(Math.round(y * 10) / 10)));
  }
  for (let x = X_MIN; x <= X_MAX; x += 10) {
    grid.append(s("line", { x1: px(x), x2: px(x), y1: m.top, y2: H - m.bottom }));
    axes.append(s("line", { x1: px(x), x2: px(x), y1: H - m.bottom, y2: H - m.bottom + 4, class: "tick" }));
    axes.append(s("text", { x: px(x), y: H - m.bottom + 16, "text-anchor": "middle" }, String(x)));
  }
  axes.append(s("line", { x1: m.left, x2: W - m.right, y1: H - m.bottom, y2: H - m.bottom, class: "axis" }));
  axes.append(s("line", { x1: m.left, x2: m.left, y1: m.top, y2: H - m.bottom, class: "axis" }));
  axes.append(s("text", { x: (m.left + W - m.right) / 2, y: H - 6, "text-anchor": "middle", class: "sim-label" },
    narrow ? "Arrived GPU demand (% of GPUs)" : "Arrived GPU demand (% of the cluster's GPUs)"));
  const yMid = (m.top + H - m.bottom) / 2;
  axes.append(s("text", { x: 12, y: yMid, "text-anchor": "middle", "dominant-baseline": "middle", class: "sim-label",
    transform: `rotate(-90 12 ${yMid})` }, "Unallocated GPUs (%)"));
  svg.append(grid, axes);

  svg.append(s("path", { d: path([[X_MIN, 100 - X_MIN], [100, 0], [X_MAX, 0]]), class: "sim-ideal", fill: "none",
    stroke: "#5d6878", "stroke-width": 1.5, "stroke-dasharray": "6 4", "data-testid": "sim-ideal" },
  s("title", {}, "ideal: every arrived GPU allocated")));
  for (const line of lines) {
    if (!line.pts.length) continue;
    svg.append(s("path", { d: path(line.pts), class: "sim-line", fill: "none", stroke: line.colour, "stroke-width": 2.25,
      "stroke-linejoin": "round", "stroke-linecap": "round", "data-policy": line.name }, s("title", {}, line.name)));
    if (line.pts.length <= 25) {
      const dots = s("g", { fill: line.colour, class: "sim-dots" });
      for (const [x, y] of line.pts) dots.append(s("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 2.5 }));
      svg.append(dots);
    }
  }
  return svg;
}

function legend(policies) {
  return h("div", { class: "legend sim-legend", "data-testid": "sim-legend" },
    Object.entries(policies).map(([name, p], i) => h("span", { class: "legend-item", "data-policy": name },
      h("span", { class: "line-swatch", style: { "border-top-color": colour(name, i) } }),
      name, points(p.unallocated_gpu_pct).length ? null : h("span", { class: "muted" }, " (no data in 70–130 %)"))),
    h("span", { class: "legend-item" }, h("span", { class: "line-swatch ideal" }), "ideal (100 − arrived)"));
}

function resultTable(policies) {
  const names = Object.keys(policies);
  const best = TABLE_AT.map((x) => Math.min(...names.map((n) => policies[n].unallocated_gpu_pct[String(x)] ?? Infinity)));
  const head = [
    h("tr", {}, h("th", { rowspan: 2 }, "Policy"),
      h("th", { colspan: TABLE_AT.length, class: "group" }, "Unallocated GPUs (%) when arrived ="),
      h("th", { class: "num group" }, "Frag. (%)"), h("th", { rowspan: 2, class: "num" }, "Decisions/s"),
      h("th", { rowspan: 2, class: "num" }, "Failed tasks")),
    h("tr", {}, TABLE_AT.map((x) => h("th", { class: "num" }, `${x} %`)), h("th", { class: "num" }, "at 100 %")),
  ];
  const rows = names.map((name, i) => {
    const p = policies[name];
    return h("tr", { "data-policy": name },
      td("Policy", { class: "nowrap" }, h("span", { class: "line-swatch", style: { "border-top-color": colour(name, i) } }), " ", name),
      TABLE_AT.map((x, k) => {
        const v = p.unallocated_gpu_pct[String(x)];
        const isBest = names.length > 1 && v !== null && v !== undefined && v === best[k];
        return td(`Unalloc. @${x}%`, { class: "num" }, isBest ? h("strong", { class: "best" }, pct(v)) : pct(v));
      }),
      td("Frag. @100%", { class: "num" }, pct(p.frag_pct ? p.frag_pct["100"] : null)),
      td("Decisions/s", { class: "num" }, Number.isFinite(p.decisions_per_second) ? formatCount(Math.round(p.decisions_per_second)) : "—"),
      td("Failed tasks", { class: "num" }, formatCount(p.failed_tasks_mean)));
  });
  return [h("div", { class: "table-wrap" },
    h("table", { class: "table stack sim-table", "data-testid": "sim-table" }, h("thead", {}, head), h("tbody", {}, rows))),
  h("p", { class: "hint" }, "Unallocated GPUs when arrived = x %: GPUs left unallocated (% of the cluster) once tasks asking for x % of its GPUs have arrived; ",
    "lower is better, the best in bold. Frag. = fragmented GPU capacity (% of the cluster). Failed tasks: mean over seeds.")];
}

// ---- the view ---------------------------------------------------------------------------

export function mount(root, ctx) {
  const changed = changeTracker();
  const state = { traces: [], run: null, runId: ctx.params.get("run") || "", polled: 0, resultShown: "" };

  // Trace files: the list and the upload control.
  const upload = h("input", { id: "sim-upload", type: "file", accept: ".csv,text/csv", multiple: true });
  const uploadStatus = h("div", { class: "upload-status", role: "status", "aria-live": "polite", "data-testid": "upload-status" });
  const tracesBody = h("tbody", {}, h("tr", { class: "empty" }, h("td", { colspan: 4 }, "Loading…")));
  const tracesCard = h("section", { class: "card" },
    h("h2", {}, "Trace files"),
    h("p", { class: "hint" }, "openb CSV files in the data dir's traces/ folder: node lists (sn,cpu_milli,memory_mib,gpu,model) and pod lists (name,cpu_milli,memory_mib,num_gpu,gpu_milli,…)."),
    h("div", { class: "table-wrap" }, h("table", { class: "table stack", "data-testid": "sim-traces" },
      h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Kind"), h("th", { class: "num" }, "Rows"), h("th", { class: "num" }, "Size"))),
      tracesBody)),
    h("div", { class: "field upload" }, h("label", { for: "sim-upload" }, "Upload trace files"), upload,
      h("p", { class: "hint" }, "Each file is checked row by row; a bad one is not stored and the first problem is named.")),
    uploadStatus);

  // The run form.
  const synthetic = h("input", { type: "radio", name: "sim-trace", id: "sim-trace-synthetic", value: SYNTHETIC });
  const files = h("input", { type: "radio", name: "sim-trace", id: "sim-trace-files", value: "files" });
  const nodesSel = h("select", { id: "sim-nodes" });
  const podsSel = h("select", { id: "sim-pods" });
  const scale = h("input", { id: "sim-scale", type: "number", min: "0.01", max: "1", step: "0.05", value: "0.25", inputmode: "decimal" });
  const policyBoxes = POLICIES.map((p) => h("input", { type: "checkbox", id: `sim-policy-${p}`, value: p, checked: DEFAULT_POLICIES.has(p) }));
  const seeds = h("input", { id: "sim-seeds", type: "text", value: "42", autocomplete: "off", inputmode: "numeric", "aria-describedby": "sim-seeds-hint" });
  const tune = h("input", { id: "sim-tune", type: "number", min: "0", max: "3", step: "0.1", value: "1.3", inputmode: "decimal", "aria-describedby": "sim-tune-hint" });
  const runButton = h("button", { type: "submit", class: "button primary" }, "Run");
  const formStatus = h("p", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "sim-form-status" });
  const syntheticFields = h("div", { class: "row" }, h("div", { class: "field" }, h("label", { for: "sim-scale" }, "Synthetic cluster scale"), scale,
    h("p", { class: "hint" }, "1 = the openb cluster's size; smaller runs faster.")));
  const fileFields = h("div", { class: "row" },
    h("div", { class: "field" }, h("label", { for: "sim-nodes" }, "Node list"), nodesSel),
    h("div", { class: "field" }, h("label", { for: "sim-pods" }, "Pod list"), podsSel));
  const form = h("form", { class: "card sim-form", novalidate: true },
    h("h2", {}, "Run a comparison"),
    h("fieldset", { class: "choices" }, h("legend", {}, "Trace"),
      h("label", { class: "check" }, synthetic, "Synthetic (openb-like)"),
      h("label", { class: "check" }, files, "Trace files")),
    syntheticFields, fileFields,
    h("fieldset", { class: "choices" }, h("legend", {}, "Policies"),
      policyBoxes.map((box) => h("label", { class: "check" }, box, box.value))),
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "sim-seeds" }, "Seeds"), seeds,
        h("p", { class: "hint", id: "sim-seeds-hint" }, "Comma-separated; curves are averaged over seeds.")),
      h("div", { class: "field" }, h("label", { for: "sim-tune" }, "Tune"), tune,
        h("p", { class: "hint", id: "sim-tune-hint" }, "Tasks arrive until this × the cluster's GPUs are asked for."))),
    h("div", { class: "form-actions" }, runButton, formStatus));

  // The result and the earlier runs.
  const progress = h("progress", { max: "1", value: "0", hidden: true, "data-testid": "sim-progress" });
  const runStatus = h("p", { class: "run-status", role: "status", "aria-live": "polite", "data-testid": "sim-run-status" });
  const resultHead = h("p", { class: "muted sim-meta" });
  const chartWrap = h("div", { class: "sim-chart-wrap" });
  const legendWrap = h("div");
  const tableWrap = h("div");
  const resultCard = h("section", { class: "card sim-result", "data-testid": "sim-result", hidden: true },
    h("h2", {}, "Result"), resultHead, runStatus, progress, chartWrap, legendWrap, tableWrap);
  const runsBody = h("tbody", {});
  const runsCard = h("section", { class: "card" }, h("h2", {}, "Earlier runs"),
    h("p", { class: "hint" }, "Kept in the server's memory until it restarts."),
    h("div", { class: "table-wrap" }, h("table", { class: "table stack", "data-testid": "sim-runs" },
      h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Trace"), h("th", {}, "Policies"), h("th", {}, "Seeds"),
        h("th", {}, "Status"), h("th", {}, "Started"))),
      runsBody)));

  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Simulator"),
      h("p", { class: "muted" }, "Replay a trace under several scheduling policies (the FGD paper's protocol) and compare how many GPUs each leaves unallocated as demand grows.")),
    h("div", { class: "sim-top" }, form, tracesCard),
    resultCard, runsCard);

  function mode() {
    return files.checked ? "files" : SYNTHETIC;
  }
  function showMode() {
    syntheticFields.hidden = mode() !== SYNTHETIC;
    fileFields.hidden = mode() === SYNTHETIC;
  }
  synthetic.addEventListener("change", showMode);
  files.addEventListener("change", showMode);
  for (const sel of [nodesSel, podsSel]) sel.addEventListener("change", () => { files.checked = true; showMode(); });

  function fillSelect(sel, kind) {
    const keep = sel.value;
    const names = state.traces.filter((t) => t.kind === kind).map((t) => t.name);
    if (!names.length) fill(sel, h("option", { value: "" }, `(no ${kind} list yet: upload one)`));
    else fill(sel, names.map((n) => h("option", { value: n }, n)));
    if (names.includes(keep)) sel.value = keep;
  }

  function renderTraces() {
    fill(tracesBody, state.traces.length ? state.traces.map((t) => h("tr", { "data-trace": t.name },
      td("File", { class: "name" }, h("code", {}, t.name)), td("Kind", {}, t.kind === "nodes" ? "node list" : "pod list"),
      td("Rows", { class: "num" }, t.rows.toLocaleString()), td("Size", { class: "num" }, bytes(t.size_bytes))))
      : h("tr", { class: "empty" }, h("td", { colspan: 4 }, "No trace files yet: upload a node list and a pod list, or run the synthetic trace.")));
    fillSelect(nodesSel, "nodes");
    fillSelect(podsSel, "pods");
  }

  async function loadTraces() {
    const traces = await api("sim/traces");
    if (!changed("traces", traces)) return;
    state.traces = traces;
    renderTraces();
  }

  upload.addEventListener("change", async () => {
    const chosen = [...upload.files];
    if (!chosen.length) return;
    upload.disabled = true;
    const lines = [];
    fill(uploadStatus, h("p", { class: "muted" }, `Uploading ${chosen.length} file${chosen.length === 1 ? "" : "s"}…`));
    for (const file of chosen) {
      try {
        const t = await uploadTrace(file);
        lines.push(h("p", { class: "ok" }, `Stored ${t.name}: ${t.kind === "nodes" ? "node list" : "pod list"}, ${t.rows.toLocaleString()} rows.`));
        (t.kind === "nodes" ? nodesSel : podsSel).dataset.pick = t.name;
      } catch (err) {
        if (err.status === 401) return;
        lines.push(h("p", { class: "error", role: "alert" }, `${file.name} was not stored: ${err.message}`));
      }
    }
    upload.value = "";
    upload.disabled = false;
    fill(uploadStatus, lines);
    try {
      await loadTraces();
    } catch (err) {
      ctx.showBanner(err.message);
    }
    for (const sel of [nodesSel, podsSel]) {
      if (sel.dataset.pick && [...sel.options].some((o) => o.value === sel.dataset.pick)) {
        sel.value = sel.dataset.pick;
        files.checked = true;
      }
      delete sel.dataset.pick;
    }
    showMode();
  });

  function prefill(request) {
    if (request.nodes === SYNTHETIC) {
      synthetic.checked = true;
      scale.value = String(request.scale);
    } else {
      files.checked = true;
      for (const [sel, name] of [[nodesSel, request.nodes], [podsSel, request.pods]]) {
        if (![...sel.options].some((o) => o.value === name)) sel.append(h("option", { value: name }, name));
        sel.value = name;
      }
    }
    for (const box of policyBoxes) box.checked = request.policies.includes(box.value);
    seeds.value = request.seeds.join(", ");
    tune.value = String(request.tune);
    showMode();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formStatus.className = "form-status error";
    const policies = policyBoxes.filter((b) => b.checked).map((b) => b.value);
    if (!policies.length) {
      formStatus.textContent = "policies: tick at least one";
      return;
    }
    const parts = seeds.value.split(/[\s,]+/).filter(Boolean);
    if (!parts.length || parts.some((p) => !/^-?\d+$/.test(p))) {
      formStatus.textContent = "seeds: whole numbers separated by commas, e.g. 42, 7";
      seeds.focus();
      return;
    }
    const body = { policies, seeds: parts.map(Number), tune: Number(tune.value) };
    if (tune.value.trim() === "" || !Number.isFinite(body.tune)) {
      formStatus.textContent = "tune: a number such as 1.3";
      tune.focus();
      return;
    }
    if (mode() === SYNTHETIC) {
      body.nodes = SYNTHETIC;
      body.pods = SYNTHETIC;
      body.scale = Number(scale.value);
    } else {
      body.nodes = nodesSel.value;
      body.pods = podsSel.value;
      if (!body.nodes || !body.pods) {
        formStatus.textContent = "trace: upload a node list and a pod list first, or use the synthetic trace";
        return;
      }
    }
    runButton.disabled = true;
    formStatus.className = "form-status";
    formStatus.textContent = "Starting…";
    try {
      const run = await api("sim/runs", { method: "POST", body });
      formStatus.textContent = `Run ${run.id} started.`;
      history.replaceState(null, "", `#/sim?run=${encodeURIComponent(run.id)}`);
      showRun(run);
      await loadRuns();
    } catch (err) {
      formStatus.className = "form-status error";
      formStatus.textContent = `Not started: ${err.message}`;
    } finally {
      runButton.disabled = false;
    }
  });

  function drawChart() {
    const run = state.run;
    if (!run || !run.result) return;
    const width = chartWrap.clientWidth || 640;
    fill(chartWrap, chart(run.result.policies, width));
    state.chartWidth = width;
  }

  function showRun(run) {
    state.run = run;
    state.runId = run.id;
    resultCard.hidden = false;
    const req = run.request;
    const meta = run.result && run.result.meta;
    fill(resultHead, h("strong", {}, `Run ${run.id}`), ` · ${traceLabel(req)}`,
      meta ? ` · ${formatCount(meta.nodes)} nodes, ${formatCount(meta.gpus)} GPUs, ${formatCount(meta.tasks)} tasks` : "",
      ` · seeds ${req.seeds.join(", ")} · tune ${req.tune}`);
    progress.hidden = FINAL.has(run.status);
    progress.max = Math.max(1, run.runs_total);
    progress.value = run.runs_done;
    runStatus.className = `run-status status-${run.status}`;
    runStatus.dataset.status = run.status;
    if (run.status === "queued") runStatus.textContent = "Queued: waiting for the run before it to finish…";
    else if (run.status === "running") runStatus.textContent = `Running: ${run.runs_done} of ${run.runs_total} replays done…`;
    else if (run.status === "failed") runStatus.textContent = `Failed: ${run.error || "no reason given"}`;
    else runStatus.textContent = `Done: ${run.runs_total} replay${run.runs_total === 1 ? "" : "s"}${meta && meta.seconds !== undefined ? ` in ${meta.seconds} s` : ""}.`;
    const key = run.status === "done" ? `done-${run.id}` : "";
    if (key && state.resultShown !== key) {
      state.resultShown = key;
      drawChart();
      fill(legendWrap, legend(run.result.policies));
      fill(tableWrap, resultTable(run.result.policies));
    } else if (!key) {
      state.resultShown = "";
      fill(chartWrap);
      fill(legendWrap);
      fill(tableWrap);
    }
  }

  async function loadRun(id) {
    try {
      const run = await api(`sim/runs/${encodeURIComponent(id)}`);
      if (id === state.runId) showRun(run);
    } catch (err) {
      if (err.status !== 404) throw err;
      state.run = null;
      resultCard.hidden = false;
      fill(resultHead);
      progress.hidden = true;
      runStatus.className = "run-status status-failed";
      runStatus.textContent = `${err.message} (runs are lost when the server restarts).`;
      state.runId = "";
    }
  }

  function renderRuns(runs) {
    fill(runsBody, runs.length ? runs.slice(0, RUNS_SHOWN).map((run) => h("tr", { "data-run": run.id, class: run.id === state.runId ? "current" : "" },
      td("Run", {}, h("a", { href: `#/sim?run=${encodeURIComponent(run.id)}` }, `Run ${run.id}`)),
      td("Trace", { class: "name" }, traceLabel(run.request)),
      td("Policies", {}, run.request.policies.join(", ")),
      td("Seeds", {}, run.request.seeds.join(", ")),
      td("Status", {}, h("span", { class: `run-badge status-${run.status}` }, run.status === "running" ? `running ${run.runs_done}/${run.runs_total}` : run.status)),
      td("Started", { class: "nowrap" }, timeCell(run.created_at))))
      : h("tr", { class: "empty" }, h("td", { colspan: 6 }, "No runs yet.")));
  }

  async function loadRuns() {
    const runs = await api("sim/runs");
    if (changed("runs", [runs, state.runId])) renderRuns(runs);
  }

  let first = true;
  async function refresh() {
    state.polled += 1;
    const jobs = [loadRuns()];
    if (first || state.polled % 10 === 0) jobs.push(loadTraces());
    if (state.runId && (!state.run || state.run.id !== state.runId || !FINAL.has(state.run.status))) jobs.push(loadRun(state.runId));
    await Promise.all(jobs);
    if (first) {
      first = false;
      if (state.run) prefill(state.run.request);
    }
  }

  let resizeTimer = null;
  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (state.resultShown && Math.abs((chartWrap.clientWidth || 0) - (state.chartWidth || 0)) > 8) drawChart();
    }, 150);
  }
  window.addEventListener("resize", onResize);

  synthetic.checked = true;
  renderTraces();
  showMode();
  return {
    title: "Simulator",
    refresh,
    interval: 1000,
    unmount() {
      window.removeEventListener("resize", onResize);
      clearTimeout(resizeTimer);
    },
  };
}

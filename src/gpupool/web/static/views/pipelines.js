// Pipelines: the list of pipeline runs (#/pipelines) and one run (#/pipelines/N) with its DAG
// drawn as SVG — one column per dependency depth, an edge per dependency, every step
// coloured and labelled by its state — plus step details, a step's log, cancel and retry.
// Only the REST API is used; it masks secrets, and nothing here asks for their values.

import { api, apiPage } from "../api.js";
import { changeTracker, definitionList, emptyRow, errorBox, fill, h, td, timeCell } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";
const RUN_FINAL = new Set(["succeeded", "failed", "cancelled"]);
const STEP_FINAL = new Set(["succeeded", "failed", "skipped", "cancelled", "reused"]);
const BOX_W = 170;
const BOX_H = 46;
const GAP_X = 70;
const GAP_Y = 22;

function stateBadge(state) {
  return h("span", { class: `phase pstate-${state}`, "data-state": state }, state);
}

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Column (dependency depth) of every step: 0 without dependencies, else 1 + the deepest. */
export function depths(steps) {
  const byName = new Map(steps.map((st) => [st.name, st]));
  const depth = new Map();
  const visit = (name, seen) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0; // the server rejects cycles; never loop here anyway
    seen.add(name);
    const step = byName.get(name);
    const deps = step ? step.depends_on.filter((d) => byName.has(d)) : [];
    const d = deps.length ? 1 + Math.max(...deps.map((x) => visit(x, seen))) : 0;
    depth.set(name, d);
    return d;
  };
  for (const st of steps) visit(st.name, new Set());
  return depth;
}

function dagSvg(steps, selected, onSelect) {
  const depth = depths(steps);
  const columns = [];
  for (const st of steps) {
    const d = depth.get(st.name);
    (columns[d] ||= []).push(st);
  }
  const pos = new Map();
  columns.forEach((col, x) => col.forEach((st, y) => pos.set(st.name, {
    x: 10 + x * (BOX_W + GAP_X), y: 10 + y * (BOX_H + GAP_Y),
  })));
  const rows = Math.max(1, ...columns.map((c) => c.length));
  const width = 20 + columns.length * BOX_W + Math.max(0, columns.length - 1) * GAP_X;
  const height = 20 + rows * BOX_H + (rows - 1) * GAP_Y;
  const svg = s("svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": "Pipeline steps and their dependencies", "data-testid": "dag" });
  const marker = s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "dag-arrow" }));
  const defs = s("defs");
  defs.append(marker);
  svg.append(defs);
  for (const st of steps) {
    const to = pos.get(st.name);
    for (const dep of st.depends_on) {
      const from = pos.get(dep);
      if (!from) continue;
      const x1 = from.x + BOX_W;
      const y1 = from.y + BOX_H / 2;
      const x2 = to.x;
      const y2 = to.y + BOX_H / 2;
      const mid = (x1 + x2) / 2;
      svg.append(s("path", { class: "dag-edge", d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`,
        "marker-end": "url(#arrow)", "data-edge": `${dep}->${st.name}` }));
    }
  }
  for (const st of steps) {
    const p = pos.get(st.name);
    const g = s("g", { class: `dag-step pstate-${st.state}${st.name === selected ? " selected" : ""}`,
      transform: `translate(${p.x} ${p.y})`, tabindex: 0, role: "button",
      "data-step": st.name, "data-state": st.state, "aria-label": `step ${st.name}: ${st.state}` });
    g.append(s("rect", { width: BOX_W, height: BOX_H, rx: 7 }));
    g.append(s("text", { x: 10, y: 19, class: "dag-name" }, st.name.length > 20 ? `${st.name.slice(0, 19)}…` : st.name));
    const attempt = st.attempt > 1 ? ` · try ${st.attempt}` : "";
    g.append(s("text", { x: 10, y: 36, class: "dag-state" }, `${st.kind} · ${st.state}${attempt}`));
    g.addEventListener("click", () => onSelect(st.name));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") onSelect(st.name); });
    svg.append(g);
  }
  return svg;
}

function outputsText(outputs) {
  const keys = Object.keys(outputs || {});
  if (!keys.length) return "—";
  return keys.sort().map((k) => {
    const v = outputs[k];
    const text = typeof v === "string" ? v : JSON.stringify(v);
    return `${k} = ${text.length > 120 ? `${text.slice(0, 119)}…` : text}`;
  }).join("\n");
}

// ---- one run ------------------------------------------------------------------------------

function mountRun(root, ctx) {
  const id = ctx.match[1];
  const heading = h("h1", {}, `Pipeline run ${id}`);
  const badge = h("span", { class: "phase-slot", "data-testid": "run-state" });
  const actions = h("div", { class: "actions" });
  const message = h("div", { class: "action-status", role: "status", "aria-live": "polite" });
  const graph = h("div", { class: "dag-wrap" });
  const facts = h("div", { class: "grid" });
  const stepBox = h("section", { class: "card", "data-testid": "step-detail" });
  const logPre = h("pre", { class: "log", "data-testid": "step-log", tabindex: "0", "aria-label": "Step log" });
  fill(root,
    h("p", { class: "crumbs" }, h("a", { href: "#/pipelines" }, "← all pipeline runs")),
    h("div", { class: "view-head" }, h("div", { class: "title-row" }, heading, badge), actions),
    message,
    h("section", { class: "card" }, h("h2", {}, "Steps"), graph),
    stepBox, facts);

  let run = null;
  let selected = null;
  let gone = false;
  let confirming = false;
  const changed = changeTracker();

  async function act(what) {
    confirming = false;
    fill(actions, h("span", { class: "muted" }, what === "cancel" ? "Cancelling…" : "Retrying…"));
    try {
      const result = await api(`pipeline-runs/${id}/${what}`, { method: "POST" });
      message.className = "action-status ok";
      if (what === "retry") {
        message.textContent = `Retried as run ${result.id}.`;
        ctx.navigate(`#/pipelines/${result.id}`);
        return;
      }
      message.textContent = "Cancel requested.";
      run = result;
      render();
    } catch (err) {
      message.className = "action-status error";
      message.textContent = `${what === "cancel" ? "Cancel" : "Retry"} refused: ${err.message}`;
      renderActions();
    }
  }

  function renderActions() {
    if (!run) return;
    if (!RUN_FINAL.has(run.state) && !confirming) {
      fill(actions, h("button", { type: "button", class: "button danger", id: "cancel-run",
        onclick: () => { confirming = true; renderActions(); } }, "Cancel run"));
    } else if (!RUN_FINAL.has(run.state)) {
      fill(actions,
        h("span", { class: "confirm-text" }, `Cancel run ${id}? Running steps are stopped; steps not started are cancelled.`),
        h("button", { type: "button", class: "button danger", id: "confirm-cancel-run", onclick: () => act("cancel") },
          "Yes, cancel it"),
        h("button", { type: "button", class: "button subtle", onclick: () => { confirming = false; renderActions(); } },
          "Keep it"));
    } else if (run.state !== "succeeded") {
      fill(actions, h("button", { type: "button", class: "button primary", id: "retry-run",
        onclick: () => act("retry") }, "Retry from the failed steps"));
    } else {
      fill(actions);
    }
  }

  // The log of the selected step, read whole (the API serves it masked); re-read on every
  // refresh while that step is not final. A reply for a step no longer selected is dropped.
  async function showLog() {
    const name = selected;
    if (!name) return;
    let text;
    try {
      const logs = await api(`pipeline-runs/${id}/logs?step=${encodeURIComponent(name)}`);
      text = logs.data || "(no output yet)";
    } catch (err) {
      text = `log unavailable: ${err.message}`;
    }
    if (gone || name !== selected || logPre.textContent === text) return;
    const follow = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 8;
    logPre.textContent = text;
    if (follow) logPre.scrollTop = logPre.scrollHeight;
  }

  function select(name) {
    if (name !== selected) logPre.textContent = "reading…";
    selected = name;
    render();
    showLog();
  }

  function renderStep() {
    const st = run.steps.find((x) => x.name === selected);
    if (!st) {
      fill(stepBox, h("h2", {}, "Step"), h("p", { class: "muted" }, "Pick a step in the graph to see its details and log."));
      return;
    }
    fill(stepBox,
      h("div", { class: "node-head" }, h("h2", {}, `Step ${st.name}`), stateBadge(st.state)),
      definitionList([
        ["Kind", st.kind],
        ["Depends on", st.depends_on.length ? st.depends_on.join(", ") : "—"],
        ["Attempt", String(st.attempt)],
        st.message ? ["Message", st.message] : null,
        st.job_id ? ["Job", h("a", { href: `#/jobs/${st.job_id}` }, `job ${st.job_id}`)] : null,
        st.child_run ? ["Nested run", h("a", { href: `#/pipelines/${st.child_run}` }, `run ${st.child_run}`)] : null,
        st.reused_from ? ["Reused from", `run ${st.reused_from}`] : null,
        ["Started", timeCell(st.started_at)],
        ["Ended", timeCell(st.ended_at)],
      ]),
      h("h3", {}, "Outputs"), h("pre", { class: "command", "data-testid": "step-outputs" }, outputsText(st.outputs)),
      // File names only: the stored paths are server-side details.
      h("h3", {}, "Files"), h("p", { "data-testid": "step-files" }, Object.keys(st.files || {}).sort().join(", ") || "—"),
      h("h3", {}, "Log"), logPre);
  }

  function render() {
    heading.textContent = `Pipeline run ${run.id} · ${run.name}`;
    fill(badge, stateBadge(run.state));
    renderActions();
    fill(graph, run.steps.length ? dagSvg(run.steps, selected, select) : h("p", { class: "muted" }, "No steps."));
    renderStep();
    fill(facts,
      h("section", { class: "card" }, h("h2", {}, "Run"), definitionList([
        ["Team · user", `${run.team} · ${run.user}`],
        ["Trigger", run.schedule ? `${run.trigger} (${run.schedule})` : run.trigger],
        ["Priority", String(run.priority)],
        run.message ? ["Message", run.message] : null,
        run.retry_of ? ["Retry of", h("a", { href: `#/pipelines/${run.retry_of}` }, `run ${run.retry_of}`)] : null,
        run.parent_run ? ["Parent run", h("a", { href: `#/pipelines/${run.parent_run}` }, `run ${run.parent_run}`)] : null,
        Object.keys(run.params || {}).length ? ["Params", Object.keys(run.params).sort().map((k) => `${k}=${JSON.stringify(run.params[k])}`).join(" ")] : null,
      ])),
      h("section", { class: "card" }, h("h2", {}, "Times"), definitionList([
        ["Created", timeCell(run.created_at)],
        ["Started", timeCell(run.started_at)],
        ["Ended", timeCell(run.ended_at)],
      ])));
  }

  async function refresh() {
    if (gone) return;
    let fresh;
    try {
      fresh = await api(`pipeline-runs/${id}`);
    } catch (err) {
      if (err.status === 404) {
        fill(root, h("p", { class: "crumbs" }, h("a", { href: "#/pipelines" }, "← all pipeline runs")),
          h("section", { class: "card" }, h("h1", {}, `Pipeline run ${id}`), errorBox(`Not found: ${err.message}`)));
        gone = true;
        return;
      }
      throw err;
    }
    if (!changed("run", fresh)) {
      const step = run.steps.find((x) => x.name === selected);
      if (step && !STEP_FINAL.has(step.state)) await showLog();
      return;
    }
    run = fresh;
    if (selected === null) {
      const failed = run.steps.find((x) => x.state === "failed");
      selected = (failed || run.steps[0] || {}).name || null;
    }
    render();
    await showLog();
  }

  return { title: `Pipeline run ${id}`, refresh, unmount() { gone = true; } };
}

// ---- the list -----------------------------------------------------------------------------

const COLUMNS = ["Run", "Pipeline", "State", "Trigger", "Priority", "User", "Created", "Started", "Ended"];

const RUNS_SHOWN = 100;

function mountList(root) {
  const body = h("tbody", {}, emptyRow(COLUMNS.length, "Loading…"));
  const older = h("p", { class: "muted", "data-testid": "runs-older", hidden: true },
    `The newest ${RUNS_SHOWN} runs; older runs exist (gpupool pipeline ls --limit 0 lists every one).`);
  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Pipelines")),
    h("p", { class: "muted" }, "Runs of DAG pipelines. Start one with ",
      h("code", {}, "gpupool pipeline run FILE.yaml"), " or the API."),
    h("div", { class: "table-wrap" }, h("table", { class: "table stack", "data-testid": "runs-table" },
      h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))), body)),
    older);
  const changed = changeTracker();

  async function refresh() {
    const page = await apiPage(`pipeline-runs?limit=${RUNS_SHOWN}`);
    const runs = page.items;
    if (!changed("runs", [runs, page.next !== null])) return;
    older.hidden = page.next === null;
    if (!runs.length) {
      fill(body, emptyRow(COLUMNS.length, "No pipeline runs yet."));
      return;
    }
    const [rid, name, state, trigger, priority, user, created, started, ended] = COLUMNS;
    fill(body, runs.map((run) => h("tr", { "data-run": run.id },
      td(rid, {}, h("a", { href: `#/pipelines/${run.id}` }, `#${run.id}`)),
      td(name, { class: "name" }, h("a", { href: `#/pipelines/${run.id}` }, run.name)),
      td(state, {}, stateBadge(run.state)),
      td(trigger, {}, run.schedule ? `${run.trigger} (${run.schedule})` : run.trigger),
      td(priority, {}, String(run.priority)),
      td(user, {}, run.user),
      td(created, { class: "nowrap" }, timeCell(run.created_at)),
      td(started, { class: "nowrap" }, timeCell(run.started_at)),
      td(ended, { class: "nowrap" }, timeCell(run.ended_at)))));
  }

  return { title: "Pipelines", refresh };
}

export function mount(root, ctx) {
  return ctx.match[1] ? mountRun(root, ctx) : mountList(root, ctx);
}

// Jobs view: every job the token may see, filtered by phase and queue (by the API) and by
// free text over id, name and user (here). Filters live in the URL: #/jobs?phase=running.

import { api, apiPage, query } from "../api.js";
import { changeTracker, emptyRow, fill, gpuRequest, h, PHASES, phaseBadge, td, timeCell } from "../dom.js";

const PAGE = 200;
const MAX_ROWS = 10000;
const COLUMNS = ["Job", "Name", "Queue", "User", "Phase", "Asks", "Placement", "Submitted", "Why it waits"];

function placementText(job) {
  const p = job.placement;
  if (!p) return "—";
  return p.gpus.length ? `${p.node} · GPU ${p.gpus.join(",")}` : p.node;
}

function row(job) {
  const link = (text) => h("a", { href: `#/jobs/${job.id}` }, text);
  const [id, name, queue, user, phase, asks, placement, submitted, why] = COLUMNS;
  return h("tr", { "data-job": job.id },
    td(id, {}, link(`#${job.id}`)),
    td(name, { class: "name" }, link(job.name)),
    td(queue, {}, job.queue),
    td(user, {}, job.user),
    td(phase, {}, phaseBadge(job.phase)),
    td(asks, { class: "nowrap" }, gpuRequest(job.spec)),
    td(placement, { class: "nowrap" }, placementText(job)),
    td(submitted, { class: "nowrap" }, timeCell(job.created_at)),
    job.phase === "pending" ? td(why, { class: "reason" }, job.reason) : td(why, { class: "reason" }));
}

export function mount(root, ctx) {
  const params = ctx.params;
  const phase = h("select", { id: "filter-phase", name: "phase" },
    h("option", { value: "" }, "any phase"),
    PHASES.map((p) => h("option", { value: p, selected: params.get("phase") === p }, p)));
  const queue = h("select", { id: "filter-queue", name: "queue" }, h("option", { value: "" }, "any queue"));
  const wantedQueue = params.get("queue") || "";
  if (wantedQueue) queue.append(h("option", { value: wantedQueue, selected: true }, wantedQueue));
  const text = h("input", { id: "filter-text", type: "search", name: "q", placeholder: "id, name or user",
    value: params.get("q") || "", autocomplete: "off" });
  const count = h("p", { class: "muted", "aria-live": "polite" });
  let rows = PAGE;
  let more = false;
  const showMore = h("button", { type: "button", class: "button", "data-testid": "jobs-more", hidden: true,
    onclick: () => {
      rows = Math.min(rows + PAGE, MAX_ROWS);
      refresh().catch((err) => ctx.showBanner(err.message));
    } }, "Show more");
  const body = h("tbody", {}, emptyRow(9, "Loading…"));
  let jobs = [];
  let knownQueues = false;
  const changedData = changeTracker();

  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Jobs"),
      h("a", { class: "button primary", href: "#/submit" }, "Submit a job")),
    h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Phase", phase), h("label", {}, "Queue", queue), h("label", { class: "grow" }, "Search", text)),
    count,
    h("div", { class: "table-wrap" }, h("table", { class: "table stack", "data-testid": "jobs-table" },
      h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
      body)),
    showMore);

  function syncUrl() {
    const hash = `#/jobs${query({ phase: phase.value, queue: queue.value, q: text.value.trim() })}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function render() {
    const needle = text.value.trim().toLowerCase();
    const shown = needle
      ? jobs.filter((j) => [j.id, `#${j.id}`, j.name, j.user].some((f) => f.toLowerCase().includes(needle)))
      : jobs;
    count.textContent = `${shown.length} job${shown.length === 1 ? "" : "s"} shown`
      + (shown.length !== jobs.length ? ` of the ${jobs.length} loaded` : "")
      + (more ? ` — the newest ${jobs.length}; older jobs exist` : "");
    showMore.hidden = !more || rows >= MAX_ROWS;
    fill(body, shown.length ? shown.map(row) : emptyRow(9, "No jobs match."));
  }

  async function refresh() {
    const wanted = { phase: phase.value, queue: queue.value };
    const [page, queues] = await Promise.all([
      apiPage(`jobs${query({ ...wanted, limit: rows })}`), knownQueues ? null : api("queues"),
    ]);
    const list = page.items;
    if (queues) {
      knownQueues = true;
      const have = new Set([...queue.options].map((o) => o.value));
      for (const q of queues) if (!have.has(q.name)) queue.append(h("option", { value: q.name }, q.name));
    }
    // A filter changed while this request was in flight: its own refresh will render.
    if (wanted.phase !== phase.value || wanted.queue !== queue.value) return;
    if (!changedData("list", [wanted, list, page.next !== null])) return;
    jobs = list;
    more = page.next !== null;
    render();
  }

  let debounce = null;
  const changed = () => {
    rows = PAGE;
    syncUrl();
    refresh().catch((err) => ctx.showBanner(err.message));
  };
  phase.addEventListener("change", changed);
  queue.addEventListener("change", changed);
  text.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      syncUrl();
      render();
    }, 120);
  });
  return { title: "Jobs", refresh, unmount: () => clearTimeout(debounce) };
}

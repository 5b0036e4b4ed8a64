// Queues view: each team's quota, usage, borrowed capacity, and its pending jobs with the
// scheduler's reason for each.

import { api, query } from "../api.js";
import { changeTracker, emptyRow, fill, gpuRequest, gpus, h, td, teamHue, timeCell } from "../dom.js";

const HEAD = 50;
const COLUMNS = ["Job", "Name", "User", "Asks", "Priority", "Waiting since", "Why it waits"];

export function usageBar(q) {
  // Scale: the larger of what it may use (quota + borrowing limit) and what it uses.
  const limit = q.quota_gpus + q.borrow_limit_gpus;
  const scale = Math.max(limit, q.used_gpus, 0.001);
  const pct = (x) => `${((100 * x) / scale).toFixed(2)}%`;
  const within = Math.min(q.used_gpus, q.quota_gpus);
  const bar = h("div", { class: "quota-bar", role: "img",
    "aria-label": `${gpus(q.used_gpus)} GPUs used of a ${gpus(q.quota_gpus)} GPU quota` },
  h("span", { class: "quota-used", style: { width: pct(within), background: `hsl(${teamHue(q.team)} 62% 46%)` } }),
  h("span", { class: "quota-borrowed", style: { width: pct(Math.max(0, q.used_gpus - within)) } }));
  if (q.quota_gpus > 0 && q.quota_gpus < scale) {
    bar.append(h("span", { class: "quota-mark", style: { left: pct(q.quota_gpus) }, title: "quota" }));
  }
  return bar;
}

function pendingTable(jobs) {
  const rows = jobs.length
    ? jobs.map((j) => h("tr", { "data-job": j.id },
      td(COLUMNS[0], {}, h("a", { href: `#/jobs/${j.id}` }, `#${j.id}`)),
      td(COLUMNS[1], { class: "name" }, h("a", { href: `#/jobs/${j.id}` }, j.name)),
      td(COLUMNS[2], {}, j.user),
      td(COLUMNS[3], { class: "nowrap" }, gpuRequest(j.spec)),
      td(COLUMNS[4], { class: "num" }, String(j.priority)),
      td(COLUMNS[5], { class: "nowrap" }, timeCell(j.created_at)),
      td(COLUMNS[6], { class: "reason" }, j.reason || "waiting for the scheduler")))
    : [emptyRow(7, "No pending jobs.")];
  return h("div", { class: "table-wrap" }, h("table", { class: "table stack" },
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

function queueCard(q, pending) {
  return h("section", { class: "card queue", "data-testid": `queue-${q.name}` },
    h("div", { class: "node-head" },
      h("h2", {}, q.name),
      q.team !== q.name ? h("span", { class: "chip" }, `team ${q.team}`) : null,
      h("span", { class: "chip" }, `${q.running} running`),
      h("span", { class: "chip" }, `${q.pending} pending`)),
    h("div", { class: "quota-facts" },
      h("div", {}, h("span", { class: "total-label" }, "Quota"), h("span", { class: "fact" }, `${gpus(q.quota_gpus)} GPU`)),
      h("div", {}, h("span", { class: "total-label" }, "Used"), h("span", { class: "fact" }, `${gpus(q.used_gpus)} GPU`)),
      h("div", {}, h("span", { class: "total-label" }, "Borrowed"), h("span", { class: "fact" }, `${gpus(q.borrowed_gpus)} GPU`)),
      h("div", {}, h("span", { class: "total-label" }, "May borrow"), h("span", { class: "fact" }, `${gpus(q.borrow_limit_gpus)} GPU`))),
    usageBar(q),
    h("h3", {}, "Pending jobs"),
    pendingTable(pending),
    q.pending > pending.length
      ? h("p", { class: "muted", "data-testid": `queue-more-${q.name}` },
        `The first ${pending.length} of ${q.pending} pending jobs, in the order the scheduler takes them; `,
        h("a", { href: `#/jobs${query({ phase: "pending", queue: q.name })}` }, "all of them"), ".")
      : null);
}

function quotaWarning(queues, nodes) {
  // Guarantees beyond the pool cannot all be honoured at once: say so, naming the teams.
  const pool = nodes.reduce((sum, n) => sum + n.gpus.length, 0);
  const guaranteed = queues.reduce((sum, q) => sum + q.quota_gpus, 0);
  if (!pool || guaranteed <= pool + 1e-9) return null;
  const each = queues.filter((q) => q.quota_gpus > 0).map((q) => `${q.name} ${gpus(q.quota_gpus)}`).join(", ");
  return h("p", { class: "banner warning", role: "status", "data-testid": "quota-warning" },
    `Guaranteed quotas add up to ${gpus(guaranteed)} GPUs (${each}), more than the pool's ${pool}: `
    + "they cannot all be honoured at once. Lower one with gpupool admin team set NAME --quota-gpus N.");
}

export function mount(root) {
  const list = h("div", { class: "queues" }, h("p", { class: "muted" }, "Loading…"));
  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Queues"),
      h("p", { class: "muted" }, "One queue per team: its guaranteed quota, what it uses and borrows beyond it, and why each pending job waits. ",
        "Pending jobs are listed as the scheduler takes them: by priority, then age.")),
    list);

  const changed = changeTracker();
  async function refresh() {
    const [queues, nodes] = await Promise.all([api("queues"), api("nodes")]);
    // Each queue's head of the line, in the scheduler's order, asked of the server: a
    // client-side sort of one capped listing would hide the oldest jobs of a long queue.
    const heads = await Promise.all(queues.map((q) => (q.pending
      ? api(`jobs${query({ phase: "pending", queue: q.name, order: "queue", limit: HEAD })}`)
      : [])));
    if (!changed("all", [queues, heads, nodes.length])) return;
    const byQueue = new Map(queues.map((q, i) => [q.name, heads[i]]));
    fill(list, quotaWarning(queues, nodes),
      queues.length ? queues.map((q) => queueCard(q, byQueue.get(q.name) || []))
        : h("p", { class: "muted" }, "No queues you may see."));
  }
  return { title: "Queues", refresh };
}

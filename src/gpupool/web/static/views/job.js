// One job: spec, placement, phase history, a live log tail, and cancel. The log is read with
// GET /jobs/{id}/logs?offset=N about once a second until the API says it is complete.

import { api, download } from "../api.js";
import {
  bytes, changeTracker, definitionList, errorBox, FINAL, fill, gpuRequest, h, mib, phaseBadge, shellJoin, td, timeCell,
  when, whenShort,
} from "../dom.js";

const LOG_KEEP = 400_000; // characters kept on the page; older output is cut from the top

export function mount(root, ctx) {
  const id = ctx.match[1];
  const heading = h("h1", {}, `Job ${id}`);
  const badge = h("span", { class: "phase-slot", "data-testid": "job-phase" });
  const actions = h("div", { class: "actions" });
  const message = h("div", { class: "action-status", role: "status", "aria-live": "polite" });
  const reason = h("div", { class: "reason-box", hidden: true, "data-testid": "job-reason" });
  const commandEl = h("pre", { class: "command", "data-testid": "job-command" });
  const facts = h("div", { class: "grid" });
  const events = h("tbody");
  const logPre = h("pre", { class: "log", "data-testid": "log", tabindex: "0", "aria-label": "Job log" });
  const logState = h("span", { class: "muted", "data-testid": "log-state" }, "reading…");
  const artifactsCard = h("section", { class: "card", hidden: true, "data-testid": "job-artifacts" });
  const body = h("div", { class: "job-body" },
    reason,
    h("section", { class: "card" }, h("h2", {}, "Command"), commandEl),
    facts,
    artifactsCard,
    h("section", { class: "card" }, h("h2", {}, "Phase history"),
      h("div", { class: "table-wrap" }, h("table", { class: "table stack" },
        h("thead", {}, h("tr", {}, ["When", "Phase", "What happened"].map((c) => h("th", { scope: "col" }, c)))),
        events))),
    h("section", { class: "card" },
      h("div", { class: "node-head" }, h("h2", {}, "Log"), logState),
      logPre));
  fill(root,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← all jobs")),
    h("div", { class: "view-head" }, h("div", { class: "title-row" }, heading, badge), actions),
    message, body);

  let job = null;
  const changed = changeTracker();
  let confirming = false;
  let gone = false;

  // ---- log tail -------------------------------------------------------------------------
  let offset = 0;
  let logTimer = null;
  let logDone = false;
  let logText = "";

  async function pollLog() {
    if (gone || logDone) return;
    try {
      const chunk = await api(`jobs/${id}/logs?offset=${offset}`);
      if (gone) return;
      if (chunk.data) {
        const follow = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 8;
        logText += chunk.data;
        if (logText.length > LOG_KEEP) logText = `…(older output cut)…\n${logText.slice(-LOG_KEEP)}`;
        logPre.textContent = logText;
        if (follow) logPre.scrollTop = logPre.scrollHeight;
      }
      offset = chunk.offset;
      logDone = chunk.complete;
      const size = bytes(offset);
      const waiting = !logText && job && job.phase === "pending";
      logState.textContent = logDone ? `complete · ${size}` : waiting ? "waits for the job to start" : `streaming · ${size}`;
      if (!logText) logPre.textContent = logDone ? "(the job wrote nothing)" : "(no output yet)";
    } catch (err) {
      if (gone) return;
      logState.textContent = `log unavailable: ${err.message}`;
      if (err.status === 404 || err.status === 401 || err.status === 403) return;
    }
    if (!logDone && !gone) logTimer = setTimeout(pollLog, chunkDelay());
  }
  const chunkDelay = () => (document.hidden ? 5000 : 1000);

  // ---- cancel ---------------------------------------------------------------------------
  function renderActions() {
    if (!job || FINAL.has(job.phase)) {
      fill(actions);
      return;
    }
    if (!confirming) {
      fill(actions, h("button", { type: "button", class: "button danger", id: "cancel",
        onclick: () => { confirming = true; renderActions(); } }, "Cancel job"));
      return;
    }
    const grace = job.spec.grace_period_s;
    fill(actions,
      h("span", { class: "confirm-text" },
        job.phase === "pending" ? `Cancel job ${id}? It leaves the queue.`
          : `Cancel job ${id}? It gets SIGTERM now, SIGKILL after ${grace} s.`),
      h("button", { type: "button", class: "button danger", id: "confirm-cancel", onclick: doCancel }, "Yes, cancel it"),
      h("button", { type: "button", class: "button subtle", onclick: () => { confirming = false; renderActions(); } }, "Keep it"));
  }

  async function doCancel() {
    confirming = false;
    fill(actions, h("span", { class: "muted" }, "Cancelling…"));
    try {
      job = await api(`jobs/${id}/cancel`, { method: "POST" });
      message.className = "action-status ok";
      message.textContent = "Cancel requested.";
      render();
    } catch (err) {
      message.className = "action-status error";
      message.textContent = `Cancel refused: ${err.message}`;
      renderActions();
    }
  }

  // ---- render ---------------------------------------------------------------------------
  function render() {
    heading.textContent = `Job ${job.id} · ${job.name}`;
    fill(badge, phaseBadge(job.phase));
    renderActions();
    reason.hidden = job.phase !== "pending";
    fill(reason, h("strong", {}, "Why it waits: "), job.reason || "waiting for the scheduler");
    const s = job.spec;
    const p = job.placement;
    const line = shellJoin(s.command);
    if (commandEl.textContent !== line) commandEl.textContent = line;
    fill(facts,
      h("section", { class: "card" }, h("h2", {}, "Spec"), definitionList([
        ["GPUs", gpuRequest(s)],
        ["CPU", s.cpu ? `${s.cpu} cores` : "—"],
        ["Memory", s.memory ? mib(s.memory) : "—"],
        ["Queue", job.queue],
        ["Team · user", `${job.team} · ${job.user}`],
        ["Priority", String(job.priority)],
        ["Restart", s.restart === "never" ? "never" : `on failure, up to ${s.max_retries} times`],
        s.workdir ? ["Workdir", s.workdir] : null,
        Object.keys(s.env || {}).length ? ["Env", Object.keys(s.env).sort().join(", ")] : null,
      ])),
      h("section", { class: "card" }, h("h2", {}, "Placement"), p ? definitionList([
        ["Node", p.node],
        ["GPUs", p.gpus.length ? p.gpus.map((g) => `GPU ${g}`).join(", ") : "none"],
        ["Share per GPU", p.gpus.length ? `${(p.gpu_milli / 1000).toString()} GPU` : "—"],
        ["GPU memory", p.gpu_memory_mib ? mib(p.gpu_memory_mib) : "—"],
      ]) : h("p", { class: "muted" }, FINAL.has(job.phase) ? "It never ran, or its placement was released."
        : job.phase === "suspended" ? "Suspended: its GPU share is given back; resuming places it again." : "Not placed yet.")),
      h("section", { class: "card" }, h("h2", {}, "Times"), definitionList([
        ["Submitted", timeCell(job.created_at)],
        ["Started", timeCell(job.started_at)],
        ["Ended", timeCell(job.ended_at)],
        ["Attempts", String(job.attempts)],
        ["Exit code", job.exit_code === null || job.exit_code === undefined ? "—" : String(job.exit_code)],
      ])),
      gpuCard(job));
    fill(events, job.events.map((e) => h("tr", {},
      td("When", { class: "nowrap" }, h("time", { datetime: e.at, title: when(e.at) }, whenShort(e.at))),
      td("Phase", {}, phaseBadge(e.phase)),
      td("What happened", {}, e.message))));
  }

  // What NVML measured of its GPUs (job.gpu_usage); a job on GPUs of a pool without NVML
  // says it was not measured.
  function gpuCard(job) {
    const u = job.gpu_usage;
    const placed = job.placement && job.placement.gpus.length;
    if (!u && !placed) return null;
    const card = (...children) => h("section", { class: "card", "data-testid": "job-gpu" }, h("h2", {}, "GPU use"), ...children);
    if (!u) return card(h("p", { class: "muted" }, "Not measured: no NVML utilisation on this pool (e.g. fake GPUs)."));
    const pct = (x) => (x === null || x === undefined ? "—" : `${Math.round(x * 100)} %`);
    const hours = (s) => (s / 3600).toFixed(2);
    const limit = job.gpu_memory_limit_mib;
    return card(
      u.idle_since ? h("div", { class: "reason-box", "data-testid": "job-gpu-idle" },
        h("strong", {}, "Idle GPUs: "), `under 5 % utilisation since ${when(u.idle_since)}.`) : null,
      definitionList([
        ["Mean utilisation", pct(u.mean_utilization)],
        ["Peak utilisation", pct(u.peak_utilization)],
        ["Peak memory (one GPU)", u.peak_memory_mib === null || u.peak_memory_mib === undefined ? "—"
          : `${mib(u.peak_memory_mib)}${limit ? ` of its ${mib(limit)} limit` : ""}`],
        ["GPU-hours", `${hours(u.gpu_seconds_used)} used of ${hours(u.gpu_seconds)} held`],
        ["Measured", `${Math.round(u.measured_s)} s`],
      ]));
  }

  // What each attempt kept of the declared artifacts, with a download per kept attempt.
  async function loadArtifacts() {
    if (!job || !(job.spec.artifacts || []).length) return;
    let list;
    try {
      list = await api(`jobs/${id}/artifacts`);
    } catch (err) {
      fill(artifactsCard, h("h2", {}, "Artifacts"), errorBox(err.message));
      artifactsCard.hidden = false;
      return;
    }
    const rows = list.map((a) => h("tr", {},
      td("Attempt", {}, String(a.attempt)),
      td("Status", {}, a.status),
      td("Files", {}, a.files.map((f) => `${f.name} (${bytes(f.size)})`).join(", ") || "—"),
      td("Download", {}, a.status === "kept" ? h("button", { type: "button", class: "button subtle",
        "data-testid": `download-artifacts-${a.attempt}`,
        onclick: () => download(`jobs/${id}/artifacts/${a.attempt}`,
          `job-${id}-attempt-${a.attempt}-artifacts.tar.gz`).catch((err) => {
          message.className = "action-status error";
          message.textContent = `Download refused: ${err.message}`;
        }) }, `Download (${bytes(a.size)})`) : "—")));
    fill(artifactsCard, h("h2", {}, "Artifacts"),
      h("p", { class: "muted" }, `Declared: ${job.spec.artifacts.join(", ")}`),
      rows.length ? h("div", { class: "table-wrap" }, h("table", { class: "table stack" },
        h("thead", {}, h("tr", {}, ["Attempt", "Status", "Files", "Download"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows))) : h("p", { class: "muted" }, "Kept when an attempt ends."));
    artifactsCard.hidden = false;
    if (!gone && list.some((a) => a.status === "collecting")) setTimeout(loadArtifacts, 1000);
  }

  async function refresh() {
    if (gone) return;
    try {
      const fresh = await api(`jobs/${id}`);
      if (!changed("job", fresh)) return;
      job = fresh;
    } catch (err) {
      if (err.status === 404) {
        fill(root, h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← all jobs")),
          h("section", { class: "card" }, h("h1", {}, `Job ${id}`),
            errorBox(`Not found: ${err.message}. It does not exist or your token may not see it.`)));
        gone = true;
        clearTimeout(logTimer);
        return;
      }
      throw err;
    }
    render();
    loadArtifacts();
  }

  pollLog();
  return { title: `Job ${id}`, refresh, unmount() { gone = true; clearTimeout(logTimer); } };
}

// Notebooks: JupyterLab on a GPU share, started by the server and reached only through its
// gateway (an origin of its own). Create one, then open, suspend, resume or delete it.
//
// Opening never hands the console's token to the gateway: POST /jobs/{id}/open returns a
// one-time sign-in address on the gateway's origin, and the browser goes there in a new tab,
// which gets its own cookie for that notebook. The tab is opened at once in the click handler
// (so popup blockers let it through) and sent to the address when the POST answers.

import { api, apiPage } from "../api.js";
import { changeTracker, emptyRow, fill, gpuRequest, h, phaseBadge, td, timeCell } from "../dom.js";

const LIVE = ["pending", "starting", "running", "suspended"];
const LIMIT = 200;
const COLUMNS = ["Name", "Phase", "GPUs", "Idle since", "User", "Actions"];
const RESUME_NOTE = "Kernels restart on resume; files are kept.";

function field(label, input, hint) {
  const id = input.id;
  return h("div", { class: "field" },
    h("label", { for: id }, label), input, hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null);
}

function listPath() {
  const q = new URLSearchParams({ kind: "notebook", limit: String(LIMIT) });
  for (const phase of LIVE) q.append("phase", phase);
  return `jobs?${q}`;
}

/** A short line under the phase badge: why it waits, that it starts, how resume works. */
function phaseNote(nb) {
  if (nb.phase === "pending") return nb.reason || "waiting for a GPU";
  if (nb.phase === "starting" || (nb.phase === "running" && !nb.url)) return "JupyterLab is starting…";
  if (nb.phase === "suspended") return RESUME_NOTE;
  return "";
}

function placementText(nb) {
  const p = nb.placement;
  if (!p) return "";
  return p.gpus.length ? `${p.node} · GPU ${p.gpus.join(",")}` : p.node;
}

export function mount(root, ctx) {
  // ---- create form ----------------------------------------------------------------------
  const name = h("input", { id: "nb-name", name: "name", type: "text", autocomplete: "off", spellcheck: "false",
    placeholder: "e.g. class1", pattern: "[A-Za-z0-9][A-Za-z0-9._-]*", "aria-describedby": "nb-name-hint" });
  const gpus = h("input", { id: "nb-gpus", name: "gpus", type: "number", min: "0", max: "64", step: "any",
    value: "0.25", inputmode: "decimal", "aria-describedby": "nb-gpus-hint" });
  const gpuMemory = h("input", { id: "nb-gpu-memory", name: "gpu_memory", type: "text", autocomplete: "off",
    placeholder: "e.g. 10GiB", "aria-describedby": "nb-gpu-memory-hint" });
  const idle = h("input", { id: "nb-idle", name: "idle_timeout", type: "number", min: "1", step: "any",
    inputmode: "decimal", placeholder: "server default", "aria-describedby": "nb-idle-hint" });
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "notebook-form-status" });
  const button = h("button", { type: "submit", class: "button primary", "data-testid": "notebook-create" }, "Create notebook");
  const form = h("form", { class: "card notebook-form", novalidate: true, "data-testid": "notebook-form",
    "aria-labelledby": "nb-form-title" },
  h("h2", { id: "nb-form-title" }, "New notebook"),
  h("div", { class: "row" },
    field("Name", name, "Letters, digits, . _ -; unique among your team's live notebooks."),
    field("GPUs", gpus, "0.25 = a quarter of one GPU · 1 = a whole GPU · 0 = none"),
    field("GPU memory", gpuMemory, "Optional, per GPU: e.g. 10GiB."),
    field("Idle timeout (minutes)", idle, "Suspended after this long without activity; empty: the server's default.")),
  h("div", { class: "form-actions" }, button, status));

  // ---- list ------------------------------------------------------------------------------
  const message = h("div", { class: "action-status", role: "status", "aria-live": "polite", "data-testid": "notebooks-message" });
  const count = h("p", { class: "muted" });
  const body = h("tbody", {}, emptyRow(COLUMNS.length, "Loading…"));

  // ---- delete confirmation ----------------------------------------------------------------
  const dialogTitle = h("h2", { id: "nb-delete-title" });
  const dialogText = h("p", { id: "nb-delete-text" });
  const confirmDelete = h("button", { type: "button", class: "button danger", "data-testid": "notebook-delete-confirm" },
    "Delete notebook");
  const keep = h("button", { type: "button", class: "button subtle", "data-testid": "notebook-delete-keep" }, "Keep it");
  const dialog = h("dialog", { class: "card confirm-dialog", "data-testid": "notebook-delete-dialog",
    "aria-labelledby": "nb-delete-title", "aria-describedby": "nb-delete-text" },
  dialogTitle, dialogText, h("div", { class: "actions" }, confirmDelete, keep));
  let deleting = null; // the notebook the dialog asks about

  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Notebooks"),
      h("p", { class: "muted" },
        "JupyterLab on a GPU share, opened in a tab of its own. An idle notebook is suspended: "
        + "its GPU share is given back and its files are kept; resuming restarts its kernels.")),
    form,
    h("section", { class: "card", "aria-labelledby": "nb-list-title" },
      h("div", { class: "node-head" }, h("h2", { id: "nb-list-title" }, "Live notebooks"), count),
      message,
      h("div", { class: "table-wrap" }, h("table", { class: "table stack", "data-testid": "notebooks-table" },
        h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
        body))),
    dialog);

  let notebooks = [];
  let loaded = false;
  const busy = new Map(); // id → what is being done to it ("Suspending…")
  const changed = changeTracker();
  let gone = false;

  function say(text, ok) {
    message.className = `action-status ${ok ? "ok" : "error"}`;
    fill(message, text);
  }

  // ---- rows ------------------------------------------------------------------------------
  function actionButton(nb, label, testid, handler, attrs = {}) {
    return h("button", { type: "button", class: "button small", "data-testid": testid,
      "aria-label": `${label} ${nb.name}`, disabled: busy.has(nb.id), onclick: handler, ...attrs }, label);
  }

  function actions(nb) {
    if (busy.has(nb.id)) {
      return h("span", { class: "muted", "data-testid": "notebook-busy" }, busy.get(nb.id));
    }
    const list = [
      actionButton(nb, "Open", "notebook-open", () => openNotebook(nb), {
        class: "button small primary", disabled: !nb.url,
        title: nb.url ? "Open JupyterLab in a new tab" : "Not ready yet: JupyterLab is not answering",
      }),
    ];
    if (["pending", "starting", "running"].includes(nb.phase)) {
      list.push(actionButton(nb, "Suspend", "notebook-suspend", () => act(nb, "suspend", "Suspending…"),
        { title: "Stop its processes and give its GPU share back; files are kept" }));
    }
    if (nb.phase === "suspended") {
      list.push(actionButton(nb, "Resume", "notebook-resume", () => act(nb, "resume", "Resuming…"),
        { title: RESUME_NOTE }));
    }
    list.push(actionButton(nb, "Delete", "notebook-delete", () => askDelete(nb), { class: "button small subtle danger-text" }));
    return h("div", { class: "actions" }, list);
  }

  function row(nb) {
    const [nameCol, phaseCol, gpusCol, idleCol, userCol, actionsCol] = COLUMNS;
    const note = phaseNote(nb);
    const where = placementText(nb);
    return h("tr", { "data-testid": "notebook-row", "data-notebook": nb.id, "data-name": nb.name, "data-phase": nb.phase },
      td(nameCol, { class: "name" }, h("a", { href: `#/jobs/${nb.id}` }, nb.name)),
      td(phaseCol, {}, phaseBadge(nb.phase), note ? h("div", { class: "hint", "data-testid": "notebook-note" }, note) : null),
      td(gpusCol, { class: "nowrap" }, gpuRequest(nb.spec), where ? h("div", { class: "hint" }, where) : null),
      td(idleCol, { class: "nowrap" }, timeCell(nb.idle_since)),
      td(userCol, {}, nb.user),
      td(actionsCol, {}, actions(nb)));
  }

  function render() {
    count.textContent = loaded ? `${notebooks.length} live` : "";
    fill(body, notebooks.length ? notebooks.map(row)
      : emptyRow(COLUMNS.length, loaded ? "No live notebooks: create one above." : "Loading…"));
  }

  async function refresh() {
    if (gone) return;
    const page = await apiPage(listPath());
    loaded = true;
    if (!changed("list", [page.items, [...busy]])) return;
    notebooks = page.items;
    render();
  }

  function refreshSoon() {
    refresh().catch((err) => ctx.showBanner(err.message));
  }

  // ---- actions ---------------------------------------------------------------------------
  async function act(nb, what, doing) {
    busy.set(nb.id, doing);
    render();
    try {
      await api(`jobs/${nb.id}/${what}`, { method: "POST" });
      say(what === "suspend" ? `Suspend requested for ${nb.name}: its files are kept.`
        : what === "resume" ? `${nb.name} is queued to start again. ${RESUME_NOTE}`
          : `Delete requested for ${nb.name}.`, true);
    } catch (err) {
      say(`${nb.name}: ${err.message}`, false);
    } finally {
      busy.delete(nb.id);
    }
    render();
    refreshSoon();
  }

  function askDelete(nb) {
    deleting = nb;
    dialogTitle.textContent = `Delete notebook ${nb.name}?`;
    dialogText.textContent = "JupyterLab stops, its kernels end and its files are deleted. This cannot be undone.";
    dialog.showModal();
    keep.focus();
  }

  confirmDelete.addEventListener("click", () => {
    const nb = deleting;
    deleting = null;
    dialog.close();
    if (nb) act(nb, "cancel", "Deleting…");
  });
  keep.addEventListener("click", () => {
    deleting = null;
    dialog.close();
  });
  dialog.addEventListener("close", () => {
    deleting = null;
  });

  /** Open the notebook in a new tab. The tab is opened now, inside the click, and blank; it
   * is cut off from this page (no opener, no copy of this tab's session storage, where the
   * token lives) and then sent to the one-time sign-in address once the API gives it. */
  async function openNotebook(nb) {
    const tab = window.open("", "_blank");
    if (tab) {
      try {
        tab.opener = null;
        tab.sessionStorage.clear(); // its copy of ours: the console's token must not follow
        tab.document.title = `Opening ${nb.name}…`;
        tab.document.body.textContent = `Signing in to notebook ${nb.name}…`;
      } catch (err) {
        console.warn(err);
      }
    }
    busy.set(nb.id, "Opening…");
    render();
    try {
      const { url } = await api(`jobs/${nb.id}/open`, { method: "POST" });
      if (tab && !tab.closed) {
        tab.location.replace(url);
        say(`${nb.name} opened in a new tab.`, true);
      } else {
        // the browser blocked the new tab: a link the user can follow (valid about a minute, once)
        message.className = "action-status ok";
        fill(message, "Your browser blocked the new tab: ",
          h("a", { href: url, target: "_blank", rel: "noopener noreferrer", "data-testid": "notebook-open-link" },
            `open ${nb.name}`),
          " (this link works once, within a minute).");
      }
    } catch (err) {
      if (tab && !tab.closed) tab.close();
      say(`${nb.name} cannot be opened: ${err.message}`, false);
    } finally {
      busy.delete(nb.id);
    }
    render();
    refreshSoon();
  }

  // ---- create ----------------------------------------------------------------------------
  // The API names the field ("gpus: ...", "body: Value error, gpus: ..."): that input is
  // marked invalid and focused.
  const inputs = { name, gpus, gpu_memory: gpuMemory, idle_timeout_s: idle };

  function formError(text, input) {
    status.className = "form-status error";
    status.textContent = text;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  form.addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const input of Object.values(inputs)) input.removeAttribute("aria-invalid");
    const body = { kind: "notebook" };
    if (name.value.trim()) body.name = name.value.trim();
    const g = Number(gpus.value || 0);
    if (!Number.isFinite(g) || g < 0) {
      formError("gpus: a number such as 0.25, 0.5 or 1", gpus);
      return;
    }
    body.gpus = g;
    if (gpuMemory.value.trim()) body.gpu_memory = gpuMemory.value.trim();
    if (idle.value.trim()) {
      const minutes = Number(idle.value);
      if (!Number.isFinite(minutes) || minutes <= 0) {
        formError("idle timeout: a number of minutes, such as 30", idle);
        return;
      }
      body.idle_timeout_s = Math.round(minutes * 60);
    }
    button.disabled = true;
    status.className = "form-status";
    status.textContent = "Creating…";
    try {
      const made = await api("jobs", { method: "POST", body });
      status.className = "form-status ok";
      status.textContent = `Created ${made.name}: JupyterLab starts once it has its GPU share.`;
      name.value = "";
      refreshSoon();
    } catch (err) {
      const named = /\b(name|gpus|gpu_memory|idle_timeout_s):/.exec(err.message || "");
      formError(`Not created: ${err.message}`, named ? inputs[named[1]] : null);
    } finally {
      button.disabled = false;
    }
  });

  return {
    title: "Notebooks",
    refresh,
    unmount() {
      gone = true;
      if (dialog.open) dialog.close();
    },
  };
}

// Services: an HTTP server command run as a set of replicas (each a job of kind service),
// reached through the gateway at <gateway>/svc/<name>/ and scaled by requests in flight.
// Deploy (or update) one from the form, see its replicas, manage its API keys, delete it.
//
// A new API key is shown once, in the answer that made it: it is never listed again (only
// its hash is kept), and it is never written anywhere but into this page.

import { api } from "../api.js";
import { definitionList, emptyRow, fill, gpuRequest, gpus, h, shellJoin, td, timeCell } from "../dom.js";
import { deployForm, field, input, setStatus } from "./service_form.js";

const COLUMNS = ["Name", "Team / user", "Ready", "In flight", "Generation", "Auth", "Replicas", "Per replica", "Actions"];
const REPLICA_COLUMNS = ["Replica", "State", "Generation", "Node", "GPUs", "In flight"];
const KEY_COLUMNS = ["Key", "Created", "Actions"];
// Replica states in the phase colours: ready as running, draining as suspended.
const LOOK = { pending: "pending", starting: "starting", ready: "running", draining: "suspended", stopping: "cancelled" };
const enc = encodeURIComponent;

function stateBadge(state) {
  return h("span", { class: `phase phase-${LOOK[state] || "pending"}`, "data-state": state }, state);
}

function replicaGpus(r) {
  if (!r.gpus) return "—";
  if (!r.gpus.length) return "none";
  return `GPU ${r.gpus.join(",")}${r.gpu_share < 1 ? ` · ${gpus(r.gpu_share)} share` : ""}`;
}

export function mount(root, ctx) {
  const { form, edit } = deployForm((made) => select(made.name));

  // ---- list, detail, confirmation ---------------------------------------------------------
  const message = h("div", { class: "action-status", role: "status", "aria-live": "polite", "data-testid": "services-message" });
  const count = h("p", { class: "muted" });
  const body = h("tbody", {}, emptyRow(COLUMNS.length, "Loading…"));
  const detailTitle = h("h2", { id: "svc-detail-title" });
  const facts = h("div", { class: "svc-facts" });
  const replicaBody = h("tbody");
  const keyBody = h("tbody");
  const revokedNote = h("p", { class: "hint" });
  const keyName = input("svc-key-name", { type: "text", placeholder: "e.g. frontend", pattern: "[A-Za-z0-9][A-Za-z0-9._-]*" });
  const keyButton = h("button", { type: "submit", class: "button", "data-testid": "service-key-create" }, "Create key");
  const keyStatus = h("div", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "service-key-status" });
  const keyForm = h("form", { class: "key-form", novalidate: true, "data-testid": "service-key-form" },
    field("New API key", keyName, "A name for it (letters, digits, . _ -); names of revoked keys stay taken."),
    h("div", { class: "form-actions" }, keyButton), keyStatus);
  const table = (testid, columns, tbody) => h("div", { class: "table-wrap" }, h("table", { class: "table stack", "data-testid": testid },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), tbody));
  const detail = h("section", { class: "card", hidden: true, "data-testid": "service-detail", "aria-labelledby": "svc-detail-title" },
    detailTitle, facts, h("h3", {}, "Replicas"), table("replicas-table", REPLICA_COLUMNS, replicaBody),
    h("h3", {}, "API keys"),
    h("p", { class: "hint" }, "Callers send a key as Authorization: Bearer <key> to this service's URL only."),
    table("service-keys-table", KEY_COLUMNS, keyBody), revokedNote, keyForm);

  const dialogTitle = h("h2", { id: "svc-confirm-title" });
  const dialogText = h("p", { id: "svc-confirm-text" });
  const confirm = h("button", { type: "button", class: "button danger", "data-testid": "service-confirm" });
  const keep = h("button", { type: "button", class: "button subtle", "data-testid": "service-confirm-keep" }, "Cancel");
  const dialog = h("dialog", { class: "card confirm-dialog", "data-testid": "service-confirm-dialog",
    "aria-labelledby": "svc-confirm-title", "aria-describedby": "svc-confirm-text" },
  dialogTitle, dialogText, h("div", { class: "actions" }, confirm, keep));
  let confirmed = null; // what the dialog's confirm button does

  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Services"),
      h("p", { class: "muted" }, "Inference servers behind the gateway at /svc/<name>/: replicas between min and max, "
        + "scaled by the requests in flight; a changed spec is rolled out replica by replica.")),
    form,
    h("section", { class: "card", "aria-labelledby": "svc-list-title" },
      h("div", { class: "node-head" }, h("h2", { id: "svc-list-title" }, "Services"), count),
      message, table("services-table", COLUMNS, body)),
    detail, dialog);

  let services = [];
  let keys = null; // the selected service's; null: loading
  let loaded = false;
  let selected = ctx.params.get("name") || null;
  const busy = new Map(); // name → what is being done to it ("Deleting…")
  let shown = ""; // what refresh() last rendered; "" after a render of local state
  let gone = false;

  function say(text, ok) {
    message.className = `action-status ${ok ? "ok" : "error"}`;
    fill(message, text);
  }

  // ---- rendering -------------------------------------------------------------------------
  function small(s, label, testid, handler, attrs = {}) {
    return h("button", { type: "button", class: "button small", "data-testid": testid, "aria-label": `${label} ${s.name}`,
      disabled: busy.has(s.name), onclick: handler, ...attrs }, label);
  }

  function row(s) {
    const [c0, c1, c2, c3, c4, c5, c6, c7, c8] = COLUMNS;
    const open = s.name === selected;
    return h("tr", { "data-testid": "service-row", "data-name": s.name, class: open ? "selected" : null },
      td(c0, { class: "name" }, h("a", { href: s.url, target: "_blank", rel: "noopener noreferrer", "data-testid": "service-url",
        title: "Open the service's URL in a new tab" }, s.name), h("div", { class: "hint svc-url" }, s.url)),
      td(c1, {}, `${s.team} / ${s.user}`),
      td(c2, { class: "nowrap", "data-testid": "service-ready" }, `${s.ready_replicas} / ${s.desired_replicas}`),
      td(c3, { class: "num" }, String(s.inflight)),
      td(c4, { class: "num" }, String(s.generation)),
      td(c5, {}, s.spec.auth),
      td(c6, { class: "nowrap" }, `${s.spec.replicas.min}–${s.spec.replicas.max}`),
      td(c7, { class: "nowrap" }, gpuRequest(s.spec)),
      td(c8, {}, busy.has(s.name) ? h("span", { class: "muted" }, busy.get(s.name)) : h("div", { class: "actions" },
        small(s, open ? "Hide" : "Details", "service-details", () => select(open ? null : s.name), { "aria-expanded": String(open) }),
        small(s, "Edit", "service-edit", () => edit(s), { class: "button small subtle" }),
        small(s, "Delete", "service-delete", () => askDelete(s), { class: "button small subtle danger-text" }))));
  }

  function replicaRow(s, r) {
    const [c0, c1, c2, c3, c4, c5] = REPLICA_COLUMNS;
    return h("tr", { "data-testid": "replica-row", "data-replica": r.id, "data-state": r.state },
      td(c0, {}, h("a", { href: `#/jobs/${enc(r.id)}` }, `#${r.id}`)),
      td(c1, {}, stateBadge(r.state), r.state === "starting" ? h("div", { class: "hint" }, "waiting for its readiness path") : null),
      td(c2, { class: "num" }, r.generation < s.generation ? `${r.generation} (old)` : String(r.generation)),
      td(c3, { "data-testid": "replica-node" }, r.node || "—"),
      td(c4, { class: "nowrap" }, replicaGpus(r)),
      td(c5, { class: "num" }, String(r.inflight)));
  }

  function keyRow(s, k) {
    const [c0, c1, c2] = KEY_COLUMNS;
    return h("tr", { "data-testid": "service-key-row", "data-key": k.name },
      td(c0, { class: "name" }, k.name), td(c1, { class: "nowrap" }, timeCell(k.created_at)),
      td(c2, {}, h("button", { type: "button", class: "button small subtle danger-text", "data-testid": "service-key-revoke",
        "aria-label": `Revoke key ${k.name}`, onclick: () => askRevoke(s, k) }, "Revoke")));
  }

  function render() {
    shown = "";
    count.textContent = loaded ? `${services.length} service${services.length === 1 ? "" : "s"}` : "";
    fill(body, services.length ? services.map(row)
      : emptyRow(COLUMNS.length, loaded ? "No services: deploy one above." : "Loading…"));
    const s = services.find((x) => x.name === selected);
    detail.hidden = !s;
    if (!s) return;
    detailTitle.textContent = `Service ${s.name}`;
    const { scaling } = s.spec;
    fill(facts, definitionList([
      ["Command", h("code", {}, shellJoin(s.spec.command))],
      ["Readiness", `GET ${s.spec.readiness.path}`],
      ["Scaling", `${scaling.target_inflight} requests in flight per replica; scales in after ${scaling.cooldown_s} s`],
      ["Cold start", s.last_cold_start_s == null ? "none yet" : `${s.last_cold_start_s.toFixed(2)} s the last time`],
      ["Updated", timeCell(s.updated_at)],
    ]));
    fill(replicaBody, s.replicas.length ? s.replicas.map((r) => replicaRow(s, r))
      : emptyRow(REPLICA_COLUMNS.length, s.desired_replicas ? "Starting a replica…" : "None: scaled to zero until a request comes."));
    const live = (keys || []).filter((k) => !k.revoked_at);
    fill(keyBody, live.length ? live.map((k) => keyRow(s, k)) : emptyRow(KEY_COLUMNS.length, keys ? "No API keys." : "Loading…"));
    const revoked = (keys || []).length - live.length;
    revokedNote.textContent = revoked ? `${revoked} revoked key${revoked === 1 ? "" : "s"} not shown.` : "";
  }

  async function refresh() {
    if (gone) return;
    const which = selected;
    const list = await api("services");
    let keyList = [];
    if (which && list.some((s) => s.name === which)) {
      keyList = await api(`services/${enc(which)}/keys`).catch((err) => {
        if (err.status === 404) return []; // deleted meanwhile
        throw err;
      });
    }
    if (gone || which !== selected) return; // another refresh follows the new selection
    loaded = true;
    const sig = JSON.stringify([list, keyList, selected, [...busy]]);
    if (sig === shown) return;
    services = list;
    keys = keyList;
    render();
    shown = sig;
  }

  function refreshSoon() {
    refresh().catch((err) => ctx.showBanner(err.message));
  }

  function select(which) {
    if (which !== selected) fill(keyStatus);
    selected = which;
    keys = null;
    render();
    refreshSoon();
  }

  // ---- actions ---------------------------------------------------------------------------
  function ask(title, text, label, action) {
    confirmed = action;
    dialogTitle.textContent = title;
    dialogText.textContent = text;
    confirm.textContent = label;
    dialog.showModal();
    keep.focus();
  }
  confirm.addEventListener("click", () => {
    const action = confirmed;
    confirmed = null;
    dialog.close();
    if (action) action();
  });
  keep.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => { confirmed = null; });

  function askDelete(s) {
    ask(`Delete service ${s.name}?`, "Its URL answers 404 at once, its replicas are stopped and its API keys stop "
      + "working. This cannot be undone.", "Delete service", async () => {
      busy.set(s.name, "Deleting…");
      render();
      try {
        await api(`services/${enc(s.name)}`, { method: "DELETE" });
        say(`Deleted ${s.name}: its replicas are stopping.`, true);
        if (selected === s.name) {
          selected = null;
          fill(keyStatus);
        }
      } catch (err) {
        say(`${s.name}: ${err.message}`, false);
      }
      busy.delete(s.name);
      render();
      refreshSoon();
    });
  }

  function askRevoke(s, k) {
    ask(`Revoke key ${k.name}?`, `The gateway refuses it within a second; callers of ${s.name} that use it get 401.`,
      "Revoke key", async () => {
        try {
          await api(`services/${enc(s.name)}/keys/${enc(k.name)}`, { method: "DELETE" });
          setStatus(keyStatus, `Revoked key ${k.name}.`, "ok");
        } catch (err) {
          setStatus(keyStatus, `Not revoked: ${err.message}`, "error");
        }
        refreshSoon();
      });
  }

  keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const which = selected;
    const keyLabel = keyName.value.trim();
    keyName.removeAttribute("aria-invalid");
    if (!which) return;
    if (!keyLabel) {
      setStatus(keyStatus, "name: give the key a name, e.g. frontend", "error", keyName);
      return;
    }
    keyButton.disabled = true;
    try {
      const made = await api(`services/${enc(which)}/keys`, { method: "POST", body: { name: keyLabel } });
      setStatus(keyStatus, [`New key ${made.name} for ${which}: `,
        h("code", { class: "secret", "data-testid": "service-key-secret" }, made.key),
        h("p", { class: "hint", "data-testid": "service-key-once" },
          "Copy it now: it will not be shown again (only its hash is kept).")], "ok");
      keyName.value = "";
    } catch (err) {
      setStatus(keyStatus, `Not created: ${err.message}`, "error", /\bname\b/.test(err.message) ? keyName : null);
    } finally {
      keyButton.disabled = false;
    }
    refreshSoon();
  });

  return {
    title: "Services",
    refresh,
    unmount() {
      gone = true;
      if (dialog.open) dialog.close();
    },
  };
}

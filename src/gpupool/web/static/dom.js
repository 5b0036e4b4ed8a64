// Building DOM without innerHTML: every piece of API data becomes a text node, so a job
// named "<img onerror=...>" is shown, never run.

/**
 * h("a", {href: "#/jobs/1", class: "x", onclick: fn}, "text", child, [more]) → Element.
 * Strings and numbers become text nodes; null/undefined/false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "style" && typeof value === "object") {
      for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, v);
    } else if (key === "value" || key === "checked" || key === "selected") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace all children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---- formatting -------------------------------------------------------------------------

export function gpus(value) {
  // GPUs as a short number: 2, 0.5, 0.25, 1.375
  const n = Math.round(Number(value) * 1000) / 1000;
  return Number.isFinite(n) ? String(n) : "?";
}

export function milliAsGpus(milli) {
  return gpus(milli / 1000);
}

/**
 * A count as the console's other numbers show it: "678", "12,345", never "678.0". A mean of
 * counts (e.g. over seeds) keeps one decimal where it has one: "35.5".
 */
export function formatCount(value) {
  const n = Number(value);
  if (value === null || value === undefined || value === "" || !Number.isFinite(n)) return "—";
  return n.toLocaleString(undefined, { maximumFractionDigits: 1 });
}

export function mib(value) {
  const n = Number(value) || 0;
  if (n >= 1024 * 1024) return `${trim(n / (1024 * 1024))} TiB`;
  if (n >= 1024) return `${trim(n / 1024)} GiB`;
  return `${n} MiB`;
}

function trim(x) {
  return String(Math.round(x * 10) / 10);
}

/** What a job asks of GPUs, in words: "none", "0.5 of one GPU", "2 GPUs", "20 GiB share". */
export function gpuRequest(spec) {
  const g = Number(spec.gpus) || 0;
  let text;
  if (g >= 1) text = g === 1 ? "1 GPU" : `${g} GPUs`;
  else if (g > 0) text = `${gpus(g)} of one GPU`;
  else if (spec.gpu_memory) text = "a share of one GPU";
  else text = "none";
  if (spec.gpu_memory) text += ` with ${mib(spec.gpu_memory)}`;
  if (spec.gpu_model) text += ` (${spec.gpu_model})`;
  return text;
}

export function ago(iso) {
  if (!iso) return "";
  const then = new Date(iso).getTime();
  const s = Math.max(0, Math.round((Date.now() - then) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** Time of day for today's moments, date and time for older ones. */
export function whenShort(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A table cell that knows its column's name, so narrow screens can show rows as cards. */
export function td(label, attrs, ...children) {
  return h("td", { ...attrs, "data-label": label }, ...children);
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

export function timeCell(iso) {
  return iso ? h("time", { class: "rel", datetime: iso, title: when(iso) }, ago(iso)) : "—";
}

/** Bring every relative time under `root` up to date, in place (no node is replaced, so
 * focus and text selection survive the refresh). */
export function tickTimes(root) {
  for (const t of root.querySelectorAll("time.rel")) {
    const text = ago(t.dateTime);
    if (t.textContent !== text) t.textContent = text;
  }
}

/**
 * changed(key, data) is true when `data` differs from what was last rendered under `key`:
 * views re-render only then, so a link being clicked or focused is not swapped out every
 * two seconds.
 */
export function changeTracker() {
  const last = new Map();
  return (key, data) => {
    const sig = JSON.stringify(data);
    if (last.get(key) === sig) return false;
    last.set(key, sig);
    return true;
  };
}

export const FINAL = new Set(["succeeded", "failed", "cancelled"]);
// suspended: a notebook put aside (processes stopped, GPU share given back, files kept); not final.
export const PHASES = ["pending", "starting", "running", "suspended", "succeeded", "failed", "cancelled"];

export function phaseBadge(phase) {
  return h("span", { class: `phase phase-${phase}`, "data-phase": phase }, phase);
}

/** A command line shown with simple shell quoting, the inverse of shell.split(). */
export function shellJoin(args) {
  return args.map(quoteArg).join(" ");
}

function quoteArg(a) {
  if (a !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(a)) return a;
  if (!a.includes("'")) return `'${a}'`;
  if (!/["\\$`]/.test(a)) return `"${a}"`;
  return `'${a.replaceAll("'", "'\"'\"'")}'`;
}

// ---- colours ----------------------------------------------------------------------------

const HUES = [212, 28, 142, 280, 350, 190, 48, 100, 250, 320];

function hash(text) {
  let x = 2166136261;
  for (let i = 0; i < text.length; i += 1) {
    x ^= text.charCodeAt(i);
    x = Math.imul(x, 16777619);
  }
  return x >>> 0;
}

/** A stable hue per team, so a team keeps its colour on every page and every refresh. */
export function teamHue(team) {
  return HUES[hash(team) % HUES.length];
}

/** A slice's colour: its team's hue; neighbouring jobs of one team alternate lightness. */
export function sliceColour(team, shade = 0) {
  const light = [46, 60, 38][shade % 3];
  return `hsl(${teamHue(team)} 62% ${light}%)`;
}

// ---- small widgets ----------------------------------------------------------------------

export function definitionList(rows) {
  return h(
    "dl",
    { class: "facts" },
    rows
      .filter((r) => r)
      .map(([term, value]) => [h("dt", {}, term), h("dd", {}, value === "" || value === null || value === undefined ? "—" : value)]),
  );
}

export function errorBox(message) {
  return h("p", { class: "error", role: "alert" }, message);
}

export function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns }, text));
}

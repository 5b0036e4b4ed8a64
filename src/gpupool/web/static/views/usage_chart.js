// The Usage page's chart: GPU-hours per bucket of time, one stacked bar per bucket, one
// segment per key (team, user or queue), drawn as inline SVG (no chart library: the console
// loads nothing from another host). Attributes only, never inline styles (CSP).

import { h, sliceColour, teamHue } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 720;
const H = 230;
const PAD = { left: 52, right: 8, top: 10, bottom: 26 };

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

/** GPU-hours as the page shows them: two decimals. */
export function hours(gpuSeconds) {
  return (Number(gpuSeconds) / 3600).toFixed(2);
}

/** A short number for an axis tick: 0, 0.5, 12, 0.0005. */
function tick(value) {
  return String(Number(value.toPrecision(3)));
}

/** The least "nice" step (1, 2 or 5 × 10^k) that covers `max` in about four ticks. */
function niceStep(max) {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

/** Colours per key: the key's hue (a team's colour on every page); keys sharing a hue
 * alternate lightness, so they stay apart. */
export function colours(keys) {
  const seen = new Map();
  const out = new Map();
  for (const key of keys) {
    const hue = teamHue(key);
    const shade = seen.get(hue) || 0;
    seen.set(hue, shade + 1);
    out.set(key, sliceColour(key, shade));
  }
  return out;
}

function bucketLabel(start, step, withTime) {
  const d = new Date(start * 1000);
  if (withTime) return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  if (step < 86400) return d.toLocaleString(undefined, { weekday: "short", hour: "2-digit" });
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

/**
 * The stacked bar chart of a /usage/series answer, `keys` in stacking order (bottom first),
 * or a note when nothing was held. `what` names the keys ("team"), `span` the window.
 */
export function stackedChart(series, keys, what, span) {
  const { start, step_s: step, buckets, values } = series;
  const totals = Array.from({ length: buckets }, (_, i) => keys.reduce((sum, k) => sum + (values[k][i] || 0), 0));
  const peak = Math.max(0, ...totals) / 3600;
  if (!keys.length || peak <= 0) {
    return h("p", { class: "muted", "data-testid": "usage-chart-empty" }, "No GPU-hours in this window.");
  }
  const colour = colours(keys);
  const ystep = niceStep(peak);
  const ticks = Math.ceil(peak / ystep - 1e-9);
  const top = ticks * ystep;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const y = (v) => PAD.top + plotH - (plotH * v) / top;
  const slot = plotW / buckets;
  const barW = Math.max(1, slot * 0.78);
  const stepWords = step >= 86400 ? "day" : step === 3600 ? "hour" : `${step / 3600} hours`;
  const summary = `GPU-hours per ${stepWords}, stacked per ${what}, ${span}: `
    + keys.map((k) => `${k} ${hours(values[k].reduce((a, b) => a + b, 0))}`).join(", ");
  const svg = s("svg", { class: "usage-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary,
    "data-testid": "usage-chart", preserveAspectRatio: "xMidYMid meet" }, s("title", {}, summary));

  const axes = s("g", { class: "usage-axes" });
  for (let n = 0; n <= ticks; n += 1) {
    const v = n * ystep;
    axes.append(s("line", { class: v ? "grid" : "axis", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, tick(v)));
  }
  axes.append(s("text", { x: 12, y: PAD.top + plotH / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${PAD.top + plotH / 2})` }, "GPU-hours"));
  const every = Math.ceil(buckets / 6);
  const withTime = buckets * step <= 86400;
  for (let i = 0; i < buckets; i += every) {
    axes.append(s("text", { x: PAD.left + slot * i + slot / 2, y: H - 8, "text-anchor": "middle" },
      bucketLabel(start + i * step, step, withTime)));
  }
  svg.append(axes);

  const bars = s("g", { class: "usage-bars" });
  for (let i = 0; i < buckets; i += 1) {
    let base = 0;
    const x = PAD.left + slot * i + (slot - barW) / 2;
    const from = new Date((start + i * step) * 1000).toLocaleString();
    for (const key of keys) {
      const seconds = values[key][i] || 0;
      if (seconds <= 0) continue;
      const v = seconds / 3600;
      bars.append(s("rect", { x: x.toFixed(2), y: y(base + v).toFixed(2), width: barW.toFixed(2),
        height: Math.max(0.5, y(base) - y(base + v)).toFixed(2), fill: colour.get(key),
        "data-key": key, "data-bucket": i, "data-gpu-seconds": seconds },
      s("title", {}, `${what} ${key} · from ${from} · ${hours(seconds)} GPU-hours`)));
      base += v;
    }
  }
  svg.append(bars);
  return svg;
}

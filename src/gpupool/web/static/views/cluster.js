// Cluster view: every node and GPU, each GPU a bar of its allocated slices (width ∝ share,
// colour = team, label = job), and totals of allocated, free and fragmented capacity.

import { api } from "../api.js";
import { changeTracker, fill, gpuRequest, h, mib, milliAsGpus, sliceColour, teamHue } from "../dom.js";

/** Per-GPU needs of the pending GPU jobs: {milli, memory, model, job}. */
export function pendingNeeds(pendingJobs) {
  const needs = [];
  for (const job of pendingJobs) {
    const g = Number(job.spec.gpus) || 0;
    const memory = Number(job.spec.gpu_memory) || 0;
    if (g <= 0 && !memory) continue; // asks for no GPU at all
    const milli = g >= 1 ? 1000 : Math.round(g * 1000);
    needs.push({ milli, memory, model: (job.spec.gpu_model || "").toLowerCase(), job });
  }
  return needs;
}

function fits(need, gpu, freeMilli, freeMemory) {
  if (need.model && !gpu.model.toLowerCase().includes(need.model)) return false;
  return freeMilli >= need.milli && (!need.memory || freeMemory >= need.memory);
}

/**
 * A GPU's free capacity is fragmented when no pending GPU job could use it: it is smaller
 * than every pending job's per-GPU share (or lacks the memory, or is the wrong model).
 * With no pending GPU work nothing is fragmented.
 */
export function fragmentedMilli(gpu, needs) {
  const freeMilli = Math.max(0, 1000 - gpu.allocated_milli);
  const freeMemory = Math.max(0, gpu.memory_mib - gpu.allocated_memory_mib);
  if (freeMilli === 0 || needs.length === 0) return 0;
  return needs.some((n) => fits(n, gpu, freeMilli, freeMemory)) ? 0 : freeMilli;
}

function total(label, value, note, testid) {
  return h("div", { class: "total", "data-testid": testid }, h("div", { class: "total-label" }, label),
    h("div", { class: "total-value" }, value), h("div", { class: "total-note" }, note));
}

function slices(gpu, jobsById) {
  // The API lists each job's share of the GPU (another team's job as "(other team)").
  return gpu.shares.map((s) => ({ id: s.job, job: jobsById.get(s.job) || null, milli: s.milli, limit: s.memory_limit_mib }));
}

const TERMS_SHOWN = 4; // more shares than this are summed up, not spelt out

/** "a + b = sum" for a few terms, "sum" alone for one, "sum (n jobs)" for many. */
function summed(terms, sum) {
  if (terms.length <= 1) return sum;
  if (terms.length > TERMS_SHOWN) return `${sum} (${terms.length} jobs)`;
  return `${terms.join(" + ")} = ${sum}`;
}

/**
 * What the GPU's jobs hold, e.g. "0.5 + 0.25 = 0.75 of 1 GPU allocated · memory limits
 * 40 GiB + 20 GiB = 60 GiB of 80 GiB". A job asking for a fraction gets that fraction of the
 * card's memory as its limit, so the limits tell what is reserved (the scheduler's own
 * memory count, allocated_memory_mib, holds only explicit gpu_memory asks).
 */
export function gpuUsage(gpu) {
  const shares = gpu.shares || [];
  const compute = shares.filter((s) => s.milli > 0); // memory-only shares take no compute
  const used = `${summed(compute.map((s) => milliAsGpus(s.milli)), milliAsGpus(gpu.allocated_milli))} of 1 GPU allocated`;
  if (!shares.length) return `${used} · ${mib(gpu.memory_mib)} of memory free`;
  const limits = shares.map((s) => (s.memory_limit_mib ? mib(s.memory_limit_mib) : "no limit"));
  const reserved = gpu.reserved_memory_mib;
  const over = reserved > gpu.memory_mib ? " (the limits overlap: more than the card holds)" : "";
  return `${used} · memory limit${shares.length === 1 ? "" : "s"} ${summed(limits, mib(reserved))} of ${mib(gpu.memory_mib)}${over}`;
}

function gpuRow(node, gpu, jobsById, needs) {
  const frag = fragmentedMilli(gpu, needs);
  const freeMilli = Math.max(0, 1000 - gpu.allocated_milli);
  const bar = h("div", { class: "gpu-bar", role: "img",
    "aria-label": `GPU ${gpu.index}: ${milliAsGpus(gpu.allocated_milli)} of 1 allocated` });
  const shadeByTeam = new Map();
  for (const s of slices(gpu, jobsById)) {
    const width = `${(s.milli / 10).toFixed(2)}%`;
    // A memory-only share (no compute fraction) still gets a sliver, so it is seen.
    const cls = s.milli ? "slice" : "slice slice-memory-only";
    const share = `${s.milli ? `${milliAsGpus(s.milli)} GPU` : "memory only"} · memory limit ${s.limit ? mib(s.limit) : "none"}`;
    if (s.job) {
      const shade = shadeByTeam.get(s.job.team) || 0;
      shadeByTeam.set(s.job.team, shade + 1);
      const title = `job ${s.id} · ${s.job.name} · team ${s.job.team} · ${share} · ${s.job.user}`;
      bar.append(h("a", {
        class: cls, href: `#/jobs/${s.id}`, title, "data-job": s.id, "data-team": s.job.team,
        style: { width, background: sliceColour(s.job.team, shade) },
      }, h("span", { class: "slice-label" }, `#${s.id} ${s.job.name}`)));
    } else {
      const label = /^\d+$/.test(s.id) ? `#${s.id}` : "other team";
      bar.append(h("span", { class: `${cls} slice-hidden`, title: `${label} · ${share}`,
        style: { width } }, h("span", { class: "slice-label" }, label)));
    }
  }
  if (freeMilli > 0) {
    bar.append(h("span", {
      class: frag ? "free fragment" : "free",
      style: { width: `${(freeMilli / 10).toFixed(2)}%` },
      title: frag ? `${milliAsGpus(freeMilli)} GPU free but too small for the pending work` : `${milliAsGpus(freeMilli)} GPU free`,
    }, h("span", { class: "slice-label" }, frag ? "fragment" : "free")));
  }
  return h("div", { class: "gpu", "data-testid": `gpu-${node.name}-${gpu.index}` },
    h("div", { class: "gpu-head" },
      h("span", { class: "gpu-name" }, `GPU ${gpu.index}`),
      h("span", { class: "gpu-model" }, gpu.model),
      h("span", { class: "gpu-mem" }, mib(gpu.memory_mib))),
    bar,
    h("div", { class: "gpu-foot muted", "data-testid": "gpu-usage" }, gpuUsage(gpu),
      frag ? ` · ${milliAsGpus(frag)} fragmented` : ""));
}

function nodeCard(node, jobsById, needs) {
  const labels = Object.entries(node.labels || {}).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`));
  return h("section", { class: "card node", "data-testid": `node-${node.name}` },
    h("div", { class: "node-head" },
      h("h2", {}, node.name),
      h("span", { class: "chip" }, node.source === "fake" ? "fake GPUs" : node.source),
      labels),
    h("p", { class: "muted node-res" },
      `${node.gpus.length} GPU${node.gpus.length === 1 ? "" : "s"} · requested by jobs: `,
      `CPU ${milliAsGpus(node.cpu_allocated_milli)} of ${milliAsGpus(node.cpu_milli)} cores, `,
      `memory ${mib(node.memory_allocated_mib)} of ${mib(node.memory_mib)}`),
    node.gpus.length ? node.gpus.map((g) => gpuRow(node, g, jobsById, needs))
      : h("p", { class: "muted" }, "No GPUs on this node."));
}

export function mount(root, ctx) {
  const totals = h("div", { class: "totals" });
  const legend = h("div", { class: "legend", "aria-label": "Teams" });
  const nodesEl = h("div", { class: "nodes" }, h("p", { class: "muted" }, "Loading…"));
  const needsEl = h("p", { class: "hint" });
  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Cluster"),
      h("p", { class: "muted" }, "Every node and GPU; each coloured slice is a running job, coloured by team.")),
    totals, needsEl, legend, nodesEl);

  const changed = changeTracker();
  async function refresh() {
    const [nodes, running, starting, pending] = await Promise.all([
      api("nodes"), api("jobs?phase=running"), api("jobs?phase=starting"), api("jobs?phase=pending"),
    ]);
    if (!changed("all", [nodes, running, starting, pending.map((j) => [j.id, j.spec])])) return;
    const jobsById = new Map([...running, ...starting].map((j) => [j.id, j]));
    const needs = pendingNeeds(pending);
    let capacity = 0;
    let allocated = 0;
    let fragmented = 0;
    let gpuCount = 0;
    for (const node of nodes) {
      for (const gpu of node.gpus) {
        gpuCount += 1;
        capacity += 1000;
        allocated += Math.min(1000, gpu.allocated_milli);
        fragmented += fragmentedMilli(gpu, needs);
      }
    }
    const free = capacity - allocated;
    const pct = (x) => (capacity ? `${Math.round((100 * x) / capacity)}%` : "—");
    fill(totals,
      total("GPUs", String(gpuCount), `on ${nodes.length} node${nodes.length === 1 ? "" : "s"}`, "total-gpus"),
      total("Allocated", milliAsGpus(allocated), `${pct(allocated)} of the pool`, "total-allocated"),
      total("Free", milliAsGpus(free), pct(free), "total-free"),
      total("Fragmented", milliAsGpus(fragmented), `${pct(fragmented)} · free but unusable by queued work`, "total-fragmented"));
    if (needs.length) {
      const smallest = needs.reduce((a, b) => (b.milli < a.milli ? b : a));
      fill(needsEl, "Fragmented = free capacity on GPUs where none of the ", String(needs.length),
        ` pending GPU job${needs.length === 1 ? "" : "s"} you can see would fit (the smallest asks for `,
        gpuRequest(smallest.job.spec), ").");
    } else {
      fill(needsEl, "Fragmented = free capacity on GPUs where no pending GPU job you can see would fit; ",
        "with no pending GPU work, nothing is fragmented.");
    }
    const teams = [...new Set([...jobsById.values()].map((j) => j.team))].sort();
    const gpuList = nodes.flatMap((n) => n.gpus);
    const anyHidden = gpuList.some((g) => g.jobs.some((id) => !jobsById.has(id)));
    fill(legend, teams.map((t) => h("span", { class: "legend-item" },
      h("span", { class: "swatch", style: { background: `hsl(${teamHue(t)} 62% 46%)` } }), `team ${t}`)),
    anyHidden ? h("span", { class: "legend-item" }, h("span", { class: "swatch swatch-hidden" }), "another team's job") : null,
    h("span", { class: "legend-item" }, h("span", { class: "swatch swatch-free" }), "free"),
    fragmented ? h("span", { class: "legend-item" }, h("span", { class: "swatch swatch-fragment" }), "fragment") : null);
    fill(nodesEl, nodes.length ? nodes.map((n) => nodeCard(n, jobsById, needs))
      : h("p", { class: "muted" }, "No nodes have joined the pool yet."));
  }
  return { title: "Cluster", refresh };
}

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
  // The API names the jobs on a GPU (others' as "(other team)") and their summed share;
  // shares of jobs we may see come from their placement, the rest is split evenly.
  const known = [];
  const hidden = [];
  for (const id of gpu.jobs) {
    const job = jobsById.get(id);
    if (job && job.placement) known.push({ id, job, milli: job.placement.gpu_milli || 1000 });
    else hidden.push(id);
  }
  const knownMilli = known.reduce((s, k) => s + k.milli, 0);
  const rest = Math.max(0, gpu.allocated_milli - knownMilli);
  const each = hidden.length ? rest / hidden.length : 0;
  return [...known, ...hidden.map((id) => ({ id, job: null, milli: each }))];
}

function gpuRow(node, gpu, jobsById, needs) {
  const frag = fragmentedMilli(gpu, needs);
  const freeMilli = Math.max(0, 1000 - gpu.allocated_milli);
  const bar = h("div", { class: "gpu-bar", role: "img",
    "aria-label": `GPU ${gpu.index}: ${milliAsGpus(gpu.allocated_milli)} of 1 allocated` });
  const shadeByTeam = new Map();
  for (const s of slices(gpu, jobsById)) {
    const width = `${(s.milli / 10).toFixed(2)}%`;
    if (s.job) {
      const shade = shadeByTeam.get(s.job.team) || 0;
      shadeByTeam.set(s.job.team, shade + 1);
      const title = `job ${s.id} · ${s.job.name} · team ${s.job.team} · ${milliAsGpus(s.milli)} GPU · ${s.job.user}`;
      bar.append(h("a", {
        class: "slice", href: `#/jobs/${s.id}`, title, "data-job": s.id, "data-team": s.job.team,
        style: { width, background: sliceColour(s.job.team, shade) },
      }, h("span", { class: "slice-label" }, `#${s.id} ${s.job.name}`)));
    } else {
      const label = /^\d+$/.test(s.id) ? `#${s.id}` : "other team";
      bar.append(h("span", { class: "slice slice-hidden", title: `${label} · ${milliAsGpus(s.milli)} GPU`,
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
    h("div", { class: "gpu-foot muted" },
      `${milliAsGpus(gpu.allocated_milli)} of 1 GPU allocated · memory ${mib(gpu.allocated_memory_mib)} of ${mib(gpu.memory_mib)}`,
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
      `CPU ${milliAsGpus(node.cpu_allocated_milli)} of ${milliAsGpus(node.cpu_milli)} cores · `,
      `memory ${mib(node.memory_allocated_mib)} of ${mib(node.memory_mib)} · ${node.gpus.length} GPU${node.gpus.length === 1 ? "" : "s"}`),
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

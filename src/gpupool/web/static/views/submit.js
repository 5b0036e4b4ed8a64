// Submit a simple job: a command line (split like a shell, shown as the arguments the
// program will get), GPUs (whole or a fraction of one), queue and priority; a few more
// fields under "More options". The API validates; its message is shown as is.

import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { split, SplitError } from "../shell.js";

function field(label, input, hint) {
  const id = input.id;
  return h("div", { class: "field" },
    h("label", { for: id }, label), input, hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null);
}

export function mount(root, ctx) {
  const command = h("textarea", { id: "command", name: "command", rows: 2, required: true, spellcheck: "false",
    autocomplete: "off", placeholder: "python train.py --epochs 3", "aria-describedby": "command-hint" });
  const argsPreview = h("div", { class: "args", "aria-live": "polite" });
  const gpus = h("input", { id: "gpus", name: "gpus", type: "number", min: "0", max: "64", step: "any",
    value: "1", inputmode: "decimal", "aria-describedby": "gpus-hint" });
  const queue = h("select", { id: "queue", name: "queue" }, h("option", { value: ctx.me.team, selected: true }, ctx.me.team));
  const priority = h("input", { id: "priority", name: "priority", type: "number", min: "-1000", max: "1000",
    step: "1", value: "0" });
  const name = h("input", { id: "name", name: "name", type: "text", autocomplete: "off", placeholder: "(from the program name)" });
  const gpuMemory = h("input", { id: "gpu_memory", name: "gpu_memory", type: "text", placeholder: "e.g. 20GiB", autocomplete: "off" });
  const gpuModel = h("input", { id: "gpu_model", name: "gpu_model", type: "text", placeholder: "e.g. A100", autocomplete: "off" });
  const cpu = h("input", { id: "cpu", name: "cpu", type: "number", min: "0", step: "any", value: "0" });
  const memory = h("input", { id: "memory", name: "memory", type: "text", placeholder: "e.g. 16GiB", autocomplete: "off" });
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "button primary" }, "Submit job");

  const form = h("form", { class: "card submit-form", novalidate: true },
    field("Command", command, "Split like a shell: quote arguments with spaces ('like this' or \"like this\"). No pipes or variables: the program gets exactly these arguments."),
    argsPreview,
    h("div", { class: "row" },
      field("GPUs", gpus, "0 = none · 0.25 = a quarter of one GPU · 2 = two whole GPUs"),
      field("Queue", queue, ctx.me.admin ? "Admins may submit to any queue." : "Your team's queue."),
      field("Priority", priority, "−1000 … 1000; higher goes first and may preempt lower in its queue.")),
    field("Name", name),
    h("details", { class: "more" }, h("summary", {}, "More options"),
      h("div", { class: "row" },
        field("GPU memory", gpuMemory, "Per GPU; alone it asks for a share of one GPU."),
        field("GPU model", gpuModel, "A part of the model name."),
        field("CPU cores", cpu),
        field("Memory", memory))),
    h("div", { class: "form-actions" }, button, status));

  fill(root,
    h("div", { class: "view-head" }, h("h1", {}, "Submit a job"),
      h("p", { class: "muted" }, "It waits in the queue until the scheduler places it; you then see it run.")),
    form);

  function parsed() {
    try {
      return { args: split(command.value) };
    } catch (err) {
      if (err instanceof SplitError) return { error: err.message };
      throw err;
    }
  }

  command.addEventListener("input", () => {
    const { args, error } = parsed();
    if (error) fill(argsPreview, h("span", { class: "error" }, error));
    else if (!args.length) fill(argsPreview);
    else fill(argsPreview, h("span", { class: "muted" }, "Arguments: "), args.map((a) => h("code", { class: "arg" }, a)));
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { args, error } = parsed();
    status.className = "form-status error";
    if (error) {
      status.textContent = `command: ${error}`;
      command.focus();
      return;
    }
    if (!args.length) {
      status.textContent = "command: type the program to run, e.g. python train.py";
      command.focus();
      return;
    }
    const body = { command: args, queue: queue.value, gpus: Number(gpus.value || 0), priority: Number(priority.value || 0) };
    if (!Number.isFinite(body.gpus)) {
      status.textContent = "gpus: a number such as 0.5 or 2";
      return;
    }
    if (name.value.trim()) body.name = name.value.trim();
    if (gpuMemory.value.trim()) body.gpu_memory = gpuMemory.value.trim();
    if (gpuModel.value.trim()) body.gpu_model = gpuModel.value.trim();
    if (Number(cpu.value)) body.cpu = Number(cpu.value);
    if (memory.value.trim()) body.memory = memory.value.trim();
    button.disabled = true;
    status.className = "form-status";
    status.textContent = "Submitting…";
    try {
      const job = await api("jobs", { method: "POST", body });
      ctx.navigate(`#/jobs/${job.id}`);
    } catch (err) {
      status.className = "form-status error";
      status.textContent = `Not submitted: ${err.message}`;
      button.disabled = false;
    }
  });

  async function loadQueues() {
    const queues = await api("queues");
    const have = new Set([...queue.options].map((o) => o.value));
    for (const q of queues) if (!have.has(q.name)) queue.append(h("option", { value: q.name }, q.name));
  }
  loadQueues().catch((err) => ctx.showBanner(err.message));
  command.focus();
  return { title: "Submit" };
}

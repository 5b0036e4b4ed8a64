// The Services page's deploy form: a service's spec from a few fields (the command line split
// like a shell) plus an optional JSON object of the other fields. POST /services creates the
// service or, for a name of the team's, rolls the changed spec out. The API's errors are shown
// next to the form, with the field they name marked invalid.

import { api } from "../api.js";
import { h, fill, shellJoin } from "../dom.js";
import { split, SplitError } from "../shell.js";

const FORM_KEYS = ["kind", "name", "command", "gpus", "replicas", "auth", "readiness"];

export function field(label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input,
    hint ? h("p", { class: "hint", id: `${input.id}-hint` }, hint) : null);
}

export function input(id, attrs) {
  return h("input", { id, name: id.slice(4), autocomplete: "off", spellcheck: "false", "aria-describedby": `${id}-hint`, ...attrs });
}

/** Show `text` in the status line `el` ("ok", "error" or ""), and mark `invalid` so. */
export function setStatus(el, text, kind, invalid) {
  el.className = `form-status ${kind}`;
  fill(el, text);
  if (invalid) {
    invalid.setAttribute("aria-invalid", "true");
    invalid.focus();
  }
}

/** → { form, edit(service) }; onDeployed(service) after each deploy the API accepts. */
export function deployForm(onDeployed) {
  const name = input("svc-name", { type: "text", placeholder: "e.g. echo", pattern: "[a-z0-9]([a-z0-9-]*[a-z0-9])?" });
  const command = input("svc-command", { type: "text", placeholder: "e.g. python3 serve.py --model small" });
  const gpus = input("svc-gpus", { type: "number", min: "0", step: "any", value: "0", inputmode: "decimal" });
  const min = input("svc-min", { type: "number", min: "0", step: "1", value: "1", inputmode: "numeric" });
  const max = input("svc-max", { type: "number", min: "1", step: "1", value: "1", inputmode: "numeric" });
  const auth = h("select", { id: "svc-auth", name: "auth", "aria-describedby": "svc-auth-hint" },
    h("option", { value: "token" }, "token"), h("option", { value: "public" }, "public"));
  const readiness = input("svc-readiness", { type: "text", value: "/", placeholder: "/" });
  const extra = h("textarea", { id: "svc-extra", name: "extra", rows: "4", spellcheck: "false", "aria-describedby": "svc-extra-hint",
    placeholder: '{"workdir": "/srv/app", "env": {"MODEL": "v2"}, "scaling": {"target_inflight": 4}}' });
  const status = h("div", { class: "form-status", role: "status", "aria-live": "polite", "data-testid": "service-form-status" });
  const button = h("button", { type: "submit", class: "button primary", "data-testid": "service-deploy" }, "Deploy service");
  const more = h("details", { class: "more" }, h("summary", {}, "More settings (JSON)"),
    field("Other spec fields", extra, "A JSON object of the spec's other fields (workdir, env, scaling, gpu_memory, …); "
      + "the fields above win."));
  const form = h("form", { class: "card notebook-form", novalidate: true, "data-testid": "service-form",
    "aria-labelledby": "svc-form-title" },
  h("h2", { id: "svc-form-title" }, "Deploy a service"),
  field("Command", command, "Split like a shell. It must serve HTTP on 127.0.0.1:$PORT (gpupool sets PORT)."),
  h("div", { class: "row" },
    field("Name", name, "Lower-case letters, digits and -. Deploying an existing name updates it."),
    field("GPUs per replica", gpus, "0.25 = a quarter of one GPU · 1 = a whole GPU · 0 = none"),
    field("Min replicas", min, "0: scale to zero when idle."),
    field("Max replicas", max, "Scaled out by the requests in flight."),
    field("Auth", auth, "token: a token of the team, or an API key · public: no credential."),
    field("Readiness path", readiness, "Ready once GET on it answers 2xx or 3xx.")),
  more, h("div", { class: "form-actions" }, button, status));
  const named = { name, command, gpus, replicas: min, auth, readiness };

  /** The spec the form describes; throws [message, input] for what cannot be sent. */
  function read() {
    let spec = {};
    if (extra.value.trim()) {
      try {
        spec = JSON.parse(extra.value);
      } catch (err) {
        throw [`More settings: not JSON (${err.message})`, extra];
      }
      if (!spec || typeof spec !== "object" || Array.isArray(spec)) throw ['More settings: a JSON object, e.g. {"workdir": "/srv"}', extra];
    }
    let args;
    try {
      args = split(command.value);
    } catch (err) {
      throw [`command: ${err instanceof SplitError ? err.message : err}`, command];
    }
    if (!args.length) throw ["command: the program to run, e.g. python3 serve.py", command];
    const bad = [gpus, min, max].find((el) => el.value.trim() === "" || !Number.isFinite(Number(el.value)));
    if (bad) throw [`${bad.labels[0].textContent}: a number`, bad];
    return Object.assign(spec, { name: name.value.trim(), command: args, gpus: Number(gpus.value), auth: auth.value,
      replicas: { min: Number(min.value), max: Number(max.value) }, readiness: { path: readiness.value.trim() || "/" } });
  }

  form.addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    let spec;
    try {
      spec = read();
    } catch ([text, el]) {
      if (el === extra) more.open = true;
      setStatus(status, text, "error", el);
      return;
    }
    button.disabled = true;
    setStatus(status, "Deploying…", "");
    try {
      const { action, service: s } = await api("services", { method: "POST", body: spec });
      setStatus(status, action === "created" ? `Created ${s.name}: its replicas start once they have their GPU share.`
        : action === "updated" ? `Updated ${s.name} to generation ${s.generation}: new replicas take over once ready.`
          : `${s.name} is unchanged: the spec is the same.`, "ok");
      onDeployed(s);
    } catch (err) {
      const which = /\b(name|command|gpus|replicas|auth|readiness)\b[.\w]*:/.exec(err.message || "");
      setStatus(status, `Not deployed: ${err.message}`, "error", which ? named[which[1]] : null);
    } finally {
      button.disabled = false;
    }
  });

  /** Fill the form from a deployed service, to change and deploy it again. */
  function edit(s) {
    const rest = Object.entries(s.spec).filter(([k, v]) => !FORM_KEYS.includes(k) && v !== null);
    name.value = s.name;
    command.value = shellJoin(s.spec.command);
    gpus.value = String(s.spec.gpus);
    min.value = String(s.spec.replicas.min);
    max.value = String(s.spec.replicas.max);
    auth.value = s.spec.auth;
    readiness.value = s.spec.readiness.path;
    extra.value = JSON.stringify(Object.fromEntries(rest), null, 2);
    more.open = true;
    setStatus(status, `Editing ${s.name}: deploying rolls the changes out (new replicas take over once ready).`, "");
    form.scrollIntoView();
    command.focus();
  }

  return { form, edit };
}

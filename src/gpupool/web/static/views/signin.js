// Sign in with an API token. The token is checked with GET /api/v1/whoami and kept in this
// tab's sessionStorage only (gone when the tab closes; never in a cookie or the URL).

import { api } from "../api.js";
import { fill, h } from "../dom.js";

export function mount(root, { message, onSignedIn }) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "paste your API token",
    "aria-describedby": "token-help",
  });
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite" }, message || "");
  const button = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", autocomplete: "off" },
    h("h1", {}, "gpupool console"),
    h("p", { class: "muted" }, "The pool, the queues and every job you may see."),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "hint" },
      "The admin token is printed once by ", h("code", {}, "gpupool up"), " and saved as ",
      h("code", {}, "admin.token"), " in its data dir; an admin makes more with ",
      h("code", {}, "gpupool admin token create USER"), ".",
    ),
    button,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      status.textContent = "Paste an API token first.";
      return;
    }
    button.disabled = true;
    status.className = "form-status";
    status.textContent = "Checking the token…";
    try {
      const me = await api("whoami", { token });
      onSignedIn(me, token);
    } catch (err) {
      status.className = "form-status error";
      status.textContent = err.status === 401 ? `Sign-in refused: ${err.message}` : err.message;
      button.disabled = false;
      input.focus();
    }
  });
  fill(root, h("div", { class: "signin-wrap" }, form));
  input.focus();
  return { title: "Sign in" };
}

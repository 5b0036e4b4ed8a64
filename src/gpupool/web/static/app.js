// The console's shell: sign-in state, hash routes, and the refresh loop of the current view.
//
// A view module exports mount(root, ctx) → { title, refresh?, interval?, unmount? }.
// The shell calls refresh() at once and then every `interval` ms (2 s by default) while the
// view is shown and the tab is visible; a failed refresh shows the API's message in the
// banner and the loop carries on.

import { api, getToken, setToken } from "./api.js";
import { fill, h, tickTimes } from "./dom.js";
import * as cluster from "./views/cluster.js";
import * as job from "./views/job.js";
import * as jobs from "./views/jobs.js";
import * as notebooks from "./views/notebooks.js";
import * as pipelines from "./views/pipelines.js";
import * as queues from "./views/queues.js";
import * as services from "./views/services.js";
import * as signin from "./views/signin.js";
import * as sim from "./views/sim.js";
import * as submit from "./views/submit.js";
import * as usage from "./views/usage.js";

const ROUTES = [
  { pattern: /^\/cluster$/, view: cluster, nav: "cluster" },
  { pattern: /^\/queues$/, view: queues, nav: "queues" },
  { pattern: /^\/jobs$/, view: jobs, nav: "jobs" },
  { pattern: /^\/jobs\/(\d+)$/, view: job, nav: "jobs" },
  { pattern: /^\/notebooks$/, view: notebooks, nav: "notebooks" },
  { pattern: /^\/services$/, view: services, nav: "services" },
  { pattern: /^\/pipelines(?:\/(\d+))?$/, view: pipelines, nav: "pipelines" },
  { pattern: /^\/usage$/, view: usage, nav: "usage" },
  { pattern: /^\/submit$/, view: submit, nav: "submit" },
  { pattern: /^\/sim$/, view: sim, nav: "sim" },
];
const DEFAULT_ROUTE = "#/cluster";

const root = document.getElementById("view");
const topbar = document.getElementById("topbar");
const banner = document.getElementById("banner");
const whoamiEl = document.getElementById("whoami");

const state = { me: null, current: null, generation: 0, timer: null };

export function showBanner(message) {
  banner.hidden = !message;
  banner.textContent = message || "";
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/cluster";
  const at = raw.indexOf("?");
  const path = at < 0 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at < 0 ? "" : raw.slice(at + 1));
  return { path, params };
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function stopCurrent() {
  state.generation += 1;
  clearTimeout(state.timer);
  state.timer = null;
  if (state.current && state.current.unmount) {
    try {
      state.current.unmount();
    } catch (err) {
      console.error(err);
    }
  }
  state.current = null;
}

async function loop(generation) {
  const view = state.current;
  if (!view || generation !== state.generation) return;
  if (view.refresh && !document.hidden) {
    try {
      await view.refresh();
      if (generation === state.generation) {
        showBanner("");
        tickTimes(root);
      }
    } catch (err) {
      if (generation !== state.generation) return;
      if (err.status === 401) return; // the unauthorized handler takes over
      showBanner(err.message || String(err));
    }
  }
  if (generation !== state.generation || !view.refresh) return;
  state.timer = setTimeout(() => loop(generation), view.interval || 2000);
}

function showSignIn(message) {
  stopCurrent();
  topbar.hidden = true;
  showBanner("");
  document.title = "Sign in · gpupool";
  state.current = signin.mount(root, {
    message,
    onSignedIn(me, token) {
      setToken(token);
      state.me = me;
      const { path } = parseHash();
      if (path === "/" || path === "" || path === "/signin") navigate(DEFAULT_ROUTE);
      else route();
    },
  });
}

/** "ada · team vision", and for an admin a badge: the role is not run together with the names
 * (the first admin is a user named "admin", which read "admin · team default · admin"). */
function showWhoami(me) {
  const names = h("span", { class: "who-name", title: `${me.user} · team ${me.team}` },
    h("span", { class: "who-user" }, me.user), ` · team ${me.team}`);
  const badge = me.admin ? h("span", { class: "who-admin", title: "Administrator: sees and manages every team" }, "Admin") : null;
  fill(whoamiEl, names, badge ? [" ", badge] : null);
}

function route() {
  if (!state.me) {
    showSignIn();
    return;
  }
  stopCurrent();
  topbar.hidden = false;
  showWhoami(state.me);
  const { path, params } = parseHash();
  const found = ROUTES.map((r) => ({ r, m: r.pattern.exec(path) })).find((x) => x.m);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", !!found && link.dataset.route === found.r.nav);
    if (found && link.dataset.route === found.r.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!found) {
    document.title = "Not found · gpupool";
    fill(root, h("section", { class: "card" }, h("h1", {}, "No such page"),
      h("p", {}, "Try the ", h("a", { href: DEFAULT_ROUTE }, "cluster view"), ".")));
    return;
  }
  const generation = state.generation;
  const ctx = { me: state.me, match: found.m, params, navigate, showBanner };
  state.current = found.r.view.mount(root, ctx);
  document.title = `${state.current.title || "gpupool"} · gpupool`;
  window.scrollTo(0, 0);
  loop(generation);
}

async function start() {
  document.getElementById("signout").addEventListener("click", () => {
    setToken("");
    state.me = null;
    showSignIn("Signed out.");
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("gpupool:unauthorized", (event) => {
    setToken("");
    state.me = null;
    showSignIn(`Your API token was refused: ${event.detail}. Sign in again.`);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.current && state.current.refresh) {
      clearTimeout(state.timer);
      loop(state.generation);
    }
  });
  const token = getToken();
  if (token) {
    try {
      state.me = await api("whoami", { token });
    } catch (err) {
      setToken("");
      showSignIn(err.status === 401 ? `Your saved token was refused: ${err.message}` : err.message);
      return;
    }
  }
  route();
}

start();

// Berth web UI: one page over the server's REST API (/v1) and its event stream. No build
// step and no third-party code: the server embeds these files as they are.
"use strict";

const view = document.getElementById("view");
const errorBox = document.getElementById("error");

// --- helpers -------------------------------------------------------------------------

/** Builds an element: el("td", {class: "num"}, "text", childNode, ...). Text is never
 *  parsed as HTML, so values from the API cannot inject markup. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, empty) {
  if (rows.length === 0) return el("p", { class: "muted" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function badge(state) {
  return el("span", { class: "state " + state }, state);
}

function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function appPath(id) {
  return "/v1/apps/" + id.split("/").map(encodeURIComponent).join("/");
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : "HTTP " + status);
    this.status = status;
    this.body = body || {};
  }
}

// --- the ACL token ---------------------------------------------------------------------
// A server started with --acl answers 401 to a call without a token; the page then shows
// the login view, and the token given there is kept in this tab's sessionStorage (gone
// when the tab closes or on sign out), sent as `Authorization: Bearer` with every call,
// the event stream included, and never put in a URL. A server without ACLs never answers
// 401, so the login view never shows there.

const TOKEN_KEY = "berth.token";

function token() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
}

function setToken(secret) {
  if (secret) sessionStorage.setItem(TOKEN_KEY, secret);
  else sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("sign-out").hidden = !secret;
}

/** The headers every call to the API carries: the token, when there is one. */
function authHeaders(headers) {
  const secret = token();
  if (secret) headers["authorization"] = "Bearer " + secret;
  return headers;
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders({}) };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function showError(err) {
  errorBox.replaceChildren();
  if (!err) { errorBox.hidden = true; return; }
  errorBox.append(err.message);
  const problems = (err.body && err.body.errors) || [];
  if (problems.length) {
    errorBox.append(el("ul", { class: "errors" },
      problems.map((p) => el("li", { "data-field": p.field }, p.field + ": " + p.message + (p.fix ? " (" + p.fix + ")" : "")))));
  }
  errorBox.hidden = false;
}

/** Runs a user action; shows its error, or refreshes the view when it worked. */
async function act(work) {
  try {
    await work();
    showError(null);
    await render();
  } catch (err) {
    if (err.status === 401) loginView(err);
    else showError(err);
  }
}

// --- views ---------------------------------------------------------------------------

async function appsView() {
  const { apps } = await api("GET", "/v1/apps");
  const rows = apps.map((a) => {
    const s = a.status || {};
    const dep = a.deployment;
    return el("tr", { "data-app": a.spec.id },
      el("td", {}, el("a", { href: "#/apps/" + a.spec.id }, a.spec.id)),
      el("td", { class: "num" }, (s.running ?? 0) + "/" + (s.wanted ?? a.spec.instances)),
      el("td", {}, a.change),
      el("td", {}, dep ? badge(dep.state) : ""),
      el("td", { class: "why" }, s.why || ""));
  });
  return [el("h1", {}, "Apps"),
    table(["APP", "RUNNING", "LAST CHANGE", "DEPLOYMENT", "PROBLEM"], rows,
      "No apps yet. Create one with New app.")];
}

async function appView(id) {
  const app = await api("GET", appPath(id));
  const s = app.status || {};
  const scaleInput = el("input", { type: "number", min: 0, max: 10000, value: app.spec.instances, id: "scale-to" });
  const toolbar = el("div", { class: "toolbar" },
    el("label", {}, "Instances ", scaleInput),
    el("button", { class: "primary", id: "scale", onclick: () => act(() =>
      api("POST", appPath(id) + "/scale", { instances: Number(scaleInput.value) })) }, "Scale"),
    el("button", { id: "restart", onclick: () => act(() => api("POST", appPath(id) + "/restart", {})) }, "Restart"),
    el("a", { href: "#/edit/" + id }, el("button", { id: "edit" }, "Edit spec")),
    el("a", { href: "#/diag/" + id }, el("button", { id: "diagnose" }, "Diagnose")),
    el("button", { class: "danger", id: "delete", onclick: () => {
      if (confirm("Delete " + id + " and stop its instances?")) {
        act(async () => { await api("DELETE", appPath(id)); location.hash = "#/apps"; });
      }
    } }, "Delete"));

  const instances = (app.instances || []).map((i) => el("tr", { "data-instance": i.id },
    el("td", {}, i.id), el("td", {}, badge(i.state)), el("td", {}, i.node),
    el("td", {}, (i.ports || []).join(", ")), el("td", {}, i.version),
    el("td", { class: "muted" }, i.message || "")));
  const events = (app.events || []).slice().reverse().map((e) => el("tr", {},
    el("td", { class: "muted" }, ago(e.at_ms)), el("td", {}, e.type), el("td", {}, e.message)));
  const failure = s.last_failure;
  return [
    el("h1", {}, id),
    el("p", {},
      "running ", el("strong", { id: "running" }, (s.running ?? 0) + "/" + (s.wanted ?? app.spec.instances)),
      ", version ", app.version, " (", app.change, ")",
      app.deployment ? [", deployment ", el("a", { href: "#/deployments" }, app.deployment.id), " ", badge(app.deployment.state)] : ""),
    s.why ? el("p", { class: "why" }, s.why) : "",
    failure ? el("div", {}, el("p", { class: "why" },
      "last failure: ", failure.message || "", failure.exit_code !== undefined ? " (exit code " + failure.exit_code + ")" : "",
      s.backoff_ms ? ", next start in " + Math.round(s.backoff_ms / 100) / 10 + " s" : ""),
      failure.stderr_tail ? el("pre", {}, failure.stderr_tail) : "") : "",
    toolbar,
    el("h2", {}, "Instances"),
    table(["INSTANCE", "STATE", "NODE", "PORTS", "VERSION", "MESSAGE"], instances, "No instances."),
    el("h2", {}, "Spec"),
    el("pre", { id: "spec" }, JSON.stringify(app.spec, null, 2)),
    el("h2", {}, "Events"),
    table(["WHEN", "TYPE", "MESSAGE"], events, "No events yet."),
  ];
}

async function deploymentsView() {
  const { deployments } = await api("GET", "/v1/deployments");
  const rows = deployments.map((d) => {
    const p = d.progress || {};
    const active = d.state === "running";
    return el("tr", { "data-deployment": d.id },
      el("td", {}, d.id), el("td", {}, el("a", { href: "#/apps/" + d.app }, d.app)),
      el("td", {}, d.kind), el("td", {}, badge(d.state)),
      el("td", { class: "num" }, (p.ready ?? 0) + "/" + (p.wanted ?? 0)),
      el("td", { class: "muted" }, ((d.steps || []).slice(-1)[0] || {}).message || d.reason || ""),
      el("td", {}, active ? el("button", { onclick: () => act(() => api("DELETE", "/v1/deployments/" + d.id)) }, "Roll back") : ""));
  });
  return [el("h1", {}, "Deployments"),
    table(["ID", "APP", "KIND", "STATE", "READY", "LAST STEP", ""], rows, "No deployments yet.")];
}

async function nodesView() {
  const { nodes } = await api("GET", "/v1/nodes");
  const rows = nodes.map((n) => el("tr", {},
    el("td", {}, n.id), el("td", {}, n.hostname), el("td", {}, badge(n.status)),
    el("td", { class: "num" }, n.instances),
    el("td", {}, (n.allocated?.cpus ?? 0).toFixed(2) + " / " + (n.total?.cpus ?? 0) + " cpus, " +
      (n.allocated?.mem_mib ?? 0) + " / " + (n.total?.mem_mib ?? 0) + " MiB"),
    el("td", { class: "muted" }, Object.entries(n.labels || {}).map(([k, v]) => k + "=" + v).join(", "))));
  return [el("h1", {}, "Nodes"),
    table(["NODE", "HOSTNAME", "STATUS", "INSTANCES", "ALLOCATED", "LABELS"], rows, "No node has joined.")];
}

/** Live diagnostics of an app (GET /v1/diag/OP): the agents run the operation and the
 *  lines stream in as they come. Not a live view: events must not wipe the output. */
async function diagView(id) {
  const app = await api("GET", appPath(id));
  const op = el("select", { id: "diag-op" },
    ["grep", "tail", "ps", "ports"].map((o) => el("option", { value: o }, o)));
  const pattern = el("input", { id: "diag-pattern", placeholder: "regular expression (grep)", size: 30 });
  const instance = el("select", { id: "diag-instance" },
    el("option", { value: "" }, "every instance"),
    (app.instances || []).map((i) => el("option", { value: i.id }, i.id)));
  const output = el("pre", { id: "diag-output" });
  const status = el("span", { id: "diag-status", class: "muted" });
  let controller = null;
  const run = async () => {
    if (controller) controller.abort();
    controller = new AbortController();
    const query = new URLSearchParams({ app: id });
    if (instance.value) query.set("instance", instance.value);
    if (op.value === "grep") query.set("pattern", pattern.value);
    output.textContent = "";
    status.textContent = "running";
    showError(null);
    try {
      const response = await fetch("/v1/diag/" + op.value + "?" + query, { signal: controller.signal, headers: authHeaders({}) });
      if (!response.ok) {
        const text = await response.text();
        let body = null;
        try { body = JSON.parse(text); } catch (_) { body = { message: text }; }
        throw new ApiError(response.status, body);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        output.append(decoder.decode(value, { stream: true }));
      }
      status.textContent = "done";
    } catch (err) {
      if (err.name === "AbortError") { status.textContent = "stopped"; return; }
      status.textContent = "failed";
      if (err.status === 401) loginView(err);
      else showError(err);
    }
  };
  return [
    el("h1", {}, "Diagnose ", el("a", { href: "#/apps/" + id }, id)),
    el("p", { class: "muted" }, "Run by the agents through the diagnostics gateways: grep the logs (rotated files too), tail them, list the processes or the listening ports of the app's instances."),
    el("div", { class: "toolbar" }, op, pattern, instance,
      el("button", { class: "primary", id: "diag-run", onclick: run }, "Run"),
      el("button", { id: "diag-stop", onclick: () => controller && controller.abort() }, "Stop"),
      status),
    output,
  ];
}

const TEMPLATE = {
  id: "shop/web",
  cmd: "exec python3 -m http.server $PORT --bind 127.0.0.1",
  instances: 2,
  cpus: 0.1,
  mem: 64,
  ports: 1,
  routes: ["web.localhost"],
  health_checks: [{ protocol: "http", path: "/", interval_seconds: 2, timeout_seconds: 1 }],
};

async function specView(id) {
  const editing = id !== undefined;
  const current = editing ? (await api("GET", appPath(id))).spec : TEMPLATE;
  const text = el("textarea", { id: "spec-text", spellcheck: "false" });
  text.value = JSON.stringify(current, null, 2);
  const submit = () => act(async () => {
    let spec;
    try { spec = JSON.parse(text.value); } catch (e) {
      throw new ApiError(400, { message: "the spec is not valid JSON: " + e.message });
    }
    const saved = editing ? await api("PUT", appPath(id), spec) : await api("POST", "/v1/apps", spec);
    location.hash = "#/apps/" + saved.spec.id;
  });
  return [
    el("h1", {}, editing ? "Edit " + id : "New app"),
    el("p", { class: "muted" }, "The app spec as JSON (the same fields as the TOML files of berth apps deploy). Saving makes a new version and rolls it out."),
    text,
    el("div", { class: "toolbar" },
      el("button", { class: "primary", id: "save", onclick: submit }, editing ? "Save and roll out" : "Create"),
      el("a", { href: editing ? "#/apps/" + id : "#/apps" }, "Cancel")),
  ];
}

/** Shown when the API answered 401: asks for a token (a password field, so it is not
 *  shown on screen) and says where tokens come from. `err` is the server's refusal. */
function loginView(err) {
  const refused = token() !== null;
  // Several calls can be refused at once (the view and the event stream): the first
  // one draws the login view, the others leave it (and what the user typed) alone.
  if (!refused && view.dataset.ready === "login") return;
  // A token the server refused (unknown, revoked, expired) is of no more use.
  if (refused) setToken(null);
  stopEvents();
  showError(null);
  const input = el("input", { type: "password", id: "login-token", autocomplete: "off",
    placeholder: "secret ID", size: 40, "aria-label": "ACL token secret ID" });
  const submit = (event) => {
    event.preventDefault();
    const secret = input.value.trim();
    if (!secret) return;
    setToken(secret);
    showError(null);
    render();
    listen();
  };
  for (const a of document.querySelectorAll("header nav a")) a.classList.remove("active");
  view.replaceChildren(
    el("h1", {}, "Sign in"),
    el("p", {}, "This server runs with ACLs: its API answers only requests that carry a token."),
    el("p", { class: refused ? "why" : "muted", id: "login-reason" },
      refused ? "The server refused the token: " + err.message : err.message),
    el("form", { id: "login", onsubmit: submit },
      el("label", {}, "Token (secret ID) ", input),
      el("button", { class: "primary", id: "login-submit", type: "submit" }, "Sign in")),
    el("p", { class: "muted" },
      "The first token comes from ", el("code", {}, "berth acl bootstrap"),
      " on the server (it prints the secret ID once); an operator creates more with ",
      el("code", {}, "berth acl token create --name NAME --policy POLICY"),
      ". The token stays in this tab's session storage until you sign out or close the tab."));
  view.dataset.ready = "login";
  input.focus();
}

// --- routing and live updates --------------------------------------------------------

function route() {
  const hash = decodeURIComponent(location.hash.slice(1)) || "/apps";
  const [, section, ...rest] = hash.split("/");
  const id = rest.join("/");
  switch (section) {
    case "apps": return id ? { nav: "apps", load: () => appView(id), live: true } : { nav: "apps", load: appsView, live: true };
    case "deployments": return { nav: "deployments", load: deploymentsView, live: true };
    case "nodes": return { nav: "nodes", load: nodesView, live: true };
    case "new": return { nav: "new", load: () => specView(), live: false };
    case "edit": return { nav: "apps", load: () => specView(id), live: false };
    case "diag": return { nav: "apps", load: () => diagView(id), live: false };
    default: return { nav: "apps", load: appsView, live: true };
  }
}

let current = route();

async function render() {
  current = route();
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.id === "nav-" + current.nav);
  }
  try {
    const nodes = await current.load();
    view.replaceChildren(...nodes.flat().filter((n) => n !== ""));
    view.dataset.ready = location.hash;
  } catch (err) {
    if (err.status === 401) loginView(err);
    else showError(err);
  }
}

let pending = null;
let deferred = false;

/** Whether the user is typing in the view: redrawing now would throw their input away. */
function typing() {
  const active = document.activeElement;
  return active && view.contains(active) && (active.tagName === "INPUT" || active.tagName === "TEXTAREA");
}

function refreshSoon() {
  // Forms are never redrawn under the user's hands; lists follow events, at most 4/s.
  if (!current.live || pending) return;
  if (typing()) { deferred = true; return; }
  pending = setTimeout(() => { pending = null; if (typing()) deferred = true; else render(); }, 250);
}

// A refresh held back while the user typed happens once they leave the field.
view.addEventListener("focusout", () => {
  if (deferred) { deferred = false; setTimeout(refreshSoon, 0); }
});

let events = null;

function stopEvents() {
  if (events) { events.abort(); events = null; }
  const live = document.getElementById("live");
  live.textContent = "offline";
  live.classList.remove("on");
}

/** Follows /v1/events and redraws live views as events arrive. EventSource cannot send
 *  an Authorization header, so the stream is read with fetch: one `data:` block, ended
 *  by a blank line, is one event. Reconnects after a break, unless the server answered
 *  401 (the login view takes over, and calls this again once signed in). */
function listen() {
  stopEvents();
  const controller = new AbortController();
  events = controller;
  const live = document.getElementById("live");
  live.textContent = "connecting";
  const follow = async () => {
    let retry = 1000;
    while (!controller.signal.aborted) {
      try {
        const response = await fetch("/v1/events?named=false", {
          headers: authHeaders({ accept: "text/event-stream" }), signal: controller.signal, cache: "no-store" });
        if (response.status === 401) {
          let body = null;
          try { body = await response.json(); } catch (_) { body = null; }
          if (events === controller) { events = null; loginView(new ApiError(401, body)); }
          return;
        }
        if (!response.ok) throw new ApiError(response.status, null);
        live.textContent = "live"; live.classList.add("on");
        retry = 1000;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        let data = false;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, end).replace(/\r$/, "");
            buffer = buffer.slice(end + 1);
            if (line === "") { if (data) refreshSoon(); data = false; }
            else if (line.startsWith("data:")) data = true;
          }
        }
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      live.textContent = "reconnecting"; live.classList.remove("on");
      await new Promise((resolve) => setTimeout(resolve, retry));
      retry = Math.min(retry * 2, 10000);
    }
  };
  follow();
}

function signOut() {
  setToken(null);
  stopEvents();
  render();
}

document.getElementById("sign-out").addEventListener("click", signOut);
document.getElementById("sign-out").hidden = token() === null;
window.addEventListener("hashchange", () => { showError(null); render(); });
render();
listen();

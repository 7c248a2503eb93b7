// ctxprop web page: reads the admin API (SPEC §3a) and follows GET /v1/watch.
// Every name and value is user data: it reaches the DOM through textContent only.
"use strict";

const PEERS_EVERY_MS = 2000;
const FLAGS_EVERY_MS = 5000;
const LIST_DEBOUNCE_MS = 300;

const $ = (id) => document.getElementById(id);

const state = {
  contexts: [],    // summaries from GET /v1/contexts
  selected: null,  // name of the context in the detail pane
  detail: undefined, // its snapshot, kept current by events; null: absent; undefined: loading
  source: null,    // the EventSource
  listTimer: 0,
};

// el builds an element; text children become text nodes, never markup.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.dataset[k.slice(5)] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function flash(e) {
  e.classList.remove("flash");
  void e.offsetWidth; // restart the animation on a repeated change
  e.classList.add("flash");
}

async function getJSON(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON: the status says enough */ }
  if (!res.ok) {
    const msg = body && body.error ? body.error.message : res.status + " " + res.statusText;
    const err = new Error(path + ": " + msg);
    err.status = res.status;
    throw err;
  }
  return body;
}

// Errors are kept per source, so that one source's recovery does not hide another's.
const failures = new Map();

function reporter(source) {
  return (err) => {
    if (err) failures.set(source, String(err.message || err));
    else failures.delete(source);
    const box = $("error");
    box.textContent = [...failures.values()].join("\n");
    box.hidden = failures.size === 0;
  };
}
const showError = reporter("contexts");

const ctxPath = (name) => "/v1/contexts/" + encodeURIComponent(name);
const ctxHash = (name) => "#/context/" + encodeURIComponent(name);

function selectedFromHash() {
  const m = /^#\/context\/(.+)$/.exec(location.hash);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch (_) { return null; }
}

function fmtTime(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  const s = Math.round((d.getTime() - Date.now()) / 1000);
  const a = Math.abs(s);
  const rel = a < 60 ? a + "s" : a < 3600 ? Math.round(a / 60) + "m" : a < 86400 ? Math.round(a / 3600) + "h" : Math.round(a / 86400) + "d";
  return s >= 0 ? "in " + rel : rel + " ago";
}

function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

// Contexts table.

async function loadContexts() {
  const body = await getJSON("/v1/contexts");
  state.contexts = body.contexts || [];
  renderContexts();
}

function scheduleContexts() {
  if (state.listTimer) return;
  state.listTimer = setTimeout(() => {
    state.listTimer = 0;
    loadContexts().catch(showError);
  }, LIST_DEBOUNCE_MS);
}

function renderContexts() {
  const tbody = $("contexts").tBodies[0];
  const rows = state.contexts.map((c) => {
    const tr = el("tr", { "data-name": c.name },
      el("td", {}, el("a", { href: ctxHash(c.name) }, c.name)),
      el("td", { class: "num" }, c.counters),
      el("td", { class: "num" }, c.maps),
      el("td", { class: "num" }, c.sets),
      el("td", { class: "muted", title: c.expires_at || "" }, c.expires_at ? fmtTime(c.expires_at) : "—"));
    if (c.name === state.selected) tr.classList.add("selected");
    tr.addEventListener("click", () => { location.hash = ctxHash(c.name); });
    return tr;
  });
  tbody.replaceChildren(...rows);
  $("contexts-count").textContent = "(" + rows.length + ")";
  $("contexts-empty").hidden = rows.length > 0;
}

function contextRow(name) {
  for (const tr of $("contexts").tBodies[0].rows) if (tr.dataset.name === name) return tr;
  return null;
}

// Detail pane.

async function loadDetail() {
  const name = state.selected;
  if (name === null) {
    state.detail = undefined;
    renderDetail();
    return;
  }
  try {
    const snap = await getJSON(ctxPath(name));
    if (state.selected === name) state.detail = snap;
  } catch (err) {
    if (err.status !== 404) throw err;
    if (state.selected === name) state.detail = null;
  }
  renderDetail();
}

function renderDetail(changed) {
  const name = state.selected, d = state.detail;
  $("detail-title").textContent = name === null ? "Select a context" : name;
  $("detail-missing").hidden = name === null || d !== null;
  $("detail-body").hidden = !d;
  $("detail-meta").textContent = d ? (d.expires_at ? "expires " + fmtTime(d.expires_at) + " (" + d.expires_at + ")" : "no expiry") : "";
  for (const tr of $("contexts").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.name === name);
  if (!d) return;
  changed = changed || { counters: new Set(), maps: new Map(), sets: new Set() };

  const counters = Object.keys(d.counters || {}).sort();
  $("counters").tBodies[0].replaceChildren(...counters.map((k) => {
    const tr = el("tr", { "data-key": k }, el("td", { class: "mono" }, k), el("td", { class: "num value" }, d.counters[k]));
    if (changed.counters.has(k)) flash(tr);
    return tr;
  }));
  $("counters").hidden = counters.length === 0;
  $("counters-empty").hidden = counters.length > 0;

  const maps = Object.keys(d.maps || {}).sort();
  $("maps").replaceChildren(...maps.map((m) => {
    const keys = Object.keys(d.maps[m]).sort();
    const touched = changed.maps.get(m);
    return el("table", { class: "map", "data-map": m },
      el("caption", {}, m),
      el("tbody", {}, ...keys.map((k) => {
        const tr = el("tr", { "data-key": k }, el("td", { class: "mono" }, k), el("td", { class: "value" }, JSON.stringify(d.maps[m][k])));
        if (touched && touched.has(k)) flash(tr);
        return tr;
      })));
  }));
  $("maps-empty").hidden = maps.length > 0;

  const sets = Object.keys(d.sets || {}).sort();
  $("sets").tBodies[0].replaceChildren(...sets.map((s) => {
    const tr = el("tr", { "data-set": s }, el("td", { class: "mono" }, s),
      el("td", {}, ...d.sets[s].map((m) => el("span", { class: "member" }, m))));
    if (changed.sets.has(s)) flash(tr);
    return tr;
  }));
  $("sets").hidden = sets.length === 0;
  $("sets-empty").hidden = sets.length > 0;
}

// applyEvent merges a change event of the selected context into its snapshot. Events
// carry the values as they are after the change, so applying one twice is harmless.
function applyEvent(ev) {
  const d = state.detail;
  const changed = { counters: new Set(), maps: new Map(), sets: new Set() };
  for (const [k, v] of Object.entries(ev.counters || {})) {
    d.counters[k] = v;
    changed.counters.add(k);
  }
  for (const [m, entries] of Object.entries(ev.maps || {})) {
    const cur = d.maps[m] || (d.maps[m] = {});
    const touched = new Set();
    for (const [k, v] of Object.entries(entries)) {
      if (v === null) delete cur[k];
      else { cur[k] = v; touched.add(k); }
    }
    if (Object.keys(cur).length === 0) delete d.maps[m];
    changed.maps.set(m, touched);
  }
  for (const [s, members] of Object.entries(ev.sets || {})) {
    if (members && members.length) d.sets[s] = members;
    else delete d.sets[s];
    changed.sets.add(s);
  }
  renderDetail(changed);
}

// Flags and peers.

async function loadFlags() {
  let body;
  try {
    body = await getJSON("/v1/flags");
  } catch (err) {
    if (err.status === 404) { $("flags-section").hidden = true; return; }
    throw err;
  }
  const flags = body.flags || {};
  const sources = body.sources || {};
  const keys = Object.keys(flags).sort();
  $("flags").tBodies[0].replaceChildren(...keys.map((k) => {
    const f = flags[k] || {};
    const variants = f.variants || {};
    const def = f.defaultVariant;
    const hasDefault = def !== undefined && def !== null && Object.hasOwn(variants, def);
    const hasTargeting = f.targeting && Object.keys(f.targeting).length > 0;
    return el("tr", { "data-flag": k },
      el("td", { class: "mono" }, k),
      el("td", { class: f.state === "ENABLED" ? "state-alive" : "muted" }, f.state || "—"),
      el("td", { class: "mono" }, hasDefault ? def + " → " + JSON.stringify(variants[def]) : "—"),
      el("td", { class: "muted" }, hasTargeting ? "rules" : "—"),
      el("td", { class: "muted mono" }, sources[k] || "—"));
  }));
  $("flags").hidden = keys.length === 0;
  $("flags-empty").hidden = keys.length > 0;
  // Definitions the sidecar refused: they are not serving, and the operator must know.
  const problems = body.problems || [];
  $("flag-problems").replaceChildren(...problems.map((p) =>
    el("li", {}, (p.flag ? p.flag + " (" + p.source + ")" : p.source) + ": " + p.message)));
  $("flag-problems").hidden = problems.length === 0;
  $("flags-section").hidden = false;
}

async function loadPeers() {
  const body = await getJSON("/v1/peers");
  const peers = body.peers || [];
  $("peers").tBodies[0].replaceChildren(...peers.map((p) => el("tr", { "data-address": p.address },
    el("td", { class: "mono" }, p.name || "—"),
    el("td", { class: "mono" }, p.address),
    el("td", { class: "state-" + String(p.state).replace(/[^a-z]/g, "") }, p.state),
    el("td", { title: p.last_contact || "" }, fmtTime(p.last_contact)),
    el("td", { class: "num" }, p.lag),
    el("td", { class: "num" }, fmtBytes(p.bytes_in)),
    el("td", { class: "num" }, fmtBytes(p.bytes_out)),
    el("td", { class: "num", title: p.last_error || "" }, p.errors))));
  $("peers").hidden = peers.length === 0;
  $("peers-empty").hidden = peers.length > 0;
  $("peers-count").textContent = "(" + peers.length + ")";
}

// poll runs load now and every ms after the previous run ends, showing its errors.
function poll(name, load, ms) {
  const report = reporter(name);
  const run = () => load().then(() => report(null), report).finally(() => setTimeout(run, ms));
  run();
}

// Watch stream.

function setLive(cls, text) {
  const s = $("live");
  s.className = "status " + cls;
  s.textContent = text;
}

function reloadAll() {
  return Promise.all([loadContexts(), loadDetail()]).then(() => showError(null), showError);
}

let retryMs = 1000;

function connect() {
  const es = new EventSource("/v1/watch");
  state.source = es;
  // The stream is open before the state is read, so no change falls between the two.
  es.onopen = () => {
    retryMs = 1000;
    setLive("live", "live");
    reloadAll();
  };
  es.onmessage = (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (_) { return; }
    if (ev.context === state.selected && state.detail && !ev.cleared) applyEvent(ev);
    else if (ev.context === state.selected) loadDetail().catch(showError);
    const row = contextRow(ev.context);
    if (row) flash(row);
    scheduleContexts(); // counts, expiry and new contexts
  };
  es.addEventListener("reset", () => { reloadAll(); });
  es.onerror = () => {
    if (es.readyState === EventSource.CONNECTING) {
      setLive("reconnecting", "reconnecting…");
      return;
    }
    // Closed for good (the server answered an error, e.g. 503 while draining): retry.
    setLive("offline", "offline — retrying");
    es.close();
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  };
}

function onHash() {
  const name = selectedFromHash();
  if (name === state.selected) return;
  state.selected = name;
  state.detail = undefined;
  loadDetail().catch(showError);
}

window.addEventListener("hashchange", onHash);
state.selected = selectedFromHash();
renderDetail();
connect();
poll("peers", loadPeers, PEERS_EVERY_MS);
poll("flags", loadFlags, FLAGS_EVERY_MS);

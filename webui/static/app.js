// ctxprop web page: reads the admin API (SPEC §3a) and follows GET /v1/watch.
// Every name and value is user data: it reaches the DOM through textContent only.
"use strict";

const PEERS_EVERY_MS = 2000;
const FLAGS_EVERY_MS = 5000;
const LIST_DEBOUNCE_MS = 300;
const HISTORY_MIN_MS = 250; // the charts poll at the sampling interval, never faster

const $ = (id) => document.getElementById(id);

const state = {
  contexts: [],    // summaries from GET /v1/contexts
  selected: null,  // name of the context in the detail pane
  detail: undefined, // its snapshot, kept current by events; null: absent; undefined: loading
  source: null,    // the EventSource
  listTimer: 0,
  history: null,   // the last answer of GET /v1/history
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

// Charts. GET /v1/history answers the sidecar's ring of samples (webui.History): what
// each context, peer and flag result did in each interval of the last minutes. The charts
// are SVG drawn here, with classes for colours: no library, no inline style, nothing the
// page's Content-Security-Policy refuses.

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_W = 400, CHART_H = 150;
const PAD = { left: 42, right: 10, top: 8, bottom: 18 };
const MAX_LINES = 8; // lines per chart; the quieter contexts are summed as "_other"
const OTHER = "_other";

function svgEl(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("data-")) e.dataset[k.slice(5)] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

// niceMax is the top of a y axis: v rounded up to 1, 2, 2.5 or 5 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5]) if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}

function fmtNum(v) {
  const a = Math.abs(v);
  const trim = (x, d) => x.toFixed(d).replace(/\.?0+$/, "");
  if (a >= 1e6) return trim(v / 1e6, 1) + "M";
  if (a >= 1e3) return trim(v / 1e3, 1) + "k";
  if (a >= 10 || a === 0) return String(Math.round(v));
  if (a >= 1) return trim(v, 1);
  return String(Number(v.toPrecision(2)));
}

function fmtSeconds(s) {
  if (s === 0) return "0";
  if (s < 1) return fmtNum(s * 1000) + "ms";
  if (s < 120) return fmtNum(s) + "s";
  return fmtNum(s / 60) + "m";
}

const fmtRate = (v) => fmtNum(v) + "/s";

// series turns counts per sample into rates; null stays null (not charted on its own).
function rates(h, counts) {
  return counts.map((c, i) => (c === null || !(h.seconds[i] > 0) ? null : c / h.seconds[i]));
}

function total(counts) {
  let t = 0;
  for (const c of counts) if (c !== null) t += c;
  return t;
}

// fold keeps the MAX_LINES busiest series of list ({name, counts}, any order) and sums the
// others, and the sidecar's own "_other", into one "_other".
function fold(list) {
  const busy = list.filter((s) => total(s.counts) > 0).sort((a, b) => total(b.counts) - total(a.counts) || (a.name < b.name ? -1 : 1));
  const own = busy.filter((s) => s.name !== OTHER);
  const fits = own.length <= MAX_LINES && busy.length === own.length;
  const kept = fits ? own : own.slice(0, MAX_LINES - 1);
  const rest = busy.filter((s) => !kept.includes(s));
  if (rest.length === 0) return kept;
  const counts = rest[0].counts.map((_, i) => {
    let sum = null;
    for (const s of rest) if (s.counts[i] !== null) sum = (sum || 0) + s.counts[i];
    return sum;
  });
  const n = rest.filter((s) => s.name !== OTHER).length;
  return [...kept, { name: OTHER, label: n ? OTHER + " (+" + n + ")" : OTHER, counts }];
}

// lineChart draws series ({name, label?, values, sum?}) over the history's window into
// fig, with fmt for the y axis and the legend's last values.
function lineChart(fig, h, series, fmt, emptyText) {
  const x0 = PAD.left, x1 = CHART_W - PAD.right, y0 = CHART_H - PAD.bottom, y1 = PAD.top;
  const windowMs = h.window_seconds * 1000;
  const end = h.times.length ? h.times[h.times.length - 1] : Date.now();
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  const top = niceMax(max);
  const X = (t) => x0 + ((t - (end - windowMs)) / windowMs) * (x1 - x0);
  const Y = (v) => y0 - (v / top) * (y0 - y1);

  const svg = svgEl("svg", { viewBox: "0 0 " + CHART_W + " " + CHART_H, class: "plot", role: "img", "aria-label": fig.querySelector("figcaption").textContent });
  for (const f of [0, 0.5, 1]) {
    const y = Y(top * f);
    svg.append(svgEl("line", { class: "grid", x1: x0, x2: x1, y1: y, y2: y }),
      svgEl("text", { class: "axis", x: x0 - 4, y: y + 3, "text-anchor": "end" }, fmt(top * f)));
  }
  svg.append(svgEl("text", { class: "axis", x: x0, y: CHART_H - 4 }, "−" + fmtSeconds(h.window_seconds)),
    svgEl("text", { class: "axis", x: (x0 + x1) / 2, y: CHART_H - 4, "text-anchor": "middle" }, "−" + fmtSeconds(h.window_seconds / 2)),
    svgEl("text", { class: "axis", x: x1, y: CHART_H - 4, "text-anchor": "end" }, "now"));
  svg.append(svgEl("rect", { class: "plot-area", x: x0, y: y1, width: x1 - x0, height: y0 - y1 }));

  const legend = el("ul", { class: "legend" });
  series.forEach((s, i) => {
    const cls = s.name === OTHER ? "sother" : "s" + i;
    let d = "", pen = false, last = null;
    s.values.forEach((v, j) => {
      if (v === null) { pen = false; return; }
      d += (pen ? "L" : "M") + X(h.times[j]).toFixed(1) + "," + Y(v).toFixed(1);
      pen = true;
      last = v;
    });
    const attrs = { class: "line " + cls, d, "data-series": s.name };
    if (s.sum !== undefined) attrs["data-sum"] = s.sum;
    if (last !== null) attrs["data-last"] = last;
    svg.append(svgEl("path", attrs));
    legend.append(el("li", { "data-series": s.name }, el("span", { class: "swatch " + cls }),
      el("span", { class: "mono name" }, s.label || s.name), el("span", { class: "muted" }, last === null ? "—" : fmt(last))));
  });
  if (series.length === 0) {
    svg.append(svgEl("text", { class: "empty", x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle" }, emptyText));
  }
  fig.replaceChildren(fig.querySelector("figcaption"), svg, legend);
  fig.dataset.samples = h.times.length;
  fig.dataset.lines = series.length;
}

// barChart draws the latency buckets into fig: one bar per bucket, its count above it.
function barChart(fig, labels, counts, note) {
  const x0 = PAD.left, x1 = CHART_W - PAD.right, y0 = CHART_H - PAD.bottom, y1 = PAD.top + 10;
  const top = niceMax(Math.max(0, ...counts));
  const step = (x1 - x0) / counts.length;
  const svg = svgEl("svg", { viewBox: "0 0 " + CHART_W + " " + CHART_H, class: "plot", role: "img", "aria-label": fig.querySelector("figcaption").textContent });
  svg.append(svgEl("line", { class: "grid", x1: x0, x2: x1, y1: y0, y2: y0 }));
  svg.append(svgEl("rect", { class: "plot-area", x: x0, y: y1, width: x1 - x0, height: y0 - y1 }));
  counts.forEach((c, i) => {
    const h = (c / top) * (y0 - y1);
    const x = x0 + i * step + step * 0.15;
    svg.append(svgEl("rect", { class: "bar", x: x.toFixed(1), y: (y0 - h).toFixed(1), width: (step * 0.7).toFixed(1), height: h.toFixed(1), "data-bucket": labels[i], "data-count": c }),
      svgEl("text", { class: "axis", x: (x + step * 0.35).toFixed(1), y: (y0 - h - 3).toFixed(1), "text-anchor": "middle" }, fmtNum(c)),
      svgEl("text", { class: "axis", x: (x + step * 0.35).toFixed(1), y: CHART_H - 4, "text-anchor": "middle" }, labels[i]));
  });
  const n = counts.reduce((a, b) => a + b, 0);
  if (n === 0) svg.append(svgEl("text", { class: "empty", x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle" }, "no requests in this window"));
  fig.replaceChildren(fig.querySelector("figcaption"), svg, el("ul", { class: "legend" }, el("li", {}, note)));
  fig.dataset.requests = n;
}

function renderCharts() {
  const h = state.history;
  if (!h) return;
  $("charts-window").textContent = "(last " + fmtSeconds(h.window_seconds) + ", a sample every " + fmtSeconds(h.interval_seconds) + ")";
  const ctxs = h.contexts.map((c) => ({ name: c.name, requests: c.requests, errors: c.errors }));

  const byRate = (key) => fold(ctxs.map((c) => ({ name: c.name, counts: c[key] })))
    .map((s) => ({ name: s.name, label: s.label, values: rates(h, s.counts), sum: total(s.counts) }));
  lineChart($("chart-requests"), h, byRate("requests"), fmtRate, "no requests in this window");
  lineChart($("chart-errors"), h, byRate("errors"), fmtRate, "no errors in this window");

  // The selected context's latency if the history has it, else every context's.
  const sel = h.contexts.find((c) => c.name === state.selected);
  const picked = sel ? [sel] : h.contexts;
  const counts = h.latency_bounds_seconds.map(() => 0).concat([0]);
  let sum = 0;
  for (const c of picked) {
    c.latency.forEach((v, i) => { counts[i] += v; });
    sum += c.latency_sum_seconds;
  }
  const labels = h.latency_bounds_seconds.map((b) => "≤" + fmtSeconds(b)).concat([">" + fmtSeconds(h.latency_bounds_seconds.at(-1))]);
  const n = counts.reduce((a, b) => a + b, 0);
  $("latency-of").textContent = sel ? sel.name : "all contexts";
  barChart($("chart-latency"), labels, counts, n ? n + " requests, mean " + fmtSeconds(sum / n) : "");

  const peers = h.peers.map((p) => {
    let max = 0;
    for (const v of p.lag_seconds) if (v !== null && v > max) max = v;
    return { name: p.address, label: p.name ? p.name + " " + p.address : p.address, values: p.lag_seconds, max };
  }).sort((a, b) => b.max - a.max || (a.name < b.name ? -1 : 1));
  lineChart($("chart-lag"), h, peers.slice(0, MAX_LINES), fmtSeconds, "no peers");

  const flags = fold(h.flag_evaluations.map((f) => ({ name: f.result, counts: f.counts })))
    .map((s) => ({ name: s.name, label: s.label, values: rates(h, s.counts), sum: total(s.counts) }));
  lineChart($("chart-flags"), h, flags, fmtRate, "no evaluations in this window");

  const notes = [];
  if (h.folded_contexts) notes.push(h.folded_contexts + " contexts past admin.context_metrics_max (" + h.max_series + ") are summed as _other.");
  const hidden = h.unshown_peers + Math.max(0, peers.length - MAX_LINES);
  if (hidden) notes.push(hidden + " peers with less lag are not drawn.");
  $("charts-notes").textContent = notes.join(" ");
}

async function loadHistory() {
  try {
    state.history = await getJSON("/v1/history");
  } catch (err) {
    if (err.status !== 404) throw err;
    $("charts").hidden = true;
    $("charts-off").hidden = false;
    return 5000;
  }
  $("charts").hidden = false;
  $("charts-off").hidden = true;
  renderCharts();
  return Math.max(state.history.interval_seconds * 1000, HISTORY_MIN_MS);
}

// pollHistory follows the sidecar's sampling interval.
function pollHistory() {
  const report = reporter("history");
  let next = 1000;
  const run = () => loadHistory().then((ms) => { report(null); next = ms; }, report).finally(() => setTimeout(run, next));
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
  renderCharts(); // the latency chart follows the selected context
}

window.addEventListener("hashchange", onHash);
state.selected = selectedFromHash();
renderDetail();
connect();
poll("peers", loadPeers, PEERS_EVERY_MS);
poll("flags", loadFlags, FLAGS_EVERY_MS);
pollHistory();

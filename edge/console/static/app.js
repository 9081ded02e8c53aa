// emostream operator console: one EventSource for the state, one <img> per stream pulled when ready.
// Plain browser JavaScript, no build step, no external resources.
"use strict";

const streamsEl = document.getElementById("streams");
const eventsEl = document.getElementById("events");
const statusEl = document.getElementById("status");
const rulesEl = document.getElementById("rules");
const tiles = new Map();      // stream index -> {el, img, loading, shown}
let rulesShown = false;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}

function trackColor(id) {  // the overlay's colours: golden-angle hue steps
  return `hsl(${(id * 137.508) % 360}, 80%, 60%)`;
}

function tile(s) {
  let t = tiles.get(s.index);
  if (t) return t;
  const el = document.createElement("div");
  el.className = "tile";
  el.dataset.stream = s.name;
  el.innerHTML = `<h3><span class="name"></span><span class="stats"></span></h3>
    <div class="frame"><span class="none">waiting for the first frame…</span><img alt="" hidden></div>
    <div class="tracks"></div>`;
  el.querySelector(".name").textContent = s.name;
  streamsEl.appendChild(el);
  const img = el.querySelector("img");
  t = {el, img, loading: false, shown: 0, wanted: 0};
  img.onload = () => { t.loading = false; img.hidden = false; el.querySelector(".none").hidden = true; pull(s.index); };
  img.onerror = () => { t.loading = false; };
  tiles.set(s.index, t);
  return t;
}

function pull(index) {  // ask for the next frame only when the last one has loaded: a slow browser skips frames
  const t = tiles.get(index);
  if (!t || t.loading || t.wanted === t.shown) return;
  t.loading = true;
  t.shown = t.wanted;
  t.img.src = `/api/frame/${index}.jpg?seq=${t.wanted}`;
}

function spark(canvas, points, now, span) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 170, h = canvas.clientHeight || 44;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.strokeStyle = "#2b333c"; g.beginPath(); g.moveTo(0, h / 2); g.lineTo(w, h / 2); g.stroke();
  const x = t => w - (now - t) / span * w, y = v => h / 2 - v * (h / 2 - 2);
  for (const [k, color] of [[1, "#4aa3ff"], [2, "#ffab40"]]) {
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[k])) : g.moveTo(x(p[0]), y(p[k]))));
    g.stroke();
  }
}

function trackRow(tr, now, span) {
  // the sparkline's window: the track's own history, at least 10 s, at most the store's (60 s)
  const shown = Math.max(10, Math.min(span, Math.ceil(tr.tracked_s / 10) * 10));
  const row = document.createElement("div");
  row.className = "track" + (tr.ended ? " ended" : "");
  row.dataset.track = tr.id;
  const alerts = tr.alerts.map(a => `<span class="badge">${esc(a)}</span>`).join("");
  const va = tr.valence == null ? "" : `V ${tr.valence >= 0 ? "+" : ""}${tr.valence.toFixed(2)} A ${tr.arousal >= 0 ? "+" : ""}${tr.arousal.toFixed(2)}`;
  row.innerHTML = `<div class="id" style="color:${trackColor(tr.id)}">#${tr.id}</div>
    <div><span class="label">${esc(tr.label)}</span> <span class="meta">${(tr.confidence * 100).toFixed(0)}%</span>${alerts}
      <div class="conf"><div style="width:${(tr.confidence * 100).toFixed(0)}%"></div></div>
      <div class="meta">${va} · tracked ${tr.tracked_s.toFixed(1)} s${tr.ended ? " · ended (" + esc(tr.ended) + ")" : ""}</div></div>
    <div><canvas class="spark"></canvas><div class="legend"><span class="v">valence</span> / <span class="a">arousal</span>, last ${shown} s</div></div>`;
  if (tr.reasoning) {
    const r = tr.reasoning;
    const div = document.createElement("div");
    div.className = "reason";
    div.innerHTML = `reasoner: <b>${esc(r.expression)}</b> ${r.verified ? "✓ verified" : "✗ not verified"} — ${esc(r.rationale)}`;
    row.appendChild(div);
  }
  spark(row.querySelector("canvas"), tr.spark, tr.last_t, shown);
  return row;
}

function render(state) {
  if (!rulesShown) {
    rulesEl.innerHTML = state.rules.map(r => `<span class="rule" title="${esc(r.rule)}">alert: ${esc(r.name)}</span>`).join("");
    rulesShown = true;
  }
  for (const s of state.streams) {
    const t = tile(s);
    const alerting = s.tracks.some(tr => tr.alerts.length);
    t.el.classList.toggle("alerting", alerting);
    t.el.querySelector(".stats").textContent =
      `${s.fps.toFixed(1)} fps · ${s.frames} frames · ${s.dropped} dropped · t ${s.t.toFixed(1)} s` + (s.ended ? ` · ${s.ended}` : "");
    const box = t.el.querySelector(".tracks");
    box.replaceChildren(...s.tracks.map(tr => trackRow(tr, tr.last_t, state.history_s)),
                        ...s.ended_tracks.slice(0, 3).map(tr => trackRow(tr, tr.last_t, state.history_s)));
    if (s.seq) { t.wanted = s.seq; pull(s.index); }
  }
  eventsEl.replaceChildren(...state.events.map(e => {
    const li = document.createElement("li");
    li.className = e.kind === "alert" ? (e.state === "raised" ? "alert" : "cleared") : (e.kind || "");
    const when = e.t == null ? "" : `${Number(e.t).toFixed(1)} s`;
    li.innerHTML = `<span class="when">${esc(when)}</span>${esc(e.stream)} #${esc(e.track)}: ${esc(e.text)}`;
    return li;
  }));
  statusEl.textContent = state.finished ? "sources ended" : "live";
  statusEl.className = "status live";
}

function connect() {
  const source = new EventSource("/api/live");
  source.onmessage = ev => render(JSON.parse(ev.data));
  source.onerror = () => { statusEl.textContent = "reconnecting…"; statusEl.className = "status lost"; };
}

connect();

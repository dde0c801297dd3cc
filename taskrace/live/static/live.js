// The live view's page: follows /stream (Server-Sent Events), keeps a model of the run,
// and redraws at most REDRAW_MS apart, however many events arrive (batches come five a
// second at most; drawing is what costs).
"use strict";

const REDRAW_MS = 250;
const ROW_PX = 14, LANE_PAD = 18, LABEL_PX = 150;
const BACKEND_COLOURS = {sequential: "#6b6b6b", threads: "#2f6fb3", asyncio: "#8e44ad", processes: "#d35400",
                         interpreters: "#16a085", celery: "#27ae60"};
const PALETTE = ["#2f6fb3", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#f1c40f"];
const colour = b => BACKEND_COLOURS[b] || "#555";

let model = fresh();
let dirty = false, lastDraw = 0, timer = null;
let charts = {};

function fresh() {
  return {command: null, t0: null, ended: false, exitCode: null,
          points: new Map(),   // key -> {key, label, backend, scenario, workers, samples: [], cells, record}
          order: [], current: null,
          queue: [], money: [], cpu: [], faults: new Map(),
          holders: new Map(),  // worker -> {key, index}
          done: new Map(),     // worker -> tasks finished
          celeryWorkers: new Set(),  // the Celery queue's table lists these only
          finished: 0, lost: 0, redelivered: 0, pointsDone: 0, status: "", table: null, dropped: 0};
}

// --- the stream ------------------------------------------------------------------------
function connect() {
  const es = new EventSource("/stream");
  es.addEventListener("batch", m => { JSON.parse(m.data).forEach(apply); touch(); });
  es.addEventListener("reset", () => { model = fresh(); clearPage(); touch(); });
  es.addEventListener("end", m => { model.closed = true; es.close(); touch(); });
  es.onerror = () => { if (!model.closed) setStatus("lost", "connection lost: retrying…"); };
  es.onopen = () => setStatus(model.ended ? "ended" : "running", model.status || "connected");
}

function pointOf(e) {
  const key = e.point !== undefined && e.point !== null ? "p" + e.point
            : e.run !== undefined && e.run !== null ? "f" + e.run : "p0";
  let p = model.points.get(key);
  if (!p) {
    p = {key, label: e.label || key, backend: e.backend || "?", scenario: e.scenario || "", workers: e.workers,
         samples: [], cells: null, record: null, el: null, canvas: null};
    model.points.set(key, p); model.order.push(key);
  }
  return p;
}

function sampleOf(p, t) {
  if (!p.samples.length) p.samples.push({t0: t, tasks: [], open: new Map()});
  return p.samples[p.samples.length - 1];
}

// One bar per execution: an index comes back in every trial of a bank, and a task
// redelivered after its worker died runs again. A start or finish belongs to the
// execution of that index still open in the sample; else it begins a new one.
function taskOf(e, opens) {
  const p = pointOf(e);
  if (e.backend && p.backend === "?") p.backend = e.backend;
  const s = sampleOf(p, e.queued || e.started || e.t);
  let task = s.open.get(e.index);
  if (!task || (opens && task.s !== undefined)) {
    if (task && opens && task.f === undefined && task.lost === undefined) {
      task.again = true;  // started again before it finished: a redelivery
      model.redelivered += 1;
      return [p, s, task];
    }
    task = {index: e.index};
    s.tasks.push(task); s.open.set(e.index, task);
  }
  return [p, s, task];
}

function closeTask(s, task) {
  if (s.open.get(task.index) === task) s.open.delete(task.index);
}

function apply(e) {
  switch (e.kind) {
    case "run.start":
      if (model.command === null) { model.command = e.command; model.t0 = e.t; }
      break;
    case "run.end":
      if (e.command === model.command) { model.ended = true; model.exitCode = e.exit_code; }
      break;
    case "status": model.status = e.text; break;
    case "step": model.status = `${e.label} (${e.done}/${e.total ?? "?"})`; break;
    case "point.start": {
      const p = pointOf(e);
      Object.assign(p, {label: e.label, backend: e.backend, scenario: e.scenario, workers: e.workers,
                        params: e.params || {}});
      relabel(e.scenario);
      model.current = p.key;
      break;
    }
    case "sample.start": {
      const p = pointOf(e);
      p.samples.push({t0: e.t, tasks: [], open: new Map(), warmup: e.warmup});
      model.current = p.key;
      break;
    }
    case "point.end": {
      const p = pointOf(e);
      p.record = e.record; p.cells = e.cells || {};

      model.pointsDone += 1;
      break;
    }
    case "task.queued": { const [, , t] = taskOf(e, true); t.q = e.queued; break; }
    case "task.started": {
      const [p, , t] = taskOf(e, true);
      t.s = e.started; t.w = e.worker; if (e.op) t.op = e.op;
      if (e.backend === "celery") model.celeryWorkers.add(e.worker);
      model.holders.set(e.worker, {key: p.key, index: e.index, label: p.label});
      break;
    }
    case "task.finished": {
      const [, s, t] = taskOf(e, false);
      closeTask(s, t);
      if (e.backend === "celery") model.celeryWorkers.add(e.worker);
      t.s = t.s ?? e.started; t.f = e.finished; t.w = e.worker; t.ok = e.ok; if (e.op) t.op = e.op;
      if (e.effect) t.effect = e.effect;
      if (e.duplicate) t.duplicate = true;
      model.finished += 1;
      const h = model.holders.get(e.worker);
      if (h && h.index === e.index) model.holders.delete(e.worker);
      model.done.set(e.worker, (model.done.get(e.worker) || 0) + 1);
      break;
    }
    case "task.lost": {
      const [, s, t] = taskOf(e, false);
      closeTask(s, t);
      t.lost = e.t; t.w = t.w || e.worker; t.reason = e.reason;
      model.lost += 1;
      const h = model.holders.get(e.worker);
      if (h && h.index === e.index) model.holders.delete(e.worker);
      break;
    }
    case "queue.depth":
      model.queue.push({t: e.t, depth: e.depth, unacked: e.unacked ?? 0});
      break;
    case "money.sample":
      model.money.push({trial: e.trial, total: e.total, expected: e.expected, label: (model.points.get(model.current) || {}).label});
      break;
    case "cpu.sample":
      model.cpu.push({t: e.t, percent: e.percent, backend: (model.points.get(model.current) || {}).backend || model.command || "idle"});
      break;
    case "fault.fired": {
      const f = faultOf(e);
      Object.assign(f, {fired: e.t, victim: e.victim, worker: e.worker, fault: e.fault, mode: e.mode});
      pointOf(e).label = `${e.fault} under ${e.mode}`;
      break;
    }
    case "fault.healed": { const f = faultOf(e); f.healed = e.t; break; }
    case "fault.result": {
      // Lost operations are known at the end (never applied): their bars end at the fault, marked lost.
      const f = faultOf(e), p = pointOf(e), counts = e.record.counts || {};
      f.record = e.record; p.label = `${e.record.fault} under ${e.record.mode}`; p.backend = "celery";
      const lostOps = new Set(counts.lost_ops || []);
      for (const s of p.samples) for (const t of s.tasks)
        if (t.op && lostOps.has(t.op) && t.f === undefined) t.lost = f.fired ?? t.s;
      model.lost += counts.lost || 0;
      for (const [w, h] of model.holders) if (h.key === p.key) model.holders.delete(w);  // the run is over
      break;
    }
    case "live.table": model.table = e; break;
  }
}

// Points of one scenario that differ in an option (a sweep, globals' --store) say which:
// "globals store=shared on threads -n 2", as the table's series labels do.
function relabel(scenario) {
  const same = [...model.points.values()].filter(p => p.scenario === scenario && p.params);
  const varying = [...new Set(same.flatMap(p => Object.keys(p.params)))]
    .filter(k => new Set(same.map(p => JSON.stringify(p.params[k]))).size > 1);
  for (const p of same) {
    const parts = [scenario, ...varying.map(k => k === "strategy" ? `${p.params[k]}` : `${k}=${p.params[k]}`)];
    p.label = `${parts.join(" ")} on ${p.backend} -n ${p.workers}`;
  }
}

function faultOf(e) {
  const key = "f" + (e.run ?? 0);
  if (!model.faults.has(key)) model.faults.set(key, {key});
  pointOf(e);  // its lane
  return model.faults.get(key);
}

// --- drawing ---------------------------------------------------------------------------
function touch() {
  dirty = true;
  if (timer === null) timer = setTimeout(draw, Math.max(0, REDRAW_MS - (performance.now() - lastDraw)));
}

function draw() {
  timer = null;
  if (!dirty) return;
  dirty = false; lastDraw = performance.now();
  drawHeader();
  drawLanes();
  drawQueue();
  drawMoney();
  drawFaults();
  drawCpu();
  drawPoints();
  drawTable();
}

function setStatus(state, text) {
  const el = document.getElementById("status");
  el.dataset.state = state; el.textContent = text;
}

function setCount(id, n) {
  const el = document.getElementById(id);
  el.dataset.n = n; el.textContent = n;
}

function drawHeader() {
  const what = model.command ? `taskrace ${model.command}` : "waiting for a run";
  if (model.ended) setStatus("ended", `${what}: ended, exit code ${model.exitCode}` + (model.closed ? " (the server has stopped; the page keeps what it drew)" : ""));
  else if (model.closed) setStatus("ended", `${what}: the server has stopped`);
  else setStatus("running", `${what}: ${model.status}`);
  setCount("tasks-seen", model.finished);
  setCount("points-done", model.pointsDone);
  setCount("lost", model.lost);
}

function clearPage() {
  document.getElementById("lanes").replaceChildren();
  document.getElementById("faults").replaceChildren();
  document.querySelector("#points tbody").replaceChildren();
  for (const c of Object.values(charts)) c.destroy();
  charts = {};
  for (const id of ["celery-section", "money-section", "faults-section", "cpu-section", "points-section", "table-section"])
    document.getElementById(id).hidden = true;
}

// One row per worker, and within a worker as many sub-rows as it had tasks at once
// (asyncio's one thread runs many: they are stacked, not drawn over each other).
function layout(sample) {
  const rows = [];           // {worker, label, ends: [] per sub-row}
  const byWorker = new Map();
  const tasks = sample.tasks.filter(t => t.s !== undefined || t.lost !== undefined)
                                            .sort((a, b) => (a.s ?? a.lost) - (b.s ?? b.lost));
  for (const t of tasks) {
    const w = t.w || "?";
    let group = byWorker.get(w);
    if (!group) { group = {worker: w, subs: []}; byWorker.set(w, group); rows.push(group); }
    const start = t.s ?? t.lost, end = t.f ?? t.lost ?? Infinity;
    let sub = group.subs.findIndex(e => e <= start + 1e-9);
    if (sub < 0) { sub = group.subs.length; group.subs.push(end); } else group.subs[sub] = end;
    t.row = group; t.sub = sub;
  }
  let y = 0;
  for (const g of rows) { g.y = y; y += Math.max(1, g.subs.length); }
  return {rows, height: y, tasks};
}

function drawLanes() {
  const root = document.getElementById("lanes");
  const now = Date.now() / 1000;
  let span = 0.001;
  for (const p of model.points.values())
    for (const s of p.samples)
      for (const t of s.tasks) {
        const end = t.f ?? t.lost ?? (t.s !== undefined ? now : undefined);
        if (end !== undefined) span = Math.max(span, end - s.t0);
      }
  let bars = 0;
  for (const key of [...model.order].sort(byPoint)) {
    const p = model.points.get(key);
    if (!p.samples.length) continue;
    if (!p.el) {
      p.el = document.createElement("div"); p.el.className = "lane"; p.el.dataset.point = key;
      p.el.dataset.backend = p.backend;
      p.title = document.createElement("h3"); p.canvas = document.createElement("canvas");
      p.el.append(p.title, p.canvas); root.append(p.el);
    }
    const layouts = p.samples.map(layout);
    const latest = layouts[layouts.length - 1];
    const rowsN = Math.max(1, ...layouts.map(l => l.height));
    const count = layouts.reduce((n, l) => n + l.tasks.filter(t => t.f !== undefined).length, 0);
    bars += count;
    p.el.dataset.tasks = count;
    p.title.innerHTML = "";
    p.title.append(`${p.label} `);
    const meta = document.createElement("span"); meta.className = "meta";
    meta.textContent = `· ${latest.rows.length} worker${latest.rows.length === 1 ? "" : "s"} · ${count} tasks done` +
                       ` · sample ${p.samples.length}` + (p.record ? ` · wall ${p.cells?.wall_s ?? "-"} s` : "");
    p.title.append(meta);
    const c = p.canvas, dpr = window.devicePixelRatio || 1;
    const width = c.clientWidth || 800, height = rowsN * ROW_PX + LANE_PAD;
    c.style.height = height + "px";
    c.width = width * dpr; c.height = height * dpr;
    const g = c.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, width, height);
    const x = t => LABEL_PX + (width - LABEL_PX - 8) * Math.max(0, t) / span;
    g.font = "11px system-ui, sans-serif"; g.fillStyle = "#444";
    for (const r of latest.rows) g.fillText(shortWorker(r.worker), 4, r.y * ROW_PX + 11);
    // Queue waits first, bars over them: a wait shows only where its row was free.
    layouts.forEach((l, i) => {
      const alpha = i === layouts.length - 1 ? 0.95 : 0.18, s = p.samples[i];
      g.globalAlpha = alpha * 0.6; g.fillStyle = "#999";
      for (const t of l.tasks)
        if (t.q !== undefined && t.s !== undefined && t.s - t.q > span / 400) {
          const y = (t.row.y + t.sub) * ROW_PX + 2;
          g.fillRect(x(t.q - s.t0), y + ROW_PX / 2 - 2, x(t.s - s.t0) - x(t.q - s.t0), 1);
        }
    });
    layouts.forEach((l, i) => {
      const alpha = i === layouts.length - 1 ? 0.95 : 0.18;
      const s = p.samples[i];
      for (const t of l.tasks) {
        const y = (t.row.y + t.sub) * ROW_PX + 2;
        const a = (t.s ?? t.lost) - s.t0, b = (t.f ?? t.lost ?? now) - s.t0;
        g.globalAlpha = alpha;
        g.fillStyle = t.lost !== undefined && t.f === undefined ? "#c0392b" : t.ok === false ? "#e67e22" : colour(p.backend);
        g.fillRect(x(a), y, Math.max(1.5, x(b) - x(a) - 1), ROW_PX - 4);  // 1 px apart: back-to-back tasks stay two bars
        if (t.again || t.duplicate) {
          g.strokeStyle = "#b22"; g.lineWidth = 1.5;
          g.strokeRect(x(a), y, Math.max(1.5, x(b) - x(a)), ROW_PX - 4);
        }
        if (t.lost !== undefined && t.f === undefined) { g.fillStyle = "#b22"; g.fillText("✗", x(b) + 2, y + 9); }
      }
    });
    g.globalAlpha = 1; g.fillStyle = "#888"; g.font = "10px system-ui, sans-serif";
    const ticks = niceTicks(span);
    for (const t of ticks) g.fillText(`${+t.toFixed(3)} s`, x(t) - 6, height - 3);
  }
  document.getElementById("lanes").dataset.bars = bars;
}

function byPoint(a, b) {  // "p3" before "p12"; fault runs ("f0") after points
  return a[0] === b[0] ? +a.slice(1) - +b.slice(1) : a[0] === "p" ? -1 : 1;
}

function shortWorker(w) {
  return w.length > 22 ? "…" + w.slice(-21) : w;
}

function niceTicks(span) {
  const step = Math.pow(10, Math.floor(Math.log10(span / 4)));
  const mult = [1, 2, 5, 10].find(m => span / (step * m) <= 6) || 10;
  const out = [];
  for (let t = 0; t <= span + 1e-9; t += step * mult) out.push(t);
  return out;
}

function lineChart(id, datasets, yTitle) {
  if (typeof Chart === "undefined") return null;  // the script is deferred: next redraw
  if (!charts[id]) {
    charts[id] = new Chart(document.getElementById(id), {
      type: "line", data: {datasets},
      options: {animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
                elements: {point: {radius: 0}, line: {borderWidth: 1.5}},
                scales: {x: {type: "linear", title: {display: true, text: "seconds since the run began"}},
                         y: {beginAtZero: true, title: {display: true, text: yTitle}}},
                plugins: {legend: {position: "bottom"}}}});
  }
  return charts[id];
}

function since(t) { return +(t - model.t0).toFixed(3); }

function drawQueue() {
  if (!model.queue.length && !model.holders.size && !model.redelivered && !model.points.size) return;
  const celery = model.queue.length || [...model.points.values()].some(p => p.backend === "celery");
  if (!celery) return;
  document.getElementById("celery-section").hidden = false;
  const chart = lineChart("queue-chart", [
    {label: "waiting in the queue", borderColor: "#27ae60", data: []},
    {label: "taken, not acknowledged", borderColor: "#c0392b", data: []}], "messages");
  if (chart) {
    chart.data.datasets[0].data = model.queue.map(q => ({x: since(q.t), y: q.depth}));
    chart.data.datasets[1].data = model.queue.map(q => ({x: since(q.t), y: q.unacked}));
    chart.update("none");
  }
  document.getElementById("celery-notes").textContent =
    `redeliveries seen: ${model.redelivered} · tasks lost: ${model.lost}`;
  const body = document.querySelector("#holders tbody");
  const workers = new Set([...model.holders.keys(), ...model.done.keys()].filter(w => model.celeryWorkers.has(w)));
  body.replaceChildren(...[...workers].sort().map(w => {
    const h = model.holders.get(w);
    return row([w, h ? `task ${h.index} (${h.label})` : "-", model.done.get(w) || 0]);
  }));
}

function drawMoney() {
  if (!model.money.length) return;
  document.getElementById("money-section").hidden = false;
  const chart = lineChart("money-chart", [], "money off the plan");
  if (chart) {
    chart.options.scales.x.title.text = "trial (of each bank point)";
    const labels = [...new Set(model.money.map(m => m.label))];
    chart.data.datasets = labels.map((label, i) => {
      const mine = model.money.filter(m => m.label === label);
      return {label, borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length],
              data: mine.map((m, k) => ({x: k + 1, y: m.total - m.expected}))};
    });
    chart.update("none");
  }
  const off = model.money.filter(m => m.total !== m.expected);
  const lost = off.reduce((n, m) => n + (m.expected - m.total), 0);
  const el = document.getElementById("money-notes");
  el.dataset.violations = off.length;
  el.textContent = off.length ? `${off.length} of ${model.money.length} trials ended off the plan: ${lost} lost in all (lost updates)`
                              : `${model.money.length} trials, every one on the plan`;
}

function drawFaults() {
  if (!model.faults.size) return;
  document.getElementById("faults-section").hidden = false;
  const root = document.getElementById("faults");
  for (const f of model.faults.values()) {
    if (!f.el) {
      f.el = document.createElement("div"); f.el.className = "fault"; f.el.dataset.run = f.key;
      f.title = document.createElement("h3"); f.verdict = document.createElement("p");
      f.canvas = document.createElement("canvas");
      f.el.append(f.title, f.canvas, f.verdict); root.append(f.el);
    }
    const r = f.record;
    f.title.textContent = `${f.fault || r?.fault || "fault"} under ${f.mode || r?.mode || "?"}` + (f.victim ? ` · victim ${f.victim} on ${f.worker}` : "");
    const p = model.points.get(f.key);
    const tasks = p ? p.samples.flatMap(s => s.tasks) : [];
    const lostOps = new Set(r?.counts?.lost_ops || []);
    f.el.dataset.lost = r ? r.counts.lost : "";
    f.el.dataset.duplicated = r ? r.counts.duplicated : "";
    f.el.dataset.kept = r ? String(r.kept) : "";
    const c = f.canvas, dpr = window.devicePixelRatio || 1, width = c.clientWidth || 800, height = 140;
    c.width = width * dpr; c.height = height * dpr;
    const g = c.getContext("2d"); g.scale(dpr, dpr); g.clearRect(0, 0, width, height);
    const times = tasks.flatMap(t => [t.s, t.f]).filter(v => v !== undefined).concat([f.fired, f.healed].filter(Boolean));
    const t0 = times.length ? Math.min(...times) : model.t0;
    const end = Math.max(t0 + 1, ...times);
    const x = t => 30 + (width - 40) * (t - t0) / (end - t0);
    if (f.fired) { g.fillStyle = "rgba(192,57,43,.15)"; g.fillRect(x(f.fired), 0, Math.max(3, x(f.healed || f.fired) - x(f.fired)), height - 14); }
    const applied = tasks.filter(t => t.f !== undefined).sort((a, b) => a.f - b.f);
    const planned = r?.counts?.planned || Math.max(1, tasks.length);
    g.strokeStyle = "#2f6fb3"; g.beginPath(); g.moveTo(x(t0), height - 14);
    applied.forEach((t, i) => g.lineTo(x(t.f), height - 14 - (height - 24) * (i + 1) / planned));
    g.stroke();
    g.font = "12px system-ui, sans-serif";
    for (const t of tasks) {
      if (t.duplicate) { g.fillStyle = "#8e44ad"; g.fillText("⧉", x(t.f ?? t.s) - 4, 14); }
      if (t.op && lostOps.has(t.op)) { g.fillStyle = "#b22"; g.fillText(`✗ ${t.op}`, x(t.lost ?? t.s ?? t0) - 4, 28); }
    }
    if (r && f.fired && lostOps.size && !tasks.some(t => t.op && lostOps.has(t.op))) {
      g.fillStyle = "#b22"; g.fillText(`✗ ${lostOps.size}`, x(f.fired) - 4, 28);
    }
    g.fillStyle = "#888"; g.font = "10px system-ui, sans-serif";
    g.fillText("0 s", x(t0), height - 2); g.fillText(`${(end - t0).toFixed(1)} s`, width - 40, height - 2);
    if (r) {
      const cls = r.kept === true ? "kept" : r.kept === false ? "broken" : "none";
      f.verdict.className = cls;
      f.verdict.textContent = `${r.kept === true ? "promise kept" : r.kept === false ? "promise broken" : "no promise at stake"}: ` +
        `${r.counts.lost} lost, ${r.counts.duplicated} duplicated, ${r.counts.redeliveries} redelivered. ${r.verdict}`;
    }
  }
}

function drawCpu() {
  if (!model.cpu.length) return;
  document.getElementById("cpu-section").hidden = false;
  const backends = [...new Set(model.cpu.map(s => s.backend))];
  const chart = lineChart("cpu-chart", [], "% of all cores");
  if (!chart) return;
  chart.options.scales.y.max = 100;
  chart.data.datasets = backends.map(b => ({label: b, borderColor: colour(b), backgroundColor: colour(b), spanGaps: false,
    data: model.cpu.map(s => ({x: since(s.t), y: s.backend === b ? s.percent : null}))}));
  chart.update("none");
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
  return tr;
}

function drawPoints() {
  const done = [...model.order].sort(byPoint).map(k => model.points.get(k)).filter(p => p.record);
  if (!done.length) return;
  document.getElementById("points-section").hidden = false;
  const body = document.querySelector("#points tbody");
  body.replaceChildren(...done.map(p => {
    const c = p.cells || {};
    const tr = row([p.key.slice(1), c.scenario ?? p.scenario, c.backend ?? p.backend, c.n ?? p.workers,
                    c.wall_s ?? "-", c.tasks_per_s ?? "-", c.cpu_percent ?? "-", c.verdict ?? "-"]);
    tr.dataset.point = p.key;
    return tr;
  }));
}

function drawTable() {
  if (!model.table) return;
  document.getElementById("table-section").hidden = false;
  document.getElementById("final-table").textContent = model.table.text;
}

window.addEventListener("resize", touch);
connect();

// dagcall's live web view: ask a question, watch the plan stream, the task graph fill in and
// the timeline grow; open a stored run by id.  No build step and no dependencies: the page
// talks to the service's own API (/v1/runs, its server-sent events) with fetch.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let view = null; // the run on screen

function newView(runId) {
  return {
    runId,
    tasks: new Map(), // id -> task record (as TaskRecord.to_dict() gives it)
    rounds: new Map(), // round index -> {started, joinerStarted, ended} in run seconds
    calls: [], // LLM calls, exact once the run is finished
    plan: "",
    joiner: "",
    result: null,
    clientStart: performance.now() / 1000,
    offset: null, // client seconds minus run seconds, once a task time is known
    controller: new AbortController(),
  };
}

function headers(extra = {}) {
  const token = $("token").value.trim() || localStorage.getItem("dagcall-token") || "";
  if ($("token").value.trim()) localStorage.setItem("dagcall-token", token);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function status(text, isError = false) {
  const line = $("status-line");
  line.textContent = text;
  line.className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      detail = body.detail || body.error?.message || body.message || detail;
      if (typeof detail !== "string") detail = JSON.stringify(detail);
    } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}

// -- asking and following a run --------------------------------------------------------------

async function ask(question) {
  if (view) view.controller.abort();
  status("starting…");
  const response = await api("v1/runs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ question }),
  });
  const started = await response.json();
  const runId = started.id || started.run_id;
  view = newView(runId);
  $("run-id").value = runId;
  clearScreen();
  status(`run ${runId}: planning…`);
  await follow(view);
}

async function follow(v) {
  const response = await api(`v1/runs/${encodeURIComponent(v.runId)}/events`, {
    headers: { Accept: "text/event-stream" },
    signal: v.controller.signal,
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { kind: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (event.data.length) dispatch(v, event.kind, event.data.join("\n"));
        event = { kind: "message", data: [] };
      } else if (line.startsWith(":")) {
        // a comment (keep-alive)
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.kind = text;
        else if (field === "data") event.data.push(text);
      }
    }
  }
}

function dispatch(v, kind, raw) {
  if (v !== view) return;
  let data;
  try { data = JSON.parse(raw); } catch (_) { return; }
  kind = data.kind || kind;
  const now = performance.now() / 1000 - v.clientStart;
  const round = data.round ?? 0;
  if (kind === "round_start") {
    v.rounds.set(round, { started: runTime(v, now), joinerStarted: null, ended: null });
    if (round > 0) v.plan += `\n— round ${round + 1} —\n`;
  } else if (kind === "plan_text") {
    v.plan += data.text || "";
  } else if (kind === "joiner_start") {
    const r = v.rounds.get(round);
    if (r) r.joinerStarted = runTime(v, now);
  } else if (kind === "joiner_text") {
    v.joiner += data.text || "";
  } else if (kind === "round_end") {
    const r = v.rounds.get(round);
    if (r) r.ended = runTime(v, now);
    v.joiner += "\n";
  } else if (kind === "task" && data.task) {
    const task = data.task;
    if (v.offset === null) {
      const t = task.started_at ?? task.parsed_at;
      if (typeof t === "number") v.offset = now - t;
    }
    v.tasks.set(task.id, task);
    status(`run ${v.runId}: ${v.tasks.size} tasks`);
  } else if (kind === "finished") {
    if (data.result) showResult(v, data.result);
    return;
  }
  draw(v);
}

function runTime(v, clientSeconds) {
  return v.offset === null ? clientSeconds : clientSeconds - v.offset;
}

function showResult(v, result) {
  v.result = result;
  v.tasks = new Map((result.tasks || []).map((t) => [t.id, t]));
  v.calls = result.usage || [];
  v.plan = (result.rounds || []).map((r) => r.plan).join("\n— next round —\n");
  v.joiner = (result.rounds || []).map((r) => r.joiner_output).join("\n");
  $("answer").textContent = result.answer || "(no answer)";
  $("answer-box").hidden = false;
  const reason = result.stop_reason && result.stop_reason !== "finish" ? ` (${result.stop_reason})` : "";
  status(`run ${v.runId}: ${v.tasks.size} tasks, ${v.calls.length} LLM calls, ` +
    `${(result.wall_time || 0).toFixed(2)} s${reason}`);
  draw(v);
  loadRuns();
}

async function openRun(runId) {
  if (view) view.controller.abort();
  view = newView(runId);
  clearScreen();
  status(`opening run ${runId}…`);
  const response = await api(`v1/runs/${encodeURIComponent(runId)}`);
  const result = await response.json();
  if ((result.stop_reason || "running") === "running") {
    status(`run ${runId}: live`);
    await follow(view);
  } else {
    showResult(view, result);
  }
}

function clearScreen() {
  $("plan").textContent = "";
  $("joiner").textContent = "";
  $("answer-box").hidden = true;
  $("dag").replaceChildren();
  $("timeline").replaceChildren();
}

// -- drawing ------------------------------------------------------------------------------------

function el(name, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function short(text, width) {
  text = String(text ?? "").replace(/\s+/g, " ");
  return text.length > width ? text.slice(0, width - 1) + "…" : text;
}

function draw(v) {
  $("plan").textContent = v.plan;
  $("joiner").textContent = v.joiner;
  drawGraph(v);
  drawTimeline(v);
}

function drawGraph(v) {
  const svg = $("dag");
  const tasks = [...v.tasks.values()].sort((a, b) => a.id - b.id);
  const level = new Map();
  const levelOf = (task, seen = new Set()) => {
    if (level.has(task.id)) return level.get(task.id);
    if (seen.has(task.id)) return 0;
    seen.add(task.id);
    let best = 0;
    for (const dep of task.deps || []) {
      const parent = v.tasks.get(dep);
      if (parent) best = Math.max(best, levelOf(parent, seen) + 1);
    }
    level.set(task.id, best);
    return best;
  };
  const columns = new Map();
  for (const task of tasks) {
    const l = levelOf(task);
    if (!columns.has(l)) columns.set(l, []);
    columns.get(l).push(task);
  }
  const width = 180, height = 34, gapX = 40, gapY = 12;
  const position = new Map();
  let rows = 1;
  for (const [l, column] of columns) {
    column.forEach((task, row) => {
      position.set(task.id, { x: 10 + l * (width + gapX), y: 10 + row * (height + gapY) });
    });
    rows = Math.max(rows, column.length);
  }
  svg.replaceChildren();
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#888" }));
  defs.append(marker);
  svg.append(defs);
  for (const task of tasks) {
    const to = position.get(task.id);
    for (const dep of task.deps || []) {
      const from = position.get(dep);
      if (!from) continue;
      const x1 = from.x + width, y1 = from.y + height / 2, x2 = to.x, y2 = to.y + height / 2;
      const mid = (x1 + x2) / 2;
      svg.append(el("path", { class: "edge", "data-from": dep, "data-to": task.id,
        d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}` }));
    }
  }
  for (const task of tasks) {
    const { x, y } = position.get(task.id);
    const group = el("g", { class: `node status-${task.status}`, "data-task-id": task.id,
      "data-status": task.status, transform: `translate(${x}, ${y})` });
    group.append(el("title", {}, `${task.id}. ${task.call} — ${task.status}`));
    group.append(el("rect", { width, height, rx: 4 }));
    group.append(el("text", { x: 6, y: 21 }, short(`${task.id}. ${task.call}`, 28)));
    svg.append(group);
  }
  const columnsUsed = Math.max(columns.size, 1);
  svg.setAttribute("height", 20 + rows * (height + gapY));
  svg.setAttribute("viewBox", `0 0 ${20 + columnsUsed * (width + gapX)} ${20 + rows * (height + gapY)}`);
}

function drawTimeline(v) {
  const svg = $("timeline");
  const rows = [];
  if (v.calls.length) {
    for (const call of v.calls) {
      const label = call.role === "tool" && call.task_id != null
        ? `LLM of task ${call.task_id}` : `${call.role} (round ${call.round + 1})`;
      rows.push({ label, start: call.started_at, end: call.ended_at, cls: `role-${call.role}` });
    }
  } else {
    for (const [index, r] of v.rounds) {
      const planEnd = r.joinerStarted ?? latest(v);
      rows.push({ label: `planner (round ${index + 1})`, start: r.started, end: planEnd,
        cls: "role-planner" });
      if (r.joinerStarted !== null) {
        rows.push({ label: `joiner (round ${index + 1})`, start: r.joinerStarted,
          end: r.ended ?? latest(v), cls: "role-joiner" });
      }
    }
  }
  const tasks = [...v.tasks.values()].filter((t) => t.started_at != null)
    .sort((a, b) => a.id - b.id);
  for (const task of tasks) {
    rows.push({ label: short(`${task.id}. ${task.call}`, 30), start: task.started_at,
      end: task.ended_at ?? latest(v), cls: `status-${task.status}`, task: task.id });
  }
  const total = Math.max(v.result ? v.result.wall_time : 0, ...rows.map((r) => r.end || 0), 0.001);
  const labelWidth = 220, plotWidth = 700, rowHeight = 20;
  svg.replaceChildren();
  rows.forEach((row, i) => {
    const y = 6 + i * rowHeight;
    const x = labelWidth + (Math.max(row.start || 0, 0) / total) * plotWidth;
    const w = Math.max(((row.end || 0) - (row.start || 0)) / total * plotWidth, 2);
    const attributes = { class: `bar ${row.cls}`, x, y, width: w, height: rowHeight - 6 };
    if (row.task !== undefined) attributes["data-task-id"] = row.task;
    svg.append(el("text", { class: "bar-label", x: 4, y: y + 11 }, row.label));
    svg.append(el("rect", attributes));
  });
  svg.append(el("text", { class: "bar-label", x: labelWidth, y: 12 + rows.length * rowHeight },
    `0 s — ${total.toFixed(2)} s`));
  const height = 20 + rows.length * rowHeight;
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${labelWidth + plotWidth + 10} ${height}`);
}

function latest(v) {
  return Math.max(0, performance.now() / 1000 - v.clientStart - (v.offset ?? 0));
}

// -- stored runs --------------------------------------------------------------------------------

async function loadRuns() {
  try {
    const response = await api("v1/runs");
    const body = await response.json();
    const runs = Array.isArray(body) ? body : body.runs || body.data || [];
    const list = $("runs");
    list.replaceChildren();
    for (const run of runs.slice(0, 20)) {
      const item = document.createElement("li");
      item.textContent = `${run.id} — ${short(run.question, 60)} → ${short(run.answer ?? run.stop_reason ?? "", 40)}`;
      item.addEventListener("click", () => openRun(run.id).catch((e) => status(e.message, true)));
      list.append(item);
    }
  } catch (_) { /* the list is a convenience */ }
}

$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (question) ask(question).catch((e) => status(e.message, true));
});
$("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const runId = $("run-id").value.trim();
  if (runId) openRun(runId).catch((e) => status(e.message, true));
});
loadRuns();
const wanted = new URLSearchParams(location.search).get("run");
if (wanted) openRun(wanted).catch((e) => status(e.message, true));

// The page of `macsql serve`. No framework, no build step. Every string that comes from the server (model
// replies, SQL, database values, names) is put on the page with textContent, never parsed as HTML.
"use strict";

const PAGE_ROWS = 20;       // result rows per page
const CHART_POINTS = 50;    // a chart shows at most this many rows
const SVG = "http://www.w3.org/2000/svg";

const state = {token: sessionStorage.getItem("macsql-token") || "", db: "", conversation: null,
               turns: [], result: null, page: 0, busy: false};
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function api(path, body) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const init = {headers};
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) $("token-form").hidden = false;
  return response;
}

async function json(response) {
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error((data && data.detail) || response.status + " " + response.statusText);
  return data;
}

// ---------------------------------------------------------------- databases, schema, health
async function loadDatabases() {
  const data = await json(await api("/api/databases"));
  const select = $("db");
  select.replaceChildren();
  for (const db of data.databases) {
    const option = el("option", db.name);
    option.value = db.name;
    option.dataset.examples = JSON.stringify(db.examples || []);
    select.append(option);
  }
  if (data.databases.length) await chooseDatabase(data.databases[0].name);
}

async function chooseDatabase(name) {
  state.db = name;
  $("db").value = name;
  newConversation();
  const option = [...$("db").options].find((o) => o.value === name);
  const examples = option ? JSON.parse(option.dataset.examples || "[]") : [];
  const box = $("examples");
  box.replaceChildren();
  for (const q of examples) {
    const button = el("button", q, "example");
    button.type = "button";
    button.addEventListener("click", () => { $("question").value = q; });
    box.append(button);
  }
  try {
    const schema = await json(await api("/api/schema?db=" + encodeURIComponent(name)));
    $("schema").textContent = schema.text;
  } catch (err) {
    $("schema").textContent = "";
    showError("Schema: " + err.message);
  }
}

async function pollHealth() {
  try {
    const h = await (await api("/health")).json();  // with a token, only the token shows the model
    $("health").textContent = h.model === undefined ? "server up"
      : "model " + h.model + " · " + h.questions_running + " running";
  } catch (_) {
    $("health").textContent = "server unreachable";
  }
}

// ---------------------------------------------------------------- asking, streamed
function newConversation() {
  state.conversation = null;
  state.turns = [];
  renderHistory();
  $("followup-form").hidden = true;
}

async function ask(question, followUp) {
  if (state.busy || !question.trim()) return;
  state.busy = true;
  showError("");
  for (const id of ["ask", "ask-followup"]) $(id).disabled = true;
  $("steps").replaceChildren();
  $("steps-box").hidden = false;
  const body = {question, db: state.db, evidence: $("evidence").value};
  if (followUp && state.conversation) body.conversation = state.conversation;
  try {
    const response = await api("/api/ask/stream", body);
    if (!response.ok) await json(response);  // throws the server's message
    await readEvents(response, {
      start: (data) => { state.conversation = data.conversation; },
      step: addStep,
      answer: showAnswer,
      error: (data) => showError(data.detail),
    });
  } catch (err) {
    showError(err.message);
  } finally {
    state.busy = false;
    for (const id of ["ask", "ask-followup"]) $(id).disabled = false;
  }
}

// Server-sent events over fetch (EventSource cannot POST): blocks separated by a blank line.
async function readEvents(response, handlers) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let at;
    while ((at = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      let kind = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (handlers[kind]) handlers[kind](JSON.parse(data));
    }
  }
}

function addStep(step) {
  const item = el("li", null, "step");
  item.append(el("strong", step.node));
  for (const t of step.trace) {
    const parts = [t.agent];
    if (t.round) parts.push("round " + t.round);
    if (t.prompt_tokens !== undefined) parts.push(t.prompt_tokens + " + " + t.completion_tokens + " tokens");
    if (t.rows !== undefined) parts.push(plural(t.rows, "row"));
    if (t.seconds !== undefined) parts.push(t.seconds + " s");
    if (t.source) parts.push(t.source);
    item.append(el("span", parts.join(" · "), "muted"));
    if (t.agent === "vote") {
      for (const g of t.groups || []) {
        item.append(el("span", plural(g.votes, "vote") + " for " + plural(g.rows, "row") + " (#" +
                               g.members.join(", #") + ")" + (g.members.includes(t.winner) ? " ← chosen" : "")));
      }
    }
    if (t.sql && t.agent !== "decomposer") item.append(el("code", t.sql));
    if (t.error) item.append(el("span", t.error, "error"));
  }
  $("steps").append(item);
}

function showAnswer(answer) {
  state.conversation = answer.conversation;
  state.turns = answer.turns || [];
  renderHistory();
  $("answer").hidden = false;
  $("followup-form").hidden = false;
  $("sql").value = answer.sql;
  $("run-status").textContent = "";
  if (answer.error) showError("No working SQL: " + answer.error);
  $("stats").textContent = [
    plural(answer.llm_calls, "model call"),
    answer.prompt_tokens + " prompt + " + answer.completion_tokens + " completion tokens",
    plural(answer.refine_rounds, "refine round"),
    answer.seconds + " s",
  ].join(" · ");
  const subq = answer.sub_questions || [];
  $("subq").replaceChildren(...subq.map((s) => el("li", s.question + (s.sql ? "  →  " + s.sql : ""))));
  $("subq-box").hidden = subq.length === 0;
  const rounds = (answer.trace || []).filter((t) => t.agent === "refiner");
  $("rounds").replaceChildren(...rounds.map((t) => {
    const item = el("li");
    item.append(el("span", "problem: " + t.problem), el("code", t.sql || "(no SQL)"));
    return item;
  }));
  $("rounds-box").hidden = rounds.length === 0;
  showResult(answer);
}

// ---------------------------------------------------------------- editing and re-running
async function runEdited() {
  const sql = $("sql").value;
  if (!sql.trim()) return;
  $("run-status").textContent = "running…";
  try {
    const data = await json(await api("/api/run", {db: state.db, sql, conversation: state.conversation}));
    $("run-status").textContent = "ran in " + data.seconds + " s";
    showError("");
    if (state.turns.length) state.turns[state.turns.length - 1].sql = sql.trim();
    renderHistory();
    showResult(data);
  } catch (err) {
    $("run-status").textContent = "refused";
    showError("Run: " + err.message);
  }
}

// ---------------------------------------------------------------- history
function renderHistory() {
  $("history").replaceChildren(...state.turns.map((t) => {
    const item = el("li");
    item.append(el("span", t.question, "q"), el("code", t.sql || "(no SQL)"));
    return item;
  }));
  $("history-empty").hidden = state.turns.length > 0;
}

// ---------------------------------------------------------------- result table, paged
function showResult(result) {
  state.result = {columns: result.columns || [], rows: result.rows || []};
  state.page = 0;
  const n = state.result.rows.length;
  $("result-info").textContent = plural(n, "row") + (result.truncated ? " (" + (result.note || "row cap reached") + ")" : "");
  const head = el("tr");
  for (const c of state.result.columns) head.append(el("th", c));
  $("result").tHead.replaceChildren(head);
  renderPage();
  renderChart();
}

function renderPage() {
  const {rows} = state.result;
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
  state.page = Math.min(Math.max(0, state.page), pages - 1);
  const body = $("result").tBodies[0];
  body.replaceChildren(...rows.slice(state.page * PAGE_ROWS, (state.page + 1) * PAGE_ROWS).map((row) => {
    const tr = el("tr");
    for (const v of row) tr.append(el("td", v === null ? "NULL" : v, v === null ? "null" : undefined));
    return tr;
  }));
  $("page-info").textContent = "page " + (state.page + 1) + " of " + pages;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
}

// ---------------------------------------------------------------- chart: a label column and a number column
const isNumber = (v) => typeof v === "number" && isFinite(v);
const looksOrdered = (v) => /^\d{4}(-\d{2}){0,2}$/.test(String(v));  // years and dates: a line fits

function chartColumns({columns, rows}) {
  if (rows.length < 2 || columns.length < 2) return null;
  const col = (i) => rows.map((r) => r[i]).filter((v) => v !== null);
  const value = columns.findIndex((_, i) => col(i).length > 0 && col(i).every(isNumber));
  const label = columns.findIndex((_, i) => i !== value && col(i).length > 0 &&
                                            (!col(i).every(isNumber) || looksOrdered(col(i)[0])));
  return value === -1 || label === -1 ? null : {label, value};
}

function renderChart() {
  const pick = chartColumns(state.result);
  $("chart-box").hidden = !pick;
  const svg = $("chart");
  svg.replaceChildren();
  if (!pick) return;
  const rows = state.result.rows.filter((r) => isNumber(r[pick.value])).slice(0, CHART_POINTS);
  if (!$("chart-kind").dataset.touched) {
    $("chart-kind").value = rows.every((r) => looksOrdered(r[pick.label])) ? "line" : "bar";
  }
  const W = 640, H = 260, left = 56, bottom = 70, top = 12;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const values = rows.map((r) => r[pick.value]);
  const max = Math.max(0, ...values), min = Math.min(0, ...values);
  const y = (v) => top + (H - top - bottom) * (max === min ? 0.5 : (max - v) / (max - min));
  const step = (W - left - 8) / rows.length;
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = String(text);
    svg.append(n);
    return n;
  };
  node("line", {x1: left, x2: W - 4, y1: y(0), y2: y(0), class: "axis"});
  node("text", {x: left - 6, y: y(max) + 4, "text-anchor": "end", class: "tick"}, max);
  if (min < 0) node("text", {x: left - 6, y: y(min) + 4, "text-anchor": "end", class: "tick"}, min);
  node("text", {x: 4, y: 12, class: "tick"}, state.result.columns[pick.value]);
  const points = [];
  rows.forEach((r, i) => {
    const x = left + i * step;
    const v = r[pick.value];
    if ($("chart-kind").value === "bar") {
      node("rect", {x: x + step * 0.1, width: step * 0.8, y: Math.min(y(v), y(0)),
                    height: Math.abs(y(0) - y(v)), class: "bar"}).append(titleOf(r, pick));
    } else {
      points.push(`${x + step / 2},${y(v)}`);
      node("circle", {cx: x + step / 2, cy: y(v), r: 3, class: "dot"}).append(titleOf(r, pick));
    }
    const label = String(r[pick.label]);
    node("text", {x: x + step / 2, y: H - bottom + 14, "text-anchor": "end", class: "tick",
                  transform: `rotate(-40 ${x + step / 2} ${H - bottom + 14})`},
         label.length > 16 ? label.slice(0, 15) + "…" : label);
  });
  if (points.length) node("polyline", {points: points.join(" "), class: "line"});
}

function titleOf(row, pick) {
  const t = document.createElementNS(SVG, "title");
  t.textContent = row[pick.label] + ": " + row[pick.value];
  return t;
}

// ---------------------------------------------------------------- wiring
document.addEventListener("DOMContentLoaded", () => {
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask($("question").value, false); });
  $("followup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("followup").value;
    ask(q, true).then(() => { if (!$("error").textContent) $("followup").value = ""; });
  });
  $("run").addEventListener("click", runEdited);
  $("new-conversation").addEventListener("click", newConversation);
  $("db").addEventListener("change", (e) => chooseDatabase(e.target.value));
  $("prev").addEventListener("click", () => { state.page -= 1; renderPage(); });
  $("next").addEventListener("click", () => { state.page += 1; renderPage(); });
  $("chart-kind").addEventListener("change", () => { $("chart-kind").dataset.touched = "1"; renderChart(); });
  $("token").value = state.token;
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("macsql-token", state.token);
    $("token-form").hidden = true;
    loadDatabases().catch((err) => showError(err.message));
  });
  loadDatabases().catch((err) => showError(err.message));
  pollHealth();
  setInterval(pollHealth, 5000);
});

// The page of `macsql serve`. No framework, no build step. Every string that comes from the server (model
// replies, SQL, database values, names) is put on the page with textContent, never parsed as HTML.
"use strict";

const CHART_ROWS = 200;      // a result with more rows gets no chart
const CHART_BARS = 30;       // a bar chart of more categories than this says nothing
const CHART_LABELS = 15;     // at most this many axis labels; the others are thinned out
const SVG = "http://www.w3.org/2000/svg";
// What runs after each graph node, for the progress line (the stream says which node has finished).
const NEXT = {
  start: "Reading the schema", schema: "Selector: linking the question to the database",
  selector: "Preparing the schema", render: "Decomposer: writing SQL",
  decomposer: "Running the candidate queries", decompose: "Running the candidate queries",
  sample: "Running the candidate queries", execute: "Deciding: more candidates, a repair or the vote",
  refiner: "Running the Refiner's fixes", vote: "Finishing",
};

const state = {
  token: sessionStorage.getItem("macsql-token") || "", db: "",
  conversation: null, turns: [],          // the conversation the question box continues
  busy: false, questionId: null, abort: null, startedAt: 0, timer: null,
  view: null,                             // the result on screen: {db, sql, columns, total, page, ...}
  pageSize: 25,
};
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

const plural = (n, word) => n.toLocaleString("en") + " " + word + (n === 1 ? "" : "s");

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function api(path, body, signal) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const init = {headers, signal};
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
  const link = parseLink();
  if (link) await openLink(link);
  else if (data.databases.length) await chooseDatabase(data.databases[0].name);
}

// Everything on screen belongs to one database: a switch clears the answer, the steps, the SQL, the table,
// the chart and the conversation, so that nothing of the old database can run against the new one.
async function chooseDatabase(name) {
  stopTimer();
  if (state.abort) state.abort.abort();
  state.db = name;
  $("db").value = name;
  newConversation();
  clearAnswer();
  $("evidence").value = "";
  showError("");
  const option = [...$("db").options].find((o) => o.value === name);
  const examples = option ? JSON.parse(option.dataset.examples || "[]") : [];
  $("examples").replaceChildren(...examples.map((q) => {
    const button = el("button", q, "example");
    button.type = "button";
    button.addEventListener("click", () => { $("question").value = q; $("question").focus(); });
    return button;
  }));
  loadHistory();
  try {
    const schema = await json(await api("/api/schema?db=" + encodeURIComponent(name)));
    if (state.db === name) $("schema").textContent = schema.text;
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

// ---------------------------------------------------------------- conversations
function newConversation() {
  state.conversation = null;
  state.turns = [];
  renderTurns();
  renderContext();
  if (location.hash) history.replaceState(null, "", location.pathname);
}

function renderContext() {
  const last = state.turns[state.turns.length - 1];
  $("context").textContent = last ? "Follow-up to: " + last.question : "New conversation";
  $("question-label").textContent = last ? "Follow-up question" : "Question";
  $("question").placeholder = last ? "and only those in 2025?" : "How many customers live in Spain?";
  $("new-conversation").hidden = !last;
  $("examples").hidden = Boolean(last);  // examples start a conversation; in one they push the answer down
}

function renderTurns(current) {
  $("turns").replaceChildren(...state.turns.map((t, i) => {
    const item = el("li");
    const link = el("a", t.question, "q");
    link.href = "#c=" + encodeURIComponent(state.conversation) + "&t=" + (t.n ?? i);
    if ((t.n ?? i) === current) link.setAttribute("aria-current", "true");
    item.append(link);
    if (t.summary) item.append(el("span", t.summary, "muted small"));
    return item;
  }));
  $("turns-empty").hidden = state.turns.length > 0;
}

async function loadHistory() {
  const db = state.db;
  try {
    const data = await json(await api("/api/conversations?db=" + encodeURIComponent(db)));
    if (db !== state.db) return;
    $("history").replaceChildren(...data.conversations.map((c) => {
      const item = el("li");
      const link = el("a", c.title || "(no question)", "q");
      link.href = "#c=" + encodeURIComponent(c.id) + "&t=" + (c.turns - 1);
      item.append(link, el("span", plural(c.turns, "question") + " · " +
                                   new Date(c.updated * 1000).toLocaleString(), "muted small"));
      return item;
    }));
    $("history-empty").hidden = data.conversations.length > 0;
  } catch (_) { /* the history is a convenience; the page works without it */ }
}

function parseLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const c = params.get("c");
  return c ? {conversation: c, turn: params.has("t") ? Number(params.get("t")) : null} : null;
}

// An answer's link (#c=<conversation>&t=<turn>): the turn's question, summary and SQL from the store; its
// rows come from running the SQL again (the store keeps no rows).
async function openLink(link) {
  let conv;
  try {
    conv = await json(await api("/api/conversations/" + encodeURIComponent(link.conversation)));
  } catch (err) {
    if (!state.db && $("db").options.length) await chooseDatabase($("db").options[0].value);
    showError("Link: " + err.message);
    return;
  }
  if (conv.db !== state.db) await chooseDatabase(conv.db);
  state.conversation = conv.id;
  state.turns = conv.turns;
  const turn = conv.turns.find((t) => t.n === link.turn) || conv.turns[conv.turns.length - 1];
  renderContext();
  renderTurns(turn && turn.n);
  history.replaceState(null, "", "#c=" + encodeURIComponent(conv.id) + (turn ? "&t=" + turn.n : ""));
  if (!turn) return;
  clearAnswer();
  showTurn({question: turn.question, sql: turn.sql, summary: turn.summary, n: turn.n,
            label: "Question " + (conv.turns.indexOf(turn) + 1) + " of " + conv.turns.length + " (saved)"});
  if (turn.sql) await showQuery(turn.sql, null);
}

// ---------------------------------------------------------------- asking, streamed
function clearAnswer() {
  $("answer").hidden = true;
  $("steps-box").hidden = true;
  $("steps").replaceChildren();
  $("steps-count").textContent = "";
  $("subq-box").hidden = true;
  $("rounds-box").hidden = true;
  $("sql").value = "";
  $("summary").textContent = "";
  $("stats").textContent = "";
  $("run-status").textContent = "";
  $("progress").hidden = true;
  state.view = null;
  renderTable(null);
  renderChart(null);
}

function setBusy(busy) {
  state.busy = busy;
  $("ask").disabled = busy;
  $("stop").hidden = !busy;
  $("run").disabled = busy;
  $("db").disabled = busy;
}

// The running step is announced (aria-live); the seconds tick beside it, not announced.
function startTimer() {
  state.startedAt = performance.now();
  $("progress").hidden = false;
  setRunning(NEXT.start);
  const tick = () => { $("elapsed").textContent = ((performance.now() - state.startedAt) / 1000).toFixed(1) + " s"; };
  tick();
  state.timer = setInterval(tick, 200);
}

function setRunning(text) {
  if ($("running").textContent !== text) $("running").textContent = text;
}

function stopTimer(message) {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  if (message !== undefined) {
    setRunning(message);
    $("elapsed").textContent = "";
    $("progress").hidden = !message;
  }
}

async function ask() {
  const question = $("question").value;
  if (state.busy || !question.trim()) return;
  showError("");
  clearAnswer();
  setBusy(true);
  $("steps-box").hidden = false;
  startTimer();
  const body = {question, db: state.db, evidence: $("evidence").value};
  if (state.conversation) body.conversation = state.conversation;
  const abort = new AbortController();
  state.abort = abort;
  let finished = false;
  try {
    const response = await api("/api/ask/stream", body, abort.signal);
    if (!response.ok) await json(response);  // throws the server's message
    await readEvents(response, {
      start: (data) => { state.questionId = data.question_id; state.conversation = data.conversation; },
      step: (step) => { addStep(step); setRunning(NEXT[step.node] || "Working"); },
      answer: (answer) => {
        finished = true;
        stopTimer("Answered in " + answer.seconds.toFixed(answer.seconds < 1 ? 2 : 1) + " s");
        $("question").value = "";
        $("evidence").value = "";   // evidence belongs to one question
        showAnswer(answer);
      },
      cancelled: () => { finished = true; stopTimer("Stopped."); },
      error: (data) => { finished = true; stopTimer(""); showError(data.detail); },
    });
    if (!finished && !abort.signal.aborted) { stopTimer(""); showError("the stream ended without an answer"); }
  } catch (err) {
    if (abort.signal.aborted) stopTimer(state.db === body.db ? "Stopped." : "");
    else { stopTimer(""); showError(err.message); }
  } finally {
    if (state.abort === abort) state.abort = null;
    state.questionId = null;
    setBusy(false);
  }
}

// Stop: the server stops the question at its next step (other clients' questions go on); once it has
// taken the request, the page stops listening.
async function stop() {
  const id = state.questionId, abort = state.abort;
  $("stop").disabled = true;
  if (id) {
    try { await api("/api/cancel", {question_id: id}); } catch (_) { /* the stream is closed anyway */ }
  }
  if (abort) abort.abort();
  $("stop").disabled = false;
}

// Server-sent events over fetch (EventSource cannot POST): blocks separated by a blank line; comment lines
// (": keep-alive") are skipped.
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
      let kind = "", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (kind && handlers[kind]) handlers[kind](JSON.parse(data));
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
  $("steps-count").textContent = "(" + $("steps").children.length + ")";
}

function showTurn({question, sql, summary, n, label}) {
  $("answer").hidden = false;
  $("answer-question").textContent = question;
  $("answer-label").textContent = label;
  $("summary").textContent = summary || "";
  $("summary").classList.toggle("bad", (summary || "").startsWith("Cannot answer"));
  $("summary").classList.toggle("long", (summary || "").length > 60);
  $("sql").value = sql || "";
  $("sql-box").hidden = !sql;
  $("permalink").href = "#c=" + encodeURIComponent(state.conversation) + "&t=" + n;
}

function showAnswer(answer) {
  const known = new Map(state.conversation === answer.conversation ? state.turns.map((t) => [t.n, t.summary]) : []);
  state.conversation = answer.conversation;
  const k = (answer.turns || []).length;
  // turn numbers are consecutive (the store drops the oldest beyond its bound), the last is answer.turn
  state.turns = (answer.turns || []).map((t, i) => {
    const n = answer.turn - (k - 1 - i);
    return {...t, n, summary: n === answer.turn ? answer.summary : known.get(n)};
  });
  renderContext();
  renderTurns(answer.turn);
  showTurn({question: answer.question, sql: answer.sql, summary: answer.summary, n: answer.turn,
            label: k > 1 ? "Follow-up, question " + k + " of this conversation" : "Question 1 of a new conversation"});
  history.replaceState(null, "", "#c=" + encodeURIComponent(answer.conversation) + "&t=" + answer.turn);
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
  loadHistory();
  if (answer.error || !answer.sql) { $("result-box").hidden = true; return; }
  // the answer's own rows feed the chart when they are all here; the table pages on the server
  const whole = !answer.truncated ? {columns: answer.columns, rows: answer.rows} : null;
  showQuery(answer.sql, whole, answer.total_rows);
}

// ---------------------------------------------------------------- results: paged and sorted on the server
async function showQuery(sql, whole, total) {
  state.view = {db: state.db, sql, columns: [], total: total ?? 0, page: 0, orderBy: null, desc: false,
                whole};
  $("result-box").hidden = false;
  renderChart(null);
  await loadPage();
  const v = state.view;
  if (v && v.sql === sql && !v.whole && v.total <= CHART_ROWS && v.columns.length > 1) {
    // a small result run again (an edit, a saved answer): all its rows for the chart, in one call
    try {
      const data = await json(await api("/api/run", {db: v.db, sql, page: 0, page_size: CHART_ROWS}));
      if (state.view === v) v.whole = {columns: data.columns, rows: data.rows};
    } catch (_) { /* no chart */ }
  }
  if (state.view === v) renderChart(v && v.whole);
}

async function loadPage() {
  const v = state.view;
  if (!v) return;
  const body = {db: v.db, sql: v.sql, page: v.page, page_size: state.pageSize};
  if (v.orderBy !== null) { body.order_by = v.orderBy; body.descending = v.desc; }
  const seq = v.seq = (v.seq || 0) + 1;  // a quicker click's page must not be replaced by an older reply
  try {
    const data = await json(await api("/api/run", body));
    if (state.view !== v || v.seq !== seq) return;
    v.columns = data.columns;
    v.total = data.total_rows;
    v.note = data.note || "";
    renderTable(data);
  } catch (err) {
    if (state.view === v) showError("Result: " + err.message);
  }
}

function renderTable(data) {
  const v = state.view;
  if (!data || !v) {
    $("result").tHead.replaceChildren();
    $("result").tBodies[0].replaceChildren();
    $("result-info").textContent = "";
    $("page-info").textContent = "";
    return;
  }
  const head = el("tr");
  data.columns.forEach((c, i) => {
    const th = el("th");
    const button = el("button", c, "sort");
    button.type = "button";
    const sorted = v.orderBy === i;
    th.setAttribute("aria-sort", sorted ? (v.desc ? "descending" : "ascending") : "none");
    button.title = "sort by " + c;
    if (sorted) button.append(el("span", v.desc ? " ▼" : " ▲", "arrow"));
    button.addEventListener("click", () => sortBy(i));
    th.append(button);
    head.append(th);
  });
  $("result").tHead.replaceChildren(head);
  $("result").tBodies[0].replaceChildren(...data.rows.map((row) => {
    const tr = el("tr");
    for (const cell of row) {
      const td = el("td", cell === null ? "NULL" : cell, cell === null ? "null" : undefined);
      if (typeof cell === "number") td.classList.add("num");
      else if (cell !== null && String(cell).length > 40) td.classList.add("long");  // wraps, not widens
      tr.append(td);
    }
    return tr;
  }));
  const pages = Math.max(1, Math.ceil(v.total / state.pageSize));
  const first = v.total ? v.page * state.pageSize + 1 : 0;
  $("result-info").textContent = v.total ? "rows " + first.toLocaleString("en") + "–" +
    (first + data.rows.length - 1).toLocaleString("en") + " of " + v.total.toLocaleString("en") +
    (v.note ? " (" + v.note + ")" : "") : "no rows";
  $("page-info").textContent = "page " + (v.page + 1) + " of " + pages;
  $("prev").disabled = v.page === 0;
  $("next").disabled = v.page >= pages - 1;
}

function sortBy(i) {
  const v = state.view;
  if (!v) return;
  if (v.orderBy !== i) { v.orderBy = i; v.desc = false; }
  else if (!v.desc) v.desc = true;
  else v.orderBy = null;  // a third click: the query's own order
  v.page = 0;
  loadPage();
}

function turnPage(delta) {
  if (!state.view) return;
  state.view.page = Math.max(0, state.view.page + delta);
  loadPage();
}

async function download(format) {
  const v = state.view;
  if (!v) return;
  const body = {db: v.db, sql: v.sql, format};
  if (v.orderBy !== null) { body.order_by = v.orderBy; body.descending = v.desc; }
  try {
    const response = await api("/api/download", body);
    if (!response.ok) await json(response);
    const cut = response.headers.get("X-Macsql-Truncated");
    const blob = await response.blob();
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = v.db.replace(/[^A-Za-z0-9_-]+/g, "_") + "-result." + format;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    $("run-status").textContent = cut ? "the download stops at the " + (cut === "rows" ? "row" : "size") + " cap" : "";
  } catch (err) {
    showError("Download: " + err.message);
  }
}

// ---------------------------------------------------------------- editing, re-running, copying
async function runEdited() {
  const sql = $("sql").value;
  if (!sql.trim() || state.busy) return;
  $("run-status").textContent = "running…";
  try {
    const data = await json(await api("/api/run", {db: state.db, sql, conversation: state.conversation,
                                                    page: 0, page_size: state.pageSize}));
    $("run-status").textContent = "ran in " + data.seconds + " s";
    showError("");
    const last = state.turns[state.turns.length - 1];
    if (last) last.sql = sql.trim();
    $("result-box").hidden = false;
    $("summary").classList.remove("bad");
    $("summary").textContent = data.summary || "";
    $("summary").classList.toggle("long", (data.summary || "").length > 60);
    if (last) last.summary = data.summary;
    renderTurns(last && last.n);
    await showQuery(sql, null, data.total_rows);
  } catch (err) {
    $("run-status").textContent = "refused";
    showError("Run: " + err.message);
  }
}

async function copySQL() {
  const text = $("sql").value;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    $("sql").select();
    document.execCommand("copy");  // no clipboard API (an insecure origin): the old way
  }
  $("run-status").textContent = "SQL copied";
}

// ---------------------------------------------------------------- chart: only when it means something
const isNumber = (v) => typeof v === "number" && isFinite(v);
const looksOrdered = (v) => /^\d{4}(-\d{2}){0,2}$/.test(String(v));  // years and dates: a line fits
// keys and ids are numbers that are not quantities: a chart of them says nothing
const idLike = (name) => /(^|[_\s])(id|key|code|pk|fk|no|number)$|^(id|key)([_\s]|$)/i.test(name);

function chartColumns({columns, rows}) {
  if (rows.length < 2 || rows.length > CHART_ROWS || columns.length < 2) return null;
  const col = (i) => rows.map((r) => r[i]);
  const value = columns.findIndex((name, i) => !idLike(name) && col(i).every(isNumber) &&
                                               new Set(col(i)).size >= 2);
  if (value === -1) return null;
  const label = columns.findIndex((name, i) => i !== value && !idLike(name) && col(i).every((v) => v !== null) &&
                                               (!col(i).every(isNumber) || col(i).every(looksOrdered)));
  if (label === -1) return null;
  const labels = col(label).map(String);
  if (new Set(labels).size !== labels.length) return null;  // one bar a category, or the chart misleads
  const ordered = labels.every(looksOrdered);
  if (!ordered && rows.length > CHART_BARS) return null;
  return {label, value, ordered};
}

function renderChart(whole) {
  const svg = $("chart");
  svg.replaceChildren();
  const pick = whole ? chartColumns(whole) : null;
  $("chart-box").hidden = !pick;
  if (!pick) return;
  const rows = whole.rows;
  const kind = $("chart-kind");
  if (!kind.dataset.touched) kind.value = pick.ordered ? "line" : "bar";
  $("chart-title").textContent = whole.columns[pick.value] + " by " + whole.columns[pick.label];
  const W = 640, H = 260, left = 56, bottom = 70, top = 12;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const values = rows.map((r) => r[pick.value]);
  const max = Math.max(0, ...values), min = Math.min(0, ...values);
  const y = (v) => top + (H - top - bottom) * (max === min ? 0.5 : (max - v) / (max - min));
  const step = (W - left - 8) / rows.length;
  const every = Math.ceil(rows.length / CHART_LABELS);
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = String(text);
    svg.append(n);
    return n;
  };
  node("line", {x1: left, x2: W - 4, y1: y(0), y2: y(0), class: "axis"});
  node("text", {x: left - 6, y: y(max) + 4, "text-anchor": "end", class: "tick"}, max.toLocaleString("en"));
  if (min < 0) node("text", {x: left - 6, y: y(min) + 4, "text-anchor": "end", class: "tick"}, min.toLocaleString("en"));
  const points = [];
  rows.forEach((r, i) => {
    const x = left + i * step;
    const v = r[pick.value];
    if (kind.value === "bar") {
      node("rect", {x: x + step * 0.1, width: step * 0.8, y: Math.min(y(v), y(0)),
                    height: Math.abs(y(0) - y(v)), class: "bar"}).append(titleOf(r, pick));
    } else {
      points.push(`${x + step / 2},${y(v)}`);
      node("circle", {cx: x + step / 2, cy: y(v), r: 3, class: "dot"}).append(titleOf(r, pick));
    }
    if (i % every !== 0) return;  // thinned labels: every value keeps its tooltip
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
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask(); });
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); ask(); }
  });
  $("sql").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runEdited(); }
  });
  $("stop").addEventListener("click", stop);
  $("run").addEventListener("click", runEdited);
  $("copy-sql").addEventListener("click", copySQL);
  $("csv").addEventListener("click", () => download("csv"));
  $("json").addEventListener("click", () => download("json"));
  $("new-conversation").addEventListener("click", () => { newConversation(); clearAnswer(); $("question").focus(); });
  $("db").addEventListener("change", (e) => chooseDatabase(e.target.value));
  $("prev").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  $("page-size").addEventListener("change", (e) => {
    state.pageSize = Number(e.target.value);
    if (state.view) { state.view.page = 0; loadPage(); }
  });
  $("chart-kind").addEventListener("change", () => {
    $("chart-kind").dataset.touched = "1";
    renderChart(state.view && state.view.whole);
  });
  window.addEventListener("hashchange", () => {
    const link = parseLink();
    if (link && !state.busy) openLink(link);
  });
  $("token").value = state.token;
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("macsql-token", state.token);
    $("token-form").hidden = true;
    loadDatabases().catch((err) => showError(err.message));
  });
  state.pageSize = Number($("page-size").value);
  loadDatabases().catch((err) => showError(err.message));
  pollHealth();
  setInterval(pollHealth, 5000);
});

"""`Server`: what `macsql serve` holds while it runs (the datasette way: one object holds the state, the routes
in routes.py read it): the pipeline, the served databases, the thread pools, the running questions and the
conversation store. Also the plain helpers that shape its replies (JSON values, size caps, redaction, the
one-line summary of an answer, the paged and sorted query).

Questions run in a thread pool of their own, so a slow one never blocks the event loop (`/health`, the page,
`/api/run`), and the backend is wrapped by `macsql.backends.batching.for_threads`: a lock for llama.cpp,
batching for transformers, nothing for an OpenAI-compatible server. A question that has started runs to the
end even when its client goes away (its turn is still recorded); only `POST /api/cancel` with its id stops
it, at the next graph step. Edited queries, pages and downloads run in a small pool of their own, a few at
a time, so that a burst of slow ones neither starves the rest nor holds many results in memory at once.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from fastapi import HTTPException

from macsql.errors import InputError, did_you_mean
from macsql.pipeline import Answer, Pipeline
from macsql.serve.store import ConversationMismatch, ConversationStore, UnknownConversation, open_store

MAX_WAITING = 256  # questions accepted and not finished; beyond this a new one gets 503 (try again)
STEP_VALUE_CHARS = 4000  # a streamed step leaves out state values bigger than this (a whole schema)
# The executor caps a result at 64 MB of values, but JSON can be six times bigger than its values (a control
# character is written \u0001): the rows of a reply stop at this many bytes of JSON, and it says so.
MAX_REPLY_BYTES = 16 * 1024 * 1024
RUN_WORKERS = 4  # edited queries running at once (each may hold a 64 MB result)
# A query that finds every slot taken waits this long for one before its 429: a page's first rows arrive
# right after the answer, so a burst of answers asks for pages together, and most slots free in milliseconds.
QUERY_WAIT_S = 2.0
QUERY_POLL_S = 0.02  # how often a waiting query looks for a free slot
# Proxies drop a stream that sends nothing for a while (nginx: 60 s); a model call can take longer, so an
# SSE comment line goes out when nothing else has for this many seconds.
KEEPALIVE_S = 10.0
# pragma_database_list shows the absolute path of each database file: not the business of a web client.
HIDDEN_FUNCTIONS = re.compile(r"(?i)pragma_database_list")
SUMMARY_VALUE_CHARS = 60  # a value in the summary line is cut to this many characters
SUMMARY_COLUMNS = 4  # the summary line shows the first row's first few columns

log = logging.getLogger("macsql.serve")


class Cancelled(Exception):
    """Raised inside a question's graph run, at the next step, after `POST /api/cancel`."""


# ------------------------------------------------------------------------------ shaping replies
def jsonable(value):
    """Plain JSON values from answers and graph state: dataclasses and tuples become dicts and lists, BLOBs
    a short description, non-finite floats strings. Values stay data; the page shows them as text."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<BLOB, {len(bytes(value))} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def capped_rows(rows, max_bytes: int) -> tuple[list, bool]:
    """The rows as JSON values, as many as fit in `max_bytes` of encoded JSON; True when some were left out.
    Measured row by row as the reply is built, so the cap also bounds the memory of building it."""
    out, size = [], 0
    for row in rows:
        plain = jsonable(row)
        size += len(json.dumps(plain, ensure_ascii=False).encode("utf-8")) + 1
        if size > max_bytes:
            return out, True
        out.append(plain)
    return out, False


def json_size(value, limit: int) -> int:
    """About the bytes of `value` as JSON (as `jsonable` makes it), counted only until they pass `limit`: a
    result of 64 MB is neither copied nor encoded to learn that it is too big to stream."""
    size, stack = 0, [value]
    while stack and size <= limit:
        item = stack.pop()
        if is_dataclass(item) and not isinstance(item, type):  # as asdict() writes it: field names too
            size += 2 + sum(len(f.name) + 6 for f in fields(item))
            stack.extend(getattr(item, f.name) for f in fields(item))
        elif isinstance(item, dict):
            size += 2 + sum(len(str(k)) + 6 for k in item)  # quotes, ": " and ", "
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            size += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, str) and len(item) > limit:
            size += len(item)  # already too big, whatever its escapes
        else:
            size += len(json.dumps(jsonable(item), ensure_ascii=False))
    return size


def redact(value, paths: dict[str, str]):
    """`value` with every occurrence of a served database's file path (text -> its name) replaced: a
    reply names databases, never where they live on the server."""
    if isinstance(value, str):
        for text, name in paths.items():
            if text in value:
                value = value.replace(text, f"<database {name}>")
        return value
    if isinstance(value, dict):
        return {k: redact(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, paths) for v in value]
    return value


def step_event(node: str, update: dict) -> dict:
    """What the page gets when a graph node finishes: its trace records (without the prompts) and the state
    keys it changed. Generic over nodes: whatever the graph holds is streamed the same way."""
    trace = [{k: v for k, v in t.items() if k != "prompt"} for t in update.get("trace", [])]
    changed, omitted = {}, []
    for key, value in update.items():
        if key == "trace":
            continue
        if json_size(value, STEP_VALUE_CHARS) > STEP_VALUE_CHARS:
            omitted.append(key)
        else:
            changed[key] = jsonable(value)
    return {"node": node, "trace": jsonable(trace), "changed": changed, "omitted": omitted}


def sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def _shown(value) -> str:
    text = "NULL" if value is None else str(jsonable(value))
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_VALUE_CHARS else text[:SUMMARY_VALUE_CHARS - 1] + "…"


def refiner_hint(trace: list[dict]) -> str | None:
    """The last repair hint the Refiner was given (its problem text carries it after `Hint:`)."""
    for entry in reversed(trace or []):
        problem = entry.get("problem") or ""
        if entry.get("agent") == "refiner" and "Hint:" in problem:
            return " ".join(problem.split("Hint:", 1)[1].split())
    return None


def summary_line(columns, rows, *, truncated: bool = False, error: str | None = None,
                 hint: str | None = None, total: int | None = None) -> str:
    """The answer in one plain line, decided by the result alone (no model): the value of a one-cell result,
    the count and the first row of a longer one, or why there is no answer. `total`: the result's row
    count when `rows` is only its first page."""
    if error:
        return f"Cannot answer: {' '.join(error.split())}" + (f" — {hint}" if hint else "")
    n = len(rows) if total is None else total
    if not n or not rows:
        return "No rows: nothing in the database matches."
    first = list(zip(columns, rows[0], strict=False))
    if n == 1 and len(columns) == 1:
        return f"{columns[0]}: {_shown(rows[0][0])}"
    cells = ", ".join(f"{c} = {_shown(v)}" for c, v in first[:SUMMARY_COLUMNS])
    cells += ", …" if len(first) > SUMMARY_COLUMNS else ""
    if n == 1:
        return f"1 row: {cells}"
    count = f"{n:,} rows" + (" or more (the row cap was reached)" if truncated else "")
    return f"{count}; the first: {cells}"


# ------------------------------------------------------------------------- paging and sorting
def strip_sql(sql: str) -> str:
    """The query without its trailing semicolons and comments, for wrapping in a subquery."""
    from macsql.sql import strip_statement

    return strip_statement(sql)


def page_query(sql: str, *, order_by: int | None = None, descending: bool = False) -> str:
    """The user's query as a subquery, sorted by a column position. Only the position (an int) and the
    direction (a keyword) are written into the wrapper, never user text; the newlines end a trailing `--`
    comment in the user's query. The executor checks the whole as one read-only SELECT as always."""
    wrapped = f"SELECT * FROM (\n{strip_sql(sql)}\n) AS q"  # PostgreSQL before 16 needs the alias
    if order_by is not None:
        wrapped += f" ORDER BY {int(order_by) + 1} {'DESC' if descending else 'ASC'}"
    return wrapped


def restore_names(columns) -> list[str]:
    """SQLite renames a subquery's repeated column names (`id`, `id:1`); the page shows the query's own."""
    seen: set[str] = set()
    out = []
    for name in columns:
        base, sep, suffix = name.rpartition(":")
        plain = base if sep and suffix.isdigit() and base in seen else name
        seen.add(plain)
        out.append(plain)
    return out


def csv_text(columns, rows, *, spreadsheet: bool = True) -> str:
    """RFC 4180 CSV with a header; NULL is an empty field, a BLOB its description. The download is for
    spreadsheets: with `spreadsheet` (the default) text that a spreadsheet would run as a formula gets a
    leading `'` (`display.spreadsheet_safe`); numbers stay as they are."""
    from macsql.display import spreadsheet_safe

    guard = spreadsheet_safe if spreadsheet else (lambda value: value)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([guard(c) for c in columns])
    for row in rows:
        writer.writerow(["" if v is None else guard(jsonable(v)) for v in row])
    return out.getvalue()


# ------------------------------------------------------------------------------------ the server
@dataclass
class Question:
    """One question from the moment it is accepted: where its steps go, and its cancel flag."""
    id: str
    question: str
    db: str
    path: Path
    evidence: str
    conversation: str
    history: list[dict]
    cancel: threading.Event = field(default_factory=threading.Event)


class Server:
    """The state of `macsql serve`: one loaded pipeline, the databases it may answer about (name -> SQLite
    path; a request names one, never a path), its pools and counters, and the conversation store.

    `token`: required on every API call when set. `workers`: questions in flight at once (the model itself is
    shared through `for_threads`, so a local model still runs one batch at a time). `run_workers`: edited
    queries, pages and downloads running at once; `query_wait_s`: how long one more waits for a free slot before
    429. `max_reply_bytes`: JSON bytes of rows in one reply (and the
    bytes of one download). `store`: a ConversationStore, a SQLite file or a postgresql:// URL (default: the
    cache folder's file; `store.open_store`)."""

    def __init__(self, pipeline: Pipeline, databases: dict[str, str | Path], *, token: str | None = None,
                 workers: int = 8, examples: dict[str, list[str]] | None = None, run_workers: int = RUN_WORKERS,
                 max_reply_bytes: int = MAX_REPLY_BYTES, store: ConversationStore | str | Path | None = None,
                 keepalive_s: float = KEEPALIVE_S, query_wait_s: float = QUERY_WAIT_S):
        from macsql.backends.batching import for_threads
        from macsql.engines import check_db

        self.pipeline = pipeline
        self.served = pipeline.with_llm(for_threads(pipeline.llm, workers))
        self.paths = {name: check_db(path) for name, path in databases.items()}
        if not self.paths:
            raise InputError("no database to serve; name at least one (--db PATH or --db demo)")
        self.token = token
        self.examples = {name: list(qs) for name, qs in (examples or {}).items()}
        # the forms a database's location may take in a result (pragma_database_list, an error message)
        self.hidden_paths = {text: name for name, path in self.paths.items()
                             for text in {str(path), str(Path(path).absolute()), str(Path(path).resolve())}}
        # queries use the pipeline's own deadline and row cap (Context holds their defaults)
        limits = self.served.context(next(iter(self.paths.values())))
        self.timeout_s, self.max_rows = limits.timeout_s, limits.max_rows
        self.run_workers, self.max_reply_bytes, self.keepalive_s = run_workers, max_reply_bytes, keepalive_s
        self.query_wait_s = query_wait_s
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="macsql-ask")
        self.run_pool = ThreadPoolExecutor(max_workers=run_workers, thread_name_prefix="macsql-run")
        self.store = open_store(store)
        self.owns_store = not isinstance(store, ConversationStore)  # opened here, so closed here
        self.questions: dict[str, Question] = {}  # accepted and not finished, by id (what cancel names)
        self.counts = {"running": 0, "accepted": 0, "queries": 0}  # accepted: waiting or running
        self.lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.run_pool.shutdown(wait=False, cancel_futures=True)
        if self.owns_store:
            self.store.close()

    @property
    def model_name(self) -> str:
        return getattr(self.pipeline.llm, "name", type(self.pipeline.llm).__name__)

    def authorised(self, sent: str | None) -> bool:
        if self.token is None:
            return True
        return secrets.compare_digest((sent or "").encode(), self.token.encode())

    def db_path(self, name: str) -> Path:
        if name not in self.paths:
            raise HTTPException(404, f"unknown database {name!r}{did_you_mean(name, self.paths)}; "
                                     f"served: {', '.join(self.paths)} (GET /api/databases)")
        return self.paths[name]

    def redact(self, value):
        return redact(value, self.hidden_paths)

    def one_line(self, exc: Exception) -> str:
        return self.redact(" ".join(str(exc).split()))

    # ------------------------------------------------------------------------------- questions
    def accept(self, question: str, db: str, evidence: str, conversation: str | None) -> Question:
        """Check a question and take it in line (503 when the line is full); its conversation is opened."""
        path = self.db_path(db)
        if not question.strip():
            raise HTTPException(400, "the question is empty; ask something about the database")
        try:
            conversation, history = self.store.open(conversation, db)
        except UnknownConversation as exc:
            raise HTTPException(404, str(exc)) from None
        except ConversationMismatch as exc:
            raise HTTPException(400, str(exc)) from None
        with self.lock:
            if self.counts["accepted"] >= MAX_WAITING:
                raise HTTPException(503, f"the server is busy ({self.counts['accepted']} questions in line); "
                                         "try again in a moment", headers={"Retry-After": "5"})
            self.counts["accepted"] += 1
            q = Question(uuid.uuid4().hex, question.strip(), db, path, evidence, conversation, history)
            self.questions[q.id] = q
        return q

    def cancel(self, question_id: str) -> bool:
        """Ask a running question to stop at its next step; False when no such question is running."""
        with self.lock:
            q = self.questions.get(question_id)
        if q is None:
            return False
        q.cancel.set()
        return True

    def answer(self, q: Question, on_step=None) -> dict:
        """In a pool thread, after accept(): answer, then record the turn (also when the client has gone).
        Raises Cancelled when the question was stopped."""
        def step(node: str, update: dict) -> None:
            if q.cancel.is_set():
                raise Cancelled(q.id)
            if on_step is not None:
                on_step(node, update)

        with self.lock:
            self.counts["running"] += 1
        try:
            if q.cancel.is_set():
                raise Cancelled(q.id)
            answer = self.served.ask(q.question, q.path, evidence=q.evidence, history=q.history, on_step=step)
            return self.answer_payload(q, answer)
        finally:
            with self.lock:
                self.counts["running"] -= 1
                self.counts["accepted"] -= 1
                self.questions.pop(q.id, None)

    def answer_payload(self, q: Question, answer: Answer) -> dict:
        reply = answer.to_dict(with_prompts=False)
        rows, cut = capped_rows(reply.pop("rows"), self.max_reply_bytes)
        # each candidate keeps a few rows of its result; together they get a quarter of the reply's bound
        share = self.max_reply_bytes // (4 * max(1, len(reply["candidates"])))
        reply["candidates"] = [self._candidate_capped(c, share) for c in reply["candidates"]]
        summary = self.redact(summary_line(answer.columns, answer.rows, truncated=answer.truncated,
                                           error=answer.error, hint=refiner_hint(answer.trace)))
        turn = self.store.record(q.conversation, q.question, answer.sql, evidence=q.evidence, summary=summary)
        payload = self.redact(jsonable(reply))
        payload.update(rows=self.redact(rows), conversation=q.conversation, db=q.db, turn=turn,
                       summary=summary, total_rows=len(answer.rows), turns=self.store.turns(q.conversation))
        if cut:
            payload.update(truncated=True, note=self.reply_cap_note(len(rows)))
        return payload

    def _candidate_capped(self, candidate: dict, share: int) -> dict:
        rows, cut = capped_rows(candidate.get("rows") or [], share)
        return {**candidate, "rows": rows, **({"rows_truncated": True} if cut else {})}

    def reply_cap_note(self, n: int) -> str:
        return (f"reply size cap reached: the first {n} rows fit in {self.max_reply_bytes >> 20} MiB of JSON; "
                "select fewer or smaller values")

    def counters(self) -> dict:
        with self.lock:
            running, accepted, queries = self.counts["running"], self.counts["accepted"], self.counts["queries"]
        return {"questions_running": running, "questions_waiting": accepted - running, "queries_running": queries}

    # --------------------------------------------------------------------- queries (run, page, download)
    async def query(self, db: str, sql: str, work, *args):
        """Run `work(path, sql, *args)` in the query pool: 400 for a hidden function, 429 when `run_workers`
        queries are still running after `query_wait_s`. The slot is freed when the query ends, not when the
        request does: a client that leaves frees no slot early."""
        path = self.db_path(db)
        if HIDDEN_FUNCTIONS.search(sql):
            raise HTTPException(400, "pragma_database_list is not served here: it shows where the database "
                                     "files are on the server; the other pragma_* functions are")
        deadline = time.monotonic() + self.query_wait_s
        while not self._take_query_slot():
            if time.monotonic() >= deadline:
                raise HTTPException(429, f"{self.run_workers} queries are running; try again in a moment",
                                    headers={"Retry-After": "1"})
            # slots are freed by pool threads; polling keeps the event loop free without a cross-thread signal
            await asyncio.sleep(QUERY_POLL_S)
        try:
            future = self.run_pool.submit(work, path, sql, *args)
        except RuntimeError:  # the pool has shut down: the server is stopping
            self._query_done()
            raise HTTPException(503, "the server is shutting down") from None
        future.add_done_callback(self._query_done)
        return await asyncio.wrap_future(future)

    def _take_query_slot(self) -> bool:
        with self.lock:
            if self.counts["queries"] >= self.run_workers:
                return False
            self.counts["queries"] += 1
            return True

    def _query_done(self, _future=None) -> None:
        with self.lock:
            self.counts["queries"] -= 1

    def _check(self, sql: str, path=None) -> None:
        """The user's query alone must be one read-only SELECT before it is wrapped: its own message, not
        the wrapper's (the executor checks the wrapped query again)."""
        from macsql.engines import engine_of
        from macsql.sql import statement_error

        problem = statement_error(sql, engine_of(path) if path is not None else "sqlite")
        if problem:
            raise HTTPException(400, problem)

    def _execute(self, path: Path, sql: str, max_rows: int | None = None):
        from macsql.engines import open_database

        result = open_database(path).execute(sql, timeout_s=self.timeout_s, max_rows=max_rows or self.max_rows)
        if result.error:
            raise HTTPException(400, self.redact(result.error))
        return result

    def run_all(self, path: Path, sql: str) -> dict:
        """The whole result (up to the row cap and the reply cap), as /api/run always answered."""
        result = self._execute(path, sql)
        rows, cut = capped_rows(result.rows, self.max_reply_bytes)  # in the worker, not on the event loop
        reply = {"columns": list(result.columns), "rows": self.redact(rows), "truncated": result.truncated or cut,
                 "total_rows": len(result.rows)}
        if cut:
            reply["note"] = self.reply_cap_note(len(rows))
        return reply

    def run_page(self, path: Path, sql: str, page: int, page_size: int, order_by: int | None,
                 descending: bool) -> dict:
        """One page of the result, sorted by a column position, and the number of rows of the whole."""
        from macsql.engines import open_database

        self._check(sql, path)
        wrapped = page_query(sql, order_by=order_by, descending=descending)
        counted = self._execute(path, f"SELECT COUNT(*) FROM (\n{strip_sql(sql)}\n) AS q")
        total = counted.rows[0][0]
        result = open_database(path).execute(f"{wrapped} LIMIT {int(page_size)} OFFSET {int(page) * int(page_size)}",
                                             timeout_s=self.timeout_s, max_rows=page_size)
        if result.error:
            if order_by is not None and "term out of range" in result.error:  # SQLite's and DuckDB's words
                raise HTTPException(400, f"order_by {order_by} is not a column of the result (0-based)")
            raise HTTPException(400, self.redact(result.error))
        rows, cut = capped_rows(result.rows, self.max_reply_bytes)
        reply = {"columns": restore_names(result.columns), "rows": self.redact(rows), "total_rows": total,
                 "page": page, "page_size": page_size, "order_by": order_by, "descending": descending,
                 "truncated": cut}
        if cut:
            reply["note"] = self.reply_cap_note(len(rows))
        return reply

    def run_download(self, path: Path, sql: str, fmt: str, order_by: int | None, descending: bool,
                     spreadsheet: bool = True) -> dict:
        """The whole result as CSV or JSON text, within the executor's row cap and the reply cap; CSV is
        guarded against formulas unless `spreadsheet` is False, JSON keeps every value as it is."""
        self._check(sql, path)
        query = sql if order_by is None else page_query(sql, order_by=order_by, descending=descending)
        result = self._execute(path, query)
        columns = list(result.columns) if order_by is None else restore_names(result.columns)
        rows, cut = capped_rows(result.rows, self.max_reply_bytes)
        rows = self.redact(rows)
        if fmt == "csv":
            body = csv_text(columns, rows, spreadsheet=spreadsheet)
        else:
            body = json.dumps({"columns": columns, "rows": rows}, ensure_ascii=False)
        return {"body": body, "truncated": "rows" if result.truncated else "bytes" if cut else "",
                "rows": len(rows)}

"""The HTTP API and the web page of `macsql serve`: `create_app(pipeline, {"name": path})` -> a FastAPI app.

The model is loaded once, outside: requests share one `Pipeline`. Questions run in a thread pool of their
own, so a slow one never blocks the event loop (`/health`, the page, `/api/run`), and the backend is wrapped
by `macsql.backends.batching.for_threads`: a lock for llama.cpp, batching for transformers, nothing for an
OpenAI-compatible server (it takes concurrent requests). A question that has started runs to the end even
when its client goes away: its turn is still recorded, and nothing else is cancelled.

Only the databases named at start are served (a request names one, never a path); every query goes through
`macsql.sqlexec.execute`, read-only with its deadline and row cap; schemas come from `macsql.schema`.
Edited queries (`/api/run`) run in a small pool of their own, a few at a time, so that a burst of slow ones
neither starves `/api/schema` and `/health` nor holds many results in memory at once.

Every request must name this server in its Host header (`HostCheck`: a DNS-rebinding guard; loopback
names by default), and every error, a bug's included, is JSON `{"detail": "<one line>"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from macsql.errors import InputError, MacSQLError, ModelError, did_you_mean
from macsql.pipeline import Answer, Pipeline
from macsql.serve.server import ANY_HOST, LOOPBACK_HOSTS, host_name

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 64 * 1024
MAX_QUESTION_CHARS = 2000
MAX_EVIDENCE_CHARS = 4000
MAX_SQL_CHARS = 20_000
MAX_WAITING = 256  # questions accepted and not finished; beyond this a new one gets 503 (try again)
MAX_CONVERSATIONS = 1000  # the oldest idle conversation is forgotten beyond this
MAX_TURNS = 50  # per conversation (the agents see only the last few: agents/prompting.py)
STEP_VALUE_CHARS = 4000  # a streamed step leaves out state values bigger than this (a whole schema)
# The executor caps a result at 64 MB of values, but JSON can be six times bigger than its values (a control
# character is written \u0001): the rows of a reply stop at this many bytes of JSON, and it says so.
MAX_REPLY_BYTES = 16 * 1024 * 1024
RUN_WORKERS = 4  # edited queries running at once; one more gets 429 (each may hold a 64 MB result)
# pragma_database_list shows the absolute path of each database file: not the business of a web client.
HIDDEN_FUNCTIONS = re.compile(r"(?i)pragma_database_list")
# The page loads only its own files; nothing a model or a database wrote can pull in a script.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

BEARER = HTTPBearer(auto_error=False, description="the token `macsql serve` was started with")

log = logging.getLogger("macsql.serve")


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    db: str = Field(min_length=1, max_length=200, description="a name from GET /api/databases")
    evidence: str = Field("", max_length=MAX_EVIDENCE_CHARS)
    conversation: str | None = Field(None, max_length=64,
                                     description="continue this conversation (a follow-up)")


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db: str = Field(min_length=1, max_length=200)
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS)
    conversation: str | None = Field(
        None, max_length=64, description="when the query runs, it replaces the SQL of this conversation's "
                                         "last turn, so a follow-up builds on the edited query")


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


@dataclass
class Job:
    question: str
    db: str
    path: Path
    evidence: str
    conversation: str
    history: list[dict]


class Conversations:
    """Turns ({"question", "sql"}) per conversation id, in memory, bounded; safe across threads."""

    def __init__(self, max_conversations: int = MAX_CONVERSATIONS):
        self.max = max_conversations
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, conversation: str | None, db: str) -> tuple[str, list[dict]]:
        with self._lock:
            if conversation is None:
                conversation = uuid.uuid4().hex
                self._items[conversation] = {"db": db, "turns": []}
                while len(self._items) > self.max:
                    self._items.popitem(last=False)
                return conversation, []
            item = self._items.get(conversation)
            if item is None:
                raise HTTPException(404, f"unknown conversation {conversation!r}; leave it out to start one")
            if item["db"] != db:
                raise HTTPException(400, f"conversation {conversation!r} is about database {item['db']!r}, "
                                         f"not {db!r}; leave it out to start a new one")
            self._items.move_to_end(conversation)
            return conversation, [dict(t) for t in item["turns"]]

    def record(self, conversation: str, question: str, sql: str) -> None:
        with self._lock:
            item = self._items.get(conversation)
            if item is not None:
                item["turns"] = (item["turns"] + [{"question": question, "sql": sql}])[-MAX_TURNS:]

    def replace_last_sql(self, conversation: str, db: str, sql: str) -> None:
        with self._lock:
            item = self._items.get(conversation)
            if item is not None and item["db"] == db and item["turns"]:
                item["turns"][-1]["sql"] = sql

    def turns(self, conversation: str) -> list[dict]:
        with self._lock:
            item = self._items.get(conversation)
            return [dict(t) for t in item["turns"]] if item else []


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes (413), or one of unknown length (411),
    before anything reads it."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            problem = None
            if length is None:
                if b"transfer-encoding" in headers:
                    problem = (411, "send the body with a Content-Length header")
            elif not length.isdigit():
                problem = (400, "bad Content-Length header")
            elif int(length) > self.limit:
                problem = (413, f"the request body is {int(length)} bytes; the limit is {self.limit}")
            if problem:
                response = JSONResponse({"detail": problem[1]}, status_code=problem[0])
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class HostCheck:
    """ASGI middleware: answer only requests whose Host header names this server (`allowed`: names without
    ports, or `*` for any). A page on another site can point a DNS name of its own at this machine (DNS
    rebinding); its requests then carry that name, and get 400 before any route, the page included."""

    def __init__(self, app, allowed):
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed if h != ANY_HOST)
        self.any = ANY_HOST in allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.any:  # no WebSocket routes: Starlette refuses those itself
            return await self.app(scope, receive, send)
        sent = [value.decode("latin-1") for key, value in scope["headers"] if key == b"host"]
        if len(sent) == 1 and host_name(sent[0]) in self.allowed:
            return await self.app(scope, receive, send)
        sent = ", ".join(sent)
        shown = sent[:100] if sent else "(none)"
        response = JSONResponse({"detail": f"this server does not answer to the Host {shown!r}; open it by the "
                                           "address it was started on, or start `macsql serve` with "
                                           "--allowed-host NAME"}, status_code=400)
        return await response(scope, receive, send)


class PageHeaders:
    """ASGI middleware: the page and its files get a strict Content-Security-Policy (the API docs at /docs
    load Swagger UI from a CDN, so they do not)."""

    headers = [(b"content-security-policy", PAGE_CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] == "/" or scope["path"].startswith("/static/")):
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(pipeline: Pipeline, databases: dict[str, str | Path], *, token: str | None = None,
               workers: int = 8, max_body_bytes: int = MAX_BODY_BYTES,
               examples: dict[str, list[str]] | None = None, allowed_hosts=LOOPBACK_HOSTS,
               run_workers: int = RUN_WORKERS, max_reply_bytes: int = MAX_REPLY_BYTES) -> FastAPI:
    """The app for one loaded pipeline and the databases it may answer about (name -> SQLite path);
    `examples`: questions the page offers per database name.

    `token`: when set, every /api call, /docs and /openapi.json must send `Authorization: Bearer <token>`
    (`/health` without it says only that the server is up). `workers`: questions in flight at once (the
    model itself is shared through `for_threads`, so a local model still runs one batch at a time).
    `allowed_hosts`: the Host names to answer (`server.allowed_hosts`; `*`, any, needs a token).
    `run_workers`: edited queries running at once. `max_reply_bytes`: JSON bytes of rows in one reply."""
    from macsql.backends.batching import for_threads
    from macsql.schema import introspect, render_schema
    from macsql.sqlexec import check_database, execute

    served = pipeline.with_llm(for_threads(pipeline.llm, workers))
    paths = {name: check_database(path) for name, path in databases.items()}
    if not paths:
        raise InputError("no database to serve; name at least one (--db PATH or --db demo)")
    if ANY_HOST in allowed_hosts and token is None:
        raise InputError("answering any Host header needs a token; pass token=... or name the hosts")
    # the forms a database's location may take in a result (pragma_database_list, an error message)
    hidden_paths = {text: name for name, path in paths.items()
                    for text in {str(Path(path).absolute()), str(Path(path).resolve())}}
    # /api/run uses the pipeline's own deadline and row cap (Context holds their defaults)
    limits = served.context(next(iter(paths.values())))
    timeout_s, max_rows = limits.timeout_s, limits.max_rows
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="macsql-ask")
    run_pool = ThreadPoolExecutor(max_workers=run_workers, thread_name_prefix="macsql-run")
    conversations = Conversations()
    counts = {"running": 0, "accepted": 0, "queries": 0}  # accepted: waiting or running; queries: /api/run
    counts_lock = threading.Lock()

    def check_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        if token is None:
            return
        sent = credentials.credentials if credentials else ""
        if not secrets.compare_digest(sent.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token: send the header "
                                     "`Authorization: Bearer <token>` with the token `macsql serve` was started with",
                                headers={"WWW-Authenticate": "Bearer"})

    def db_path(name: str) -> Path:
        if name not in paths:
            raise HTTPException(404, f"unknown database {name!r}{did_you_mean(name, paths)}; "
                                     f"served: {', '.join(paths)} (GET /api/databases)")
        return paths[name]

    def job_for(req: AskRequest) -> Job:
        path = db_path(req.db)
        if not req.question.strip():
            raise HTTPException(400, "the question is empty; ask something about the database")
        conversation, history = conversations.open(req.conversation, req.db)
        return Job(req.question.strip(), req.db, path, req.evidence, conversation, history)

    def answer_payload(job: Job, answer: Answer) -> dict:
        reply = answer.to_dict(with_prompts=False)
        rows, cut = capped_rows(reply.pop("rows"), max_reply_bytes)
        # each candidate keeps a few rows of its result; together they get a quarter of the reply's bound
        share = max_reply_bytes // (4 * max(1, len(reply["candidates"])))
        reply["candidates"] = [candidate_capped(c, share) for c in reply["candidates"]]
        payload = redact(jsonable(reply), hidden_paths)
        payload.update(rows=redact(rows, hidden_paths), conversation=job.conversation, db=job.db,
                       turns=conversations.turns(job.conversation))
        if cut:
            payload.update(truncated=True, note=reply_cap_note(len(rows)))
        return payload

    def candidate_capped(candidate: dict, share: int) -> dict:
        rows, cut = capped_rows(candidate.get("rows") or [], share)
        return {**candidate, "rows": rows, **({"rows_truncated": True} if cut else {})}

    def reply_cap_note(n: int) -> str:
        return (f"reply size cap reached: the first {n} rows fit in {max_reply_bytes >> 20} MiB of JSON; "
                "select fewer or smaller values")

    def admit() -> None:
        with counts_lock:
            if counts["accepted"] >= MAX_WAITING:
                raise HTTPException(503, f"the server is busy ({counts['accepted']} questions in line); "
                                         "try again in a moment", headers={"Retry-After": "5"})
            counts["accepted"] += 1

    def run_job(job: Job, on_step=None) -> dict:
        """In a pool thread, after admit(): answer, then record the turn (also when the client has gone)."""
        with counts_lock:
            counts["running"] += 1
        try:
            answer = served.ask(job.question, job.path, evidence=job.evidence, history=job.history,
                                on_step=on_step)
            conversations.record(job.conversation, job.question, answer.sql)
            return answer_payload(job, answer)
        finally:
            with counts_lock:
                counts["running"] -= 1
                counts["accepted"] -= 1

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)
        run_pool.shutdown(wait=False, cancel_futures=True)

    # With a token, the API's description is the token's business too: /docs and /openapi.json are served
    # below behind it (the default routes of FastAPI take no dependencies), and ReDoc is left out.
    documented = {} if token is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(lifespan=lifespan, title="macsql", version="1",
                  summary="Ask a SQLite database questions in plain language.",
                  description="The HTTP API of `macsql serve`. "
                              "With a token, send `Authorization: Bearer <token>`.", **documented)
    auth = [Depends(check_token)]

    def authorised(credentials: HTTPAuthorizationCredentials | None) -> bool:
        if token is None:
            return True
        sent = credentials.credentials if credentials else ""
        return secrets.compare_digest(sent.encode(), token.encode())

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}".strip(": ")},
                            status_code=422)

    @app.exception_handler(MacSQLError)
    async def library_error(_request, exc: MacSQLError):
        detail = redact(" ".join(str(exc).split()), hidden_paths)
        return JSONResponse({"detail": detail}, status_code=503 if isinstance(exc, ModelError) else 400)

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc: Exception):
        # A bug, or a reply a backend did not expect (a model server's malformed JSON): still one line of
        # JSON for the client; the traceback goes to the server log (Starlette logs it after this reply).
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)

    @app.get("/health")
    async def health(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> dict:
        if not authorised(credentials):  # liveness for anyone; what runs here only with the token
            return {"status": "ok"}
        with counts_lock:
            running, waiting = counts["running"], counts["accepted"] - counts["running"]
        return {"status": "ok", "model": getattr(pipeline.llm, "name", type(pipeline.llm).__name__),
                "databases": len(paths), "questions_running": running, "questions_waiting": waiting,
                "queries_running": counts["queries"]}

    if token is not None:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
        async def openapi_json() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=auth)
        async def docs() -> Response:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="macsql - API docs")

    @app.get("/api/databases", dependencies=auth)
    async def list_databases() -> dict:
        return {"databases": [{"name": name, "examples": list((examples or {}).get(name, []))}
                              for name in paths]}

    @app.get("/api/schema", dependencies=auth)
    async def get_schema(db: str = Query(..., max_length=200)) -> dict:
        path = db_path(db)
        schema = await asyncio.to_thread(introspect, path)
        tables = [{"name": t.name, "columns": [{"name": c.name, "type": c.type} for c in t.columns],
                   "primary_key": t.primary_key,
                   "foreign_keys": [asdict(fk) for fk in t.foreign_keys]} for t in schema.tables]
        return {"db": db, "text": render_schema(schema), "tables": tables}

    @app.post("/api/ask", dependencies=auth)
    async def ask(req: AskRequest) -> dict:
        job = job_for(req)
        admit()
        return await asyncio.get_running_loop().run_in_executor(pool, run_job, job)

    @app.post("/api/ask/stream", dependencies=auth,
              response_description="server-sent events: `start`, one `step` per graph node as it finishes, "
                                   "then `answer` (the /api/ask reply) or `error`")
    async def ask_stream(req: AskRequest) -> StreamingResponse:
        job = job_for(req)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(kind: str, data: dict) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, data))
            except RuntimeError:  # the server is shutting down; nobody is listening
                pass

        def work() -> None:
            try:
                payload = run_job(job, on_step=lambda node, update: emit(
                    "step", redact(step_event(node, update), hidden_paths)))
                emit("answer", payload)
            except MacSQLError as exc:
                emit("error", {"detail": redact(" ".join(str(exc).split()), hidden_paths)})
            except Exception as exc:  # a bug must end the stream with a message, not leave it hanging
                log.exception("question failed")
                emit("error", {"detail": f"internal error ({type(exc).__name__}); see the server log"})

        admit()
        pool.submit(work)

        async def events():
            yield sse("start", {"conversation": job.conversation, "db": job.db, "question": job.question})
            while True:
                kind, data = await queue.get()
                yield sse(kind, data)
                if kind in ("answer", "error"):
                    return

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def run_query(path: Path, sql: str):
        result = execute(path, sql, timeout_s=timeout_s, max_rows=max_rows)
        rows, cut = capped_rows(result.rows, max_reply_bytes)  # in the worker, not on the event loop
        return result, redact(rows, hidden_paths), cut

    def query_done(_future=None) -> None:
        with counts_lock:
            counts["queries"] -= 1

    @app.post("/api/run", dependencies=auth,
              responses={429: {"description": "too many queries running; try again in a moment"}})
    async def run_sql(req: RunRequest) -> JSONResponse:
        path = db_path(req.db)
        if HIDDEN_FUNCTIONS.search(req.sql):
            raise HTTPException(400, "pragma_database_list is not served here: it shows where the database "
                                     "files are on the server; the other pragma_* functions are")
        with counts_lock:
            if counts["queries"] >= run_workers:
                raise HTTPException(429, f"{run_workers} queries are running; try again in a moment",
                                    headers={"Retry-After": "1"})
            counts["queries"] += 1
        start = time.perf_counter()
        try:
            future = run_pool.submit(run_query, path, req.sql)
        except RuntimeError:  # the pool has shut down: the server is stopping
            query_done()
            raise HTTPException(503, "the server is shutting down") from None
        # freed when the query ends, not when this request does: a client that leaves frees no slot early
        future.add_done_callback(query_done)
        result, rows, cut = await asyncio.wrap_future(future)
        if result.error:
            raise HTTPException(400, redact(result.error, hidden_paths))
        if req.conversation:
            conversations.replace_last_sql(req.conversation, req.db, req.sql.strip())
        reply = {"db": req.db, "sql": req.sql, "columns": list(result.columns), "rows": rows,
                 "truncated": result.truncated or cut, "seconds": round(time.perf_counter() - start, 4)}
        if cut:
            reply["note"] = reply_cap_note(len(rows))
        return JSONResponse(reply)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # no icon; saves the browser a 404 on every load

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(PageHeaders)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(HostCheck, allowed=tuple(allowed_hosts))  # the outermost: before anything reads
    app.state.pool = pool
    app.state.run_pool = run_pool
    app.state.conversations = conversations
    return app




def sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"

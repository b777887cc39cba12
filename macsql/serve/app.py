"""The HTTP API and the web page of `macsql serve`: `create_app(pipeline, {"name": path})` -> a FastAPI app.

The model is loaded once, outside: requests share one `Pipeline`. Questions run in a thread pool of their
own, so a slow one never blocks the event loop (`/health`, the page, `/api/run`), and the backend is wrapped
by `macsql.backends.batching.for_threads`: a lock for llama.cpp, batching for transformers, nothing for an
OpenAI-compatible server (it takes concurrent requests). A question that has started runs to the end even
when its client goes away: its turn is still recorded, and nothing else is cancelled.

Only the databases named at start are served (a request names one, never a path); every query goes through
`macsql.sqlexec.execute`, read-only with its deadline and row cap; schemas come from `macsql.schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, is_dataclass
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

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 64 * 1024
MAX_QUESTION_CHARS = 2000
MAX_EVIDENCE_CHARS = 4000
MAX_SQL_CHARS = 20_000
MAX_WAITING = 256  # questions accepted and not finished; beyond this a new one gets 503 (try again)
MAX_CONVERSATIONS = 1000  # the oldest idle conversation is forgotten beyond this
MAX_TURNS = 50  # per conversation (the agents see only the last few: agents/prompting.py)
STEP_VALUE_CHARS = 4000  # a streamed step leaves out state values bigger than this (a whole schema)
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


def step_event(node: str, update: dict) -> dict:
    """What the page gets when a graph node finishes: its trace records (without the prompts) and the state
    keys it changed. Generic over nodes: whatever the graph holds is streamed the same way."""
    trace = [{k: v for k, v in t.items() if k != "prompt"} for t in update.get("trace", [])]
    changed, omitted = {}, []
    for key, value in update.items():
        if key == "trace":
            continue
        plain = jsonable(value)
        if len(json.dumps(plain, ensure_ascii=False)) > STEP_VALUE_CHARS:
            omitted.append(key)
        else:
            changed[key] = plain
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
               examples: dict[str, list[str]] | None = None) -> FastAPI:
    """The app for one loaded pipeline and the databases it may answer about (name -> SQLite path);
    `examples`: questions the page offers per database name.

    `token`: when set, every /api call must send `Authorization: Bearer <token>`. `workers`: questions in
    flight at once (the model itself is shared through `for_threads`, so a local model still runs one
    batch at a time)."""
    from macsql.backends.batching import for_threads
    from macsql.schema import introspect, render_schema
    from macsql.sqlexec import check_database, execute

    served = pipeline.with_options()
    served.llm = for_threads(pipeline.llm, workers)
    paths = {name: check_database(path) for name, path in databases.items()}
    if not paths:
        raise InputError("no database to serve; name at least one (--db PATH or --db demo)")
    # /api/run uses the pipeline's own deadline and row cap (Context holds their defaults)
    limits = served.context(next(iter(paths.values())))
    timeout_s, max_rows = limits.timeout_s, limits.max_rows
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="macsql-ask")
    conversations = Conversations()
    counts = {"running": 0, "accepted": 0}  # accepted: waiting or running
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
        payload = jsonable(answer.to_dict(with_prompts=False))
        payload.update(conversation=job.conversation, db=job.db,
                       turns=conversations.turns(job.conversation))
        return payload

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

    app = FastAPI(lifespan=lifespan, title="macsql", version="1",
                  summary="Ask a SQLite database questions in plain language.",
                  description="The HTTP API of `macsql serve`. "
                              "With a token, send `Authorization: Bearer <token>`.")
    auth = [Depends(check_token)]

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}".strip(": ")},
                            status_code=422)

    @app.exception_handler(MacSQLError)
    async def library_error(_request, exc: MacSQLError):
        return JSONResponse({"detail": str(exc)}, status_code=503 if isinstance(exc, ModelError) else 400)

    @app.get("/health")
    async def health() -> dict:
        with counts_lock:
            running, waiting = counts["running"], counts["accepted"] - counts["running"]
        return {"status": "ok", "model": getattr(pipeline.llm, "name", type(pipeline.llm).__name__),
                "databases": len(paths), "questions_running": running, "questions_waiting": waiting}

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
                payload = run_job(job, on_step=lambda node, update: emit("step", step_event(node, update)))
                emit("answer", payload)
            except MacSQLError as exc:
                emit("error", {"detail": str(exc)})
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

    @app.post("/api/run", dependencies=auth)
    async def run_sql(req: RunRequest) -> dict:
        path = db_path(req.db)
        start = time.perf_counter()
        result = await asyncio.to_thread(execute, path, req.sql, timeout_s=timeout_s, max_rows=max_rows)
        if result.error:
            raise HTTPException(400, result.error)
        if req.conversation:
            conversations.replace_last_sql(req.conversation, req.db, req.sql.strip())
        return {"db": req.db, "sql": req.sql, "columns": list(result.columns), "rows": jsonable(result.rows),
                "truncated": result.truncated, "seconds": round(time.perf_counter() - start, 4)}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # no icon; saves the browser a 404 on every load

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(PageHeaders)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.state.pool = pool
    app.state.conversations = conversations
    return app




def sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"

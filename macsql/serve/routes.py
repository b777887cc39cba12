"""The routes of `macsql serve`: the HTTP API, the page and its API docs. Each reads the `Server`
(state.py) that `create_app` put on the app; none holds state of its own."""

from __future__ import annotations

import asyncio
import re
import time
from asyncio import Queue
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from macsql.errors import MacSQLError
from macsql.serve.state import Cancelled, Server, log, sse, step_event, summary_line

STATIC = Path(__file__).resolve().parent / "static"
MAX_QUESTION_CHARS = 2000
MAX_EVIDENCE_CHARS = 4000
MAX_SQL_CHARS = 20_000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50

BEARER = HTTPBearer(auto_error=False, description="the token `macsql serve` was started with")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def current_server(request: Request) -> Server:
    return request.app.state.server


ServerDep = Annotated[Server, Depends(current_server)]


def check_token(server: ServerDep, credentials: Credentials) -> None:
    if not server.authorised(credentials.credentials if credentials else None):
        raise HTTPException(401, "missing or wrong token: send the header `Authorization: Bearer <token>` "
                                 "with the token `macsql serve` was started with",
                            headers={"WWW-Authenticate": "Bearer"})


router = APIRouter()  # the page, /health and the API docs: no token (the docs check it themselves)
api = APIRouter(dependencies=[Depends(check_token)])  # everything under /api: the token when there is one


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
    page: int | None = Field(None, ge=0, le=10_000_000, description="a page of the result (0 first); with "
                             "page, page_size or order_by the reply is that page and the total row count")
    page_size: int | None = Field(None, ge=1, le=MAX_PAGE_SIZE, description=f"default {DEFAULT_PAGE_SIZE}")
    order_by: int | None = Field(None, ge=0, le=2000, description="sort by this column (0 is the first)")
    descending: bool = False


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db: str = Field(min_length=1, max_length=200)
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS)
    format: Literal["csv", "json"] = "csv"
    order_by: int | None = Field(None, ge=0, le=2000)
    descending: bool = False
    spreadsheet_safe: bool = Field(True, description="CSV for a spreadsheet: text that would run as a formula "
                                   "(starting with = + - @, a tab or CR) gets a leading '; false writes every "
                                   "value as it is. JSON always keeps values as they are.")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question_id: str = Field(min_length=1, max_length=64, description="the id in the stream's `start` event")


# --------------------------------------------------------------------------------- page and health
@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(status_code=204)  # no icon; saves the browser a 404 on every load


@router.get("/docs", include_in_schema=False)
async def docs(server: ServerDep, credentials: Credentials) -> FileResponse:
    # a page of our own that lists /openapi.json: Swagger UI would come from a CDN, blank offline
    check_token(server, credentials)
    return FileResponse(STATIC / "docs.html")


@router.get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request, server: ServerDep, credentials: Credentials) -> JSONResponse:
    check_token(server, credentials)  # with a token, the API's description is the token's business too
    return JSONResponse(request.app.openapi())


@router.get("/health")
async def health(server: ServerDep, credentials: Credentials) -> dict:
    if not server.authorised(credentials.credentials if credentials else None):
        return {"status": "ok"}  # liveness for anyone; what runs here only with the token
    return {"status": "ok", "model": server.model_name, "databases": len(server.paths), **server.counters()}


# ------------------------------------------------------------------------------ databases, schema
@api.get("/api/databases")
async def list_databases(server: ServerDep) -> dict:
    return {"databases": [{"name": name, "examples": server.examples.get(name, [])} for name in server.paths]}


@api.get("/api/schema")
async def get_schema(server: ServerDep, db: str = Query(..., max_length=200)) -> dict:
    from macsql.engines import open_database
    from macsql.schema import introspect, render_schema

    schema = await asyncio.to_thread(lambda: introspect(open_database(server.db_path(db))))
    tables = [{"name": t.name, "columns": [{"name": c.name, "type": c.type} for c in t.columns],
               "primary_key": t.primary_key,
               "foreign_keys": [asdict(fk) for fk in t.foreign_keys]} for t in schema.tables]
    return {"db": db, "text": render_schema(schema), "tables": tables}


# ------------------------------------------------------------------------------------- questions
@api.post("/api/ask", responses={409: {"description": "the question was stopped (POST /api/cancel)"}})
async def ask(req: AskRequest, server: ServerDep) -> dict:
    # the store is a file: opening a conversation waits for the disk in a thread, not on the event loop
    q = await asyncio.to_thread(server.accept, req.question, req.db, req.evidence, req.conversation)
    try:
        return await asyncio.get_running_loop().run_in_executor(server.pool, server.answer, q)
    except Cancelled:
        raise HTTPException(409, "the question was stopped") from None


@api.post("/api/ask/stream",
          response_description="server-sent events: `start` (with the question's id, for /api/cancel), one "
                               "`step` per graph node as it finishes, then `answer` (the /api/ask reply), "
                               "`cancelled` or `error`; an SSE comment line keeps an idle stream open")
async def ask_stream(req: AskRequest, server: ServerDep) -> StreamingResponse:
    # the store is a file: opening a conversation waits for the disk in a thread, not on the event loop
    q = await asyncio.to_thread(server.accept, req.question, req.db, req.evidence, req.conversation)
    loop = asyncio.get_running_loop()
    queue: Queue = Queue()

    def emit(kind: str, data: dict) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, data))
        except RuntimeError:  # the server is shutting down; nobody is listening
            pass

    def work() -> None:
        try:
            payload = server.answer(q, on_step=lambda node, update: emit(
                "step", server.redact(step_event(node, update))))
            emit("answer", payload)
        except Cancelled:
            emit("cancelled", {"detail": "the question was stopped", "question_id": q.id})
        except MacSQLError as exc:
            emit("error", {"detail": server.one_line(exc)})
        except Exception as exc:  # a bug must end the stream with a message, not leave it hanging
            log.exception("question failed")
            emit("error", {"detail": f"internal error ({type(exc).__name__}); see the server log"})

    server.pool.submit(work)

    async def events():
        yield sse("start", {"conversation": q.conversation, "db": q.db, "question": q.question,
                            "question_id": q.id})
        pending = asyncio.ensure_future(queue.get())
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=server.keepalive_s)
                if not done:
                    yield ": keep-alive\n\n"
                    continue
                kind, data = pending.result()
                yield sse(kind, data)
                if kind in ("answer", "cancelled", "error"):
                    return
                pending = asyncio.ensure_future(queue.get())
        finally:
            pending.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@api.post("/api/cancel")
async def cancel(req: CancelRequest, server: ServerDep) -> dict:
    """Stop a question at its next graph step; other questions go on. `cancelled` is false when the
    question has already finished (or never existed)."""
    return {"question_id": req.question_id, "cancelled": server.cancel(req.question_id)}


# ------------------------------------------------------------------------------- queries
@api.post("/api/run", responses={429: {"description": "too many queries running; try again in a moment"}})
async def run_sql(req: RunRequest, server: ServerDep) -> JSONResponse:
    """Run a query read-only: the whole result (up to the caps), or with page, page_size or order_by one
    sorted page of it and the total row count."""
    start = time.perf_counter()
    paged = req.page is not None or req.page_size is not None or req.order_by is not None
    if paged:
        reply = await server.query(req.db, req.sql, server.run_page, req.page or 0,
                                   req.page_size or DEFAULT_PAGE_SIZE, req.order_by, req.descending)
    else:
        reply = await server.query(req.db, req.sql, server.run_all)
    if not req.page:  # the first page (or the whole result): the one-line summary, as an answer has
        reply["summary"] = server.redact(summary_line(reply["columns"], reply["rows"], truncated=reply["truncated"],
                                                      total=reply["total_rows"]))
    if req.conversation:
        await asyncio.to_thread(server.store.replace_last_sql, req.conversation, req.db, req.sql.strip(),
                                reply.get("summary"))
    return JSONResponse({"db": req.db, "sql": req.sql, **reply, "seconds": round(time.perf_counter() - start, 4)})


@api.post("/api/download", responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
async def download(req: DownloadRequest, server: ServerDep) -> Response:
    """The whole result as a CSV or JSON file, within the row cap and the reply cap; the header
    `X-Macsql-Truncated` says which cap cut it (`rows` or `bytes`), empty when none did. The CSV is meant
    for spreadsheets and guarded against formulas (see `spreadsheet_safe`)."""
    out = await server.query(req.db, req.sql, server.run_download, req.format, req.order_by, req.descending,
                             req.spreadsheet_safe)
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", req.db).strip("_") or "result"
    media = "text/csv; charset=utf-8" if req.format == "csv" else "application/json"
    return Response(out["body"], media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{name}-result.{req.format}"',
        "X-Macsql-Rows": str(out["rows"]), "X-Macsql-Truncated": out["truncated"],
        "Cache-Control": "no-store"})


# ------------------------------------------------------------------------------ conversations
@api.get("/api/conversations")
async def conversations(server: ServerDep, db: str | None = Query(None, max_length=200),
                        limit: int = Query(50, ge=1, le=500)) -> dict:
    """The latest conversations (newest first), about one database or all served ones."""
    dbs = [db] if db is not None else list(server.paths)
    if db is not None:
        server.db_path(db)
    return {"conversations": await asyncio.to_thread(server.store.recent, dbs, limit)}


@api.get("/api/conversations/{conversation}")
async def conversation(conversation: str, server: ServerDep) -> dict:
    """A conversation's turns: number, question, evidence, SQL and summary (rows are not kept: run the SQL)."""
    found = await asyncio.to_thread(server.store.get, conversation[:64])
    if found is None or found["db"] not in server.paths:
        raise HTTPException(404, f"unknown conversation {conversation[:64]!r}")
    return found

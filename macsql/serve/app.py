"""The web app of `macsql serve`: `create_app(pipeline, {"name": path})` -> a FastAPI app.

The model is loaded once, outside: requests share one `Pipeline`, held with everything else the server keeps
by a `Server` (state.py); the routes live in routes.py. Only the databases named at start are served (a
request names one, never a path); every query goes through `macsql.sqlexec.execute`, read-only with its
deadline and row cap. Here: the middleware every request passes (the Host check, a DNS-rebinding guard;
the body cap; the page's security headers) and the error handlers that make every error, a bug's included,
JSON `{"detail": "<one line>"}`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from macsql.errors import InputError, MacSQLError, ModelError
from macsql.pipeline import Pipeline
from macsql.serve.hosts import ANY_HOST, LOOPBACK_HOSTS, host_name
from macsql.serve.routes import STATIC, api, router
from macsql.serve.state import MAX_REPLY_BYTES, RUN_WORKERS, Server
from macsql.serve.store import ConversationStore, StoreUnavailable

__all__ = ["STATIC", "Server", "create_app"]

MAX_BODY_BYTES = 64 * 1024
# The page loads only its own files; nothing a model or a database wrote can pull in a script.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

log = logging.getLogger("macsql.serve")


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
    """ASGI middleware: the page, its API docs and their files get a strict Content-Security-Policy."""

    headers = [(b"content-security-policy", PAGE_CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] in ("/", "/docs") or scope["path"].startswith("/static/")):
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(pipeline: Pipeline, databases: dict[str, str | Path], *, token: str | None = None,
               workers: int = 8, max_body_bytes: int = MAX_BODY_BYTES,
               examples: dict[str, list[str]] | None = None, allowed_hosts=LOOPBACK_HOSTS,
               run_workers: int = RUN_WORKERS, max_reply_bytes: int = MAX_REPLY_BYTES,
               store: ConversationStore | str | Path | None = None, **server_options) -> FastAPI:
    """The app for one loaded pipeline and the databases it may answer about (name -> SQLite path);
    `examples`: questions the page offers per database name; `allowed_hosts`: the Host names to answer
    (`server.allowed_hosts`; `*`, any, needs a token); the rest configures the `Server` (state.py)."""
    if ANY_HOST in allowed_hosts and token is None:
        raise InputError("answering any Host header needs a token; pass token=... or name the hosts")
    server = Server(pipeline, databases, token=token, workers=workers, examples=examples,
                    run_workers=run_workers, max_reply_bytes=max_reply_bytes, store=store, **server_options)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        server.close()

    # FastAPI's own /docs loads Swagger UI from a CDN (a blank page offline) and its /openapi.json takes no
    # token: routes.py serves both itself.
    app = FastAPI(lifespan=lifespan, title="macsql", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None, summary="Ask a SQLite database questions in plain language.",
                  description="The HTTP API of `macsql serve`. With a token, send `Authorization: Bearer <token>`.")
    app.state.server = server
    add_error_handlers(app, server)
    app.include_router(router)
    app.include_router(api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(PageHeaders)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(HostCheck, allowed=tuple(allowed_hosts))  # the outermost: before anything reads
    return app


def add_error_handlers(app: FastAPI, server: Server) -> None:
    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}".strip(": ")},
                            status_code=422)

    @app.exception_handler(MacSQLError)
    async def library_error(_request, exc: MacSQLError):
        # a model or a conversation store out of reach is the server's trouble (503: try again), not the request's
        unavailable = isinstance(exc, (ModelError, StoreUnavailable))
        return JSONResponse({"detail": server.one_line(exc)}, status_code=503 if unavailable else 400)

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc: Exception):
        # A bug, or a reply a backend did not expect (a model server's malformed JSON): still one line of
        # JSON for the client; the traceback goes to the server log (Starlette logs it after this reply).
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                            status_code=500)

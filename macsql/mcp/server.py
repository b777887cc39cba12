"""The MCP server: `create_server(pipeline, databases)` -> the SDK's MCPServer, and `serve` to run it.

Tools: `ask` (the agents answer a question; each graph step is a progress notification), `run_sql` (one
read-only query through the one executor), `list_databases`, `get_schema` (the schema text the agents see).
Each database's schema is also a resource, `macsql://schema/NAME`. A bad argument (an unknown database, an
oversized question or query, a refused statement) is a tool error with one line for the calling model, never
a crash of the server.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from macsql import __version__
from macsql.errors import MacSQLError
from macsql.integrations import MAX_EVIDENCE_BYTES, MAX_QUESTION_BYTES, DatabaseTools
from macsql.sql import MAX_SQL_CHARS

INSTRUCTIONS = ("Ask questions about SQLite databases in plain language (ask), or run your own read-only SQL "
                "(run_sql). Call list_databases first; get_schema shows the tables and columns with example "
                "values. Every query is read-only, with a deadline and a row cap.")
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)

Db = Annotated[str, Field(description="A database name from list_databases.")]


def create_server(pipeline, databases: dict[str, str | Path], *, workers: int = 8) -> MCPServer:
    """An MCP server answering over `databases` (name -> SQLite path) with one loaded pipeline."""
    tools = DatabaseTools(pipeline, databases, workers=workers)
    server = MCPServer("macsql", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    @server.tool(annotations=READ_ONLY)
    async def ask(
        question: Annotated[str, Field(description=f"The question, in plain language (at most "
                                                   f"{MAX_QUESTION_BYTES:,} bytes).")],
        db: Db,
        ctx: Context,
        evidence: Annotated[str, Field(description="Optional domain knowledge that helps, e.g. a formula or "
                                                   f"what a code means (at most {MAX_EVIDENCE_BYTES:,} bytes).")] = "",
    ) -> dict[str, Any]:
        """Answer a question about a database: the agents write SQL (several candidates, executed and voted
        on, failing ones repaired) and return the SQL, the columns, the first rows, any error with a repair
        hint, and how many candidates agreed."""
        steps = 0

        async def progress(node: str, update: dict) -> None:
            nonlocal steps
            steps += 1
            await ctx.report_progress(steps, None, f"{node} done")

        try:
            return await tools.aask(question, db, evidence, on_step=progress)
        except MacSQLError as exc:
            raise ToolError(str(exc)) from exc

    @server.tool(annotations=READ_ONLY)
    async def run_sql(
        db: Db,
        sql: Annotated[str, Field(description=f"One SELECT or WITH statement (at most {MAX_SQL_CHARS:,} "
                                              "characters).")],
    ) -> dict[str, Any]:
        """Run one read-only SQL query on a database and return its columns and first rows. Writes, ATTACH,
        PRAGMA changes and more than one statement are refused."""
        try:
            return await anyio.to_thread.run_sync(tools.run_sql, db, sql)
        except MacSQLError as exc:
            raise ToolError(str(exc)) from exc

    @server.tool(annotations=READ_ONLY)
    async def list_databases() -> dict[str, Any]:
        """The databases this server answers about, with their tables."""
        return {"databases": await anyio.to_thread.run_sync(tools.list_databases)}

    @server.tool(annotations=READ_ONLY)
    async def get_schema(db: Db) -> str:
        """A database's schema as the agents see it: CREATE TABLE statements with example values."""
        try:
            return await anyio.to_thread.run_sync(tools.schema_text, db)
        except MacSQLError as exc:
            raise ToolError(str(exc)) from exc

    def schema_reader(name: str):
        return lambda: tools.schema_text(name)

    for name in tools.paths:
        server.resource(schema_uri(name), name=f"schema of {name}", mime_type="text/plain",
                        description=f"The schema of database {name!r} as the agents see it.")(schema_reader(name))
    return server


def schema_uri(name: str) -> str:
    return f"macsql://schema/{quote(name, safe='')}"


class BearerToken:
    """ASGI middleware: every HTTP request must send `Authorization: Bearer <token>` (401 otherwise)."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            sent = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, value = sent.partition(b" ")
            if scheme.lower() != b"bearer" or not secrets.compare_digest(value.strip(), self.token):
                from starlette.responses import JSONResponse

                response = JSONResponse({"detail": "missing or wrong token: send `Authorization: Bearer <token>` "
                                                   "with the token `macsql mcp` was started with"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def http_app(server: MCPServer, *, host: str = "127.0.0.1", token: str | None = None):
    """The streamable HTTP app (at /mcp), behind the token when one is set. On loopback the SDK also
    checks Host and Origin headers (DNS rebinding)."""
    app = server.streamable_http_app(host=host)
    return BearerToken(app, token) if token else app


def serve(server: MCPServer, *, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None) -> None:
    """Run until the client goes away (stdio) or until interrupted (http: streamable HTTP at /mcp). The
    caller has already refused a non-loopback host without a token (macsql.serve.server.resolve_token)."""
    if transport == "stdio":
        server.run("stdio")
        return
    import uvicorn

    app = http_app(server, host=host, token=token)
    shown = f"[{host}]" if ":" in host else host
    print(f"macsql mcp: http://{shown}:{port}/mcp (streamable HTTP{', token required' if token else ''})",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")

"""macsql as a tool of other agents: `DatabaseTools` (ask, run_sql, list_databases, get_schema over named
databases) and `langchain_tool` (what `Pipeline.as_tool` returns). The MCP server (macsql/mcp/) and the
LangChain tool both stand on `DatabaseTools`, so an agent gets the same answer, limits and errors from either.

An agent names a database, never a path: only the databases given at start are reachable, as in
`macsql serve`. Every query goes through the one executor (read-only, deadline, row cap). A bad argument is an
`InputError` whose one line the calling agent reads and can act on.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from macsql.errors import InputError, MacSQLError, did_you_mean
from macsql.sql import MAX_SQL_CHARS

AGENT_ROWS = 50  # rows of a result an agent gets back; row_count says how many there were
MAX_QUESTION_BYTES = 4096
MAX_EVIDENCE_BYTES = 4096
MAX_NAME_CHARS = 200


def databases_by_name(databases) -> dict[str, Path | str]:
    """{name: database} from a mapping of names to databases, or from one or a list of them (each named after
    its file stem, "demo" for the bundled demo database). Each must be a database macsql.engines opens (a
    SQLite or DuckDB file, CSV/Parquet files, a PostgreSQL URL)."""
    from macsql.demo import named_databases, resolve_db
    from macsql.engines import check_db

    if isinstance(databases, Mapping):
        return {str(name): check_db(resolve_db(str(path))) for name, path in databases.items()}
    if isinstance(databases, (str, Path)):
        databases = [databases]
    return named_databases([str(p) for p in databases])


def cell(value):
    """A result value as plain JSON: a BLOB becomes a short description, a non-finite float a string."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<BLOB, {len(bytes(value))} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def check_size(what: str, text: str, limit: int, *, unit: str = "bytes") -> None:
    size = len(text.encode("utf-8")) if unit == "bytes" else len(text)
    if size > limit:
        raise InputError(f"the {what} is {size:,} {unit} long; at most {limit:,} are allowed: shorten it")


class DatabaseTools:
    """One pipeline over named databases, as the operations an agent calls. The backend is shared between
    concurrent calls the way `macsql serve` shares it (`batching.for_threads`)."""

    def __init__(self, pipeline, databases, *, workers: int = 8, max_rows: int = AGENT_ROWS):
        from macsql.backends.batching import for_threads

        self.pipeline = pipeline.with_llm(for_threads(pipeline.llm, workers))
        self.paths = databases_by_name(databases)
        if not self.paths:
            raise InputError("no database to answer about; name at least one (--db PATH or --db demo)")
        self.max_rows = max_rows

    def path(self, db: str) -> Path:
        if not isinstance(db, str) or len(db) > MAX_NAME_CHARS or db not in self.paths:
            shown = db if isinstance(db, str) and len(db) <= MAX_NAME_CHARS else f"{str(db)[:40]}..."
            raise InputError(f"unknown database {shown!r}{did_you_mean(str(shown), self.paths)}; "
                             f"the databases are: {', '.join(self.paths)} (list_databases)")
        return self.paths[db]

    def list_databases(self) -> list[dict]:
        from macsql.engines import open_database
        from macsql.schema import introspect

        return [{"name": name, "tables": [t.name for t in introspect(open_database(path)).tables]}
                for name, path in self.paths.items()]

    def schema_text(self, db: str) -> str:
        """The schema as the agents see it (the one renderer, with value examples unless switched off)."""
        from macsql.engines import open_database
        from macsql.schema import introspect, render_schema

        path = self.path(db)
        return render_schema(introspect(open_database(path)), examples=self.pipeline.context(path).schema_examples)

    def run_sql(self, db: str, sql: str) -> dict:
        """Run one read-only query with the pipeline's deadline and row cap; a refused or failing query is an
        InputError carrying the executor's reason."""
        from macsql.engines import open_database

        path = self.path(db)
        if not isinstance(sql, str) or not sql.strip():
            raise InputError("the query is empty; pass one SELECT (or WITH) statement")
        check_size("query", sql, MAX_SQL_CHARS, unit="characters")
        ctx = self.pipeline.context(path)
        result = open_database(path).execute(sql, timeout_s=ctx.timeout_s, max_rows=ctx.max_rows)
        if result.error:
            raise InputError(f"the query was not run: {result.error}")
        return {"db": db, "columns": list(result.columns),
                "rows": [[cell(v) for v in row] for row in result.rows[:self.max_rows]],
                "row_count": len(result.rows), "truncated": result.truncated or len(result.rows) > self.max_rows,
                "seconds": round(result.seconds, 4)}

    def _checked(self, question: str, db: str, evidence: str) -> Path:
        path = self.path(db)
        if not isinstance(question, str) or not question.strip():
            raise InputError('the question is empty; ask something about the data, e.g. "How many customers '
                             'are there?"')
        check_size("question", question, MAX_QUESTION_BYTES)
        check_size("evidence", evidence or "", MAX_EVIDENCE_BYTES)
        return path

    def ask(self, question: str, db: str, evidence: str = "") -> dict:
        path = self._checked(question, db, evidence)
        return self.payload(db, path, self.pipeline.ask(question, path, evidence=evidence or ""))

    async def aask(self, question: str, db: str, evidence: str = "",
                   on_step: Callable[[str, dict], Awaitable[None]] | None = None) -> dict:
        """`ask` for async code; `on_step(node, update)` is awaited as each graph node finishes."""
        import asyncio

        path = self._checked(question, db, evidence)
        answer = None
        async for node, update in self.pipeline.astream(question, path, evidence=evidence or ""):
            if node == "answer":
                answer = update
            elif on_step is not None:
                await on_step(node, update)
        return await asyncio.to_thread(self.payload, db, path, answer)

    def payload(self, db: str, path: Path, answer) -> dict:
        """What an agent gets back: the SQL, the first rows, the error and the Refiner's repair hint for it,
        and how the candidates voted."""
        rows = answer.rows
        return {"db": db, "question": answer.question, "sql": answer.sql, "columns": answer.columns,
                "rows": [[cell(v) for v in row] for row in rows[:self.max_rows]], "row_count": len(rows),
                "truncated": answer.truncated or len(rows) > self.max_rows, "error": answer.error,
                "hint": repair_hint_for(answer, path), "vote": vote_summary(answer.candidates),
                "refine_rounds": answer.rounds, "seconds": round(answer.seconds, 4)}


def repair_hint_for(answer, path: Path) -> str | None:
    """The hint the Refiner gets from the schema and the data (a column that lives elsewhere, a literal that
    does not occur), for a chosen query that failed or returned nothing; None otherwise."""
    if not answer.sql or (answer.rows and not answer.error):
        return None
    from macsql.agents.hints import repair_hint
    from macsql.engines import open_database
    from macsql.schema import introspect
    from macsql.sqlexec import ExecResult

    result = ExecResult(rows=tuple(tuple(r) for r in answer.rows), columns=tuple(answer.columns),
                        error=answer.error)
    return repair_hint(answer.sql, result, introspect(open_database(path)), path)


def vote_summary(candidates: list[dict]) -> dict:
    """How many queries were tried, how many distinct results they gave, and how many agreed with the answer."""
    chosen = next((c for c in candidates if c.get("chosen")), None)
    groups = {c["group"] for c in candidates if c.get("group") is not None}
    return {"candidates": len(candidates), "distinct_results": len(groups),
            "agreeing": chosen["votes"] if chosen else 0}


ASK_DESCRIPTION = ("Answer a question about a database in plain language: writes SQL with several "
                   "agents, runs it read-only and returns the SQL, the columns, the first {rows} rows, any error "
                   "with a repair hint, and how many candidate queries agreed. Databases: {names}.")


def langchain_tool(pipeline, databases, *, name: str = "ask_database", description: str | None = None):
    """A LangChain StructuredTool (question, db, evidence) over `DatabaseTools.ask`; a bad argument comes
    back to the calling model as the tool's error text, not as an exception that ends its run."""
    from macsql.extras import require

    require("langchain_core", purpose="Pipeline.as_tool", extra="langchain")
    from langchain_core.tools import StructuredTool, ToolException
    from pydantic import BaseModel, Field

    tools = DatabaseTools(pipeline, databases)
    names = list(tools.paths)

    class AskArgs(BaseModel):
        question: str = Field(description="The question, in plain language.")
        db: str = Field(names[0] if len(names) == 1 else ..., description=f"The database: one of {', '.join(names)}.")
        evidence: str = Field("", description="Optional domain knowledge that helps, e.g. a formula or a code's "
                                              "meaning.")

    def ask(question: str, db: str, evidence: str = "") -> dict:
        try:
            return tools.ask(question, db, evidence)
        except MacSQLError as exc:
            raise ToolException(str(exc)) from exc

    async def aask(question: str, db: str, evidence: str = "") -> dict:
        try:
            return await tools.aask(question, db, evidence)
        except MacSQLError as exc:
            raise ToolException(str(exc)) from exc

    return StructuredTool.from_function(
        func=ask, coroutine=aask, name=name, args_schema=AskArgs, handle_tool_error=True,
        description=description or ASK_DESCRIPTION.format(rows=tools.max_rows, names=", ".join(names)))


__all__ = ["DatabaseTools", "langchain_tool", "AGENT_ROWS", "MAX_QUESTION_BYTES", "MAX_EVIDENCE_BYTES"]

"""The one SQL executor: read-only, deadline-bound, row-capped, single SELECT/WITH statement.

Used by the Refiner, the evaluator and the GRPO rewards. Bad SQL is data (`ExecResult.error`), never an
exception; only an unusable database path raises `DatabaseError`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from macsql.errors import DatabaseError

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_ROWS = 10_000

# Authorizer actions a read-only query may need. Everything else (writes, ATTACH, DDL, PRAGMA changes,
# transactions) is denied before the statement runs.
_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
# Functions that reach outside the database or change the connection.
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class ExecResult:
    rows: tuple[tuple, ...] = ()
    columns: tuple[str, ...] = ()
    error: str | None = None
    timed_out: bool = False
    seconds: float = 0.0
    truncated: bool = False  # more rows existed than max_rows

    @property
    def ok(self) -> bool:
        return self.error is None


def check_database(db_path: str | Path) -> Path:
    """Return the path if it is an existing SQLite file, else raise DatabaseError with what to do."""
    path = Path(db_path)
    if not path.exists():
        raise DatabaseError(f"database {str(path)!r} does not exist; pass --db PATH to a .sqlite file")
    if not path.is_file():
        raise DatabaseError(f"database {str(path)!r} is not a file; pass --db PATH to a .sqlite file")
    with path.open("rb") as fh:
        head = fh.read(16)
    if head != _SQLITE_MAGIC:
        raise DatabaseError(f"{str(path)!r} is not a SQLite database (bad header); pass a .sqlite file")
    return path


def connect_readonly(db_path: str | Path) -> sqlite3.Connection:
    """A connection that cannot change the file: read-only URI plus PRAGMA query_only."""
    path = check_database(db_path)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open {str(path)!r} read-only: {exc}") from exc
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    return conn


def _authorizer(action, arg1, arg2, _db, _trigger):
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def parse_query(sql: str):
    """The sqlglot tree of `sql` read as SQLite, or None when it is empty or cannot be parsed.

    The one place that turns model or gold SQL into a tree for analysis (rewards, metrics, data building).
    """
    import sqlglot

    text = (sql or "").strip().rstrip(";").strip()
    if not text:
        return None
    try:
        return sqlglot.parse_one(text, read="sqlite")
    except (sqlglot.errors.SqlglotError, ValueError):
        return None


def statement_error(sql: str) -> str | None:
    """Why `sql` is not exactly one SELECT/WITH statement, or None if it is."""
    import sqlglot
    from sqlglot import exp

    text = (sql or "").strip().rstrip(";").strip()
    if not text:
        return "empty SQL"
    try:
        statements = [s for s in sqlglot.parse(text, read="sqlite") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        # sqlglot is stricter than SQLite on some valid queries; SQLite's own parser and the authorizer
        # still guard execution, so let SQLite report the real error.
        return None
    if len(statements) != 1:
        return f"only one statement is allowed, got {len(statements)}"
    stmt = statements[0]
    if not isinstance(stmt, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)):
        return f"only SELECT/WITH queries are allowed, got {stmt.key.upper()}"
    for node in stmt.walk():
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter)):
            return f"only read queries are allowed, found {node.key.upper()}"
    return None


def execute(
    db_path: str | Path,
    sql: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ExecResult:
    """Run one read-only query with a real deadline. Never raises for bad SQL."""
    start = time.perf_counter()
    problem = statement_error(sql)
    if problem:
        return ExecResult(error=problem, seconds=time.perf_counter() - start)
    conn = connect_readonly(db_path)
    deadline = start + timeout_s
    timed_out = False

    def _progress() -> int:
        nonlocal timed_out
        if time.perf_counter() > deadline:
            timed_out = True
            return 1  # non-zero interrupts the running statement inside SQLite
        return 0

    try:
        conn.set_authorizer(_authorizer)
        conn.set_progress_handler(_progress, 1000)
        cur = conn.execute(sql.strip().rstrip(";"))
        rows = cur.fetchmany(max_rows + 1)
        columns = tuple(d[0] for d in cur.description or ())
        truncated = len(rows) > max_rows
        return ExecResult(
            rows=tuple(tuple(r) for r in rows[:max_rows]),
            columns=columns,
            seconds=time.perf_counter() - start,
            truncated=truncated,
        )
    except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as exc:
        if timed_out:
            return ExecResult(error=f"query exceeded the {timeout_s:g}s deadline", timed_out=True,
                              seconds=time.perf_counter() - start)
        message = str(exc)
        if "not authorized" in message or "prohibited" in message:
            message = f"{message} (only read queries are allowed)"
        return ExecResult(error=message, seconds=time.perf_counter() - start)
    finally:
        conn.close()

"""SQLite behind the database interface: a thin adapter over the reference implementation.

The executor (`macsql.sqlexec.execute`: read-only URI, authorizer, progress-handler deadline, limits, caps)
and introspection (`macsql.schema.introspect`, cached per file version) are used as they are; this module
only gives them the `Database` shape. A `SQLiteDatabase` is also a path (`os.fspath`), so code that still
takes a SQLite path accepts it.
"""

from __future__ import annotations

import os
from pathlib import Path

from macsql.engines.base import Database
from macsql.schema import Schema, quote_name
from macsql.sqlexec import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_S,
    MAX_RESULT_BYTES,
    Deadline,
    ExecResult,
    check_database,
    connect_readonly,
    execute,
)


class SQLiteDatabase(Database, os.PathLike):
    dialect = "sqlite"

    def __init__(self, path: str | Path):
        self.path = check_database(path)  # today's checks and messages
        self.label = str(path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def location(self) -> str:
        return str(self.path.resolve())

    def identity(self) -> str:
        stat = self.path.stat()
        return f"{self.path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"

    def execute(self, sql: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS,
                max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        return execute(self.path, sql, timeout_s=timeout_s, max_rows=max_rows, max_bytes=max_bytes)

    def introspect(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Schema:
        from macsql.schema import introspect

        return introspect(self.path, timeout_s=timeout_s)

    def distinct_values(self, table: str, column: str, *, limit: int, scan_rows: int,
                        max_chars: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
        """Text values only (typeof 'text': SQLite's columns hold any type), read through the executor's
        connection and deadline; a column that fails (a broken virtual table, an odd type) gives none."""
        conn = connect_readonly(self.path)
        try:
            Deadline(timeout_s).attach(conn)
            sql = (f"SELECT DISTINCT v FROM (SELECT {quote_name(column)} AS v FROM {quote_name(table)} "
                   f"LIMIT {int(scan_rows)}) WHERE typeof(v) = 'text' AND length(v) BETWEEN 1 AND "
                   f"{int(max_chars)} LIMIT {int(limit)}")
            try:
                return [v for (v,) in conn.execute(sql) if isinstance(v, str) and v.strip()]
            except Exception:  # noqa: BLE001 - a broken virtual table or odd type must not stop linking
                return []
        finally:
            conn.close()

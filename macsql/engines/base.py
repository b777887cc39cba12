"""The one database interface: what macsql asks of an engine (SQLite, DuckDB, PostgreSQL).

Everything outside `macsql.engines` talks to a `Database`; only the engine modules know which engine it is.
SQLite (`macsql.sqlexec`, `macsql.schema`) is the reference implementation; each engine keeps the same
guarantees, enforced by the engine itself rather than by string checks: a read-only connection or
transaction, one statement (checked by sqlglot in the engine's dialect), a deadline that interrupts the
engine, and caps on rows and bytes. Bad SQL is data (`ExecResult.error`), never an exception; only an
unusable database raises `DatabaseError`.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from macsql.schema import Schema
from macsql.sqlexec import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, MAX_RESULT_BYTES, Deadline, ExecResult


class Database(ABC):
    #: sqlglot's name for the engine's dialect ("sqlite", "duckdb", "postgres"); prompts name it too
    dialect: str = "sqlite"
    #: what the user passed, safe to print (a URL's password removed)
    label: str = ""

    @property
    def name(self) -> str:
        """A short name for the database (a file's stem, a folder's name, a URL's database name): the name
        `serve --db PATH` gives it and the stem of its cache files. Safe as a file name."""
        stem = PurePosixPath(urlsplit(self.label).path or self.label).stem
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "database"

    @property
    def location(self) -> str:
        """Where the database lives, the same across its versions (a file's resolved path, a URL without its
        password): the key of what a person taught about it (macsql.knowledge)."""
        return self.label

    @abstractmethod
    def identity(self) -> str:
        """A key for caches of facts about this version of the database (schema, values, knowledge): a file's
        path, size and mtime; a server's URL without password plus a hash of its catalog."""

    @abstractmethod
    def execute(self, sql: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS,
                max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        """Run one read-only statement within the deadline; never raises for bad or hostile SQL."""

    @abstractmethod
    def introspect(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Schema:
        """Tables and views, columns with declared types, primary and foreign keys, sampled example values."""

    @abstractmethod
    def distinct_values(self, table: str, column: str, *, limit: int, scan_rows: int,
                        max_chars: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
        """Up to `limit` distinct non-empty text values of a column, from at most `scan_rows` rows, each at
        most `max_chars` long (the value index)."""

    def close(self) -> None:  # noqa: B027 - engines without a pooled connection have nothing to close
        """Release pooled connections."""


def plain_value(value):
    """A value as the SQLite executor gives it: int, float, str, bytes, bool or None, so that rows are
    hashable (the comparator's sets), JSON-ready and compare across engines (1 == 1.0 == Decimal('1.00')).
    A whole decimal is an int, another a float; dates, times, intervals and UUIDs are their text; lists,
    structs and maps are JSON text."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time, datetime.timedelta)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


class StopAtDeadline:
    """Calls `stop` (the engine's interrupt or cancel) from a timer thread once the deadline plus `grace` has
    passed, for engines that cannot check a deadline inside the query as SQLite's progress handler does.
    Leaving the block disarms it, so a late stop never hits the connection's next query; `fired` tells a
    timeout from the query's own error (and a pooled connection that was stopped should be dropped)."""

    def __init__(self, stop: Callable[[], object], deadline: Deadline, *, grace: float = 0.0):
        self._stop = stop
        self.fired = False
        self._armed = True
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline.remaining()) + grace, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> StopAtDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._armed = False
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self.fired = True
            try:
                self._stop()
            except Exception:  # noqa: BLE001 - a connection already closed or gone has nothing to stop
                pass

"""The one SQL executor: read-only, deadline-bound, row-capped, single SELECT/WITH statement.

Used by the Refiner, the evaluator and the GRPO rewards. Bad SQL is data (`ExecResult.error`), never an
exception; only an unusable database path raises `DatabaseError`.

Every resource a hostile or runaway statement could spend is bounded at one depth, not per statement shape:
the text (length and bracket nesting, checked by `sql.statement_error` before sqlglot parses it, so the
parser's time and recursion are bounded too), SQLite's own limits on the connection (string/blob length, expression depth, compound
SELECT terms), the wall clock (one deadline from the start of `execute()`, parse included, enforced inside
SQLite by the progress handler), the memory of the result (bytes counted as rows are fetched) and the
working storage of sorts, DISTINCT and UNION (temp storage in memory under a heap ceiling, not temp files).
Introspection reads the user's views through the same connection and deadline (`connect_readonly`,
`Deadline`).
"""

from __future__ import annotations

import math
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from macsql.errors import DatabaseError, InputError
from macsql.sql import MAX_SQL_CHARS, statement_error, strip_statement

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_ROWS = 10_000
# SQLite limits set on every connection (sqlite3.Connection.setlimit). LENGTH caps any one string or blob a
# query can build (zeroblob, printf widths, repeated ||), so a single value can never be large.
SQLITE_LIMITS = {
    "SQLITE_LIMIT_LENGTH": 10_000_000,
    "SQLITE_LIMIT_SQL_LENGTH": MAX_SQL_CHARS * 4,  # bytes; the character check (sql.py) comes first
    "SQLITE_LIMIT_EXPR_DEPTH": 200,
    "SQLITE_LIMIT_COMPOUND_SELECT": 200,
    "SQLITE_LIMIT_FUNCTION_ARG": 100,
    "SQLITE_LIMIT_ATTACHED": 0,
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 10_000,
}
MAX_RESULT_BYTES = 64 * 1024 * 1024  # estimated size of all fetched values together
# Sorts, DISTINCT, UNION and materialised subqueries keep their working data in memory (PRAGMA temp_store),
# under this ceiling on SQLite's heap (PRAGMA hard_heap_limit), instead of temp files: with temp files a big
# ORDER BY or UNION over blobs wrote up to 3.45 GB within a 30 s deadline and overran it by 2-7 s. Now it
# fails once SQLite's heap reaches the ceiling (4-7 s on 2 busy cores, nothing written), while an in-memory
# sort of 300 MB still runs (1.3 s). The ceiling is SQLite's, for the whole process, so concurrent queries
# share it: it is set by the first connection and only ever lowered, never raised.
SQLITE_HEAP_LIMIT = 1024 * 1024 * 1024

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
# Table-valued functions (eponymous virtual tables) a query may read: the authorizer sees SQLITE_READ on
# the function's name, like a table the schema does not hold. These only read: the JSON walkers, the
# read-only PRAGMA functions (table_info & co.; write pragmas are not table-valued), and full-text search
# over the user's own tables. Anything else (a module that writes files, e.g. an extension) stays denied.
ALLOWED_TABLE_FUNCTIONS = {
    "json_each", "json_tree", "generate_series",
    "pragma_table_info", "pragma_table_xinfo", "pragma_table_list", "pragma_index_list", "pragma_index_info",
    "pragma_index_xinfo", "pragma_foreign_key_list", "pragma_collation_list",
    "pragma_function_list", "pragma_module_list", "pragma_pragma_list", "pragma_compile_options",
}
# PRAGMAs SQLite runs on behalf of an allowed table-valued pragma_* function (arg1 is the pragma name), plus
# data_version, which FTS5 reads to notice changes. All of them only read.
_READ_PRAGMAS = {name.removeprefix("pragma_") for name in ALLOWED_TABLE_FUNCTIONS if name.startswith("pragma_")}
_READ_PRAGMAS.add("data_version")
_SCHEMA_TABLES = {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}
# Modules of virtual tables declared in a user's schema that only read their shadow tables when queried.
# (R*Tree is not among them: its constructor prepares INSERTs into its shadow tables, which are refused.)
ALLOWED_MODULES = {"fts3", "fts4", "fts5", "fts4aux", "fts5vocab"}
_VTABLE_MODULE = re.compile(r"(?is)\s*CREATE\s+VIRTUAL\s+TABLE\s+.*?\bUSING\s+([A-Za-z0-9_]+)")
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
    return check_file(Path(db_path), _SQLITE_MAGIC, 0, "SQLite")


def check_file(path: Path, magic: bytes, offset: int, kind: str, *, label: str | None = None) -> Path:
    """`path` if it is an existing file with `magic` at byte `offset` (a `kind` database: "SQLite", "DuckDB"),
    else DatabaseError naming it as `label` (default: the path) and the `.kind` file to pass instead."""
    name, suffix = label if label is not None else str(path), f".{kind.lower()}"
    if not path.exists():
        raise DatabaseError(f"database {name!r} does not exist; pass --db PATH to a {suffix} file")
    if not path.is_file():
        raise DatabaseError(f"database {name!r} is not a file; pass --db PATH to a {suffix} file")
    with path.open("rb") as fh:
        head = fh.read(offset + len(magic))
    if head[offset:] != magic:
        raise DatabaseError(f"{name!r} is not a {kind} database (bad header); pass a {suffix} file")
    return path


def _readonly_uri(path: Path) -> str:
    """The URI to open `path` with, such that no file is created beside it.

    A rollback-journal database opened `mode=ro` creates nothing. A WAL database does: even a read-only
    connection creates `-wal` and `-shm` (and cannot delete them on close). So, for a WAL database:
    - no `-wal` beside it: no writer is connected and nothing is waiting to be checkpointed (a clean close
      deletes the WAL), so the main file alone is the whole database and `immutable=1` reads it without any
      locking or shared-memory files. The cost: a writer that connects *during* our query is not seen (our
      read may mix pages of two versions); queries are short and the user asked to read a snapshot.
    - a `-wal` exists: a writer is connected (or crashed); its committed transactions live in the WAL, and
      `immutable=1` would ignore them and could read torn pages, so open `mode=ro`, which uses the existing
      `-wal`/`-shm` through the normal locking protocol. Those files are the writer's, not ours.
    """
    uri = path.resolve().as_uri()
    with path.open("rb") as fh:
        header = fh.read(20)
    is_wal = len(header) >= 20 and header[18] == 2 and header[19] == 2  # file format versions 2 = WAL
    if is_wal and not Path(f"{path}-wal").exists():
        return f"{uri}?immutable=1"
    return f"{uri}?mode=ro"


def unusable_database_message(db_path: str | Path, exc: Exception) -> str:
    """One line for a database SQLite cannot read: an unfinished write, locked, corrupt or truncated."""
    text = str(exc)
    journal = Path(f"{db_path}-journal")
    if getattr(exc, "sqlite_errorname", None) == "SQLITE_READONLY_ROLLBACK" or (
            "readonly" in text and journal.exists()):
        # A hot journal: a program stopped in the middle of a write (crash, kill, power loss). Reading the
        # file first needs that write rolled back, and a read-only connection may not do it.
        return (f"database {str(db_path)!r} holds an unfinished write by another program (a leftover journal "
                f"{journal.name!r}); open it once with write access (e.g. `sqlite3 {shlex.quote(str(db_path))} "
                "'PRAGMA quick_check'`) so SQLite rolls the write back; do not delete the journal, that can "
                "corrupt it")
    if "locked" in text or "busy" in text:
        return f"database {str(db_path)!r} is locked by another process ({text}); retry when it is released"
    return (f"database {str(db_path)!r} cannot be read ({text}); it may be corrupt or truncated: "
            "restore it or point --db at another copy")


def connect_readonly(db_path: str | Path, *, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection that cannot change the file: read-only URI plus PRAGMA query_only, SQLite's limits set."""
    path = check_database(db_path)
    try:
        conn = sqlite3.connect(_readonly_uri(path), uri=True, check_same_thread=False,
                               timeout=max(0.0, busy_timeout_s))
        conn.execute("PRAGMA query_only = 1")
        for name, value in SQLITE_LIMITS.items():
            if hasattr(sqlite3, name):
                conn.setlimit(getattr(sqlite3, name), value)
        if _heap_ceiling(conn):  # without a ceiling, temp files (bounded by the deadline) beat unbounded memory
            conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open {str(path)!r} read-only: {exc}") from exc
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    return conn


def _heap_ceiling(conn: sqlite3.Connection) -> bool:
    """Lower SQLite's process-wide hard heap limit to SQLITE_HEAP_LIMIT (never raise one the application set);
    False where this SQLite cannot enforce one (before 3.31, or built without memory statistics)."""
    global _MEMSTATUS_OFF
    row = conn.execute("PRAGMA hard_heap_limit").fetchone()  # an unknown pragma returns no row
    if _MEMSTATUS_OFF is None:
        _MEMSTATUS_OFF = any("DEFAULT_MEMSTATUS=0" in opt for (opt,) in conn.execute("PRAGMA compile_options"))
    if row is None or _MEMSTATUS_OFF:
        return False
    if row[0] == 0 or row[0] > SQLITE_HEAP_LIMIT:
        conn.execute(f"PRAGMA hard_heap_limit = {int(SQLITE_HEAP_LIMIT)}")
    return True


_MEMSTATUS_OFF: bool | None = None  # SQLite's heap limits need its memory statistics, on unless compiled out


class Deadline:
    """A wall-clock deadline enforced inside SQLite: once attached, the progress handler interrupts whatever
    statement runs on the connection after `at` (not a thread that would leave the statement running).
    `timed_out` says whether it interrupted one, which tells a timeout from a statement's own error."""

    def __init__(self, timeout_s: float, *, start: float | None = None):
        self.seconds = check_timeout(timeout_s)
        self.start = time.perf_counter() if start is None else start
        self.at = self.start + self.seconds
        self.timed_out = False

    def remaining(self) -> float:
        return self.at - time.perf_counter()

    def passed(self) -> bool:
        return time.perf_counter() > self.at

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def timeout_result(self) -> ExecResult:
        return ExecResult(error=f"query exceeded the {self.seconds:g}s deadline", timed_out=True,
                          seconds=self.elapsed())

    def attach(self, conn: sqlite3.Connection) -> Deadline:
        conn.set_progress_handler(self._check, 1000)  # every 1000 VM steps: microseconds apart
        return self

    def _check(self) -> int:
        if time.perf_counter() > self.at:
            self.timed_out = True
            return 1  # non-zero interrupts the running statement inside SQLite
        return 0


class _Authorizer:
    """The authorizer of one query. A read of a registered virtual-table module by its own name (an
    eponymous virtual table: a table-valued function such as json_each or dbstat) must be on
    ALLOWED_TABLE_FUNCTIONS, and a virtual table declared in the schema must use a module on ALLOWED_MODULES.
    (The authorizer also sees reads of CTE names, so "not a table of the schema" alone cannot tell.) `denied` keeps the reason of
    the last refusal, for the error message (SQLite only says "not authorized")."""

    def __init__(self, conn: sqlite3.Connection):
        self.own: set[str] = set()
        self.modules = {row[0].lower() for row in conn.execute("SELECT name FROM pragma_module_list")}
        self.blocked_vtables: dict[str, str] = {}  # table -> module, for modules not allowed
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'view')"):
            self.own.add(name.lower())
            match = _VTABLE_MODULE.match(sql or "")
            if match and match.group(1).lower() not in ALLOWED_MODULES:
                self.blocked_vtables[name.lower()] = match.group(1)
        self.denied: str | None = None

    def __call__(self, action, arg1, arg2, _db, _trigger):
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
            return self._deny(f"function {arg2}() is not allowed")
        if action == sqlite3.SQLITE_UPDATE and (arg1 or "").lower() in _SCHEMA_TABLES:
            # Connecting a virtual table (json_each, an FTS5 table) declares its columns through an internal
            # statement that the authorizer sees as an UPDATE of the in-memory schema row. It cannot reach
            # the file: the connection is read-only with query_only on, and a user's UPDATE of sqlite_master
            # is refused earlier (not a SELECT) and by SQLite itself (the schema table may not be modified).
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            # only the read side of an allowed pragma_* table-valued function (arg2 is its argument, never a
            # value to set: the table-valued form cannot assign)
            if (arg1 or "").lower() in _READ_PRAGMAS:
                return sqlite3.SQLITE_OK
            return self._deny(f"PRAGMA {arg1} is not allowed")
        table = (arg1 or "").lower()
        owner = next((v for v in self.blocked_vtables if table == v or table.startswith(v + "_")), None)
        if owner is not None and action in (sqlite3.SQLITE_READ, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE,
                                            sqlite3.SQLITE_DELETE):
            return self._deny(f"virtual table {owner!r} uses module {self.blocked_vtables[owner]!r}, which is "
                              f"not on the read-only list ({', '.join(sorted(ALLOWED_MODULES))})")
        if action == sqlite3.SQLITE_READ:
            if table in self.modules and table not in self.own and table not in ALLOWED_TABLE_FUNCTIONS:
                return self._deny(f"table-valued function {arg1!r} is not allowed; the read-only ones are "
                                  f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}")
        if action in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_OK
        return self._deny("only read queries are allowed")

    def _deny(self, reason: str) -> int:
        self.denied = reason
        return sqlite3.SQLITE_DENY


_PRINTF_SPEC = re.compile(r"%([-+ 0#,!]*)(\*|\d+)?(?:\.(\*|\d+))?([a-zA-Z%])")
_BUILTINS = threading.local()


def _builtin(name: str, *args):
    """SQLite's own `name(args)`, computed on a private in-memory connection (same limits)."""
    conn = getattr(_BUILTINS, "conn", None)
    if conn is None:
        conn = _BUILTINS.conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, SQLITE_LIMITS["SQLITE_LIMIT_LENGTH"])
    marks = ", ".join("?" * len(args))
    call = "CAST(? AS TEXT)" if name == "CAST" else f"{name}({marks})"
    return conn.execute(f"SELECT {call}", args).fetchone()[0]


def _as_text(value) -> str:
    """A value as SQLite's text conversion gives it (blobs are read as UTF-8; numbers in SQLite's format)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return _builtin("CAST", value) if isinstance(value, float) else str(value)


class _Guarded:
    """Linear-time stand-ins for the few built-in functions whose cost is not bounded by the deadline.

    The progress handler runs between VM steps, and one call of a function is one step: SQLite's `instr`
    and `replace` compare the needle at every position (O(n*m): ~8 s for a 1 MB haystack, hours at the
    length limit), and `printf('%.*c', 1000000000, 'x')` writes its whole width before noticing the length
    limit. instr and replace run on Python's linear-time search (values converted to text as SQLite does);
    printf, once its widths are checked, is SQLite's own, so results are the same.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.reason: str | None = None
        self.max_len = SQLITE_LIMITS["SQLITE_LIMIT_LENGTH"]
        conn.create_function("instr", 2, self.instr, deterministic=True)
        conn.create_function("replace", 3, self.replace, deterministic=True)
        for name in ("printf", "format"):
            conn.create_function(name, -1, self.printf, deterministic=True)

    @staticmethod
    def instr(hay, needle):
        if hay is None or needle is None:
            return None
        if isinstance(hay, bytes) and isinstance(needle, bytes):
            return hay.find(needle) + 1
        return _as_text(hay).find(_as_text(needle)) + 1

    def replace(self, text, old, new):
        if text is None or old is None or new is None:
            return None
        text, old, new = _as_text(text), _as_text(old), _as_text(new)
        if not old:
            return text
        if len(new) > len(old) and len(text) // len(old) * (len(new) - len(old)) + len(text) > self.max_len:
            return self._refuse("replace() would build a string longer than the length limit")
        return text.replace(old, new)

    def printf(self, fmt=None, *args):
        if isinstance(fmt, str):
            arg = 0
            for _flags, width, precision, kind in _PRINTF_SPEC.findall(fmt):
                for part in (width, precision):
                    if part == "*":
                        value = args[arg] if arg < len(args) else 0
                        arg += 1
                        part = value if isinstance(value, int) else 0
                    if part and abs(int(part)) > self.max_len:
                        return self._refuse(f"printf() width or precision {part} is over the length limit")
                arg += kind != "%"
        return _builtin("printf", fmt, *args)

    def _refuse(self, reason: str):
        self.reason = reason
        raise ValueError(reason)


def check_timeout(timeout_s: float) -> float:
    """`timeout_s` if it is a positive, finite number of seconds, else InputError (nan/inf turn it off)."""
    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        raise InputError(f"the timeout must be a number of seconds, got {timeout_s!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"the timeout must be a positive, finite number of seconds, got {timeout_s!r}; "
                         "pass e.g. --timeout 30")
    return value


def precheck(sql: str, deadline: Deadline, check: Callable[[str], str | None]) -> ExecResult | None:
    """What every engine's execute starts with: the statement check (`check`: the analyser in the engine's
    dialect) and the deadline. An ExecResult to return at once, or None to run the statement."""
    try:
        problem = check(sql)
    except Exception as exc:  # noqa: BLE001 - the analyser is a guard; its own failure must not escape
        problem = f"the query could not be analysed: {type(exc).__name__}"
    if problem:
        return ExecResult(error=problem, seconds=deadline.elapsed())
    return deadline.timeout_result() if deadline.passed() else None


def execute(
    db_path: str | Path,
    sql: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_bytes: int = MAX_RESULT_BYTES,
) -> ExecResult:
    """Run one read-only query with a real deadline. Never raises for bad SQL.

    The deadline counts from the call: parsing, opening and fetching all come out of `timeout_s`.
    """
    deadline = Deadline(timeout_s)
    elapsed, timeout = deadline.elapsed, deadline.timeout_result
    early = precheck(sql, deadline, statement_error)
    if early is not None:
        return early
    # a locked database waits for the lock no longer than the deadline allows
    conn = connect_readonly(db_path, busy_timeout_s=deadline.remaining())
    authorizer = guarded = None
    try:
        try:
            authorizer = _Authorizer(conn)  # the first read of the file: a broken one fails here
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(unusable_database_message(db_path, exc)) from exc
        conn.set_authorizer(authorizer)
        guarded = _Guarded(conn)
        deadline.attach(conn)
        cur = conn.execute(strip_statement(sql))
        # one row per fetch: SQLite steps row by row anyway, and a value can reach SQLITE_LIMIT_LENGTH, so the
        # byte cap holds to within one row however the rows grow
        return collect_rows(cur.fetchmany, deadline, max_rows, max_bytes,
                            columns=tuple(d[0] for d in cur.description or ()), most=1)
    except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError, MemoryError, RecursionError) as exc:
        if deadline.timed_out:
            return timeout()
        message = " ".join(str(exc).split()) or type(exc).__name__
        if "not authorized" in message or "prohibited" in message or "constructor failed" in message:
            message = f"{message} ({(authorizer and authorizer.denied) or 'only read queries are allowed'})"
        elif "user-defined function raised exception" in message and guarded and guarded.reason:
            message = guarded.reason
        elif isinstance(exc, MemoryError):
            message = (f"the query needs more than {SQLITE_HEAP_LIMIT // (1024 * 1024)} MB of working memory "
                       "(sorting, DISTINCT or UNION over many or big values); select fewer or smaller values")
        return ExecResult(error=message, seconds=elapsed())
    finally:
        conn.close()


def _row_bytes(row: tuple) -> int:
    """A cheap estimate of a row's size in memory: the bytes of its strings and blobs, 16 per other value."""
    return sum(len(v) if isinstance(v, (str, bytes)) else 16 for v in row)


def byte_cap_message(max_bytes: int, big: str = "blobs") -> str:
    """The one line for a result over `max_bytes`; `big` names the engine's large values (blobs, bytea columns)."""
    return (f"the result is larger than {max_bytes // (1024 * 1024)} MB; select fewer or smaller values (e.g. add "
            f"LIMIT, leave out {big})")


def collect_rows(fetch_chunk: Callable[[int], list[tuple]], deadline: Deadline, max_rows: int, max_bytes: int, *,
                 columns: tuple[str, ...] = (), big: str = "blobs", most: int = 1000) -> ExecResult:
    """Fetch a result within the row cap (one row more tells it was truncated), the byte cap and the deadline:
    the one fetch loop of every engine. `fetch_chunk(n)` returns up to n rows as they will be returned (values
    already converted) and [] at the end. A chunk is held whole before its rows are counted, so chunks start at
    one row and grow at most twofold (up to `most`), never past what the rest of the byte cap holds at the size
    of the largest row seen: a result of big rows stops near the cap, not a whole chunk beyond it."""
    rows: list[tuple] = []
    size = largest = 0
    want = 1
    while len(rows) <= max_rows:
        if deadline.passed():
            return deadline.timeout_result()
        chunk = fetch_chunk(min(want, max_rows + 1 - len(rows)))
        if not chunk:
            break
        for row in chunk:
            row_size = _row_bytes(row)
            largest = max(largest, row_size)
            size += row_size
            if size > max_bytes:
                return ExecResult(error=byte_cap_message(max_bytes, big), seconds=deadline.elapsed())
            rows.append(row)
        want = max(1, min(most, 2 * want, (max_bytes - size) // max(largest, 1)))
    return ExecResult(rows=tuple(rows[:max_rows]), columns=columns, seconds=deadline.elapsed(),
                      truncated=len(rows) > max_rows)

"""DuckDB behind the database interface: a `.duckdb` file, or a folder or glob of CSV/Parquet files.

The same guarantees as SQLite's executor, each enforced by DuckDB itself:
- read-only: a file is opened with `read_only=True`; CSV and Parquet files are views in an in-memory
  database that nothing can write to them; and every query runs in `BEGIN TRANSACTION READ ONLY` (rolled
  back), so a write, DDL or `nextval()` fails inside the engine, on the file and on the views alike;
- nothing outside the database: external access is off (`enable_external_access=false`, enforced by
  DuckDB's file system layer since 1.2), so `read_csv('/etc/passwd')`, `COPY ... TO`, `ATTACH`, `INSTALL`
  and `LOAD` fail; the views' own files are the only paths allowed (`allowed_paths`, set before access is
  turned off; opening checks that every view still reads). Extensions are neither installed nor loaded on
  demand, Python objects are not scanned by name, and the configuration is locked
  (`lock_configuration=true`), so no statement turns any of this back on;
- one statement: the analyser's check in dialect "duckdb" (exactly one SELECT/WITH), then DuckDB's own
  parser (`extract_statements`) must find exactly one statement of type SELECT, which is the one run;
- a deadline from the start of `execute()`: a timer interrupts the connection (`interrupt()`, DuckDB stops
  the running query) and fetching stops once it has passed; the calls that build a whole string in one step
  the interrupt cannot stop (printf/format, repeat, lpad/rpad) are bounded before the query runs
  (MAX_BUILT_CHARS);
- caps on rows and bytes while fetching (results stream, `fetchmany`), a memory ceiling for the working
  data of sorts and joins, and no spilling to temp files (`temp_directory=''`): no file is created beside
  the database.

Values come back as SQLite's executor gives them (`base.plain_value`).
"""

from __future__ import annotations

import glob
import os
import re
import threading
from pathlib import Path

from macsql.engines.base import Database, StopAtDeadline, plain_value
from macsql.errors import DatabaseError
from macsql.schema import SAMPLE_SCAN_ROWS, Column, ForeignKey, Schema, Table, _add_descriptions, quote_name
from macsql.sqlexec import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_S,
    MAX_RESULT_BYTES,
    Deadline,
    ExecResult,
    check_file,
    check_timeout,
    collect_rows,
    precheck,
)

DUCKDB_SUFFIXES = (".duckdb", ".ddb")
DATA_SUFFIXES = (".csv", ".tsv", ".parquet")  # files read as tables, one view each
FETCH_ROWS = 1000  # the most rows one fetchmany asks for (sqlexec.collect_rows sizes each by the byte cap)
MEMORY_LIMIT = "1GB"  # DuckDB's working memory (sorts, joins, DISTINCT), as SQLite's heap ceiling
# Set when a database is opened; `lock_configuration` comes last, after which no statement changes any.
SETTINGS = {
    "memory_limit": MEMORY_LIMIT,
    "temp_directory": "",  # no spilling to disk: a big sort fails at the memory limit instead of writing
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # `FROM df` must not read a Python object of the calling frame
    # compare and join numbers with text as SQLite and DuckDB before 0.10 did (`id IN (SELECT text_id ...)`)
    # instead of refusing to bind: model-written SQL rarely casts, and keys stored as text are common
    "old_implicit_casting": True,
}
_DUCKDB_MAGIC = b"DUCK"  # bytes 8-12 of a DuckDB database file
# printf/format, repeat and lpad/rpad build their whole string inside one call that DuckDB's interrupt() cannot
# stop (it is checked between chunks of rows), in memory that memory_limit does not count as DuckDB's source reads
# (a vector's string heap): a printf width of 10^9 ran 15-41 s past a 0.5 s deadline
# (benchmarks/bench_hostile_engines.py), and one call runs for every row of a chunk (up to 2048), so a million
# characters a call is already gigabytes. So what such calls ask for is bounded before the query runs, from
# literals, at MAX_BUILT_CHARS for all the calls of a query together: a format's widths and precisions (7 digits
# in a row anywhere in it is refused outright), a repeat count (times a literal string's length), a pad length.
# What cannot be checked is refused: a width taken from an argument (`*`, fmt's nested `{}`), a format, count or
# length that is not a literal, repeat() of a built string, a method call (`'x'.repeat(n)`), and any such call
# in a query sqlglot cannot parse. query('...') runs its text as a query: that text is checked the same way.
MAX_BUILT_CHARS = 10_000
_BUILDERS = ("printf", "format", "sprintf", "repeat", "lpad", "rpad")
_BIG_WIDTH = re.compile(r"\d{7,}")
_PRINTF_SPEC = re.compile(r"%([^a-zA-Z%]*)[a-zA-Z%]?")  # `%` up to the conversion letter: flags, width, precision
_FMT_FIELD = re.compile(r"\{\{|\{([^{}]*)([{}]?)")  # fmt's `{{` escape, or a field up to the next brace
_DIGITS = re.compile(r"\d+")
# a call of a builder, or of query(), which runs the SQL text it is given, in the code of a query
_BUILDER_CALL = re.compile(r"\b(" + "|".join(_BUILDERS) + r"|query)\s*\(", re.IGNORECASE)


def _unbounded_call(sql: str) -> str | None:
    """Why a string-building call in `sql` (see MAX_BUILT_CHARS) could run past the deadline, or None."""
    import sqlglot
    from sqlglot import exp

    from macsql.sql import strip_statement

    text = strip_statement(sql)
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except Exception:  # noqa: BLE001 - whatever sqlglot fails on, the calls are looked for in the text below
        tree = None
    if tree is None or next(tree.find_all(exp.Command), None) is not None:
        # not parsed (or only as an opaque command): the calls' arguments cannot be checked
        match = _BUILDER_CALL.search(_code(text))
        if match:
            name = match.group(1).lower()
            return (f"{name}() is not allowed in a query that sqlglot cannot parse (its arguments cannot be "
                    f"checked before it runs); write the query without {name}() or in plainer SQL")
        return None
    total = 0
    for node in tree.find_all(exp.Anonymous, exp.Format, exp.Repeat, exp.Pad):
        problem, chars = _call_problem(node)
        if problem:
            return problem
        total += chars
        if total > MAX_BUILT_CHARS:  # many calls in one row add up (`repeat('x', 9000) || repeat('x', 9000)`)
            return (f"printf/format/repeat/lpad/rpad calls asking for {total:,} characters together are not "
                    f"allowed (at most {MAX_BUILT_CHARS:,}); use smaller widths, counts or lengths")
    return None


def _builder(node) -> tuple[str, list]:
    """The DuckDB function name of a call (a sqlglot node) and its arguments in DuckDB's order."""
    from sqlglot import exp

    if isinstance(node, exp.Format):
        return "format", [node.this, *node.expressions]
    if isinstance(node, exp.Repeat):
        return "repeat", [node.this, node.args.get("times")]
    if isinstance(node, exp.Pad):
        return ("lpad" if node.args.get("is_left") else "rpad"), [node.this, node.expression]
    return node.name.lower(), list(node.expressions)


def _call_problem(node) -> tuple[str | None, int]:
    """(why one call could build a string too big to stop, or None; the characters it asks for)."""
    from sqlglot import exp

    name, args = _builder(node)
    if name not in (*_BUILDERS, "query"):
        return None, 0
    if isinstance(node.parent, exp.Dot) and node.arg_key == "expression":
        # DuckDB's `x.f(args)` is f(x, args): the argument sqlglot shows first is not the first one
        return f"{name}() written as a method call (x.{name}(...)) is not allowed; write {name}(x, ...)", 0
    first = args[0] if args else None
    literal = isinstance(first, exp.Literal) and first.is_string
    if name == "query":  # the statement it runs is checked as the query itself is
        if not literal:
            return "query() with a statement that is not a literal string is not allowed", 0
        return _unbounded_call(first.this), 0
    if name in ("printf", "format", "sprintf"):
        if not literal:
            return f"{name}() with a format that is not a literal string is not allowed", 0
        return _format_problem(name, first.this)
    what = "count" if name == "repeat" else "length"
    length = _literal_int(args[1] if len(args) > 1 else None)
    if length is None:
        return f"{name}() with a {what} that is not a literal number is not allowed", 0
    if name == "repeat" and first is not None and any(
            _builder(inner)[0] in _BUILDERS for inner in first.find_all(exp.Anonymous, exp.Format, exp.Repeat,
                                                                        exp.Pad)):
        return "repeat() of a string that printf/format/repeat/lpad/rpad builds is not allowed", 0
    if name == "repeat" and literal:
        length *= len(first.this)
    if length > MAX_BUILT_CHARS:
        return (f"{name}() building {length:,} characters is not allowed (at most {MAX_BUILT_CHARS:,}); use a "
                f"smaller {what}"), 0
    return None, max(length, 0)


def _format_problem(name: str, fmt: str) -> tuple[str | None, int]:
    """(why the format string `fmt` of printf (`%5d`) or format (fmt's `{:>5}`) could build a string too big to
    stop, or None; its widths and precisions added up)."""
    if _BIG_WIDTH.search(fmt):
        return f"{name}() with a width or precision of a million characters or more is not allowed", 0
    if name == "format":
        fields = [m for m in _FMT_FIELD.finditer(fmt) if m.group(1) is not None]
        dynamic = any(m.group(2) == "{" for m in fields)  # `{:>{}}`: the width is the next argument
        specs = [m.group(1) for m in fields]
    else:
        specs = [m.group(1) for m in _PRINTF_SPEC.finditer(fmt)]
        dynamic = any("*" in s for s in specs)  # `%*d`: the width is the next argument
    if dynamic:
        return (f"{name}() with a width or precision taken from an argument is not allowed; write it in the "
                "format"), 0
    total = sum(int(d) for spec in specs for d in _DIGITS.findall(spec))
    if total > MAX_BUILT_CHARS:
        return (f"{name}() with widths and precisions adding up to {total:,} characters is not allowed (at most "
                f"{MAX_BUILT_CHARS:,}); use smaller ones"), 0
    return None, total


def _literal_int(node) -> int | None:
    """The value of a literal number (in brackets, cast, negated), or None for anything else."""
    from sqlglot import exp

    sign = 1
    while isinstance(node, (exp.Paren, exp.Cast, exp.Neg)):
        sign = -sign if isinstance(node, exp.Neg) else sign
        node = node.this
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    try:
        return sign * int(float(node.this.replace("_", "")))
    except (ValueError, OverflowError):
        return None


def _code(sql: str) -> str:
    """`sql` with its string literals and comments blanked out and the quotes of its names dropped (a call
    written `"printf"(...)` is still a call). Where a backslash or a dollar sign could start a string that this
    scanner would read otherwise than DuckDB (E'\\'', $$...$$), the whole text is searched instead."""
    if "\\" in sql or "$" in sql:
        return sql
    out, i, n = [], 0, len(sql)
    while i < n:
        if sql[i] == "'":
            end = i + 1
            while True:  # to the closing quote; '' inside is a quote, not the end
                end = sql.find("'", end)
                if end == -1 or not sql.startswith("''", end):
                    break
                end += 2
            i = n if end == -1 else end + 1
            out.append(" ")
        elif sql.startswith("--", i):
            ends = [k for k in (sql.find("\n", i), sql.find("\r", i)) if k != -1]
            i = min(ends) if ends else n
            out.append(" ")
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
            out.append(" ")
        else:
            out.append(" " if sql[i] == '"' else sql[i])
            i += 1
    return "".join(out)


def _duckdb():
    from macsql.extras import require

    return require("duckdb", purpose="a DuckDB database (or CSV/Parquet files)", extra="duckdb")


def _one_line(exc: BaseException) -> str:
    """DuckDB's message without its `LINE 1: ... ^` excerpt, on one line."""
    text = str(exc).split("\n\n")[0]
    return " ".join(text.split()) or type(exc).__name__


def data_files(spec: str | Path) -> list[Path]:
    """The CSV/Parquet files a folder, a glob or a single data file names (sorted; [] for none)."""
    text = os.path.expanduser(str(spec))
    path = Path(text)
    if path.is_dir():
        found = [p for p in path.iterdir()]
    elif path.is_file():
        found = [path]
    else:
        found = [Path(p) for p in glob.glob(text)]
    return sorted(p.resolve() for p in found if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)


def view_names(files: list[Path]) -> dict[str, Path]:
    """A table name per file: its stem, made a plain identifier (`2024 sales.csv` -> `t_2024_sales`),
    numbered when two files share one."""
    names: dict[str, Path] = {}
    for path in files:
        base = re.sub(r"\W+", "_", path.stem).strip("_") or "t"
        if base[0].isdigit():
            base = f"t_{base}"
        name, n = base, 2
        while name.lower() in (k.lower() for k in names):
            name, n = f"{base}_{n}", n + 1
        names[name] = path
    return names


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _interrupter(conn, deadline: Deadline) -> StopAtDeadline:
    """DuckDB stops a running query on `interrupt()`, from any thread."""
    return StopAtDeadline(conn.interrupt, deadline)


class DuckDBDatabase(Database):
    """A DuckDB file (`shop.duckdb`), or CSV/Parquet files (`data/`, `'data/*.parquet'`, `sales.csv`) read
    as tables named after the files."""

    dialect = "duckdb"

    def __init__(self, spec: str | Path):
        self.label = str(spec)
        path = Path(os.path.expanduser(self.label))
        self.file: Path | None = None
        self._memory = None  # the in-memory database holding the views over data files
        self._built: tuple = ()  # the files' (path, mtime, size) the views were built over
        # Cursors open on each in-memory database (by id), and the database of each open cursor: one replaced by
        # newer views (a data file changed) is closed with its last cursor, not under other threads' queries.
        self._users: dict[int, int] = {}
        self._parent: dict[int, object] = {}
        self._lock = threading.Lock()
        if path.suffix.lower() in DUCKDB_SUFFIXES:
            self.file = self._check_file(path)
            self._duckdb = _duckdb()
            conn = self._connect_file()  # a file DuckDB cannot open fails here, in one line
            conn.close()
        else:
            if not data_files(self.label):
                self._no_files(path)
            self._duckdb = _duckdb()
            self._disconnect(self._views())  # views that cannot be built fail here, in one line

    # ---------------------------------------------------------------------------------------- opening
    def _check_file(self, path: Path) -> Path:
        return check_file(path, _DUCKDB_MAGIC, 8, "DuckDB", label=self.label).resolve()

    def _no_files(self, path: Path) -> None:
        if path.is_dir():
            what = f"database {self.label!r} is not a file, and the folder holds no .csv or .parquet files"
        elif re.search(r"[*?\[]", self.label) and not path.exists():
            what = f"{self.label!r} matches no .csv or .parquet file"
        else:
            what = f"database {self.label!r} does not exist"
        raise DatabaseError(f"{what}; pass --db PATH to a .sqlite or .duckdb file, or a folder or glob of "
                            "CSV/Parquet files ('data/*.parquet')")

    def _connect_file(self):
        duckdb = self._duckdb
        config = {"enable_external_access": False, **SETTINGS, "lock_configuration": True}
        try:
            return duckdb.connect(str(self.file), read_only=True, config=config)
        except duckdb.Error as exc:
            if not self.file.exists():
                raise DatabaseError(f"database {self.label!r} does not exist any more; pass --db PATH to a "
                                    ".duckdb file") from exc
            raise DatabaseError(f"cannot open {self.label!r} read-only: {_one_line(exc)}") from exc

    def _stamp(self) -> tuple:
        files = data_files(self.label)
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)

    def _views(self):
        """A cursor on the in-memory database of views over the data files (its own connection to it, so that
        interrupting it stops only this query); the database is rebuilt first when the files changed (one
        added, removed or rewritten). Give the cursor back with `_disconnect`."""
        stamp = self._stamp()
        old = None
        with self._lock:
            if self._memory is None or stamp != self._built:
                old, self._memory, self._built = self._memory, self._build(stamp), stamp
                if old is not None and self._users.get(id(old), 0) > 0:
                    old = None  # other threads' queries still read it: closed with their last cursor
                elif old is not None:
                    self._users.pop(id(old), None)
            cursor = self._memory.cursor()
            self._users[id(self._memory)] = self._users.get(id(self._memory), 0) + 1
            self._parent[id(cursor)] = self._memory
        if old is not None:
            old.close()
        return cursor

    def _build(self, stamp: tuple):
        """A new in-memory database of views over the files in `stamp`, locked down (see the module docstring)."""
        if not stamp:
            self._no_files(Path(os.path.expanduser(self.label)))
        duckdb = self._duckdb
        names = view_names([Path(p) for p, _m, _s in stamp])
        conn = duckdb.connect(":memory:", config=dict(SETTINGS))
        try:
            for name, path in names.items():
                reader = "read_parquet" if path.suffix.lower() == ".parquet" else "read_csv_auto"
                try:
                    conn.execute(f"CREATE VIEW {quote_name(name)} AS SELECT * FROM {reader}({_string(str(path))})")
                except duckdb.Error as exc:
                    raise DatabaseError(f"cannot read {str(path)!r} as a table: {_one_line(exc)}") from exc
            paths = ", ".join(_string(str(p)) for p in names.values())
            try:
                conn.execute(f"SET allowed_paths = [{paths}]")
            except duckdb.Error as exc:
                raise DatabaseError(f"DuckDB {duckdb.__version__} cannot limit file access to the data "
                                    f"files ({_one_line(exc)}); upgrade it: pip install -U 'duckdb>=1.2'"
                                    ) from exc
            conn.execute("SET enable_external_access = false")
            for name, path in names.items():  # the views must still read their files, and only those
                try:
                    conn.execute(f"SELECT * FROM {quote_name(name)} LIMIT 1").fetchall()
                except duckdb.Error as exc:
                    raise DatabaseError(f"{str(path)!r} cannot be read with external access off "
                                        f"({_one_line(exc)}); macsql reads data files only that way") from exc
            conn.execute("SET lock_configuration = true")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self):
        """A fresh connection: to the file (read-only), or a cursor on the views' database. Give it back with
        `_disconnect`."""
        if self.file is not None:
            return self._connect_file()
        return self._views()

    def _disconnect(self, conn) -> None:
        """Close a connection from `_connect`; the views' database it read is closed with it when it was the
        last cursor on a database that newer views replaced."""
        conn.close()
        with self._lock:
            parent = self._parent.pop(id(conn), None)
            if parent is None:  # a connection to the file: its own
                return
            left = self._users.get(id(parent), 1) - 1
            if left > 0 or parent is self._memory:
                self._users[id(parent)] = left
                return
            self._users.pop(id(parent), None)
        parent.close()

    def close(self) -> None:
        with self._lock:
            memory, self._memory, self._built = self._memory, None, ()
            if memory is not None and self._users.get(id(memory), 0) > 0:
                memory = None  # queries still read it: closed with their last cursor (_disconnect)
            elif memory is not None:
                self._users.pop(id(memory), None)
        if memory is not None:
            memory.close()

    # ------------------------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        if self.file is not None:
            return self.file.stem
        path = Path(os.path.expanduser(self.label))
        if path.is_dir():
            return path.resolve().name or "data"
        if path.is_file():
            return path.stem
        # a glob: the last folder without wildcards ('data/*.parquet' -> data)
        parts = [p for p in path.parts if not re.search(r"[*?\[]", p)]
        return re.sub(r"\W+", "_", Path(*parts).resolve().name if parts else "data") or "data"

    @property
    def location(self) -> str:
        if self.file is not None:
            return str(self.file)
        path = Path(os.path.expanduser(self.label))
        return str(path.resolve()) if path.exists() else os.path.abspath(path)

    def identity(self) -> str:
        if self.file is not None:
            self._check_file(self.file)  # replaced or gone since it was opened: one line, not a traceback
            parts = [self.file, Path(f"{self.file}.wal")]
            stamp = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in parts if p.exists()]
        else:
            stamp = list(self._stamp())
        return f"duckdb:{self.location}:{stamp!r}"

    # -------------------------------------------------------------------------------------- queries
    def execute(self, sql: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS,
                max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        """Run one read-only SELECT within the deadline (see the module docstring); never raises for bad
        or hostile SQL. The deadline counts from the call: checking, opening and fetching come out of it."""
        from macsql.sql import statement_error, strip_statement

        duckdb = self._duckdb
        deadline = Deadline(timeout_s)
        elapsed, timeout = deadline.elapsed, deadline.timeout_result

        command: list[str] = []  # sqlglot's refusal of a statement it reads as a COMMAND

        def check(text: str) -> str | None:
            problem = statement_error(text, dialect="duckdb")
            # sqlglot reads a statement it does not model as a COMMAND: DuckDB's own parser (below, which
            # refuses every statement but a SELECT) names it instead (VACUUM, DETACH, ...); one that DuckDB
            # reads as a SELECT (PIVOT, ...) still has its string-building calls looked for
            if problem and problem.endswith(" got COMMAND"):
                command.append(problem)
                return _unbounded_call(text)
            return problem or _unbounded_call(text)

        early = precheck(sql, deadline, check)
        if early is not None:
            return early
        conn = self._connect()
        guard = _interrupter(conn, deadline)
        try:
            try:
                statements = conn.extract_statements(strip_statement(sql))
            except duckdb.Error as exc:  # a statement neither parser reads: sqlglot's refusal says more
                return ExecResult(error=(command[0] if command else None) or _one_line(exc), seconds=elapsed())
            if len(statements) != 1:
                return ExecResult(error=f"only one statement is allowed, got {len(statements)}", seconds=elapsed())
            kind = statements[0].type
            if kind != duckdb.StatementType.SELECT:
                return ExecResult(error=f"only SELECT/WITH queries are allowed, got {kind.name}",
                                  seconds=elapsed())
            with guard:
                conn.execute("BEGIN TRANSACTION READ ONLY")
                cur = conn.execute(statements[0])
                return collect_rows(lambda n: [tuple(plain_value(v) for v in raw) for raw in cur.fetchmany(n)],
                                    deadline, max_rows, max_bytes, most=FETCH_ROWS,
                                    columns=tuple(d[0] for d in cur.description or ()))
        except (duckdb.Error, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            if guard.fired or isinstance(exc, duckdb.InterruptException):
                return timeout()
            return ExecResult(error=_explained(duckdb, exc), seconds=elapsed())
        finally:
            self._disconnect(conn)

    # -------------------------------------------------------------------------------- introspection
    def introspect(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Schema:
        """Tables and views of the main schema (a data file is a table), their columns with DuckDB's types
        and comments, primary and foreign keys (`duckdb_constraints()`), and value examples sampled as on
        SQLite (schema._sample_table). Within `timeout_s`: tables first, then each view with an equal share
        of the time left; a view that fails or runs out of time is left out with a note."""
        duckdb = self._duckdb
        deadline = Deadline(check_timeout(timeout_s))
        conn = self._connect()
        guard = _interrupter(conn, deadline)
        try:
            with guard:  # only macsql's own catalogue and sampling queries run here
                schema = self._catalog(conn)
                self._sample(conn, schema, deadline, guard)
        except duckdb.Error as exc:
            if guard.fired:
                raise DatabaseError(f"reading the schema of {self.label!r} took longer than the "
                                    f"{deadline.seconds:g}s deadline") from exc
            raise DatabaseError(f"cannot read the schema of {self.label!r}: {_one_line(exc)}") from exc
        finally:
            self._disconnect(conn)
        folder = self.file.parent if self.file is not None else Path(self.location)
        _add_descriptions(schema, (folder if folder.is_dir() else folder.parent) / "database_description")
        return schema

    def _catalog(self, conn) -> Schema:
        data_views = self.file is None  # the views over data files are the user's tables
        # by name: a DuckDB file keeps no creation order (its table oids are handed out again when it is
        # opened), unlike SQLite's and PostgreSQL's catalogues
        relations = conn.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = current_schema() "
            "ORDER BY table_type = 'VIEW', table_name").fetchall()
        tables: dict[str, Table] = {}
        for name, kind in relations:
            view = kind == "VIEW" and not data_views
            tables[name] = Table(name=name, columns=[], kind="view" if view else "table")
        for table, column, type_, comment in conn.execute(
                "SELECT table_name, column_name, data_type, COLUMN_COMMENT FROM information_schema.columns "
                "WHERE table_catalog = current_database() AND table_schema = current_schema() "
                "ORDER BY table_name, ordinal_position").fetchall():
            if table in tables:
                tables[table].columns.append(Column(name=column, type=(type_ or "").upper(),
                                                    description=" ".join(str(comment or "").split())))
        for table, kind, columns, ref_table, ref_columns in conn.execute(
                "SELECT table_name, constraint_type, constraint_column_names, referenced_table, "
                "referenced_column_names FROM duckdb_constraints() WHERE database_name = current_database() "
                "AND schema_name = current_schema() AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') "
                "ORDER BY table_name, constraint_index").fetchall():
            if table not in tables:
                continue
            if kind == "PRIMARY KEY":
                tables[table].primary_key = [str(c) for c in columns]
            elif ref_table in tables:
                tables[table].foreign_keys += [ForeignKey(str(c), str(ref_table), str(r))
                                               for c, r in zip(columns, ref_columns or [], strict=False)]
        other = [s for (s,) in conn.execute(
            "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_schema <> current_schema() ORDER BY 1").fetchall()]
        notes = [f"schemas other than the default one are left out: {', '.join(other)}"] if other else []
        return Schema(db_id=self.name, tables=list(tables.values()), notes=notes, dialect="duckdb")

    def _sample(self, conn, schema: Schema, deadline: Deadline, guard: StopAtDeadline) -> None:
        from macsql.schema import _sample_table

        duckdb = self._duckdb
        strict = [t for t in schema.tables if t.kind == "view" or self.file is None]  # read through a view
        for table in [t for t in schema.tables if t not in strict]:
            _sample_table(conn, table)  # bounded reads of stored tables; a failing column gets no examples
            if guard.fired:
                raise duckdb.InterruptException("the deadline passed")
        for i, view in enumerate(strict):
            share = deadline.remaining() / (len(strict) - i)
            if share <= 0:
                schema.notes.append(f"{view.kind} {view.name!r}: no value examples (the {deadline.seconds:g}s "
                                    "deadline ran out before it was sampled)")
                continue
            with _interrupter(conn, Deadline(share)) as own:
                try:
                    # a column whose values fail loses only its examples; a stop at a deadline goes on up
                    _sample_table(conn, view, strict=True, errors=(duckdb.Error,),
                                  interrupted=lambda exc, own=own: (own.fired or guard.fired
                                                                    or isinstance(exc, duckdb.InterruptException)))
                except duckdb.Error as exc:
                    if guard.fired:
                        raise
                    if own.fired:
                        reason = (f"its first {SAMPLE_SCAN_ROWS} rows took longer than {share:.3g}s (its share "
                                  f"of the {deadline.seconds:g}s deadline)")
                    else:
                        reason = _one_line(exc)
                    schema.notes.append(f"{view.kind} {view.name!r} skipped: {reason}")
                    schema.tables.remove(view)

    def distinct_values(self, table: str, column: str, *, limit: int, scan_rows: int, max_chars: int,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
        """Text values only (VARCHAR columns; others give none, as SQLite's typeof(v) = 'text' does)."""
        duckdb = self._duckdb
        sql = (f"SELECT DISTINCT v FROM (SELECT {quote_name(column)} AS v FROM {quote_name(table)} "
               f"LIMIT {int(scan_rows)}) WHERE typeof(v) = 'VARCHAR' AND length(CAST(v AS VARCHAR)) "
               f"BETWEEN 1 AND {int(max_chars)} LIMIT {int(limit)}")
        conn = self._connect()
        try:
            with _interrupter(conn, Deadline(check_timeout(timeout_s))):
                conn.execute("BEGIN TRANSACTION READ ONLY")
                return [v for (v,) in conn.execute(sql).fetchall() if isinstance(v, str) and v.strip()]
        except duckdb.Error:
            return []  # a view whose file went bad, an odd type: no values, linking goes on without them
        finally:
            self._disconnect(conn)


def _explained(duckdb, exc: BaseException) -> str:
    """DuckDB's message, with why a refusal happened where DuckDB does not say it."""
    # DuckDB lists every overload of a function it could not match (a dozen lines of signatures): the
    # Refiner's prompt pays for each token, and the hint says what to cast
    message = _one_line(exc).split(" Candidate functions:")[0]
    if isinstance(exc, duckdb.PermissionException):
        return f"{message} (a query may read only this database's own tables: no other files, extensions or settings)"
    if isinstance(exc, duckdb.TransactionException) and "read-only" in message:
        return f"{message} (only read queries are allowed)"
    return message

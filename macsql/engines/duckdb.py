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
  the running query) and fetching stops once it has passed;
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
    _row_bytes,
    check_timeout,
    precheck,
)

DUCKDB_SUFFIXES = (".duckdb", ".ddb")
DATA_SUFFIXES = (".csv", ".tsv", ".parquet")  # files read as tables, one view each
FETCH_ROWS = 1000  # rows per fetchmany: the byte cap is checked row by row within each chunk
MEMORY_LIMIT = "1GB"  # DuckDB's working memory (sorts, joins, DISTINCT), as SQLite's heap ceiling
# Set when a database is opened; `lock_configuration` comes last, after which no statement changes any.
SETTINGS = {
    "memory_limit": MEMORY_LIMIT,
    "temp_directory": "",  # no spilling to disk: a big sort fails at the memory limit instead of writing
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # `FROM df` must not read a Python object of the calling frame
}
_DUCKDB_MAGIC = b"DUCK"  # bytes 8-12 of a DuckDB database file
# printf/format build their whole string inside one call that DuckDB's interrupt() cannot stop: a width of
# 10^9 ran 15-41 s past a 0.5 s deadline (benchmarks/bench_hostile_engines.py). A format is refused when its
# widths or precisions could be that large: one written with 7 or more digits, one taken from an argument
# (`*`), or a format that is not a literal and so cannot be checked before it runs.
_BIG_WIDTH = re.compile(r"\d{7,}|\*")


def _unbounded_format(sql: str) -> str | None:
    """Why a printf/format call in `sql` could run past the deadline, or None."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except Exception:  # noqa: BLE001 - DuckDB's own parser has the last word on what does not parse
        return None
    for node in tree.find_all(exp.Anonymous, exp.Format):
        name = node.name.lower() if isinstance(node, exp.Anonymous) else "format"
        if name not in ("printf", "format", "sprintf"):
            continue
        fmt = node.this if isinstance(node, exp.Format) else (node.expressions or [None])[0]
        if not isinstance(fmt, exp.Literal) or not fmt.is_string:
            return f"{name}() with a format that is not a literal string is not allowed"
        if _BIG_WIDTH.search(fmt.this):
            return (f"{name}() with a width or precision of a million characters or more (or taken from an "
                    "argument) is not allowed")
    return None


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
            self._views()

    # ---------------------------------------------------------------------------------------- opening
    def _check_file(self, path: Path) -> Path:
        if not path.exists():
            raise DatabaseError(f"database {self.label!r} does not exist; pass --db PATH to a .duckdb file")
        if not path.is_file():
            raise DatabaseError(f"database {self.label!r} is not a file; pass --db PATH to a .duckdb file")
        with path.open("rb") as fh:
            head = fh.read(16)
        if head[8:12] != _DUCKDB_MAGIC:
            raise DatabaseError(f"{self.label!r} is not a DuckDB database (bad header); pass a .duckdb file")
        return path.resolve()

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
        """The in-memory database of views over the data files, rebuilt when the files changed (one added,
        removed or rewritten). Locked down once built; see the module docstring."""
        stamp = self._stamp()
        with self._lock:
            if self._memory is not None and stamp == self._built:
                return self._memory
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
            old, self._memory, self._built = self._memory, conn, stamp
        if old is not None:
            old.close()
        return conn

    def _connect(self):
        """A fresh connection: to the file (read-only), or a cursor on the views' database (its own
        connection to it, so that interrupting it stops only this query)."""
        if self.file is not None:
            return self._connect_file()
        return self._views().cursor()

    def close(self) -> None:
        with self._lock:
            memory, self._memory, self._built = self._memory, None, ()
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
            # refuses every statement but a SELECT) names it instead (VACUUM, DETACH, ...)
            if problem and problem.endswith(" got COMMAND"):
                command.append(problem)
                return None
            return problem or _unbounded_format(text)

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
                columns = tuple(d[0] for d in cur.description or ())
                rows: list[tuple] = []
                size = 0
                while len(rows) <= max_rows:
                    if deadline.passed():
                        return timeout()
                    chunk = cur.fetchmany(min(FETCH_ROWS, max_rows + 1 - len(rows)))
                    if not chunk:
                        break
                    for raw in chunk:
                        row = tuple(plain_value(v) for v in raw)
                        size += _row_bytes(row)
                        if size > max_bytes:
                            return ExecResult(error=f"the result is larger than {max_bytes // (1024 * 1024)} "
                                                    "MB; select fewer or smaller values (e.g. add LIMIT, leave "
                                                    "out blobs)", seconds=elapsed())
                        rows.append(row)
            return ExecResult(rows=tuple(rows[:max_rows]), columns=columns, seconds=elapsed(),
                              truncated=len(rows) > max_rows)
        except (duckdb.Error, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            if guard.fired or isinstance(exc, duckdb.InterruptException):
                return timeout()
            return ExecResult(error=_explained(duckdb, exc), seconds=elapsed())
        finally:
            conn.close()

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
            conn.close()
        folder = self.file.parent if self.file is not None else Path(self.location)
        _add_descriptions(schema, (folder if folder.is_dir() else folder.parent) / "database_description")
        return schema

    def _catalog(self, conn) -> Schema:
        data_views = self.file is None  # the views over data files are the user's tables
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
        return Schema(db_id=self.name, tables=list(tables.values()), notes=notes)

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
                    _sample_table(conn, view, strict=True)
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
            conn.close()


def _explained(duckdb, exc: BaseException) -> str:
    """DuckDB's message, with why a refusal happened where DuckDB does not say it."""
    message = _one_line(exc)
    if isinstance(exc, duckdb.PermissionException):
        return f"{message} (a query may read only this database's own tables: no other files, extensions or settings)"
    if isinstance(exc, duckdb.TransactionException) and "read-only" in message:
        return f"{message} (only read queries are allowed)"
    return message

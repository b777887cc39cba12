"""Benchmark databases copied into DuckDB or PostgreSQL with their types, and how often the gold SQL,
transpiled by sqlglot, gives SQLite's result on the copy. Prints a table and writes a JSON report.

    python benchmarks/load_engines.py --data ../shared/data/spider/dev.json --engine duckdb --out runs/engines/duckdb
    python benchmarks/load_engines.py --data ../shared/data/bird/dev.json --engine postgres --throwaway \
        --out runs/engines/postgres
    python benchmarks/load_engines.py --data dev.json --engine postgres --url postgresql://U:P@HOST/DB --out DIR

Loading. Every SQLite file the data file's questions use (read-only, through macsql's read-only connection)
is copied: DuckDB, one file per db_id (`<out>/<db_id>/<db_id>.duckdb`, BIRD's database_description folder
copied beside it); PostgreSQL, one schema per db_id in the server's database, dropped and made afresh
(names in lower case: the server folds unquoted names, SQLite ignores their case). A column keeps its
declared type (INTEGER as BIGINT: SQLite's integers are 64-bit; REAL as DOUBLE; TEXT/VARCHAR(n);
DECIMAL(p,s); DATE/DATETIME/TIMESTAMP; BOOLEAN; BLOB) where every value it holds is that type's;
SQLite's loose typing otherwise falls back per column (text in an integer column: TEXT; reals in one:
DOUBLE; dates that do not read back as written: TEXT) and each fallback is reported. Primary and foreign
keys are created where the data satisfies them and the engine accepts them; each one left out is reported
with why. A column without a declared type gets the type its values share.

Agreement. Each question's gold SQL is read as SQLite (double-quoted strings made string literals, as
SQLite reads them), written in the engine's dialect by sqlglot, run through the engine's
`Database.execute`, and compared with SQLite's result of the original gold SQL by `compare_results`
(agreed: BIRD's and Spider's verdicts both). Two transpilations: `sqlglot` (the tree as read) and
`sqlglot+types` (qualified and typed against the copy's schema first, which lets sqlglot keep SQLite's
integer division). A disagreement gets a reason category.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import json
import math
import re
import shutil
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macsql.evaluate.copies import duckdb_copy, postgres_copy  # noqa: E402
from macsql.sqlexec import DEFAULT_TIMEOUT_S, connect_readonly  # noqa: E402

BATCH_ROWS = 500  # rows per INSERT (DuckDB) and per fetch from SQLite
MAX_ROWS = 100_000  # the comparator's row cap (compare.execution_match's)
ENGINE_TYPES = {
    "duckdb": {"bigint": "BIGINT", "double": "DOUBLE", "decimal": "DECIMAL({0},{1})",
               "text": "VARCHAR", "varchar": "VARCHAR({0})", "date": "DATE", "timestamp": "TIMESTAMP",
               "time": "TIME", "boolean": "BOOLEAN", "blob": "BLOB"},
    "postgres": {"bigint": "bigint", "double": "double precision",
                 "decimal": "numeric({0},{1})", "numeric": "numeric", "text": "text", "varchar": "varchar({0})",
                 "date": "date", "timestamp": "timestamp", "time": "time", "boolean": "boolean", "blob": "bytea"},
}


# ------------------------------------------------------------------------------------------ planning
@dataclass
class Column:
    name: str
    declared: str
    not_null: bool = False
    kind: str = "text"  # a key of ENGINE_TYPES[engine]
    size: tuple = ()  # (n,) of varchar(n), (p, s) of decimal
    fallback: str | None = None  # why the declared type was not kept
    cast_text: bool = False  # read as CAST(... AS TEXT): SQLite's own text of a non-text value


@dataclass
class ForeignKey:
    columns: list[str]
    ref_table: str
    ref_columns: list[str]
    unchecked: bool = False  # PostgreSQL: added NOT VALID, rows that reference no row left as SQLite has them


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str]
    foreign_keys: list[ForeignKey]
    rows: int = 0
    left_out: list[str] = field(default_factory=list)  # constraints not created, with why


class _Stats:
    """What a column's values are: their Python types, integer range, text length, and whether every text
    value reads back as written as a date, timestamp or time."""

    def __init__(self):
        self.kinds: Counter = Counter()
        self.example: dict = {}
        self.nulls = 0
        self.lo = self.hi = 0
        self.maxlen = 0
        self.int_digits = self.scale = 0
        self.finite = True
        self.date = self.timestamp = self.time = True
        self.unread: dict[str, str] = {}  # date, timestamp, time -> the first text value that is not one

    def add(self, v) -> None:
        if v is None:
            self.nulls += 1
            return
        kind = "blob" if isinstance(v, bytes) else type(v).__name__  # int, float, str
        self.kinds[kind] += 1
        self.example.setdefault(kind, v)
        if kind == "int":
            self.lo, self.hi = min(self.lo, v), max(self.hi, v)
        if kind in ("int", "float"):
            d = decimal.Decimal(repr(v)) if kind == "float" else decimal.Decimal(v)
            if not d.is_finite():
                self.finite = False
                return
            sign, digits, exp = d.as_tuple()
            self.scale = max(self.scale, -exp)
            self.int_digits = max(self.int_digits, len(digits) + exp)
        elif kind == "str":
            self.maxlen = max(self.maxlen, len(v))
            for name, kind in (("date", datetime.date), ("timestamp", datetime.datetime), ("time", datetime.time)):
                if getattr(self, name) and not _reads_back(kind, v):
                    setattr(self, name, False)
                    self.unread[name] = v


def _reads_back(kind, text: str) -> bool:
    """Whether `text` is a value of `kind` written as the engines give it back (str of the parsed value):
    only then does a typed column return what SQLite returns."""
    try:
        value = kind.fromisoformat(text)
    except ValueError:
        return False
    return getattr(value, "tzinfo", None) is None and str(value) == text


def affinity(declared: str) -> str:
    """SQLite's type affinity of a declared type (datatype3.html, section 3.1)."""
    d = declared.upper()
    if "INT" in d:
        return "INTEGER"
    if any(w in d for w in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in d or not d:
        return "BLOB"
    if any(w in d for w in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _sizes(declared: str) -> tuple[int, ...]:
    found = re.search(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", declared)
    return tuple(int(g) for g in found.groups() if g is not None) if found else ()


def plan_column(col: Column, stats: _Stats, engine: str) -> None:
    """Set the column's target kind from its declared type and its values (see the module docstring)."""
    kinds = set(stats.kinds)
    d = col.declared.upper()
    aff = affinity(d)

    def number() -> str:  # SQLite's integers are 64-bit whatever the declaration says
        return "bigint" if kinds <= {"int"} else "double"

    def fall(kind: str, why: str, odd: str | None = None, value=None) -> None:
        col.kind, col.fallback = kind, why
        if value is None:
            value = stats.example.get(odd or next(iter(sorted(kinds - {"int", "float"})), "str"))
        if value is not None:
            col.fallback += f" (e.g. {str(value)[:40]!r})"
        col.cast_text = kind == "text" and not kinds <= {"str"}

    if aff == "INTEGER":
        if kinds <= {"int"}:
            col.kind = number()
        elif kinds <= {"int", "float"}:
            fall("double", "real values in an integer column", "float")
        else:
            fall("text", "text or blob values in an integer column")
    elif aff == "TEXT":
        size = _sizes(d)
        if not kinds <= {"str"}:
            fall("text", "non-text values in a text column", next(iter(kinds - {"str"})))
        elif size and engine == "postgres" and stats.maxlen <= size[0]:
            col.kind, col.size = "varchar", size[:1]
        else:
            col.kind = "text"
            if size and engine == "postgres":
                col.fallback = f"values longer than {size[0]} characters: text"
    elif aff == "REAL":
        if kinds <= {"int", "float"}:
            col.kind = "double"
        else:
            fall("text", "text values in a real column")
    elif aff == "BLOB":
        if not kinds:
            col.kind = "blob" if d else "text"
        elif kinds <= {"str"}:
            col.kind = "text"
            if d:
                col.fallback = "text values in a blob column: text"
        elif kinds <= {"int", "float"}:
            col.kind = number()
        elif kinds <= {"blob"}:
            col.kind = "blob"
        else:
            fall("text", f"mixed values ({', '.join(sorted(kinds))}) in a column without a type")
    elif any(w in d for w in ("DATE", "TIME")):
        kind = ("timestamp" if "DATETIME" in d or "TIMESTAMP" in d else "date" if "DATE" in d else "time")
        if kinds and kinds <= {"str"} and getattr(stats, kind):
            col.kind = kind
        elif kinds and kinds <= {"str"} and kind == "timestamp" and stats.date:
            col.kind, col.fallback = "date", "dates without a time of day: date"
        elif not kinds:
            col.kind = kind
        else:
            fall("text", f"values that are not {kind}s as written", value=stats.unread.get(kind))
    elif "BOOL" in d:
        if kinds <= {"int"} and stats.lo >= 0 and stats.hi <= 1:
            col.kind = "boolean"
        elif kinds <= {"int"}:
            fall(number(), "integer values other than 0 and 1 in a boolean column", "int")
        else:
            fall("text", "text values in a boolean column")
    elif "DEC" in d or "NUMERIC" in d:
        size = _sizes(d)
        if not kinds <= {"int", "float"}:
            fall("text", "text values in a decimal column")
        elif len(size) == 2 and stats.finite and stats.scale <= size[1] and stats.int_digits <= size[0] - size[1] \
                and (engine == "postgres" or size[0] <= 38):
            col.kind, col.size = "decimal", size
        elif engine == "postgres":
            col.kind = "numeric"
            if size:
                col.fallback = f"values that do not fit {col.declared}: numeric"
        else:  # DuckDB's DECIMAL without precision is DECIMAL(18,3): a double keeps what SQLite stored
            col.kind = "double"
            if size:
                col.fallback = f"values that do not fit {col.declared}: double"
    elif kinds <= {"int", "float"}:
        col.kind = number()
    else:
        fall("text", "text values in a numeric column")


def _convert(col: Column, engine: str):
    """The function turning a value read from SQLite into the target column's."""
    kind = col.kind
    if kind in ("decimal", "numeric"):
        return lambda v: None if v is None else decimal.Decimal(repr(v) if isinstance(v, float) else v)
    if kind == "double":
        return lambda v: None if v is None else float(v)
    if kind == "bigint":  # text of integers in a column typed as the key it references (_take_key_type)
        return lambda v: None if v is None else int(v)
    if kind == "boolean":
        return lambda v: None if v is None else bool(v)
    if kind in ("date", "timestamp", "time"):
        parse = {"date": datetime.date, "timestamp": datetime.datetime, "time": datetime.time}[kind].fromisoformat
        return lambda v: None if v is None else parse(v)
    if kind in ("text", "varchar") and engine == "postgres":  # PostgreSQL's text cannot hold NUL
        return lambda v: v.replace("\x00", "") if isinstance(v, str) else v
    return lambda v: v


# ------------------------------------------------------------------------------------------- SQLite
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_tables(conn: sqlite3.Connection, engine: str) -> tuple[list[Table], list[str]]:
    """The tables of a SQLite database with each column planned for `engine`, and notes on what is not
    copied (views, virtual tables)."""
    notes = []
    tables = []
    master = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                          "AND type IN ('table', 'view') ORDER BY rowid").fetchall()
    for kind, name, sql in master:
        if kind == "view" or (sql or "").upper().startswith("CREATE VIRTUAL"):
            notes.append(f"{kind} {name!r} not copied")
            continue
        info = conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()
        columns = [Column(n, (t or "").strip(), bool(nn)) for _cid, n, t, nn, _d, _pk in info]
        pk = [n for _cid, n, _t, _nn, _d, pk in sorted(info, key=lambda r: r[5]) if pk]
        fks: dict[int, ForeignKey] = {}
        for fid, _seq, ref, frm, to, *_ in conn.execute(f"PRAGMA foreign_key_list({_q(name)})").fetchall():
            fk = fks.setdefault(fid, ForeignKey([], ref, []))
            fk.columns.append(frm)
            fk.ref_columns.append(to)
        stats = [_Stats() for _ in columns]
        cur = conn.execute(f"SELECT {', '.join(_q(c.name) for c in columns)} FROM {_q(name)}")
        rows = 0
        while chunk := cur.fetchmany(BATCH_ROWS):
            rows += len(chunk)
            for row in chunk:
                for s, v in zip(stats, row, strict=True):
                    s.add(v)
        for col, s in zip(columns, stats, strict=True):
            plan_column(col, s, engine)
            col.not_null = col.not_null and s.nulls == 0
        tables.append(Table(name, columns, pk, list(fks.values()), rows))
    return tables, notes


def _count(conn, sql: str) -> int:
    return conn.execute(sql).fetchone()[0]


def check_keys(conn: sqlite3.Connection, tables: list[Table], engine: str) -> None:
    """Keep the primary and foreign keys the data satisfies and the engine accepts; note the others."""
    by_name = {t.name.lower(): t for t in tables}
    for t in tables:
        if t.primary_key:
            cols = ", ".join(_q(c) for c in t.primary_key)
            nulls = _count(conn, f"SELECT count(*) FROM {_q(t.name)} WHERE "
                                 + " OR ".join(f"{_q(c)} IS NULL" for c in t.primary_key))
            distinct = _count(conn, f"SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {_q(t.name)})")
            if nulls or distinct != t.rows:
                t.left_out.append(f"primary key ({', '.join(t.primary_key)}): "
                                  + (f"{nulls} NULL key(s)" if nulls else f"{t.rows - distinct} duplicate key(s)"))
                t.primary_key = []
    for t in tables:
        kept = []
        for fk in t.foreign_keys:
            why = _fk_problem(conn, t, fk, by_name, engine)
            label = f"foreign key ({', '.join(fk.columns)}) -> {fk.ref_table}"
            if why:
                t.left_out.append(f"{label}: {why}")
            else:
                kept.append(fk)
        t.foreign_keys = kept


def _column(table: Table, name: str | None) -> Column | None:
    return next((c for c in table.columns if name and c.name.lower() == name.lower()), None)


def _fk_problem(conn, table: Table, fk: ForeignKey, by_name: dict, engine: str) -> str | None:
    parent = by_name.get(fk.ref_table.lower())
    if parent is None:
        return "the referenced table does not exist"
    fk.ref_table = parent.name
    if engine == "duckdb" and parent is table:
        return "DuckDB checks a reference to the same table row by row while loading"
    if not parent.primary_key:
        return "the referenced table has no primary key"
    refs = [r if r is not None else p for r, p in zip(fk.ref_columns, parent.primary_key, strict=False)]
    if len(fk.columns) != len(parent.primary_key) or {r.lower() for r in refs if r} != {
            p.lower() for p in parent.primary_key}:
        return f"it references ({', '.join(str(r) for r in refs)}), not the primary key"
    pairs = dict(zip((r.lower() for r in refs), fk.columns, strict=True))
    fk.columns = [pairs[p.lower()] for p in parent.primary_key]  # in the primary key's order
    fk.ref_columns = list(parent.primary_key)
    mine = [_column(table, c) for c in fk.columns]
    theirs = [_column(parent, c) for c in fk.ref_columns]
    if any(c is None for c in mine):
        return "a column it names does not exist"
    if any((a.kind, a.size) != (b.kind, b.size) for a, b in zip(mine, theirs, strict=True)):
        if not all(_take_key_type(conn, table, a, b) for a, b in zip(mine, theirs, strict=True)):
            return "the two sides' columns have different types in the copy"
    match = " AND ".join(f"p.{_q(r)} = c.{_q(c)}" for c, r in zip(fk.columns, fk.ref_columns, strict=True))
    present = " AND ".join(f"c.{_q(c)} IS NOT NULL" for c in fk.columns)
    orphans = _count(conn, f"SELECT count(*) FROM {_q(table.name)} c WHERE {present} AND NOT EXISTS "
                           f"(SELECT 1 FROM {_q(parent.name)} p WHERE {match})")
    if orphans and engine == "postgres":  # declared as in SQLite, without checking the rows already there
        fk.unchecked = True
        return None
    return f"{orphans} row(s) reference no row" if orphans else None


def _take_key_type(conn, table: Table, col: Column, ref: Column) -> bool:
    """Give a text column holding only integers (as written: `'7'`, not `'07'`) the integer type of the key it
    references, so that the copy keeps the foreign key, which the engines only accept between columns of one
    type: Spider declares several such columns TEXT (concert.Stadium_ID -> stadium.Stadium_ID), and a schema
    without that reference shows the model one join fewer than SQLite's does."""
    if (col.kind, col.size) == (ref.kind, ref.size):
        return True
    if col.kind != "text" or ref.kind != "bigint":
        return False
    c = _q(col.name)
    odd = _count(conn, f"SELECT count(*) FROM {_q(table.name)} WHERE {c} IS NOT NULL AND NOT (typeof({c}) = "
                       f"'integer' OR (typeof({c}) = 'text' AND {c} GLOB '[0-9]*' AND {c} NOT GLOB '*[^0-9]*' "
                       f"AND CAST(CAST({c} AS INTEGER) AS TEXT) = {c}))")
    if odd:
        return False
    col.kind, col.size, col.cast_text = "bigint", (), False
    col.fallback = f"integers in a {col.declared or 'untyped'} column: bigint, the type of the key it references"
    return True


def creation_order(tables: list[Table]) -> list[Table]:
    """Referenced tables before the tables referencing them; a foreign key closing a cycle is left out."""
    by_name = {t.name: t for t in tables}
    done: list[Table] = []
    state: dict[str, str] = {}

    def visit(t: Table) -> None:
        state[t.name] = "open"
        for fk in list(t.foreign_keys):
            if fk.ref_table == t.name:
                continue
            if state.get(fk.ref_table) == "open":
                t.foreign_keys.remove(fk)
                t.left_out.append(f"foreign key ({', '.join(fk.columns)}) -> {fk.ref_table}: part of a cycle")
            elif fk.ref_table not in state:
                visit(by_name[fk.ref_table])
        state[t.name] = "done"
        done.append(t)

    for t in tables:
        if t.name not in state:
            visit(t)
    return done


# -------------------------------------------------------------------------------------------- targets
class DuckDBTarget:
    """One DuckDB file per database; foreign keys inline (DuckDB has no ALTER TABLE ... ADD FOREIGN KEY)."""

    engine = "duckdb"

    def __init__(self, path: Path):
        import duckdb

        self.duckdb = duckdb
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in (path, Path(f"{path}.wal")):
            old.unlink(missing_ok=True)
        self.path = path
        self.conn = duckdb.connect(str(path))

    def name(self, name: str) -> str:
        return _q(name)

    col = name

    def create(self, table: Table, *, keys: bool) -> None:
        self.conn.execute(create_sql(self, table, keys=keys))

    def insert(self, table: Table, rows) -> None:
        cols = ", ".join(self.name(c.name) for c in table.columns)
        one = "(" + ", ".join("?" * len(table.columns)) + ")"
        self.conn.execute("BEGIN")
        try:
            for chunk in rows:
                sql = f"INSERT INTO {self.name(table.name)} ({cols}) VALUES " + ", ".join([one] * len(chunk))
                self.conn.execute(sql, [v for row in chunk for v in row])
            self.conn.execute("COMMIT")
        except Exception:
            self.conn.execute("ROLLBACK")
            raise

    def drop(self, table: Table) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.name(table.name)}")

    def add_foreign_keys(self, table: Table) -> None:  # created with the table
        pass

    def finish(self) -> None:
        self.conn.execute("CHECKPOINT")
        self.conn.close()

    error = property(lambda self: self.duckdb.Error)


class PostgresTarget:
    """One schema per database, names in lower case; rows by COPY; foreign keys added after the rows."""

    engine = "postgres"

    def __init__(self, conn, schema: str):
        import psycopg

        self.psycopg = psycopg
        self.conn = conn
        self.schema = schema
        with conn.transaction():
            conn.execute(f"DROP SCHEMA IF EXISTS {_q(schema)} CASCADE")
            conn.execute(f"CREATE SCHEMA {_q(schema)}")

    def name(self, name: str) -> str:
        return f"{_q(self.schema)}.{_q(name.lower())}"

    def col(self, name: str) -> str:
        return _q(name.lower())

    def create(self, table: Table, *, keys: bool) -> None:
        with self.conn.transaction():
            self.conn.execute(create_sql(self, table, keys=keys, foreign=False))

    def insert(self, table: Table, rows) -> None:
        cols = ", ".join(self.col(c.name) for c in table.columns)
        with self.conn.transaction(), self.conn.cursor() as cur:
            with cur.copy(f"COPY {self.name(table.name)} ({cols}) FROM STDIN") as copy:
                for chunk in rows:
                    for row in chunk:
                        copy.write_row(row)

    def drop(self, table: Table) -> None:
        with self.conn.transaction():
            self.conn.execute(f"DROP TABLE IF EXISTS {self.name(table.name)} CASCADE")

    def add_foreign_keys(self, table: Table) -> None:
        for fk in list(table.foreign_keys):
            try:
                with self.conn.transaction():
                    self.conn.execute(
                        f"ALTER TABLE {self.name(table.name)} ADD FOREIGN KEY ({', '.join(self.col(c) for c in fk.columns)}) "
                        f"REFERENCES {self.name(fk.ref_table)} ({', '.join(self.col(c) for c in fk.ref_columns)})"
                        + (" NOT VALID" if fk.unchecked else ""))
            except self.psycopg.Error as exc:
                table.foreign_keys.remove(fk)
                table.left_out.append(f"foreign key ({', '.join(fk.columns)}) -> {fk.ref_table}: "
                                      f"{' '.join(str(exc).split())[:160]}")

    def finish(self) -> None:
        pass

    error = property(lambda self: self.psycopg.Error)


def create_sql(target, table: Table, *, keys: bool, foreign: bool = True) -> str:
    col = target.col
    types = ENGINE_TYPES[target.engine]
    parts = [f"{col(c.name)} {types[c.kind].format(*c.size)}" + (" NOT NULL" if c.not_null else "")
             for c in table.columns]
    if keys and table.primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(col(c) for c in table.primary_key)})")
    if keys and foreign:
        parts += [f"FOREIGN KEY ({', '.join(col(c) for c in fk.columns)}) REFERENCES {target.name(fk.ref_table)} "
                  f"({', '.join(col(c) for c in fk.ref_columns)})" for fk in table.foreign_keys]
    return f"CREATE TABLE {target.name(table.name)} ({', '.join(parts)})"


# -------------------------------------------------------------------------------------------- loading
def load_database(sqlite_path: Path, target) -> dict:
    """Copy one SQLite database into `target` (a DuckDBTarget or PostgresTarget); what was done, as data."""
    start = time.perf_counter()
    conn = connect_readonly(sqlite_path)
    replaced = [0]

    def text(b: bytes) -> str:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            replaced[0] += 1
            return b.decode("utf-8", errors="replace")

    conn.text_factory = text
    try:
        tables, notes = read_tables(conn, target.engine)
        check_keys(conn, tables, target.engine)
        # PostgreSQL adds the foreign keys once every table exists, so its tables are made in SQLite's order,
        # the order its catalogue then lists them in (and the model reads them in); DuckDB needs parents first
        ordered = creation_order(tables) if target.engine == "duckdb" else tables
        created: dict[str, bool] = {}  # table -> created with its primary key
        for t in ordered:
            if target.engine == "duckdb":  # a parent that lost its primary key cannot be referenced
                for fk in [fk for fk in t.foreign_keys if not created.get(fk.ref_table, False)]:
                    t.foreign_keys.remove(fk)
                    t.left_out.append(f"foreign key ({', '.join(fk.columns)}) -> {fk.ref_table}: the referenced "
                                      "table was created without its primary key")
            converters = [_convert(c, target.engine) for c in t.columns]
            select = ", ".join(f"CAST({_q(c.name)} AS TEXT)" if c.cast_text else _q(c.name) for c in t.columns)

            def rows(t=t, converters=converters, select=select):
                cur = conn.execute(f"SELECT {select} FROM {_q(t.name)}")
                while chunk := cur.fetchmany(BATCH_ROWS):
                    yield [tuple(f(v) for f, v in zip(converters, row, strict=True)) for row in chunk]

            try:
                target.create(t, keys=True)
                target.insert(t, rows())
                created[t.name] = True
            except target.error as exc:  # a key the engine refused after all: the table without its keys
                reason = " ".join(str(exc).split())[:200]
                target.drop(t)
                if t.primary_key or t.foreign_keys:
                    t.left_out.append(f"all keys ({reason})")
                    t.primary_key, t.foreign_keys = [], []
                target.create(t, keys=False)
                target.insert(t, rows())
                created[t.name] = False
        for t in ordered:
            target.add_foreign_keys(t)
        target.finish()
    finally:
        conn.close()
    return {
        "tables": len(tables), "rows": sum(t.rows for t in tables), "seconds": round(time.perf_counter() - start, 2),
        "primary_keys": sum(bool(t.primary_key) for t in tables),
        "foreign_keys": sum(len(t.foreign_keys) for t in tables),
        "fallbacks": [{"table": t.name, "column": c.name, "declared": c.declared,
                       "type": ENGINE_TYPES[target.engine][c.kind].format(*c.size), "why": c.fallback}
                      for t in tables for c in t.columns if c.fallback],
        "keys_left_out": [{"table": t.name, "what": why} for t in tables for why in t.left_out],
        "text_not_utf8": replaced[0], "notes": notes,
        "types": {t.name: {c.name: ENGINE_TYPES[target.engine][c.kind].format(*c.size) for c in t.columns}
                  for t in tables},
    }


# ------------------------------------------------------------------------------------------ agreement
def transpile(gold: str, dialect: str, schema, *, typed: bool) -> tuple[str | None, str | None, bool]:
    """(the gold SQL in `dialect`, why it could not be written, whether the typed path was used).

    Read as SQLite, double-quoted names that are no column made strings (as SQLite reads them); with
    `typed`, qualified and typed against the copy's schema (so sqlglot can keep integer division), falling
    back to the plain tree where qualifying fails. PostgreSQL's names are lower case (see load)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ErrorLevel

    from macsql.sql import double_quoted_strings, parse_error, parse_query, sqlglot_schema

    tree = parse_query(gold, "sqlite")
    if tree is None:
        return None, parse_error(gold, "sqlite"), False
    columns = {c.name.lower() for t in schema.tables for c in t.columns}
    tree = double_quoted_strings(tree, gold, columns)
    used_types = False
    if typed:
        from sqlglot.optimizer.annotate_types import annotate_types
        from sqlglot.optimizer.qualify import qualify

        mapping = sqlglot_schema(schema)
        try:
            tree = annotate_types(qualify(tree.copy(), schema=mapping, dialect="sqlite", quote_identifiers=False,
                                          identify=False), schema=mapping, dialect="sqlite")
            used_types = True
        except (sqlglot.errors.SqlglotError, KeyError, ValueError, RecursionError):
            pass
    if dialect == "postgres":
        for ident in tree.find_all(exp.Identifier):
            ident.set("this", ident.this.lower())
    try:
        return tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE), None, used_types
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError) as exc:
        return None, " ".join(str(exc).split())[:200] or type(exc).__name__, used_types


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _row_key(row) -> tuple:
    return tuple((0, float(v), "") if _number(v) else (1, 0.0, str(v)) for v in row)


def without_limit(sql: str, dialect: str) -> str | None:
    """`sql` without its outermost LIMIT (None when it has none): which tied rows a LIMIT keeps is the
    engine's choice, so results that agree without it differ only there."""
    from macsql.sql import parse_query

    tree = parse_query(sql, dialect)
    if tree is None or not tree.args.get("limit") or not tree.args.get("order"):
        return None
    tree.set("limit", None)
    return tree.sql(dialect=dialect)


def classify(gold, got, gold_sql: str, engine_sql: str, rerun, run_gold, dialect: str) -> tuple[str, str]:
    """Why the engine's result `got` differs from SQLite's `gold` (both ExecResults): a category, a detail.
    `rerun(sql)` runs SQL on the engine, `run_gold(sql)` on SQLite."""
    if not got.ok:
        message = got.error or ""
        low = message.lower()
        if got.timed_out:
            return "timeout", message
        if "group by" in low and ("must appear" in low or "aggregate" in low):
            return "bare column with GROUP BY (a SQLite extension)", message
        if any(w in low for w in ("out of range", "overflow")):
            return "type difference (integer overflow)", message
        if any(w in low for w in ("operator does not exist", "no function matches", "cannot compare", "conversion error",
                                  "invalid input syntax", "could not convert", "cannot mix", "implicit cast",
                                  "type mismatch", "argument of", "could not choose a best candidate")) or (
                low.startswith("function ") and "does not exist" in low):
            return "type difference (operator or function on the copy's types)", message
        if any(w in low for w in ("does not exist", "not found", "referenced column")):
            return "name unknown to the engine", message
        return "engine error", message
    gold_rows, got_rows = list(gold.rows), list(got.rows)
    if Counter(gold_rows) == Counter(got_rows):
        return "ordering (ties or NULL placement under ORDER BY)", ""
    if gold.truncated or got.truncated:
        return "row cap", ""
    if len(gold_rows) == len(got_rows) and gold_rows and len(gold_rows[0]) == len(got_rows[0]):
        pairs = [(a, b) for ra, rb in zip(sorted(gold_rows, key=_row_key), sorted(got_rows, key=_row_key), strict=True)
                 for a, b in zip(ra, rb, strict=True) if a != b]
        if pairs and all(_number(a) and _number(b) for a, b in pairs):
            if all(isinstance(a, int) and isinstance(b, float) and math.trunc(b) == a for a, b in pairs):
                return "integer division", f"SQLite {pairs[0][0]!r}, engine {pairs[0][1]!r}"
            if all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in pairs):
                return "float rounding", f"SQLite {pairs[0][0]!r}, engine {pairs[0][1]!r}"
        if pairs and all(str(a) == str(b) or str(a).lower() == str(b).lower() for a, b in pairs):
            return "type difference (values print alike)", f"SQLite {pairs[0][0]!r}, engine {pairs[0][1]!r}"
        if pairs:
            detail = f"SQLite {pairs[0][0]!r}, engine {pairs[0][1]!r}"
        else:
            detail = ""
    else:
        detail = f"SQLite {len(gold_rows)} row(s), engine {len(got_rows)}"
    unlimited = without_limit(gold_sql, "sqlite"), without_limit(engine_sql, dialect)
    if all(unlimited):
        a, b = run_gold(unlimited[0]), rerun(unlimited[1])
        if a.ok and b.ok and Counter(a.rows) == Counter(b.rows):
            return "ordering (which ties ORDER BY ... LIMIT keeps)", detail
    if re.search(r"\bsubstr\w*\s*\([^,()]+,\s*-\s*\d", gold_sql, re.IGNORECASE):
        return "function semantics (SUBSTR with a negative start)", detail
    if re.search(r"\bLIKE\b", engine_sql, re.IGNORECASE):
        again = rerun(re.sub(r"\bLIKE\b", "ILIKE", engine_sql, flags=re.IGNORECASE))
        if again.ok and Counter(again.rows) == Counter(gold_rows):
            return "case-sensitive LIKE", detail
    return "different rows", detail


def agreement(examples, engine: str, spec_for, *, typed: bool, timeout_s: float, schemas: dict) -> dict:
    """Transpile, run and compare every example's gold SQL; the figures and the disagreements."""
    from macsql.compare import compare_results
    from macsql.engines import open_database
    from macsql.sqlexec import execute

    counts = Counter()
    categories: Counter = Counter()
    disagreements = []
    for e in examples:
        counts["questions"] += 1
        db = open_database(spec_for(e.db_id))
        gold = execute(e.db_path, e.gold_sql, timeout_s=timeout_s, max_rows=MAX_ROWS)
        sql, problem, used_types = transpile(e.gold_sql, engine, schemas[e.db_id], typed=typed)
        counts["typed"] += used_types
        record = {"question_id": e.question_id, "db_id": e.db_id, "gold_sql": e.gold_sql, "engine_sql": sql}
        if not gold.ok:
            category, detail = "gold fails on SQLite", gold.error
        elif sql is None:
            category, detail = "transpile failure", problem
        else:
            counts["transpiled"] += 1
            got = db.execute(sql, timeout_s=timeout_s, max_rows=MAX_ROWS)
            counts["ran"] += got.ok
            match = compare_results(got, gold, e.gold_sql)
            if match.ex_bird and match.ex_spider:
                counts["agreed"] += 1
                continue

            def rerun(text: str, db=db):
                return db.execute(text, timeout_s=timeout_s, max_rows=MAX_ROWS)

            def run_gold(text: str, path=e.db_path):
                return execute(path, text, timeout_s=timeout_s, max_rows=MAX_ROWS)

            category, detail = classify(gold, got, e.gold_sql, sql, rerun, run_gold, engine)
        categories[category] += 1
        disagreements.append({**record, "category": category, "detail": (detail or "")[:300]})
    return {**{k: counts[k] for k in ("questions", "transpiled", "ran", "agreed", "typed")},
            "categories": dict(categories.most_common()), "disagreements": disagreements}


# ----------------------------------------------------------------------------------------------- main
def _throwaway():
    from tests.pg_server import READER, READER_PASSWORD, Unavailable, start_server

    try:
        server = start_server()
    except Unavailable as exc:
        raise SystemExit(f"no PostgreSQL server: {exc}") from None
    server.script("CREATE DATABASE benchmarks", dbname="postgres")
    server.script(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'; "
                  f"GRANT CONNECT ON DATABASE benchmarks TO {READER}", dbname="benchmarks")
    return server, server.superuser("benchmarks"), server.url("benchmarks"), READER


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="BIRD or Spider dev.json")
    ap.add_argument("--db-root", default=None, help="<db_id>/<db_id>.sqlite folder (default: beside --data)")
    ap.add_argument("--engine", required=True, choices=("duckdb", "postgres"))
    ap.add_argument("--out", required=True,
                    help="the report goes here, and DuckDB's copies: <out>/<db_id>/<db_id>.duckdb")
    ap.add_argument("--url", default=None, help="PostgreSQL: a database to load one schema per db_id into")
    ap.add_argument("--throwaway", action="store_true", help="PostgreSQL: a throwaway server (tests/pg_server.py)")
    ap.add_argument("--grant", default=None, metavar="ROLE", help="PostgreSQL --url: give ROLE read access")
    ap.add_argument("--db-id", action="append", default=[], help="only these databases (repeatable)")
    ap.add_argument("--no-load", action="store_true", help="use the copies already loaded")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    args = ap.parse_args(argv)
    from macsql.engines import close_all
    from macsql.engines.postgres import split_url
    from macsql.evaluate.datasets import load_examples

    if args.engine == "postgres" and bool(args.url) == bool(args.throwaway):
        ap.error("--engine postgres needs --url URL or --throwaway")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    examples = [e for e in load_examples(args.data, args.db_root) if not args.db_id or e.db_id in args.db_id]
    present = sorted({e.db_id for e in examples if Path(e.db_path).is_file()})
    skipped = Counter(e.db_id for e in examples if e.db_id not in present)
    examples = [e for e in examples if e.db_id in present]
    paths = {e.db_id: Path(e.db_path) for e in examples}
    server = conn = None
    role = args.grant
    if args.engine == "postgres":
        if args.throwaway:
            server, conn, url, role = _throwaway()
        else:
            import psycopg

            url = args.url
            conn = psycopg.connect(split_url(url)[0], autocommit=True)
    try:
        loads = {}
        for db_id in present:
            if args.no_load:
                continue
            if args.engine == "duckdb":
                target = DuckDBTarget(duckdb_copy(out, db_id))
                described = paths[db_id].parent / "database_description"
                if described.is_dir():
                    shutil.copytree(described, duckdb_copy(out, db_id).parent / "database_description",
                                    dirs_exist_ok=True)
            else:
                target = PostgresTarget(conn, db_id)
            loads[db_id] = load_database(paths[db_id], target)
            if args.engine == "postgres" and role:
                conn.execute(f"GRANT USAGE ON SCHEMA {_q(db_id)} TO {_q(role)}; "
                             f"GRANT SELECT ON ALL TABLES IN SCHEMA {_q(db_id)} TO {_q(role)}")
            got = loads[db_id]
            print(f"loaded {db_id}: {got['tables']} tables, {got['rows']} rows in {got['seconds']}s; "
                  f"{len(got['fallbacks'])} fallback(s), {len(got['keys_left_out'])} key(s) left out", file=sys.stderr)

        def spec_for(db_id: str) -> str:
            return str(duckdb_copy(out, db_id)) if args.engine == "duckdb" else postgres_copy(url, db_id)

        from macsql.engines import open_database

        schemas = {db_id: open_database(spec_for(db_id)).introspect() for db_id in present}
        modes = {}
        for mode, typed in (("sqlglot", False), ("sqlglot+types", True)):
            start = time.perf_counter()
            modes[mode] = agreement(examples, args.engine, spec_for, typed=typed, timeout_s=args.timeout,
                                    schemas=schemas)
            modes[mode]["seconds"] = round(time.perf_counter() - start, 1)
        close_all()
    finally:
        if conn is not None:
            conn.close()
        if server is not None:
            server.stop()
    report = {"engine": args.engine, "data": str(Path(args.data).resolve()), "databases": present,
              "skipped": {"databases": sorted(skipped), "questions": sum(skipped.values()),
                          "why": "no SQLite file under the database folder"},
              "location": str(out.resolve()) if args.engine == "duckdb" else split_url(url)[2],
              "loads": loads, "agreement": modes}
    data = Path(args.data).resolve()
    path = out / f"agreement-{args.engine}-{data.parent.name}-{data.stem}.json"  # Spider's and BIRD's side by side
    path.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    print(f"report: {path}")


def print_report(report: dict) -> None:
    from benchmarks.common import table

    loads = report["loads"]
    if loads:
        print(f"{report['engine']}: {len(loads)} databases, {sum(x['tables'] for x in loads.values())} tables, "
              f"{sum(x['rows'] for x in loads.values())} rows in {sum(x['seconds'] for x in loads.values()):.1f}s; "
              f"{sum(len(x['fallbacks']) for x in loads.values())} column fallback(s), "
              f"{sum(x['primary_keys'] for x in loads.values())} primary and "
              f"{sum(x['foreign_keys'] for x in loads.values())} foreign keys created, "
              f"{sum(len(x['keys_left_out']) for x in loads.values())} key(s) left out")
        for db_id, x in loads.items():
            for f in x["fallbacks"]:
                print(f"  fallback {db_id}.{f['table']}.{f['column']} {f['declared']} -> {f['type']}: {f['why']}")
    if report["skipped"]["questions"]:
        print(f"skipped {report['skipped']['questions']} questions on {len(report['skipped']['databases'])} "
              "databases without a SQLite file")
    rows = [(report["engine"], mode, m["questions"], m["transpiled"], m["ran"], m["agreed"],
             f"{100 * m['agreed'] / m['questions']:.1f}" if m["questions"] else "-")
            for mode, m in report["agreement"].items()]
    table(("engine", "transpiled by", "questions", "transpiled", "ran", "agreed", "agreed %"), rows)
    for mode, m in report["agreement"].items():
        print(f"{mode}: " + "; ".join(f"{k} {v}" for k, v in m["categories"].items()))
        by = defaultdict(list)
        for d in m["disagreements"]:
            by[d["category"]].append(d["question_id"])
        for category, ids in by.items():
            print(f"  {category}: {', '.join(ids[:40])}{' ...' if len(ids) > 40 else ''}")


if __name__ == "__main__":
    main()


"""Schema introspection and THE schema renderer (used at inference and when building training prompts).

`introspect(db)` reads tables, columns, types, keys, a few representative values per column and, when a BIRD
`database_description/` folder sits beside the database, the column descriptions. Results are cached per
database file (path + mtime + size) in memory and on disk, so a second `ask` on a big database costs
milliseconds. Another engine's database (a `macsql.engines.Database`: a DuckDB file, CSV/Parquet files, a
PostgreSQL URL) is read by its engine (`Database.introspect`) and cached the same way, by its `identity()`;
callers open it (`open_database`) and pass it in. Value sampling reads at most `SAMPLE_SCAN_ROWS` rows per column, so a multi-million-row table
costs no more than a small one. It reads through the executor's connection and deadline: a view that never
finishes, or that names a table, function or module that is gone, is left out with a note (`Schema.notes`),
and the rest of the database stays usable, as it does for `execute()`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from macsql.cache import cache_root
from macsql.sqlexec import DEFAULT_TIMEOUT_S, Deadline, check_timeout, connect_readonly

SAMPLE_SCAN_ROWS = 2000  # rows read per column when sampling values (bounded work on huge tables)
SMALL_TABLE_ROWS = 10  # all values of a table this small count as categories (lookup tables, codes)
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 40
INTROSPECT_BUSY_S = 2.0  # how long to wait for a writer's lock before saying the database is locked
CACHE_VERSION = 8  # 8: PostgreSQL tables in creation order, the schema's dialect; 7: compound/implicit foreign keys, views, generated columns, no FTS shadow tables
# Column names whose values carry no meaning for a prompt (identifiers, links, blobs).
_NO_EXAMPLE_NAME = re.compile(r"(^id$|_id$|^id_|uuid|guid|url|uri|link|href|image|photo|blob|hash|token)", re.I)

Selection = dict[str, list[str]]  # table -> kept columns, in schema order
# Prompt compaction, measured with benchmarks/bench_ask.py --prompt-variant full (see benchmarks/README.md):
# numeric columns get no value examples (`Capacity INT -- e.g. 2000, 3100, 3808` tells a model little), and
# free-text columns whose values never repeat (names, addresses, phones, timestamps) get one, which shows
# the format. Categories keep MAX_EXAMPLES: they show how the values a question filters on are spelled.
NUMERIC_EXAMPLES = False
FREE_TEXT_EXAMPLES = 1
_NUMERIC_TYPE = re.compile(r"INT|REAL|FLOA|DOUB|DEC|NUM", re.I)


@dataclass
class Column:
    name: str
    type: str = ""
    examples: list[str] = field(default_factory=list)
    description: str = ""
    value_description: str = ""
    # Whether sampled values repeat (a category: 'France', 'M') rather than being all different (names,
    # addresses, timestamps). Free text gets one example in prompts: it shows the format; more cost tokens.
    repeats: bool = True
    generated: bool = False  # GENERATED ALWAYS AS (...): readable, computed from other columns


@dataclass
class ForeignKey:
    column: str
    ref_table: str
    ref_column: str


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    kind: str = "table"  # or "view"

    def column(self, name: str) -> Column | None:
        low = name.lower()
        return next((c for c in self.columns if c.name.lower() == low), None)


@dataclass
class Schema:
    db_id: str
    tables: list[Table]
    notes: list[str] = field(default_factory=list)  # what introspection left out, and why (one line each)
    dialect: str = "sqlite"  # the engine that read it (sqlglot's name): which names the rendering must quote

    def table(self, name: str) -> Table | None:
        low = name.lower().strip('`"[]')
        return next((t for t in self.tables if t.name.lower() == low), None)

    @property
    def n_columns(self) -> int:
        return sum(len(t.columns) for t in self.tables)

    def full_selection(self) -> Selection:
        return {t.name: [c.name for c in t.columns] for t in self.tables}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        tables = [
            Table(
                name=t["name"],
                columns=[Column(**c) for c in t["columns"]],
                primary_key=list(t.get("primary_key", [])),
                foreign_keys=[ForeignKey(**fk) for fk in t.get("foreign_keys", [])],
                kind=t.get("kind", "table"),
            )
            for t in data["tables"]
        ]
        return cls(db_id=data["db_id"], tables=tables, notes=list(data.get("notes", [])),
                   dialect=data.get("dialect", "sqlite"))


_MEMORY_CACHE: dict[tuple, Schema] = {}


def _cache_dir() -> Path:
    return cache_root() / "schema"


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size, CACHE_VERSION)


def _engine(db):
    """`db` when it is another engine's `Database`, None for a SQLite file's path (read here). The engines
    build on this module, so it takes their databases opened, never opening one itself."""
    return None if isinstance(db, (str, os.PathLike)) else db


def cache_file(db_path, kind: str = "schema") -> Path:
    """Where facts about one version of a database file are cached (`kind`: schema, values, ...): the key
    holds the path, mtime and size, so an edited database is read again (another engine's: its identity)."""
    database = _engine(db_path)
    if database is not None:
        digest = hashlib.sha256(repr((database.identity(), CACHE_VERSION)).encode()).hexdigest()[:24]
        suffix = "" if kind == "schema" else f".{kind}"
        return _cache_dir() / f"{database.dialect}-{database.name}-{digest}{suffix}.json"
    path = Path(db_path).resolve()
    digest = hashlib.sha256(repr(_file_key(path)).encode()).hexdigest()[:24]
    suffix = "" if kind == "schema" else f".{kind}"
    return _cache_dir() / f"{path.stem}-{digest}{suffix}.json"


def _recall(key, disk: Path) -> Schema | None:
    """The schema cached on disk under `disk` (then kept in memory under `key`), or None."""
    if not disk.exists():
        return None
    try:
        schema = Schema.from_dict(json.loads(disk.read_text()))
    except (ValueError, KeyError, TypeError):
        return None  # stale or corrupt cache file: rebuilt by the caller
    _MEMORY_CACHE[key] = schema
    return schema


def _remember(key, disk: Path, schema: Schema) -> None:
    _MEMORY_CACHE[key] = schema
    try:
        disk.parent.mkdir(parents=True, exist_ok=True)
        tmp = disk.with_suffix(".tmp")
        tmp.write_text(json.dumps(schema.to_dict()))
        tmp.replace(disk)
    except OSError:
        pass  # a read-only home still works, just without the disk cache


def introspect(db_path, *, cache: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S) -> Schema:
    """The schema of a SQLite database, with sampled values and BIRD descriptions when present.

    Reading it takes at most `timeout_s` (the executor's deadline, enforced inside SQLite): the catalogue
    first, then the tables' samples, then the views', each view with the time left; a view that fails or
    runs out of time is left out, with a note in `Schema.notes`. Another engine's `Database`
    (`macsql.engines.open_database`) is read by its engine within the same deadline, cached by its identity.
    """
    database = _engine(db_path)
    if database is not None:
        return _introspect_engine(database, cache=cache, timeout_s=timeout_s)
    path = Path(db_path).resolve()
    timeout_s = check_timeout(timeout_s)
    conn = connect_readonly(path, busy_timeout_s=INTROSPECT_BUSY_S)  # validates the path first
    key = _file_key(path)
    if cache and key in _MEMORY_CACHE:
        conn.close()
        return _MEMORY_CACHE[key]
    disk = cache_file(path)
    schema = _recall(key, disk) if cache else None
    if schema is not None:
        conn.close()
        return schema
    import sqlite_utils  # noqa: F401 - imported before the clock starts: the deadline is for reading

    from macsql.errors import DatabaseError
    from macsql.sqlexec import unusable_database_message

    deadline = Deadline(timeout_s).attach(conn)
    try:
        schema = _read_schema(conn, path, deadline)
    except sqlite3.DatabaseError as exc:  # corrupt, truncated, locked or mid-write: one line, not a traceback
        if deadline.timed_out:
            raise DatabaseError(f"reading the schema of {str(path)!r} took longer than the {deadline.seconds:g}s "
                                f"deadline; check the file with `sqlite3 {shlex.quote(str(path))} 'PRAGMA "
                                "quick_check'`") from exc
        raise DatabaseError(unusable_database_message(path, exc)) from exc
    finally:
        conn.close()
    _add_descriptions(schema, path.parent / "database_description")
    if cache:
        _remember(key, disk, schema)
    return schema


def _introspect_engine(database, *, cache: bool, timeout_s: float) -> Schema:
    timeout_s = check_timeout(timeout_s)
    key = (database.identity(), CACHE_VERSION)
    if cache and key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    disk = cache_file(database)
    schema = _recall(key, disk) if cache else None
    if schema is not None:
        return schema
    schema = database.introspect(timeout_s=timeout_s)
    if cache:
        _remember(key, disk, schema)
    return schema


def quote_name(name: str) -> str:
    """An SQLite identifier in double quotes, inner quotes doubled (safe in generated SQL)."""
    return '"' + name.replace('"', '""') + '"'


# Shadow tables a full-text index keeps beside its virtual table (FTS3/4/5): storage, not data to query.
_FTS_SHADOW_SUFFIXES = ("_data", "_idx", "_content", "_docsize", "_config", "_segments", "_segdir", "_stat")
_VIRTUAL_FTS = re.compile(r"(?is)\s*CREATE\s+VIRTUAL\s+TABLE\s+.*?\bUSING\s+fts[345]\b")


def _read_schema(conn, path: Path, deadline: Deadline | None = None) -> Schema:
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    fts = [name for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
           if _VIRTUAL_FTS.match(sql or "")]
    shadows = {f"{t}{suffix}".lower() for t in fts for suffix in _FTS_SHADOW_SUFFIXES}
    tables, notes = [], []
    # The catalogue of every table and view first (quick: views are compiled, not run), then the samples:
    # the tables' (bounded reads), then the views' with the time left, since a view may run for ever.
    for name, kind in [(n, "table") for n in db.table_names()] + [(n, "view") for n in db.view_names()]:
        if name.startswith("sqlite_") or name.lower() in shadows:
            continue
        # table_xinfo, unlike table_info, lists generated columns (hidden 2: virtual, 3: stored)
        try:
            info = conn.execute(f"PRAGMA table_xinfo({quote_name(name)})").fetchall()
        except sqlite3.OperationalError as exc:
            if not _names_something_missing(exc):
                raise  # locked, unreadable or mid-write: the whole file, said by the caller
            # a view over a dropped table or an unknown function, a virtual table whose module is not
            # loaded: a query on it fails the same way, and the rest of the database is fine
            notes.append(f"{kind} {name!r} skipped: {_one_line(exc)}")
            continue
        columns = [Column(name=str(c[1]), type=(c[2] or "").upper(), generated=c[6] in (2, 3))
                   for c in info if c[6] != 1]
        pks = [str(c[1]) for c in sorted(info, key=lambda c: c[5]) if c[5]]
        fks = _foreign_keys(db, name) if kind == "table" else []
        tables.append(Table(name=name, columns=columns, primary_key=pks, foreign_keys=fks, kind=kind))
    for table in [t for t in tables if t.kind == "table"]:
        _sample_table(conn, table)
    views = [t for t in tables if t.kind == "view"]
    for i, view in enumerate(views):
        # each view gets an equal share of the time left (a cheap one hands most of its share on), so one
        # view that never ends cannot starve the others
        share = deadline.remaining() / (len(views) - i) if deadline is not None else None
        if share is not None and share <= 0:
            notes.append(f"view {view.name!r}: no value examples (the {deadline.seconds:g}s deadline ran out "
                         "before it was sampled)")
            continue
        own = Deadline(share).attach(conn) if share is not None else None
        try:
            _sample_table(conn, view, strict=True)
        except Exception as exc:  # noqa: BLE001 - whatever stops a view's first rows, it is left out
            if own is not None and own.timed_out:
                reason = (f"its first {SAMPLE_SCAN_ROWS} rows took longer than {own.seconds:.3g}s (its share of "
                          f"the {deadline.seconds:g}s deadline)")
            else:
                reason = _one_line(exc)
            notes.append(f"view {view.name!r} skipped: {reason}")
            tables.remove(view)
    return Schema(db_id=path.stem, tables=tables, notes=notes)


def _sample_table(conn, table: Table, *, strict: bool = False,
                  errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,), interrupted=None) -> None:
    """Value examples of every column but identifiers and blobs, from the table's first rows; `strict` (views):
    raise when the rows themselves fail or run out of time, instead of leaving the columns without examples
    (one column whose values fail, e.g. json_extract over bad JSON, still only loses its examples). Another
    engine passes its own `errors` (the classes a failing column raises) and `interrupted` (whether one of them
    is its deadline's stop, which must go on up); this module does not import the engines' drivers."""
    try:
        n_rows = conn.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {quote_name(table.name)} "
                              f"LIMIT {SAMPLE_SCAN_ROWS})").fetchone()[0]
    except Exception:  # noqa: BLE001 - a virtual table whose module is missing, a broken view
        if strict:
            raise
        n_rows = 0
    for col in table.columns:
        if skips_examples(col):
            continue
        try:
            col.examples, col.repeats = _sample_values(conn, table.name, col.name, n_rows, strict=strict)
        except errors as exc:
            if (interrupted or _interrupted)(exc):
                raise  # the deadline: the view's rows take too long
            col.examples, col.repeats = [], True


def _names_something_missing(exc: sqlite3.OperationalError) -> bool:
    """Whether compiling one table or view failed on a name it uses (no such table, column, function or
    module: SQLITE_ERROR), rather than on the file (locked, corrupt, a hot journal)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_ERROR
    return not any(word in str(exc) for word in ("locked", "busy", "readonly", "disk I/O", "interrupted",
                                                 "unable to open"))


def _interrupted(exc: sqlite3.OperationalError) -> bool:
    """Whether the deadline's progress handler stopped the statement (SQLITE_INTERRUPT)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code == sqlite3.SQLITE_INTERRUPT if code is not None else "interrupted" in str(exc)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def skips_examples(col: Column) -> bool:
    """Columns whose values mean nothing to a model (identifiers, links, blobs): no examples, no index."""
    return bool(_NO_EXAMPLE_NAME.search(col.name)) or "BLOB" in col.type


def _foreign_keys(db, table: str) -> list[ForeignKey]:
    """One ForeignKey per referencing column: a compound key gives one per column pair, and a key that names
    no referenced column (`REFERENCES t`) points at t's primary key."""
    out = []
    for fk in db.table(table).foreign_keys:
        columns = list(getattr(fk, "columns", None) or [fk.column])
        others = list(getattr(fk, "other_columns", None) or [fk.other_column])
        if any(o is None for o in others):
            try:
                others = db.table(fk.other_table).pks
            except Exception:  # noqa: BLE001 - the referenced table does not exist
                others = []
        for col, other in zip(columns, others, strict=False):
            if col is not None and other is not None:
                out.append(ForeignKey(str(col), str(fk.other_table), str(other)))
    return out


def _sample_values(conn, table: str, column: str, n_rows: int = 0, *, strict: bool = False
                   ) -> tuple[list[str], bool]:
    """Up to MAX_EXAMPLES distinct, most frequent non-empty values among the first rows of the table, and
    whether they look like a category: some value occurs twice, or the table is a small lookup table (its
    few values are likely what questions filter on). `strict`: a failing read raises (views)."""
    sql = (
        f"SELECT v, COUNT(*) AS n FROM (SELECT {quote_name(column)} AS v FROM {quote_name(table)} "
        f"LIMIT {SAMPLE_SCAN_ROWS}) WHERE v IS NOT NULL AND TRIM(CAST(v AS TEXT)) != '' "
        f"GROUP BY v ORDER BY n DESC, v LIMIT {MAX_EXAMPLES}"
    )
    try:
        rows = conn.execute(sql).fetchall()
    except Exception:  # noqa: BLE001 - odd column types must not break introspection
        if strict:
            raise
        return [], True
    repeats = n_rows <= SMALL_TABLE_ROWS or (bool(rows) and rows[0][1] > 1)
    out = []
    for v, _n in rows:
        if isinstance(v, bytes):
            continue
        text = str(v)
        if len(text) > MAX_EXAMPLE_CHARS:
            continue  # long free text wastes tokens and rarely helps
        out.append(text)
    return out, repeats


def _read_csv_rows(path: Path) -> list[dict]:
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            with path.open(encoding=encoding, newline="") as fh:
                return list(csv.DictReader(fh))
        except UnicodeDecodeError:
            continue
    return []


def _add_descriptions(schema: Schema, folder: Path) -> None:
    """Attach BIRD `database_description/<table>.csv` texts to their columns."""
    if not folder.is_dir():
        return
    for csv_path in folder.glob("*.csv"):
        table = schema.table(csv_path.stem)
        if table is None:
            continue
        for row in _read_csv_rows(csv_path):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            col = table.column(row.get("original_column_name", ""))
            if col is None:
                continue
            desc = row.get("column_description", "")
            if desc and desc.lower() != col.name.lower():
                col.description = " ".join(desc.split())
            col.value_description = " ".join(row.get("value_description", "").split())


def schema_from_tables_json(entry: dict) -> Schema:
    """A Schema (without sampled values) from one Spider/BIRD `tables.json` entry."""
    names = entry.get("table_names_original") or entry["table_names"]
    cols = entry.get("column_names_original") or entry["column_names"]
    types = entry.get("column_types", [])
    tables = [Table(name=n, columns=[]) for n in names]
    flat: list[tuple[int, str]] = []
    for i, (ti, cname) in enumerate(cols):
        flat.append((ti, cname))
        if ti >= 0:
            tables[ti].columns.append(Column(name=cname, type=(types[i] if i < len(types) else "").upper()))
    for pk in entry.get("primary_keys", []):
        for idx in pk if isinstance(pk, list) else [pk]:
            ti, cname = flat[idx]
            tables[ti].primary_key.append(cname)
    for a, b in entry.get("foreign_keys", []):
        (ta, ca), (tb, cb) = flat[a], flat[b]
        tables[ta].foreign_keys.append(ForeignKey(ca, tables[tb].name, cb))
    return Schema(db_id=entry["db_id"], tables=tables)


# SQLite's keywords (sqlite.org/lang_keywords.html): a name spelled like one must be quoted to parse.
_SQLITE_KEYWORDS = frozenset("""
ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY CASCADE
CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP EACH ELSE END ESCAPE
EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM FULL GENERATED GLOB GROUP
GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD INTERSECT INTO IS ISNULL JOIN
KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL NULL NULLS OF OFFSET ON OR ORDER
OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING PRIMARY QUERY RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX
RELEASE RENAME REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN
TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE UPDATE USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW
WITH WITHOUT""".split())
# The other engines' reserved words beyond SQLite's (DuckDB's duckdb_keywords() 'reserved'; PostgreSQL's
# pg_get_keywords() categories R and T): `show` is a table name to SQLite and PostgreSQL and a syntax error
# to DuckDB unless quoted.
_RESERVED = {
    "sqlite": _SQLITE_KEYWORDS,
    "duckdb": _SQLITE_KEYWORDS | frozenset("""
ANALYSE ANY ARRAY ASYMMETRIC BOTH DESCRIBE FALSE FETCH LAMBDA LATERAL LEADING ONLY PIVOT PIVOT_LONGER PIVOT_WIDER
PLACING QUALIFY SHOW SOME SUMMARIZE SYMMETRIC TRAILING TRUE UNPIVOT VARIADIC""".split()),
    "postgres": _SQLITE_KEYWORDS | frozenset("""
ANALYSE ANY ARRAY ASYMMETRIC AUTHORIZATION BINARY BOTH COLLATION CONCURRENTLY CURRENT_CATALOG CURRENT_ROLE
CURRENT_SCHEMA CURRENT_USER FALSE FETCH FREEZE GRANT ILIKE LATERAL LEADING LOCALTIME LOCALTIMESTAMP ONLY OVERLAPS
PLACING SESSION_USER SIMILAR SOME SYMMETRIC TABLESAMPLE TRAILING TRUE USER VARIADIC VERBOSE""".split()),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _render_identifier(name: str | None, dialect: str = "sqlite") -> str:
    """A name as the engine reads it: bare when it is a plain word that is none of its reserved words (and,
    on PostgreSQL, which folds bare names to lower case, has no capital letter), else in double quotes with
    inner quotes doubled. Control characters (a newline in a column name) become a space: the rendered
    schema keeps one column per line, and a model could not type them anyway."""
    name = _CONTROL.sub(" ", str(name or ""))
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.upper() not in _RESERVED.get(dialect, _SQLITE_KEYWORDS) \
            and not (dialect == "postgres" and name != name.lower()):
        return name
    return '"' + name.replace('"', '""') + '"'


def render_schema(
    schema: Schema,
    selection: Selection | None = None,
    *,
    examples: bool = True,
    descriptions: bool = True,
    matches: dict[tuple[str, str], list[str]] | None = None,
) -> str:
    """Render (part of) a schema as compact CREATE TABLE statements with value examples as comments.

    DDL is what code models have seen most; comments carry the examples and BIRD descriptions so a small
    model can match question words to values. `matches` ((table, column) -> stored values) are the values
    the question mentions (macsql.values): listed after the tables as `table.column = 'value'`, spelled as
    stored, so the model filters on the right column with the right literal. They come last, not on their
    column, so that the text up to them is the same for every question on a database: a backend that keeps
    the KV cache of a prompt prefix (llama.cpp) then reads the schema once per database, not once per
    question. The same text is used for inference and for training.
    """
    def ident(name):
        return _render_identifier(name, schema.dialect)

    blocks = []
    for table in schema.tables:
        if selection is not None and table.name not in selection:
            continue
        keep = set(selection[table.name]) if selection is not None else None
        lines = []
        for col in table.columns:
            if keep is not None and col.name not in keep:
                continue
            line = f"  {ident(col.name)} {col.type or 'TEXT'}".rstrip()
            if table.primary_key == [col.name]:
                line += " PRIMARY KEY"
            notes = ["generated from other columns"] if col.generated else []
            if descriptions and col.description:
                notes.append(col.description)
            if descriptions and col.value_description and len(col.value_description) <= 160:
                notes.append(col.value_description)
            if examples and col.examples and (NUMERIC_EXAMPLES or not _only_numbers(col)):
                shown = col.examples if col.repeats else col.examples[:FREE_TEXT_EXAMPLES]
                notes.append("e.g. " + ", ".join(_literal(v) for v in shown))
            # a newline inside a value or description would end the `--` comment and break the DDL
            lines.append((line, _CONTROL.sub(" ", "; ".join(notes))))
        if len(table.primary_key) > 1 and (keep is None or set(table.primary_key) <= keep):
            lines.append((f"  PRIMARY KEY ({', '.join(map(ident, table.primary_key))})", ""))
        seen_fks = set()  # some databases (Spider's dog_kennels) declare the same key twice
        for fk in table.foreign_keys:
            if keep is not None and fk.column not in keep:
                continue
            if selection is not None and fk.ref_table not in selection:
                continue
            if (fk.column, fk.ref_table, fk.ref_column) in seen_fks:
                continue
            seen_fks.add((fk.column, fk.ref_table, fk.ref_column))
            lines.append((
                f"  FOREIGN KEY ({ident(fk.column)}) REFERENCES "
                f"{ident(fk.ref_table)}({ident(fk.ref_column)})",
                "",
            ))
        body = []
        for i, (text, note) in enumerate(lines):
            comma = "," if i < len(lines) - 1 else ""
            body.append(f"{text}{comma} -- {note}" if note else f"{text}{comma}")
        kind = "VIEW" if table.kind == "view" else "TABLE"
        blocks.append(f"CREATE {kind} {ident(table.name)} (\n" + "\n".join(body) + "\n);")
    matched = render_matches(schema, selection, matches)
    return "\n".join(blocks + ([matched] if matched else []))


def render_matches(schema: Schema, selection: Selection | None,
                   matches: dict[tuple[str, str], list[str]] | None) -> str:
    """The question's values on the (kept) columns that hold them, one `table.column = 'value'` line each."""
    lines = []
    for (table_name, column_name), values in (matches or {}).items():
        table = schema.table(table_name)
        column = table.column(column_name) if table is not None else None
        if column is None or (selection is not None and column.name not in selection.get(table.name, ())):
            continue
        shown = ", ".join(_literal(v) for v in values)
        line = (f"-- {_render_identifier(table.name, schema.dialect)}."
                f"{_render_identifier(column.name, schema.dialect)} = {shown}")
        lines.append(_CONTROL.sub(" ", line))
    if not lines:
        return ""
    return "-- Values the question mentions, as stored in the database:\n" + "\n".join(lines)


def _only_numbers(col: Column) -> bool:
    """A numeric column whose examples are all numbers: its examples say little a model can use."""
    return bool(_NUMERIC_TYPE.search(col.type)) and all(_is_number(v) for v in col.examples)


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def _literal(value: str) -> str:
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value.replace("'", "''") + "'"

"""DuckDB behind the database interface: a .duckdb file, and a folder (or glob) of CSV and Parquet files.

Each is built from SQL text in tmp_path. Checked: which engine a `--db` value opens, introspection (tables,
types, keys, value examples), execution (rows as SQLite's executor gives them, the row and byte caps), the
hostile-SQL corpus of test_hostile_sql.py plus DuckDB's own ways out (COPY, ATTACH, INSTALL, LOAD, SET,
PRAGMA, reading an outside file), each refused with its reason and leaving every file and row as it was, a
runaway query stopped by the deadline, and the pipeline end to end with a scripted model."""

import hashlib
from pathlib import Path

import pytest

duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (pip install 'macsql[duckdb]')")

from macsql.backends.base import ScriptedLLM  # noqa: E402
from macsql.engines import check_db, engine_of, open_database  # noqa: E402
from macsql.engines.duckdb import DuckDBDatabase  # noqa: E402
from macsql.engines.sqlite import SQLiteDatabase  # noqa: E402
from macsql.errors import DatabaseError  # noqa: E402
from macsql.pipeline import Pipeline  # noqa: E402
from macsql.schema import introspect, render_schema  # noqa: E402
from tests.conftest import make_db, make_duckdb  # noqa: E402
from tests.test_hostile_sql import CORPUS, WRITE_WORDS  # noqa: E402

SHOP_DUCKDB = """
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name VARCHAR, country VARCHAR);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (customer_id),
                     amount DECIMAL(10, 2), status VARCHAR, placed TIMESTAMP);
CREATE TABLE pair (a INTEGER, b INTEGER, PRIMARY KEY (a, b));
CREATE TABLE link (x INTEGER, y INTEGER, FOREIGN KEY (x, y) REFERENCES pair (a, b));
CREATE VIEW spain AS SELECT * FROM customers WHERE country = 'Spain';
CREATE SCHEMA archive;
CREATE TABLE archive.old (x INTEGER);
CREATE SEQUENCE seq;
INSERT INTO customers VALUES (1, 'Ana', 'Spain'), (2, 'Bo', 'Sweden'), (3, 'Cy', 'Spain');
INSERT INTO orders VALUES (10, 1, 12.50, 'shipped', '2024-01-02 03:04:05'), (11, 1, 3.00, 'pending', NULL),
                          (12, 2, 99.00, 'shipped', '2024-02-03 00:00:00');
INSERT INTO pair VALUES (1, 2);
"""
CONTENT = ("SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), "
           "(SELECT string_agg(name || country, ',' ORDER BY name) FROM customers), "
           "(SELECT sum(order_id) FROM orders)")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def duck_file(tmp_path) -> Path:
    folder = tmp_path / "duck"
    folder.mkdir()
    return make_duckdb(folder / "shop.duckdb", SHOP_DUCKDB)


@pytest.fixture
def data_folder(tmp_path) -> Path:
    """customers.parquet and orders.csv, written by DuckDB's COPY from the same rows."""
    folder = tmp_path / "files"
    folder.mkdir()
    conn = duckdb.connect(":memory:")
    conn.execute(SHOP_DUCKDB)
    conn.execute(f"COPY customers TO '{folder / 'customers.parquet'}' (FORMAT parquet)")
    conn.execute(f"COPY (SELECT order_id, customer_id, amount, status FROM orders) TO '{folder / 'orders.csv'}' "
                 "(HEADER)")
    conn.close()
    return folder


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file beside the databases that no query may read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.csv").write_text("token\nhunter2\n")
    return folder / "secret.csv"


# ------------------------------------------------------------------------------------------- opening
def test_the_db_value_picks_the_engine(tmp_path, duck_file, data_folder, shop_db):
    assert engine_of(duck_file) == "duckdb" and engine_of(data_folder) == "duckdb"
    assert engine_of(f"{data_folder}/*.parquet") == "duckdb" and engine_of(shop_db) == "sqlite"
    assert engine_of("postgresql://ana@db.example/shop") == "postgres" == engine_of("postgres://h/x")
    assert isinstance(open_database(duck_file), DuckDBDatabase)
    assert isinstance(open_database(shop_db), SQLiteDatabase) and open_database(shop_db).dialect == "sqlite"
    glob = open_database(f"{data_folder}/*.parquet")
    assert [t.name for t in glob.introspect().tables] == ["customers"] and glob.name == "files"
    assert check_db(duck_file) == str(duck_file)
    assert open_database(str(duck_file)) is open_database(str(duck_file))  # opened once, kept


def test_bad_values_fail_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    fake = tmp_path / "fake.duckdb"
    fake.write_bytes(b"not a database at all, just text")
    cases = [(empty, "is not a file"), (tmp_path / "nothing" / "*.parquet", "matches no .csv or .parquet file"),
             (tmp_path / "missing.duckdb", "does not exist"), (fake, "is not a DuckDB database"),
             (tmp_path / "missing.sqlite", "does not exist; pass --db PATH to a .sqlite file")]
    for value, message in cases:
        with pytest.raises(DatabaseError, match=message) as info:
            open_database(value)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------- introspection
def test_introspection_of_a_duckdb_file(duck_file):
    schema = open_database(duck_file).introspect()
    tables = {t.name: t for t in schema.tables}
    assert list(tables) == ["customers", "link", "orders", "pair", "spain"]  # tables, then views
    orders = tables["orders"]
    assert [(c.name, c.type) for c in orders.columns] == [
        ("order_id", "INTEGER"), ("customer_id", "INTEGER"), ("amount", "DECIMAL(10,2)"), ("status", "VARCHAR"),
        ("placed", "TIMESTAMP")]
    assert orders.primary_key == ["order_id"] and tables["pair"].primary_key == ["a", "b"]
    assert [(f.column, f.ref_table, f.ref_column) for f in orders.foreign_keys] == [
        ("customer_id", "customers", "customer_id")]
    assert [(f.column, f.ref_column) for f in tables["link"].foreign_keys] == [("x", "a"), ("y", "b")]
    assert tables["spain"].kind == "view" and tables["customers"].kind == "table"
    assert tables["customers"].column("country").examples == ["Spain", "Sweden"]
    assert tables["spain"].column("country").examples == ["Spain"]
    assert schema.db_id == "shop" and any("archive" in note for note in schema.notes)


def test_introspection_of_csv_and_parquet_files(data_folder):
    schema = open_database(data_folder).introspect()
    tables = {t.name: t for t in schema.tables}
    assert list(tables) == ["customers", "orders"] and all(t.kind == "table" for t in tables.values())
    assert [(c.name, c.type) for c in tables["customers"].columns] == [
        ("customer_id", "INTEGER"), ("name", "VARCHAR"), ("country", "VARCHAR")]
    assert [c.name for c in tables["orders"].columns] == ["order_id", "customer_id", "amount", "status"]
    assert tables["orders"].column("status").examples == ["shipped", "pending"]


def test_schema_and_values_are_cached_by_identity(duck_file):
    from macsql.schema import introspect
    from macsql.values import value_index

    db = open_database(duck_file)
    assert introspect(db) is introspect(db)
    index = value_index(str(duck_file))
    assert "Spain" in index.values_of("customers", "country")
    assert [(m.table, m.column, m.value) for m in index.match("customers from spain")] == [
        ("customers", "country", "Spain"), ("spain", "country", "Spain")]


# ---------------------------------------------------------------------------------------- execution
def test_rows_come_back_as_the_sqlite_executor_gives_them(duck_file):
    db = open_database(duck_file)
    result = db.execute("SELECT order_id, amount, placed, status FROM orders ORDER BY order_id")
    assert result.ok and result.columns == ("order_id", "amount", "placed", "status")
    assert result.rows == ((10, 12.5, "2024-01-02 03:04:05", "shipped"), (11, 3, None, "pending"),
                           (12, 99, "2024-02-03 00:00:00", "shipped"))
    assert db.execute("FROM customers SELECT count(*)").rows == ((3,),)  # DuckDB's own syntax reads too
    assert db.execute("SELECT [1, 2] AS l, {'a': 1} AS s").rows == (('[1, 2]', '{"a": 1}'),)


def test_numbers_compare_with_text_as_on_sqlite(duck_file):
    """Model-written SQL rarely casts: a key compared with text binds instead of failing (old_implicit_casting)."""
    db = open_database(duck_file)
    result = db.execute("SELECT name FROM customers WHERE customer_id IN (SELECT '2') OR customer_id = '3' "
                        "ORDER BY name")
    assert result.ok and result.rows == (("Bo",), ("Cy",))


def test_row_and_byte_caps(data_folder):
    db = open_database(data_folder)
    capped = db.execute("SELECT * FROM range(5000)", max_rows=100)
    assert capped.ok and len(capped.rows) == 100 and capped.truncated
    exact = db.execute("SELECT * FROM range(100)", max_rows=100)
    assert len(exact.rows) == 100 and not exact.truncated
    big = db.execute("SELECT repeat('x', 1000) FROM range(5000)", max_bytes=1024 * 1024)
    assert big.error == ("the result is larger than 1 MB; select fewer or smaller values (e.g. add LIMIT, "
                         "leave out blobs)")


# -------------------------------------------------------------------------------------------- hostile
def corpus_writes() -> list[str]:
    """The statements of the SQLite corpus that write, change or reach outside (test_hostile_sql.py)."""
    out, section = [], None
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() and not line.startswith("#") and section == "refuse":
            if any(w in line.upper() for w in WRITE_WORDS) or "BEGIN" in line.upper() or "COMMIT" in line.upper():
                out.append(line)
    return out


# DuckDB's own ways to write, reach outside or change the connection, and what the refusal must say.
ONLY_READS = "only SELECT/WITH queries are allowed"
NO_FILES = "no other files, extensions or settings"
DUCKDB_HOSTILE = [
    ("COPY customers TO '{leak}'", ONLY_READS),
    ("COPY (SELECT * FROM customers) TO '{leak}' (FORMAT parquet)", ONLY_READS),
    ("COPY customers FROM '{secret}'", ONLY_READS),
    ("EXPORT DATABASE '{leak_dir}'", ONLY_READS),
    ("ATTACH '{leak_db}' AS evil", ONLY_READS),
    ("ATTACH ':memory:' AS m", ONLY_READS),
    ("DETACH DATABASE memory", ONLY_READS),
    ("INSTALL httpfs", ONLY_READS),
    ("LOAD httpfs", ONLY_READS),
    ("SET enable_external_access = true", ONLY_READS),
    ("SET lock_configuration = false", ONLY_READS),
    ("RESET memory_limit", ONLY_READS),
    ("PRAGMA enable_profiling", ONLY_READS),
    ("PRAGMA memory_limit = '100GB'", ONLY_READS),
    ("CHECKPOINT", ONLY_READS),
    ("CALL pragma_version()", ONLY_READS),
    ("USE memory", ONLY_READS),
    ("CREATE MACRO twice(a) AS a * 2", ONLY_READS),
    ("CREATE OR REPLACE VIEW customers AS SELECT 1 AS x", ONLY_READS),
    ("SUMMARIZE customers", ONLY_READS),
    ("SELECT * FROM read_csv('{secret}')", NO_FILES),
    ("SELECT * FROM read_csv_auto('{secret}')", NO_FILES),
    ("SELECT * FROM read_text('{secret}')", NO_FILES),
    ("SELECT * FROM read_blob('{secret}')", NO_FILES),
    ("SELECT * FROM '{secret}'", NO_FILES),
    ("SELECT * FROM glob('{outside_dir}/*')", NO_FILES),
    ("SELECT * FROM sniff_csv('{secret}')", NO_FILES),
    ("SELECT * FROM read_csv('/etc/passwd', sep = ':')", NO_FILES),
    ("SELECT nextval('seq')", ("read-only", "Sequence with name seq does not exist")),  # no sequence in files
    ("SELECT * FROM query('DROP TABLE customers')", "single SELECT statement"),
    ("SELECT 1; COPY customers TO '{leak}'", "only one statement is allowed"),
    ("FROM customers; DROP TABLE customers", "only one statement is allowed"),
]


@pytest.fixture(params=["file", "files"])
def hostile_db(request, duck_file, data_folder):
    return duck_file if request.param == "file" else data_folder


def test_hostile_statements_are_refused_and_change_nothing(hostile_db, outside, tmp_path):
    folder = hostile_db.parent if hostile_db.is_file() else hostile_db
    db = open_database(hostile_db)
    before_files, before_rows = _digest(folder), db.execute(CONTENT).rows
    leak_dir = tmp_path / "leak"
    names = {"leak": leak_dir / "out.csv", "leak_dir": leak_dir, "leak_db": leak_dir / "evil.duckdb",
             "secret": outside, "outside_dir": outside.parent}
    # A refusal is not a race with the clock: a deadline generous enough for a starved machine (the runaway
    # test below is the one about deadlines), so a refused statement is refused for its reason.
    for sql in corpus_writes():
        result = db.execute(sql, timeout_s=20)
        assert result.error and "\n" not in result.error, sql
    for template, why in DUCKDB_HOSTILE:
        sql = template.format(**names)
        result = db.execute(sql, timeout_s=20)
        reasons = why if isinstance(why, tuple) else (why,)
        assert result.error and any(r in result.error for r in reasons) and "\n" not in result.error, (
            sql, result.error)
    assert db.execute(CONTENT).rows == before_rows  # no row changed
    assert _digest(folder) == before_files  # no file changed or created beside the data
    assert not leak_dir.exists() and sorted(p.name for p in outside.parent.iterdir()) == ["secret.csv"]
    assert db.execute("SELECT count(*) FROM customers").rows == ((3,),)


def test_a_runaway_query_is_stopped_by_the_deadline(hostile_db):
    db = open_database(hostile_db)
    for sql in ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                "SELECT count(*) FROM range(100000) a, range(100000) b WHERE (a.range * b.range) % 7 = 3"):
        result = db.execute(sql, timeout_s=0.4)
        assert result.timed_out and result.error == "query exceeded the 0.4s deadline", sql
    assert db.execute("SELECT count(*) FROM orders").rows == ((3,),)  # and the database still answers


def test_formats_the_interrupt_cannot_stop_are_refused_before_they_run(duck_file):
    """printf/format build their string in one call that interrupt() cannot stop (10^9 widths ran 15-41 s
    past the deadline): huge or argument-given widths, and formats that are not literals, are refused."""
    db = open_database(duck_file)
    for sql in ("SELECT printf('%.1000000000f', 1.5)", "SELECT printf('%1000000000d', 1)",
                "SELECT format('{:>1000000000}', 1)", "SELECT printf('%.*c', 9000000, 'x')",
                "SELECT printf(name, 1) FROM customers"):
        result = db.execute(sql, timeout_s=5)
        assert result.error and not result.timed_out and "not allowed" in result.error, sql
    assert db.execute("SELECT printf('%5.1f', 2.5)").rows == (("  2.5",),)  # ordinary formats still run


# Each would build gigabytes or more with the sizes of an attack (benchmarks/bench_hostile_engines.py); here the
# sizes are just over the bound, so that one which got through would still end at once and fail the assert.
OVER_THE_BOUND = [
    "SELECT printf('%999999d%999999d', 1, 2)",  # widths of one format add up
    "SELECT printf('%999999d', x) FROM (VALUES (1), (2), (3)) t(x)",  # one big width, for every row
    "SELECT format('{:>6000}{:>6000}', 'a', 'b')",
    "SELECT printf('%6000d', 1) || printf('%6000d', 2)",  # and so do those of all the calls of a query
    "SELECT format('{:>{}}', 'x', 20000)",  # fmt's width from an argument, as printf's `*`
    "SELECT format('{:.{}f}', 1.5, 20000)",
    "SELECT repeat('x', 20000)",
    "SELECT repeat('ab', 6000)",
    "SELECT lpad('x', 20000, 'y')",
    "SELECT rpad(name, 20000) FROM customers",
    "SELECT repeat('x', x) FROM (VALUES (1), (2)) t(x)",  # a count that is not a literal
    "SELECT repeat(repeat('x', 100), 100)",
    "SELECT 'x'.repeat(20000)",  # DuckDB's method-call syntax
    "SELECT * FROM query('SELECT printf(''%999999d%999999d'', 1, 2)')",  # query() runs its text
]


def test_string_builders_are_bounded_per_query_before_they_run(duck_file):
    db = open_database(duck_file)
    for sql in OVER_THE_BOUND:
        result = db.execute(sql, timeout_s=5)
        assert result.error and not result.timed_out and "not allowed" in result.error, (sql, result.error)
        assert "\n" not in result.error
    ordinary = db.execute("SELECT printf('%.2f', 3.14159), printf('%05d', 7), format('{}-{}', 'a', 'b'), "
                          "format('{:>4}', 'x'), lpad('7', 3, '0'), rpad('a', 3, '-'), repeat('ab', 2)")
    assert ordinary.rows == (("3.14", "00007", "a-b", "   x", "007", "a--", "abab"),), ordinary.error


def test_a_query_sqlglot_cannot_parse_is_refused_when_it_builds_strings(duck_file):
    """The guard fails closed: the extra `)` stops sqlglot, so the call's arguments cannot be checked."""
    db = open_database(duck_file)
    for sql in ("SELECT printf('%d', 1))", "SELECT \"format\"('{}', 1))", "SELECT lpad('x', 2))"):
        result = db.execute(sql, timeout_s=5)
        assert result.error and "is not allowed in a query that sqlglot cannot parse" in result.error, sql
    # a name inside a string or a comment is no call: DuckDB's own error comes back
    for sql in ("SELECT 'printf(1)' )", "SELECT 1 /* format( */ )", "SELECT 1 -- repeat(\n)"):
        result = db.execute(sql, timeout_s=5)
        assert result.error and "not allowed" not in result.error, (sql, result.error)


def test_fetches_are_sized_so_big_rows_stop_near_the_byte_cap():
    """A chunk is held whole before its rows are counted: each is sized by the largest row so far, so 100 KB
    rows under a 1 MB cap are fetched 1, 2, 4, then only as many as still fit, never a whole chunk beyond."""
    from macsql.sqlexec import Deadline, byte_cap_message, collect_rows

    conn = duckdb.connect(":memory:")
    cur = conn.execute("SELECT repeat('x', 100000) FROM range(20)")
    asked = []

    def fetch(n):
        asked.append(n)
        return cur.fetchmany(n)

    result = collect_rows(fetch, Deadline(30), 10_000, 1024 * 1024)
    assert result.error == byte_cap_message(1024 * 1024) == (
        "the result is larger than 1 MB; select fewer or smaller values (e.g. add LIMIT, leave out blobs)")
    assert asked == [1, 2, 4, 3, 1]  # 11 rows: the cap holds 10 of them
    conn.close()


def test_a_query_still_reads_views_that_newer_files_replaced(data_folder):
    """A changed data file rebuilds the views; a query still reading the old ones (another thread's) reads on,
    and the old in-memory database is closed with its last cursor."""
    db = DuckDBDatabase(data_folder)
    old, reading = db._memory, db._connect()
    reading.execute("SELECT name FROM customers ORDER BY name")
    orders = data_folder / "orders.csv"
    orders.write_text(orders.read_text() + "13,3,1.00,pending\n")
    assert db.execute("SELECT count(*) FROM orders").rows == ((4,),)  # the views were rebuilt
    assert db._memory is not old
    assert reading.fetchall() == [("Ana",), ("Bo",), ("Cy",)]
    db._disconnect(reading)
    with pytest.raises(duckdb.Error):
        old.execute("SELECT 1")
    db.close()


# ------------------------------------------------------------------------------------------- pipeline
def fenced(sql):
    return f"Final SQL:\n```sql\n{sql}\n```"


@pytest.mark.parametrize("kind, prompt_engine", [("file", "sqlite"), ("glob", "sqlite"), ("file", "native")])
def test_pipeline_answers_on_duckdb(kind, prompt_engine, duck_file, data_folder):
    """The prompts name SQLite by default (what the default model answers best) or, with prompt_engine
    native, DuckDB; the Refiner is told DuckDB's error and DuckDB's hints either way."""
    db = str(duck_file) if kind == "file" else f"{data_folder}/*.parquet"
    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM customer WHERE country = 'Spain'"),
                       fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'")])
    ans = Pipeline(llm, candidates=1, prompt_engine=prompt_engine).ask("How many customers live in spain?", db)
    assert ans.rows == [[2]] and ans.error is None and ans.rounds == 1
    system, decomposer = llm.calls[0][1][0]["content"], llm.calls[0][1][-1]["content"]
    named, other = ("SQLite", "DuckDB") if prompt_engine == "sqlite" else ("DuckDB", "SQLite")
    assert named in system and other not in system and f"write one {named} query" in decomposer
    assert "customers.country = 'Spain'" in decomposer  # the value index found the question's value
    refiner = llm.calls[1][1][-1]["content"]
    assert "DuckDB error: Catalog Error: Table with name customer does not exist" in refiner
    assert "Hint: no table 'customer'; closest: customers" in refiner  # DuckDB's words reach the hints


def test_ask_passes_prompt_engine_to_the_agents(duck_file, monkeypatch):
    """`macsql ask --prompt-engine native` reaches the prompts through the CLI's generated option."""
    from click.testing import CliRunner

    from macsql.cli import main
    from macsql.state import SETTING_NAMES

    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM customers")])
    monkeypatch.setattr(Pipeline, "from_pretrained",
                        classmethod(lambda cls, model=None, **kw: cls(llm, **{k: v for k, v in kw.items()
                                                                              if k in SETTING_NAMES})))
    r = CliRunner().invoke(main, ["ask", "How many customers?", "--db", str(duck_file), "--candidates", "1",
                                  "--prompt-engine", "native"])
    assert r.exit_code == 0, r.output
    assert "expert in DuckDB" in llm.calls[0][1][0]["content"]
    r = CliRunner().invoke(main, ["ask", "How many?", "--db", str(duck_file), "--prompt-engine", "mysql"])
    assert r.exit_code == 2 and "'mysql' is not one of 'sqlite', 'native'" in r.output


# SQLite runs these; DuckDB refuses them, and the Refiner is told what to write instead
@pytest.mark.parametrize("sql, hint", [
    ("SELECT c.name, count(*) FROM customers AS c JOIN orders AS o ON c.customer_id = o.customer_id "
     "GROUP BY c.customer_id", "c.name is selected but neither grouped nor aggregated: write GROUP BY "
     "c.customer_id, c.name"),
    ("SELECT sum(status) FROM orders", "orders.status is stored as text (VARCHAR): write SUM(CAST(status AS NUMERIC))"),
    ("SELECT o2.amount FROM orders AS o", "'o2' is not a table or alias in the query's FROM; FROM has: o (orders)"),
    ("SELECT orders.amount FROM customers", "join orders to use its columns; FROM has: customers"),
])
def test_hints_for_what_duckdb_refuses_and_sqlite_runs(duck_file, sql, hint):
    from macsql.agents.hints import repair_hint

    db = open_database(str(duck_file))
    result = db.execute(sql)
    assert not result.ok and "Candidate functions" not in result.error  # not a dozen overloads for the prompt
    assert hint in repair_hint(sql, result, introspect(db, cache=False), db)


def test_a_reserved_name_written_bare_gets_its_quotes(tmp_path):
    from macsql.agents.hints import repair_hint

    path = make_duckdb(tmp_path / "concerts.duckdb",
                       'CREATE TABLE "show" (show_id INTEGER, attendance INTEGER); INSERT INTO "show" VALUES (1, 90)')
    db = open_database(str(path))
    schema = introspect(db, cache=False)
    assert 'CREATE TABLE "show"' in render_schema(schema)  # the prompt quotes it, yet a model may not
    result = db.execute("SELECT AVG(attendance) FROM show")
    assert not result.ok and 'syntax error at or near "show"' in result.error
    assert repair_hint("SELECT AVG(attendance) FROM show", result, schema, db) == (
        'show is a reserved word in DuckDB: write the name in double quotes, "show"')
    other = db.execute("SELECT FROM FROM show")  # a syntax error at a word that is no name: nothing to add
    assert not other.ok and repair_hint("SELECT FROM FROM show", other, schema, db) is None


def test_sqlite_prompts_still_say_sqlite(shop_db):
    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM customers")])
    Pipeline(llm, candidates=1).ask("How many customers?", shop_db)
    assert llm.calls[0][1][0]["content"] == ("You are an expert in SQLite. You answer questions about a database "
                                             "with correct SQLite queries.")


def test_without_duckdb_installed_the_error_names_the_extra(monkeypatch, duck_file, data_folder):
    import sys

    from macsql.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "duckdb", None)  # as if it were not installed
    for value in (duck_file, data_folder):
        with pytest.raises(MissingExtraError, match=r"needs duckdb: pip install \"macsql\[duckdb\]\""):
            DuckDBDatabase(value)


def test_serve_names_and_knowledge_work_on_duckdb(duck_file, data_folder):
    from macsql import knowledge
    from macsql.demo import named_databases

    named = named_databases([str(duck_file), f"sales={data_folder}/*.parquet", str(data_folder)])
    assert named == {"shop": str(duck_file), "sales": f"{data_folder}/*.parquet", "files": str(data_folder)}
    knowledge.add_example(str(data_folder), "How many customers are in Spain?",
                          "SELECT count(*) FROM customers WHERE country = 'Spain'", approved_by="ana")
    with pytest.raises(Exception, match="only SELECT/WITH queries are allowed, got COPY"):
        knowledge.add_example(str(data_folder), "Copy them?", "COPY customers TO 'x.csv'", approved_by="ana")
    known = knowledge.load(str(data_folder))
    assert [e["id"] for e in known.examples] == ["e1"]
    assert known.database["path"] == str(data_folder.resolve())


def test_names_duckdb_reserves_are_quoted_as_rendered(tmp_path):
    """`show` is a table name to SQLite and a syntax error to DuckDB unless quoted: the prompt quotes it."""
    path = tmp_path / "names.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute('CREATE TABLE "show" ("pivot" INTEGER, attendance INTEGER); INSERT INTO "show" VALUES (1, 2)')
    db = open_database(path)
    text = render_schema(db.introspect(), examples=False)
    assert 'CREATE TABLE "show" (' in text and '"pivot" INTEGER' in text and "  attendance INTEGER" in text
    assert db.execute('SELECT "pivot", attendance FROM "show"').rows == ((1, 2),)
    assert 'CREATE TABLE show (' in render_schema(introspect(make_db(tmp_path / "names.sqlite",
                                                  "CREATE TABLE show (attendance INTEGER);")), examples=False)

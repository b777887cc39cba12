"""The PostgreSQL engine against a real throwaway server (tests/pg_server.py; skipped, with the reason, where
PostgreSQL's binaries are absent): introspection, execution and its caps, the hostile corpus (each statement
refused with a reason and nothing changed, read back as the superuser), runaway queries stopped at the
deadline, and a question answered end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pg_server import READER, READER_PASSWORD, READER_ROLE_SQL, Unavailable, start_server

psycopg = pytest.importorskip("psycopg", reason='psycopg is not installed: pip install -e ".[postgres]"')

from macsql.engines.postgres import PostgresDatabase, redact_url, split_url, statement_problem  # noqa: E402
from macsql.schema import render_schema  # noqa: E402

DEADLINE_S = 0.5
SHOP_SQL = """
CREATE TABLE customers (customer_id integer PRIMARY KEY, name text NOT NULL, country text);
CREATE TABLE orders (order_id integer PRIMARY KEY, customer_id integer REFERENCES customers (customer_id),
                     amount numeric(10, 2), status text, placed date);
CREATE TABLE order_lines (order_id integer, line integer, product varchar(40), qty integer,
                          PRIMARY KEY (order_id, line), FOREIGN KEY (order_id) REFERENCES orders (order_id));
INSERT INTO customers VALUES (1, 'Ana', 'Spain'), (2, 'Bo', 'Sweden'), (3, 'Cy', 'Spain');
INSERT INTO orders VALUES (10, 1, 12.5, 'shipped', '2024-01-05'), (11, 1, 3.0, 'pending', '2024-02-01'),
                          (12, 2, 99.0, 'shipped', '2024-03-09');
INSERT INTO order_lines VALUES (10, 1, 'pen', 2), (10, 2, 'ink', 1), (12, 1, 'desk', 1);
CREATE VIEW spain AS SELECT * FROM customers WHERE country = 'Spain';
CREATE TABLE counters (name text PRIMARY KEY, n integer);
INSERT INTO counters VALUES ('visits', 0);
CREATE SEQUENCE order_seq;
-- a function with a side effect, executable by PUBLIC (PostgreSQL's default for functions)
CREATE FUNCTION bump() RETURNS integer LANGUAGE sql AS 'UPDATE counters SET n = n + 1 RETURNING n';
CREATE TABLE secrets (token text);
INSERT INTO secrets VALUES ('s3cr3t');
CREATE SCHEMA sales;
CREATE TABLE sales.deals (deal_id integer PRIMARY KEY, region text);
INSERT INTO sales.deals VALUES (1, 'North'), (2, 'South');
"""
GRANTS_SQL = f"""
REVOKE SELECT ON secrets FROM {READER};
GRANT USAGE ON SCHEMA sales TO {READER};
GRANT SELECT ON ALL TABLES IN SCHEMA sales TO {READER};
-- more than the role needs, to show the read-only transaction refusing on its own
GRANT USAGE ON SEQUENCE order_seq TO {READER};
"""


@pytest.fixture(scope="session")
def pg():
    """A running server with the shop database and the least-privilege role; stopped at the end."""
    try:
        server = start_server()
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        server.script(SHOP_SQL + READER_ROLE_SQL + GRANTS_SQL)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def db(pg):
    database = PostgresDatabase(pg.url())
    yield database
    database.close()


def checksums(pg) -> dict[str, str]:
    """Everything a statement could change, read as the superuser: every table's rows, the relations,
    sequences, large objects, roles and their settings."""
    out = {}
    with pg.superuser() as conn:
        tables = conn.execute("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
                              "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").fetchall()
        for (name,) in tables:
            out[name] = conn.execute(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                                     f"FROM {name} t").fetchone()[0]
        out["relations"] = conn.execute(
            "SELECT string_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text, ',' ORDER BY 1) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT LIKE 'pg\\_%'").fetchone()[0]
        out["order_seq"] = str(conn.execute("SELECT last_value, is_called FROM order_seq").fetchone())
        out["large_objects"] = str(conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone())
        out["roles"] = str(conn.execute("SELECT string_agg(rolname || rolsuper::text || coalesce("
                                        "array_to_string(s.setconfig, ';'), ''), ',' ORDER BY 1) FROM pg_roles r "
                                        "LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid").fetchone())
        out["extensions"] = str(conn.execute("SELECT string_agg(extname, ',') FROM pg_extension").fetchone())
    return out


# ------------------------------------------------------------------------------------------ the URL
def test_the_label_and_the_identity_leave_the_password_out(pg, db):
    assert READER_PASSWORD not in db.label and db.label == f"postgresql://{READER}@127.0.0.1:{pg.port}/shop"
    assert READER_PASSWORD not in db.identity()
    conninfo, schema, label = split_url("postgres://u:pw@h1:5432,h2:5433/db?schema=sales&sslmode=disable")
    assert (schema, label) == ("sales", "postgres://u@h1:5432,h2:5433/db?schema=sales&sslmode=disable")
    assert "schema" not in conninfo and "pw" in conninfo  # libpq gets the password, not macsql's parameter
    assert split_url("postgresql://h/db?password=pw&sslmode=require")[2] == "postgresql://h/db?sslmode=require"
    assert split_url("postgresql://h/db?sslpassword=key")[2] == "postgresql://h/db"


def test_redact_url_drops_every_password():
    """The one scrubber: the user part's password and the `password`/`sslpassword` parameters, whatever the
    URL's shape (no server needed)."""
    assert redact_url("postgresql://me@db.example/x") == "postgresql://me@db.example/x"
    assert redact_url("postgres://me:p%40ss@[::1]:5433/x?sslmode=require") == \
        "postgres://me@[::1]:5433/x?sslmode=require"
    assert redact_url("postgresql://h/db?password=pw&sslpassword=key&sslmode=require") == \
        "postgresql://h/db?sslmode=require"
    assert redact_url("postgresql://:pw@h/db?pass%77ord=pw") == "postgresql://h/db"  # escaped names too
    assert redact_url("postgresql://u:pa?ss@h") == "postgresql://u@h"  # a '?' in the password
    assert redact_url("postgresql://u:pw@[::1/db") == "postgresql://u@[::1/db"  # malformed: it never raises


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@[::1/db", "postgresql://u:hunter2@[::1]x/db"])
def test_a_malformed_url_is_one_line_without_the_password(url):
    from macsql.errors import DatabaseError

    with pytest.raises(DatabaseError, match="is not a PostgreSQL URL libpq accepts .*pass postgresql://") as info:
        PostgresDatabase(url)  # refused before connecting: no server needed
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("'postgresql://u@[::1")


def test_a_password_libpq_quotes_is_not_printed():
    """libpq's reason for refusing a URL may quote a part of it: a badly percent-encoded password."""
    from macsql.errors import DatabaseError

    with pytest.raises(DatabaseError) as info:
        PostgresDatabase("postgresql://u@127.0.0.1:1/db?password=hunter2%zz")
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


def test_options_in_the_url_cannot_turn_read_only_off(pg):
    database = PostgresDatabase(pg.url(options="-c%20default_transaction_read_only%3Doff"))
    try:
        result = database.execute("SELECT current_setting('default_transaction_read_only'), "
                                  "current_setting('transaction_read_only')")
        assert result.rows == (("on", "on"),)
    finally:
        database.close()


def test_a_wrong_password_or_schema_is_one_line(pg):
    from macsql.errors import DatabaseError

    with pytest.raises(DatabaseError, match="cannot connect to .*check the URL") as info:
        PostgresDatabase(pg.url(password="wrong"))
    assert "wrong" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DatabaseError, match="schema 'nope' does not exist in .*pass \\?schema=NAME"):
        PostgresDatabase(pg.url(schema="nope"))


# ------------------------------------------------------------------------------------- introspection
def test_introspection_reads_tables_views_keys_and_examples(db):
    schema = db.introspect()
    names = {t.name: t.kind for t in schema.tables}
    assert names == {"customers": "table", "orders": "table", "order_lines": "table", "counters": "table",
                     "spain": "view"}  # not secrets: the role may not read it; not sales.deals: another schema
    orders = schema.table("orders")
    assert [(c.name, c.type) for c in orders.columns] == [
        ("order_id", "INTEGER"), ("customer_id", "INTEGER"), ("amount", "NUMERIC(10,2)"), ("status", "TEXT"),
        ("placed", "DATE")]
    assert orders.primary_key == ["order_id"]
    assert [(f.column, f.ref_table, f.ref_column) for f in orders.foreign_keys] == [
        ("customer_id", "customers", "customer_id")]
    lines = schema.table("order_lines")
    assert lines.primary_key == ["order_id", "line"] and lines.column("product").type == "VARCHAR(40)"
    # in the order they were created, as SQLite lists its tables (views after the tables)
    assert [t.name for t in schema.tables] == ["customers", "orders", "order_lines", "counters", "spain"]
    assert schema.table("customers").column("country").examples == ["Spain", "Sweden"]
    assert orders.column("status").examples == ["shipped", "pending"]
    assert orders.column("customer_id").examples == []  # identifiers get none, as on SQLite
    assert schema.table("spain").column("name").examples == ["Ana", "Cy"]


def test_a_schema_parameter_reads_that_schema_and_its_names_resolve(pg):
    sales = PostgresDatabase(pg.url(schema="sales"))
    try:
        assert [t.name for t in sales.introspect().tables] == ["deals"]
        assert sales.execute("SELECT region FROM deals ORDER BY deal_id").rows == (("North",), ("South",))
    finally:
        sales.close()


def test_a_view_that_never_ends_is_left_out_with_a_note(pg):
    pg.script(f"CREATE SCHEMA slow; GRANT USAGE ON SCHEMA slow TO {READER}; "
              "CREATE TABLE slow.t (kind text); INSERT INTO slow.t VALUES ('a'), ('a'), ('b'); "
              "CREATE VIEW slow.v AS SELECT kind, pg_sleep(30)::text AS nap FROM slow.t; "
              f"GRANT SELECT ON ALL TABLES IN SCHEMA slow TO {READER}")
    database = PostgresDatabase(pg.url(schema="slow"))
    try:
        schema = database.introspect(timeout_s=1.0)
        assert [t.name for t in schema.tables] == ["t"] and schema.table("t").column("kind").examples == ["a", "b"]
        assert len(schema.notes) == 1 and schema.notes[0].startswith("view 'v' skipped: its first 2000 rows took")
        assert database.execute("SELECT count(*) FROM t").rows == ((3,),)  # the session goes on
    finally:
        database.close()


def test_distinct_values_of_text_columns_only(db):
    assert sorted(db.distinct_values("customers", "country", limit=10, scan_rows=100, max_chars=60)) == [
        "Spain", "Sweden"]
    assert db.distinct_values("orders", "amount", limit=10, scan_rows=100, max_chars=60) == []
    assert db.distinct_values("order_lines", "product", limit=2, scan_rows=100, max_chars=60).__len__() == 2
    assert db.distinct_values("no_such_table", "x", limit=2, scan_rows=100, max_chars=60) == []


def test_identity_changes_with_the_catalog(pg, monkeypatch):
    monkeypatch.setattr("macsql.engines.postgres.IDENTITY_TTL_S", 0.0)  # no reuse of the last answer
    pg.script(f"CREATE SCHEMA scratch; GRANT USAGE ON SCHEMA scratch TO {READER}; "
              f"CREATE TABLE scratch.a (x integer); GRANT SELECT ON scratch.a TO {READER}")
    scratch = PostgresDatabase(pg.url(schema="scratch"))
    try:
        first = scratch.identity()
        assert scratch.identity() == first
        pg.script("ALTER TABLE scratch.a ADD COLUMN y text")
        assert scratch.identity() != first
    finally:
        scratch.close()


def test_names_run_as_rendered(pg):
    """A name PostgreSQL reserves (`user`) or would fold to lower case (`Stadium_ID`) is quoted in the prompt,
    so a model copying it writes SQL that runs; plain lower-case names stay bare."""
    pg.script(f'CREATE SCHEMA names; GRANT USAGE ON SCHEMA names TO {READER}; '
              f'CREATE TABLE names."user" ("Stadium_ID" integer, "order" integer, plain integer); '
              f'INSERT INTO names."user" VALUES (1, 2, 3); GRANT SELECT ON names."user" TO {READER}')
    database = PostgresDatabase(pg.url(schema="names"))
    try:
        text = render_schema(database.introspect(), examples=False)
        assert 'CREATE TABLE "user" (' in text and '"Stadium_ID" INTEGER' in text and '"order" INTEGER' in text
        assert "  plain INTEGER" in text
        assert database.execute('SELECT "Stadium_ID", "order", plain FROM "user"').rows == ((1, 2, 3),)
    finally:
        database.close()


# ---------------------------------------------------------------------------------------- execute
def test_execute_returns_rows_as_the_sqlite_executor_does(db):
    result = db.execute("SELECT c.name, sum(o.amount) AS total, count(*), min(o.placed), bool_or(o.amount > 50) "
                        "FROM customers c JOIN orders o USING (customer_id) GROUP BY c.name ORDER BY c.name")
    assert result.ok and result.columns == ("name", "total", "count", "min", "bool_or")
    assert result.rows == (("Ana", 15.5, 2, "2024-01-05", False), ("Bo", 99, 1, "2024-03-09", True))
    assert db.execute("SELECT name FROM customers WHERE name LIKE '%n%' AND $$a;b$$ = 'a;b'").rows == (("Ana",),)
    assert db.execute("SELECT ARRAY[1, 2], '{\"a\": 1}'::jsonb, 'x'::bytea; -- note").rows == (
        ("[1, 2]", '{"a": 1}', b"x"),)


def test_row_and_byte_caps(db):
    capped = db.execute("SELECT g FROM generate_series(1, 5000) g", max_rows=1200)
    assert capped.ok and capped.truncated and len(capped.rows) == 1200 and capped.rows[-1] == (1200,)
    exact = db.execute("SELECT g FROM generate_series(1, 1200) g", max_rows=1200)
    assert not exact.truncated and len(exact.rows) == 1200
    big = db.execute("SELECT repeat('x', 10000) FROM generate_series(1, 100000)", max_bytes=1024 * 1024)
    assert not big.ok and "the result is larger than" in big.error and not big.rows


def test_bad_sql_is_one_line_of_data(db):
    for sql, expected in [("SELECT * FROM secrets", "permission denied for table secrets"),
                          ("SELECT nope FROM customers", 'column "nope" does not exist'),
                          ("SELECT 1/0", "division by zero"),
                          ("", "empty SQL")]:
        result = db.execute(sql)
        assert not result.ok and expected in result.error and "\n" not in result.error
    assert db.execute("SELECT 1").rows == ((1,),)  # the pooled connection still works after errors


# SQLite runs these; PostgreSQL refuses them, and the Refiner is told what to write instead
@pytest.mark.parametrize("sql, hint", [
    ("SELECT c.name, count(*) FROM customers AS c JOIN orders AS o ON c.customer_id = o.customer_id "
     "GROUP BY o.status", "c.name is selected but neither grouped nor aggregated: write GROUP BY o.status, c.name"),
    ("SELECT avg(status) FROM orders", "orders.status is stored as text (TEXT): write AVG(CAST(status AS NUMERIC))"),
    ("SELECT o2.amount FROM orders AS o", "'o2' is not a table or alias in the query's FROM; FROM has: o (orders)"),
    ("SELECT orders.amount FROM customers", "join orders to use its columns; FROM has: customers"),
])
def test_hints_for_what_postgres_refuses_and_sqlite_runs(db, sql, hint):
    from macsql.agents.hints import repair_hint
    from macsql.schema import introspect

    result = db.execute(sql)
    assert not result.ok
    assert hint in repair_hint(sql, result, introspect(db, cache=False), db)


# ---------------------------------------------------------------------------------- the hostile corpus
CORPUS = Path(__file__).parent / "data" / "hostile_sql.txt"
# SQLite's refusals that are valid, read-only PostgreSQL
_VALID_HERE = {"SELECT * FROM generate_series(1, 3)", "SELECT"}  # SELECT alone: one row, no columns
POSTGRES_HOSTILE = """
COPY customers TO PROGRAM 'touch /tmp/macsql-pg-pwned'
COPY customers TO '/tmp/macsql-pg-pwned'
COPY customers FROM PROGRAM 'id'
COPY (SELECT * FROM customers) TO STDOUT
SELECT pg_read_file('/etc/passwd')
SELECT pg_catalog.pg_read_file('/etc/passwd', 0, 100)
SELECT "pg_read_file"('/etc/passwd')
SELECT U&"pg\\005fread\\005ffile"('/etc/passwd')
SELECT pg_read_binary_file('/etc/passwd')
SELECT * FROM pg_ls_dir('.')
SELECT pg_stat_file('postgresql.conf')
SELECT * FROM pg_ls_logdir()
SELECT pg_current_logfile()
SELECT lo_import('/etc/passwd')
SELECT lo_export(1, '/tmp/macsql-pg-pwned')
SELECT lo_from_bytea(0, 'x')
SELECT lo_create(0)
CREATE EXTENSION dblink
CREATE EXTENSION IF NOT EXISTS adminpack
SELECT dblink_exec('dbname=shop', 'DROP TABLE customers')
SELECT set_config('default_transaction_read_only', 'off', false)
SELECT set_config('transaction_read_only', 'off', true)
SELECT set_config('statement_timeout', '0', false)
SET default_transaction_read_only = off
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE
SET TRANSACTION READ WRITE
SET statement_timeout = 0
RESET ALL
SELECT * FROM customers FOR UPDATE
SELECT * FROM customers FOR SHARE
SELECT name FROM customers FOR NO KEY UPDATE SKIP LOCKED
SELECT nextval('order_seq')
SELECT setval('order_seq', 100)
SELECT txid_current()
SELECT pg_terminate_backend(pg_backend_pid())
SELECT pg_cancel_backend(pg_backend_pid())
SELECT pg_reload_conf()
SELECT pg_rotate_logfile()
SELECT pg_switch_wal()
SELECT pg_create_restore_point('x')
SELECT pg_advisory_lock(42)
SELECT pg_try_advisory_lock(42)
SELECT pg_notify('ch', 'x')
SELECT pg_logical_emit_message(true, 'x', 'y')
SELECT bump()
SELECT * FROM customers WHERE customer_id = bump()
SELECT 1; COMMIT; DROP TABLE customers
COMMIT; DROP TABLE customers
SELECT 1; COMMIT; SET TRANSACTION READ WRITE; DELETE FROM customers
SELECT 1 /* ; */ ; DELETE FROM customers
SELECT $$;$$; DELETE FROM customers
DO $$ BEGIN DELETE FROM customers; END $$
CALL some_procedure()
CREATE FUNCTION f() RETURNS integer LANGUAGE sql AS 'SELECT 1'
CREATE OR REPLACE FUNCTION bump() RETURNS integer LANGUAGE sql AS 'SELECT 1'
WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d
WITH u AS (UPDATE orders SET amount = 0 RETURNING 1) SELECT count(*) FROM u
WITH i AS (INSERT INTO customers VALUES (9, 'Eve', 'X') RETURNING 1) SELECT * FROM i
SELECT * INTO stolen FROM customers
CREATE TABLE stolen AS SELECT * FROM customers
CREATE TEMP TABLE t AS SELECT 1
CREATE UNLOGGED TABLE t (x integer)
CREATE MATERIALIZED VIEW mv AS SELECT * FROM customers
TRUNCATE customers
TRUNCATE orders CASCADE
VACUUM customers
VACUUM FULL
ANALYZE customers
CLUSTER customers
REINDEX TABLE customers
CHECKPOINT
LOCK TABLE customers IN ACCESS EXCLUSIVE MODE
LISTEN ch
NOTIFY ch, 'x'
PREPARE p AS DELETE FROM customers
EXECUTE p
DEALLOCATE ALL
DISCARD ALL
BEGIN READ WRITE
START TRANSACTION READ WRITE
SAVEPOINT s
GRANT ALL ON customers TO PUBLIC
GRANT pg_read_server_files TO macsql_reader
ALTER ROLE macsql_reader SUPERUSER
ALTER ROLE macsql_reader SET default_transaction_read_only = off
CREATE ROLE evil SUPERUSER LOGIN
COMMENT ON TABLE customers IS 'x'
SECURITY LABEL ON TABLE customers IS 'x'
ALTER SYSTEM SET fsync = on
SELECT query_to_xml('DELETE FROM customers RETURNING 1', true, true, '')
SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '')
SELECT ts_stat('SELECT to_tsvector(name) FROM customers')
EXPLAIN ANALYZE DELETE FROM customers
EXPLAIN SELECT 1
IMPORT FOREIGN SCHEMA public FROM SERVER s INTO public
CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw
SELECT * FROM secrets
VALUES (1); DELETE FROM customers
"""


def hostile_cases() -> list[str]:
    section, out = None, []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif section == "refuse" and line.strip() and not line.startswith("#") and line not in _VALID_HERE:
            out.append(line)
    return out + [line for line in POSTGRES_HOSTILE.strip().splitlines()]


HOSTILE = hostile_cases()


def test_the_hostile_corpus_is_refused_and_changes_nothing(pg, db):
    """Every statement refused with a one-line reason; after all of them, not one row, relation, sequence,
    large object, role or setting differs, and no file was written."""
    before = checksums(pg)
    accepted = []
    for sql in HOSTILE:
        result = db.execute(sql, timeout_s=5)
        if result.ok:
            accepted.append(sql)
        else:
            assert result.error.strip() and "\n" not in result.error, sql
    assert accepted == []
    assert checksums(pg) == before
    assert not Path("/tmp/macsql-pg-pwned").exists()
    assert len(HOSTILE) >= 200


@pytest.mark.parametrize("sql, why", [
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file() is not allowed: it reads or writes the server's files"),
    ("SELECT set_config('statement_timeout', '0', false)", "set_config() is not allowed"),
    ("SELECT 1; COMMIT; DROP TABLE customers", "only one statement is allowed"),
    ("DO $$ BEGIN DELETE FROM customers; END $$", "only SELECT/WITH queries are allowed"),
    ("SELECT * INTO stolen FROM customers", "SELECT ... INTO creates a table"),
    ("SELECT bump()", "cannot execute UPDATE in a read-only transaction"),
    ("SELECT * FROM customers FOR UPDATE", "cannot execute SELECT FOR UPDATE in a read-only transaction"),
    ("WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d", "only read queries are allowed"),
])
def test_refusals_say_why(db, sql, why):
    result = db.execute(sql)
    assert not result.ok and why in result.error


def test_the_server_refuses_what_the_check_lets_through(pg):
    """The second layer alone: with the statement check off, the server's read-only transaction and the
    least-privilege role still refuse (the check is not the only thing between a model and the data)."""
    import macsql.engines.postgres as engine

    database = PostgresDatabase(pg.url())
    before = checksums(pg)
    original = engine.statement_problem
    engine.statement_problem = lambda sql: None
    try:
        for sql, why in [("SELECT nextval('order_seq')", "cannot execute nextval() in a read-only transaction"),
                         ("SELECT pg_read_file('/etc/passwd')", "permission denied for function pg_read_file"),
                         ("SELECT lo_import('/etc/passwd')", "permission denied for function lo_import"),
                         ("SELECT 1; COMMIT; DROP TABLE customers", "cannot insert multiple commands"),
                         ("DELETE FROM customers", "syntax error"),  # DECLARE CURSOR takes only a query
                         ("WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d",
                          "DECLARE CURSOR must not contain data-modifying statements in WITH")]:
            result = database.execute(sql)
            assert not result.ok and why in result.error, (sql, result.error)
    finally:
        engine.statement_problem = original
        database.close()
    assert checksums(pg) == before


def test_the_check_reads_postgres():
    assert statement_problem("SELECT x::text, $$a;b$$ FROM t WHERE y ILIKE '%a%'") is None
    assert statement_problem("SELECT pg_catalog.pg_ls_dir('.')").startswith("pg_ls_dir() is not allowed")
    assert statement_problem("SELECT pg_advisory_lock(1)").endswith("it takes a lock that outlives the query")


def test_names_in_unicode_escapes_are_refused():
    r"""sqlglot reads U&"pg\005fread\005ffile" as an unknown function; PostgreSQL as pg_read_file."""
    for sql in [r"""SELECT U&"pg\005fread\005ffile"('/etc/passwd')""", 'select u&"name" FROM customers']:
        assert statement_problem(sql).startswith('U&"..." (a name written with Unicode escapes) is not allowed')
    assert statement_problem(r"SELECT U&'d\0061t\+000061' AS x") is None  # a string in Unicode escapes


# ------------------------------------------------------------------------------------------ deadlines
@pytest.mark.parametrize("sql", [
    "SELECT pg_sleep(60)",
    "SELECT count(*) FROM generate_series(1, 100000000) a CROSS JOIN generate_series(1, 100000000) b",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT g FROM generate_series(1, 1000000000) g ORDER BY random()",
])
def test_runaway_queries_stop_at_the_deadline(db, sql):
    result = db.execute(sql, timeout_s=DEADLINE_S)
    assert result.timed_out and not result.ok and "deadline" in result.error
    assert db.execute("SELECT 1").rows == ((1,),)  # the connection is usable (or replaced) afterwards


def test_the_client_cancels_when_the_server_timeout_does_not(pg, monkeypatch):
    """The backstop alone: without SET LOCAL statement_timeout the client's cancel still ends the query."""
    database = PostgresDatabase(pg.url())
    try:
        monkeypatch.setattr(PostgresDatabase, "_set_timeout", staticmethod(lambda conn, deadline: None))
        result = database.execute("SELECT pg_sleep(60)", timeout_s=DEADLINE_S)
        assert result.timed_out and "deadline" in result.error
        monkeypatch.undo()
        assert database.execute("SELECT 2").rows == ((2,),)
    finally:
        database.close()


# ---------------------------------------------------------------------------------------- the docs
def test_the_readme_documents_the_role_the_tests_use():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## PostgreSQL", 1)[-1] if "\n## PostgreSQL" in readme else readme
    flat = " ".join(section.split())
    for statement in READER_ROLE_SQL.strip().splitlines():
        documented = statement.split("PASSWORD '")[0]  # the README's password is a placeholder
        assert " ".join(documented.split()) in flat, statement


# ------------------------------------------------------------------------------------------ end to end
def test_a_question_answered_end_to_end(pg):
    import macsql.engines as engines
    from macsql.backends.base import ScriptedLLM
    from macsql.pipeline import Pipeline

    sql = "SELECT count(*) FROM customers WHERE country = 'Spain'"
    llm = ScriptedLLM(lambda messages, agent: f"```sql\n{sql}\n```")
    try:
        answer = Pipeline(llm).ask("How many customers live in Spain?", pg.url())
    finally:
        engines.close_all()  # the pooled connections open_database kept
    assert [tuple(row) for row in answer.rows] == [(2,)]
    prompts = " ".join(str(messages) for _agent, messages in llm.calls)
    assert "customers" in prompts and "Spain" in prompts  # the schema and its sampled values, read from the server


def test_serve_pages_and_sorts_a_postgres_result(pg, tmp_path):
    """serve's wrappers are subqueries with an alias (`AS q`), which PostgreSQL before 16 requires."""
    import macsql.engines as engines
    from macsql.backends.base import ScriptedLLM
    from macsql.pipeline import Pipeline
    from macsql.serve.app import create_app

    testclient = pytest.importorskip("fastapi.testclient")
    sql = "SELECT customer_id, name FROM customers"
    llm = ScriptedLLM(lambda messages, agent: f"```sql\n{sql}\n```")
    app = create_app(Pipeline(llm, candidates=1), {"shop": pg.url()}, store=tmp_path / "store.sqlite")
    try:
        with testclient.TestClient(app, base_url="http://127.0.0.1") as client:
            r = client.post("/api/run", json={"db": "shop", "sql": sql, "page": 1, "page_size": 2, "order_by": 0,
                                              "descending": True})
            assert r.status_code == 200, r.text
            assert (r.json()["rows"], r.json()["total_rows"]) == ([[1, "Ana"]], 3)
            r = client.post("/api/download", json={"db": "shop", "sql": sql, "format": "json", "order_by": 1})
            assert r.status_code == 200, r.text
            assert r.json()["rows"] == [[1, "Ana"], [2, "Bo"], [3, "Cy"]]
            assert READER_PASSWORD not in r.text
    finally:
        engines.close_all()


def test_teach_names_the_database_without_its_password(pg):
    """`teach list` and `teach remove` show the database's label: no password, from the user part or from
    the `password`/`sslpassword` parameters."""
    from click.testing import CliRunner

    import macsql.engines as engines
    from macsql.cli import main

    label = f"postgresql://{READER}@127.0.0.1:{pg.port}/shop"
    in_query = f"{label}?password={READER_PASSWORD}&sslpassword=key-secret&sslmode=disable"
    try:
        for url in (pg.url(), in_query):
            listed = CliRunner().invoke(main, ["teach", "list", "--db", url])
            assert listed.exit_code == 0, listed.output
            assert listed.output.startswith(f"knowledge of {label}")
            removed = CliRunner().invoke(main, ["teach", "remove", "--db", url, "e9"])
            assert removed.exit_code == 1 and f"nothing with id 'e9' in the knowledge of '{label}" in removed.output
            for output in (listed.output, removed.output):
                assert READER_PASSWORD not in output and "key-secret" not in output
    finally:
        engines.close_all()

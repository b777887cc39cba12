import hashlib
import time

import pytest

from macsql.errors import DatabaseError
from macsql.sqlexec import execute

HOSTILE = [
    "DROP TABLE customers",
    "DELETE FROM customers",
    "UPDATE customers SET name = 'x'",
    "INSERT INTO customers VALUES (9, 'Eve', 'Nowhere')",
    "CREATE TABLE t (x)",
    "ALTER TABLE customers ADD COLUMN y",
    "ATTACH DATABASE '/tmp/evil.sqlite' AS evil",
    "DETACH DATABASE main",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA query_only = 0",
    "PRAGMA writable_schema = 1",
    "VACUUM",
    "VACUUM INTO '/tmp/macsql-copy.sqlite'",
    "REINDEX",
    "SELECT 1; DROP TABLE customers",
    "SELECT * FROM customers; DELETE FROM orders",
    "WITH x AS (SELECT 1) DELETE FROM customers",
    "WITH x AS (SELECT 1) INSERT INTO customers SELECT 9, 'a', 'b' FROM x",
    "SELECT load_extension('/tmp/evil.so')",
    "BEGIN; DELETE FROM customers; COMMIT",
    "CREATE TRIGGER t AFTER INSERT ON customers BEGIN DELETE FROM orders; END",
    "REPLACE INTO customers VALUES (1, 'x', 'y')",
    "SELECT writefile('/tmp/x', 'y')",
    "",
    "   ;  ",
]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_statements_are_refused_and_leave_the_file_unchanged(shop_db, sql):
    before = digest(shop_db)
    result = execute(shop_db, sql, timeout_s=2)
    assert result.error, f"{sql!r} was not refused"
    assert digest(shop_db) == before
    # the database still answers normally afterwards
    assert execute(shop_db, "SELECT COUNT(*) FROM customers").rows == ((3,),)


def test_vacuum_into_writes_no_file(shop_db, tmp_path):
    target = tmp_path / "copy.sqlite"
    assert execute(shop_db, f"VACUUM INTO '{target}'").error
    assert not target.exists()


def test_select_returns_rows_and_columns(shop_db):
    r = execute(shop_db, "SELECT name, country FROM customers WHERE country = 'Spain' ORDER BY name;")
    assert r.ok and r.columns == ("name", "country") and r.rows == (("Ana", "Spain"), ("Cy", "Spain"))


def test_with_query_is_allowed(shop_db):
    r = execute(shop_db, "WITH s AS (SELECT * FROM customers WHERE country = 'Spain') SELECT COUNT(*) FROM s")
    assert r.rows == ((2,),)


def test_bad_sql_is_data_not_an_exception(shop_db):
    r = execute(shop_db, "SELECT nope FROM customers")
    assert not r.ok and "no such column" in r.error


def test_runaway_recursive_query_stops_within_its_deadline(shop_db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    start = time.perf_counter()
    r = execute(shop_db, sql, timeout_s=0.5)
    elapsed = time.perf_counter() - start
    assert r.timed_out and "deadline" in r.error
    assert elapsed < 5  # generous: the point is that it stops at all, not how fast


def test_row_cap_truncates(shop_db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 500) SELECT x FROM c"
    r = execute(shop_db, sql, max_rows=10)
    assert len(r.rows) == 10 and r.truncated


def test_missing_and_non_sqlite_files(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        execute(tmp_path / "nope.sqlite", "SELECT 1")
    junk = tmp_path / "junk.sqlite"
    junk.write_text("hello, not a database")
    with pytest.raises(DatabaseError, match="not a SQLite database"):
        execute(junk, "SELECT 1")


def test_views_may_use_the_guarded_functions(tmp_path):
    """instr/replace/printf are replaced by bounded versions; a view in the user's schema still runs them."""
    from tests.conftest import make_db

    db = make_db(tmp_path / "v.sqlite", "CREATE TABLE t (a TEXT); INSERT INTO t VALUES ('x,y');"
                 "CREATE VIEW v AS SELECT replace(a, ',', '') AS r, instr(a, 'y') AS i, printf('%s!', a) AS p FROM t;")
    assert execute(db, "SELECT * FROM v").rows == (("xy", 3, "x,y!"),)

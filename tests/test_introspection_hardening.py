"""Introspection reads through the executor's connection and deadline: a view that never ends or that
names something gone is left out with a note, and the rest of the database stays usable; a database with
an unfinished write says so in one line."""

import subprocess
import sys
import time

import pytest
import sqlite_utils  # noqa: F401 - imported before the timed calls (introspection imports it once)

from macsql import schema as schema_module
from macsql.errors import DatabaseError
from macsql.schema import Schema, introspect, render_schema
from macsql.sqlexec import execute
from tests.conftest import make_db

BASE = """
CREATE TABLE t (a TEXT, b INTEGER);
INSERT INTO t VALUES ('x', 1), ('y', 2), ('x', 3);
CREATE VIEW good AS SELECT a FROM t WHERE b > 1;
"""
NEVER_ENDING_VIEW = ("CREATE VIEW forever AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                     "SELECT x FROM c ORDER BY x DESC;")


def test_a_view_that_never_ends_is_skipped_within_the_deadline(tmp_path):
    # the view that never ends comes first: the one after it must still get its share of the time
    db = make_db(tmp_path / "loop.sqlite", "CREATE TABLE t (a TEXT, b INTEGER);" + NEVER_ENDING_VIEW + BASE.replace(
        "CREATE TABLE t (a TEXT, b INTEGER);", ""))
    deadline = 2.0
    start = time.perf_counter()
    s = introspect(db, cache=False, timeout_s=deadline)
    assert time.perf_counter() - start <= deadline + 1
    assert [t.name for t in s.tables] == ["t", "good"], s.notes
    assert len(s.notes) == 1 and s.notes[0].startswith("view 'forever' skipped: its first 2000 rows took longer")
    assert s.table("t").column("a").examples == ["x", "y"]
    assert s.table("good").column("a").examples == ["x", "y"]
    assert "forever" not in render_schema(s)
    assert execute(db, "SELECT count(*) FROM t").rows == ((3,),)


def test_the_skip_is_cached_with_its_note(tmp_path):
    db = make_db(tmp_path / "loop.sqlite", BASE + NEVER_ENDING_VIEW)
    first = introspect(db, timeout_s=1.0)
    schema_module._MEMORY_CACHE.clear()
    start = time.perf_counter()
    again = introspect(db, timeout_s=1.0)  # from the disk cache: no second wait on the view
    assert time.perf_counter() - start < 1.0
    assert again is not first and again.notes == first.notes and [t.name for t in again.tables] == ["t", "good"]
    assert Schema.from_dict({"db_id": "d", "tables": []}).notes == []  # caches written before notes existed


@pytest.mark.parametrize("broken, reason", [
    ("CREATE TABLE gone (z); CREATE VIEW v AS SELECT z FROM gone; DROP TABLE gone;",
     "view 'v' skipped: no such table: main.gone"),
    ("CREATE VIEW v AS SELECT no_such_function(a) AS q FROM t;", "view 'v' skipped: no such function: no_such_function"),
    ("CREATE VIEW v AS SELECT missing_column FROM t;", "view 'v' skipped: no such column: missing_column"),
])
def test_a_broken_view_is_skipped_and_the_rest_stays_usable(tmp_path, broken, reason):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "broken.sqlite")
    conn.executescript(BASE)
    conn.execute("PRAGMA legacy_alter_table = ON")  # allows a view on a column that is not there
    try:
        conn.executescript(broken)
    except sqlite3.OperationalError:
        conn.execute("PRAGMA writable_schema = ON")
        name, sql = "v", broken.split(";")[0]
        conn.execute("INSERT INTO sqlite_master VALUES ('view', ?, ?, 0, ?)", (name, name, sql))
    conn.commit()
    conn.close()
    db = tmp_path / "broken.sqlite"
    s = introspect(db, cache=False)
    assert s.notes == [reason]
    assert [t.name for t in s.tables] == ["t", "good"] and s.table("t").column("a").examples == ["x", "y"]
    assert execute(db, "SELECT a FROM good ORDER BY a").rows == (("x",), ("y",))
    assert "no such" in execute(db, "SELECT * FROM v").error  # the view fails the same way in a query


def test_a_view_with_one_failing_column_keeps_the_others(tmp_path):
    db = make_db(tmp_path / "json.sqlite", BASE + "CREATE VIEW j AS SELECT a, json_extract(a, '$.x') AS jx FROM t;")
    s = introspect(db, cache=False)
    assert s.notes == [] and s.table("j").column("a").examples == ["x", "y"]
    assert s.table("j").column("jx").examples == []  # 'x' is not JSON: the column fails, the view does not
    assert execute(db, "SELECT a FROM j WHERE a = 'y'").rows == (("y",),)


def test_a_virtual_table_whose_module_is_missing_is_skipped(tmp_path):
    import sqlite3

    db = make_db(tmp_path / "vt.sqlite", BASE)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("INSERT INTO sqlite_master VALUES ('table', 'ext', 'ext', 0, "
                 "'CREATE VIRTUAL TABLE ext USING some_extension(a, b)')")
    conn.commit()
    conn.close()
    s = introspect(db, cache=False)
    assert s.notes == ["table 'ext' skipped: no such module: some_extension"]
    assert [t.name for t in s.tables] == ["t", "good"]


HOT_JOURNAL = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA cache_size = 1")  # pages spill into the file during the transaction
conn.execute("BEGIN")
conn.execute("INSERT INTO t SELECT randomblob(2000), b FROM t")
os._exit(0)  # dies in the middle of the write: its journal stays behind, hot
"""


def test_an_unfinished_write_is_said_as_such(tmp_path):
    db = make_db(tmp_path / "hot.sqlite", "CREATE TABLE t (a, b); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                 "SELECT x + 1 FROM c LIMIT 500) INSERT INTO t SELECT randomblob(2000), x FROM c;")
    subprocess.run([sys.executable, "-c", HOT_JOURNAL, str(db)], check=True, timeout=60)
    journal = tmp_path / "hot.sqlite-journal"
    assert journal.exists() and journal.stat().st_size > 0
    before = db.read_bytes()
    expected = (f"database {str(db)!r} holds an unfinished write by another program (a leftover journal "
                f"'hot.sqlite-journal'); open it once with write access")
    with pytest.raises(DatabaseError) as caught:
        introspect(db, cache=False)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    assert "corrupt or truncated" not in str(caught.value)
    with pytest.raises(DatabaseError, match="holds an unfinished write"):
        execute(db, "SELECT count(*) FROM t")
    assert db.read_bytes() == before and journal.exists()  # read-only: nothing rolled back, nothing removed

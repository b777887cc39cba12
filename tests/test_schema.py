import time

from macsql.schema import introspect, render_schema, schema_from_tables_json
from tests.conftest import make_db


def test_introspect_tables_keys_and_examples(shop_db):
    s = introspect(shop_db)
    assert [t.name for t in s.tables] == ["customers", "orders"]
    orders = s.table("orders")
    assert orders.primary_key == ["order_id"]
    assert [(fk.column, fk.ref_table, fk.ref_column) for fk in orders.foreign_keys] == [
        ("customer_id", "customers", "customer_id")]
    customers = s.table("CUSTOMERS")  # lookups are case-insensitive
    assert customers.column("country").examples == ["Spain", "Sweden"]  # most frequent first
    assert customers.column("customer_id").examples == []  # ids carry no meaning for a prompt


def test_render_selection_keeps_only_chosen_columns(shop_db):
    s = introspect(shop_db)
    text = render_schema(s, {"customers": ["customer_id", "country"]})
    assert "CREATE TABLE customers" in text and "orders" not in text
    assert "country TEXT -- e.g. 'Spain', 'Sweden'" in text and "name TEXT" not in text
    full = render_schema(s)
    assert "FOREIGN KEY (customer_id) REFERENCES customers(customer_id)" in full


def test_bird_descriptions_are_read(tmp_path):
    db_dir = tmp_path / "toy"
    db_dir.mkdir()
    db = make_db(db_dir / "toy.sqlite", "CREATE TABLE frpm (cds TEXT, `Free Meal` REAL); INSERT INTO frpm VALUES ('a', 1.0);")
    desc = db_dir / "database_description"
    desc.mkdir()
    (desc / "frpm.csv").write_text(
        "original_column_name,column_name,column_description,data_format,value_description\n"
        "cds,,county district school code,text,\n"
        "Free Meal,,number of free meals,real,0 means none\n", encoding="utf-8-sig")
    s = introspect(db)
    col = s.table("frpm").column("Free Meal")
    assert col.description == "number of free meals" and col.value_description == "0 means none"
    assert "\"Free Meal\" REAL -- number of free meals; 0 means none" in render_schema(s)


def test_cache_is_keyed_by_file_change(shop_db):
    first = introspect(shop_db)
    assert introspect(shop_db) is first  # memory cache
    time.sleep(0.01)
    import sqlite3

    conn = sqlite3.connect(shop_db)
    conn.execute("CREATE TABLE extra (x INTEGER)")
    conn.commit()
    conn.close()
    assert [t.name for t in introspect(shop_db).tables] == ["customers", "orders", "extra"]


def test_schema_from_tables_json():
    entry = {"db_id": "d", "table_names_original": ["a", "b"],
             "column_names_original": [[-1, "*"], [0, "id"], [1, "a_id"], [1, "v"]],
             "column_types": ["text", "number", "number", "text"], "primary_keys": [1], "foreign_keys": [[2, 1]]}
    s = schema_from_tables_json(entry)
    assert s.table("a").primary_key == ["id"]
    assert s.table("b").foreign_keys[0].ref_table == "a"


ODD_SQL = """
CREATE TABLE "select" ("from" INT PRIMARY KEY, "a`b" TEXT, "say ""hi"" " TEXT, "two
lines" TEXT, total INT GENERATED ALWAYS AS ("from" * 2) VIRTUAL);
INSERT INTO "select" ("from", "a`b", "say ""hi"" ", "two
lines") VALUES (1, 'x', 'y', 'z');
CREATE TABLE parent (a INT, b INT, PRIMARY KEY (a, b));
CREATE TABLE child (x INT, y INT, p INT REFERENCES "select", FOREIGN KEY (x, y) REFERENCES parent (a, b));
CREATE VIEW big AS SELECT "from" AS f FROM "select" WHERE "from" > 0;
CREATE VIRTUAL TABLE docs USING fts5(body);
INSERT INTO docs VALUES ('hello world');
"""


def test_odd_schemas_render_as_sql_that_sqlite_parses(tmp_path):
    import sqlite3

    db = make_db(tmp_path / "odd.sqlite", ODD_SQL)
    s = introspect(db)
    names = [t.name for t in s.tables]
    assert names == ["select", "parent", "child", "docs", "big"]  # no docs_data, docs_idx, ... shadows
    assert s.table("big").kind == "view" and [c.name for c in s.table("big").columns] == ["f"]
    assert s.table("select").column("total").generated
    # a compound key gives one pair per column; `REFERENCES "select"` points at its primary key
    assert {(f.column, f.ref_table, f.ref_column) for f in s.table("child").foreign_keys} == {
        ("x", "parent", "a"), ("y", "parent", "b"), ("p", "select", "from")}
    text = render_schema(s, examples=False)
    assert 'CREATE TABLE "select" (\n  "from" INT PRIMARY KEY,\n  "a`b" TEXT,\n  "say ""hi"" " TEXT,\n' \
           '  "two lines" TEXT,\n  total INT -- generated from other columns\n);' in text
    assert "CREATE VIEW big (" in text
    # every table block is DDL SQLite accepts (views aside, which need a query)
    conn = sqlite3.connect(":memory:")
    for block in text.split(";\n"):
        if block.startswith("CREATE TABLE"):
            conn.execute(block.rstrip(";"))
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"select", "parent", "child"}


def test_corrupt_truncated_and_locked_databases_fail_in_one_line(tmp_path, shop_db):
    import sqlite3

    import pytest

    from macsql.errors import DatabaseError
    from macsql.sqlexec import execute

    data = shop_db.read_bytes()
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(data[:1024 + 200])
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    for path in (truncated, corrupt):
        with pytest.raises(DatabaseError, match="cannot be read") as info:
            introspect(path, cache=False)
        assert "\n" not in str(info.value)
    locker = sqlite3.connect(shop_db, isolation_level=None)
    locker.execute("PRAGMA locking_mode = EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseError, match="is locked by another process"):
            introspect(shop_db, cache=False)
        with pytest.raises(DatabaseError, match="is locked by another process"):
            execute(shop_db, "SELECT 1", timeout_s=0.3)
    finally:
        locker.execute("ROLLBACK")
        locker.close()

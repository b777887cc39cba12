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
    assert "`Free Meal` REAL -- number of free meals; 0 means none" in render_schema(s)


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

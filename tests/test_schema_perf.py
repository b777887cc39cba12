"""Prompt compaction in the schema renderer and bounded introspection of a big table (no timings asserted)."""

from __future__ import annotations

import sqlite3

import pytest

from macsql import schema as sch
from tests.conftest import make_db

BIG_ROWS = 5_000  # more than SAMPLE_SCAN_ROWS, so sampling must stop early


@pytest.fixture
def big_db(tmp_path):
    path = make_db(tmp_path / "big.sqlite", """
        CREATE TABLE kind (code TEXT PRIMARY KEY, label TEXT);
        INSERT INTO kind VALUES ('A', 'Alpha'), ('B', 'Beta'), ('C', 'Gamma');
        CREATE TABLE item (item_id INTEGER PRIMARY KEY, code TEXT REFERENCES kind(code),
                           code2 TEXT REFERENCES kind(code), owner TEXT, country TEXT, price REAL,
                           year TEXT, flag BOOL,
                           FOREIGN KEY (code) REFERENCES kind(code));
    """)
    conn = sqlite3.connect(path)
    conn.execute(f"""INSERT INTO item
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {BIG_ROWS})
        SELECT i, 'A', 'B', 'Owner ' || i, CASE i % 2 WHEN 0 THEN 'Spain' ELSE 'Chile' END, i * 1.5,
               CAST(2000 + i % 20 AS TEXT), CASE i % 2 WHEN 0 THEN 'T' ELSE 'F' END FROM n""")
    conn.commit()
    conn.close()
    return path


def render_line(text: str, column: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(column + " "))


def test_numeric_columns_get_no_examples_text_and_flags_do(big_db):
    text = sch.render_schema(sch.introspect(big_db))
    assert "e.g." not in render_line(text, "price")
    assert "'Spain'" in render_line(text, "country")
    assert "'T'" in render_line(text, "flag")
    assert "e.g." in render_line(text, "year")  # numbers stored as text: the format matters


def test_free_text_gets_one_example_categories_and_lookup_tables_keep_all(big_db):
    s = sch.introspect(big_db)
    item = s.table("item")
    assert not item.column("owner").repeats and item.column("country").repeats
    assert s.table("kind").column("label").repeats  # a 3-row lookup table: its values are categories
    text = sch.render_schema(s)
    assert render_line(text, "owner").count("'Owner") == sch.FREE_TEXT_EXAMPLES
    assert render_line(text, "label").count("'") == 2 * 3


def test_full_variant_restores_every_example(big_db, monkeypatch):
    monkeypatch.setattr(sch, "NUMERIC_EXAMPLES", True)
    monkeypatch.setattr(sch, "FREE_TEXT_EXAMPLES", sch.MAX_EXAMPLES)
    text = sch.render_schema(sch.introspect(big_db))
    assert "e.g." in render_line(text, "price")
    assert render_line(text, "owner").count("'Owner") == sch.MAX_EXAMPLES


def test_duplicate_foreign_keys_render_once(big_db):
    text = sch.render_schema(sch.introspect(big_db))
    assert text.count("FOREIGN KEY (code) REFERENCES kind(code)") == 1
    assert text.count("FOREIGN KEY (code2) REFERENCES kind(code)") == 1


def test_disk_cache_keeps_the_category_flag(big_db):
    first = sch.introspect(big_db)
    sch._MEMORY_CACHE.clear()  # the next call reads the JSON file, as a new process would
    again = sch.introspect(big_db)
    assert again is not first
    assert again.to_dict() == first.to_dict()
    assert sch.introspect(big_db) is again  # and then the memory cache


def test_sampling_reads_a_bounded_prefix_of_a_big_table(big_db):
    conn = sqlite3.connect(big_db)
    values, repeats = sch._sample_values(conn, "item", "owner", n_rows=sch.SAMPLE_SCAN_ROWS)
    conn.close()
    # "Owner 2001" and later lie beyond the scanned prefix, so they can never be chosen
    assert values and all(int(v.split()[1]) <= sch.SAMPLE_SCAN_ROWS for v in values)
    assert repeats is False

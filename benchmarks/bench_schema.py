"""Schema introspection on a big database: cold, cached on disk (a new process) and cached in memory.

    .venv/bin/python benchmarks/bench_schema.py --rows 3000000

Builds a database in a temporary folder: a fact table with `--rows` rows (text, integer, real, date and
foreign-key columns) and three small dimension tables, then times `macsql.schema.introspect`:

- cold: no memory cache and no disk cache (what the first `ask` on a new database pays); the first cold
  call of the process is shown apart because it also imports sqlite-utils;
- disk-cached: memory cache cleared, the JSON cache file present (every later `macsql ask` process);
- memory-cached: the same process asking again (a `Pipeline` answering many questions);
- render: `render_schema` of the whole schema (paid on every question).

The schema cache lives under $MACSQL_CACHE, pointed at the temporary folder so the user's cache is not
touched. The database file was just written, so the OS page cache is warm: cold here means "no macsql
cache", not "nothing in RAM". Goal: cached in milliseconds, cold under 2 s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, table  # noqa: E402


def build_db(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
        CREATE TABLE region (region_id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE store (store_id INTEGER PRIMARY KEY, name TEXT, city TEXT,
                            region_id INTEGER REFERENCES region(region_id));
        CREATE TABLE product (product_id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL);
        CREATE TABLE sale (sale_id INTEGER PRIMARY KEY, store_id INTEGER REFERENCES store(store_id),
                           product_id INTEGER REFERENCES product(product_id), sold_on TEXT, quantity INTEGER,
                           amount REAL, channel TEXT, note TEXT);
        INSERT INTO region VALUES (1, 'North'), (2, 'South'), (3, 'East'), (4, 'West');
    """)
    cities = ["Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Lisbon", "Vienna"]
    conn.executemany("INSERT INTO store VALUES (?, ?, ?, ?)",
                     [(i, f"Store {i}", cities[i % len(cities)], 1 + i % 4) for i in range(1, 201)])
    cats = ["tools", "garden", "kitchen", "toys", "books"]
    conn.executemany("INSERT INTO product VALUES (?, ?, ?, ?)",
                     [(i, f"Product {i}", cats[i % len(cats)], round(1 + (i * 37 % 500) / 7, 2))
                      for i in range(1, 5001)])
    # One recursive INSERT: millions of rows in seconds, no Python loop.
    conn.execute(f"""
        INSERT INTO sale
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
        SELECT i, 1 + i % 200, 1 + (i * 7919) % 5000, date('2020-01-01', '+' || (i % 1500) || ' days'),
               1 + i % 9, round((i % 10000) / 3.0, 2),
               CASE i % 3 WHEN 0 THEN 'online' WHEN 1 THEN 'store' ELSE 'phone' END,
               CASE WHEN i % 11 = 0 THEN 'gift wrap' ELSE NULL END
        FROM n
    """)
    conn.commit()
    conn.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="macsql-bench-schema-") as tmp:
        os.environ["MACSQL_CACHE"] = str(Path(tmp) / "cache")
        from macsql import schema as sch

        db = Path(tmp) / "big.sqlite"
        start = time.perf_counter()
        build_db(db, args.rows)
        print(f"# built {db.name}: {args.rows:,} rows in `sale`, {db.stat().st_size / 1e6:.0f} MB, "
              f"{time.perf_counter() - start:.1f}s")

        def timed(fn):
            start = time.perf_counter()
            value = fn()
            return time.perf_counter() - start, value

        cold, disk, memory, render = [], [], [], []
        first = None
        for _ in range(args.repeat + 1):
            sch._MEMORY_CACHE.clear()
            for f in sch._cache_dir().glob("*.json"):
                f.unlink()
            seconds, schema = timed(lambda: sch.introspect(db))
            if first is None:  # the first cold call also imports sqlite-utils (and pandas, which it pulls in)
                first = seconds
                continue
            cold.append(seconds)
            sch._MEMORY_CACHE.clear()
            disk.append(timed(lambda: sch.introspect(db))[0])
            memory.append(timed(lambda: sch.introspect(db))[0])
            render.append(timed(lambda s=schema: sch.render_schema(s))[0])
        print(f"# {len(schema.tables)} tables, {schema.n_columns} columns; "
              f"`sale` examples: { {c.name: c.examples for c in schema.table('sale').columns} }\n")
        table(["introspection", "median ms", "min ms", "max ms", "goal"], [
            ["cold, first in process (+imports)", 1e3 * first, 1e3 * first, 1e3 * first, "< 2000 ms"],
            ["cold (no cache)", 1e3 * median(cold), 1e3 * min(cold), 1e3 * max(cold), "< 2000 ms"],
            ["disk cache (new process)", 1e3 * median(disk), 1e3 * min(disk), 1e3 * max(disk), "milliseconds"],
            ["memory cache (same process)", 1e3 * median(memory), 1e3 * min(memory), 1e3 * max(memory),
             "milliseconds"],
            ["render_schema (whole schema)", 1e3 * median(render), 1e3 * min(render), 1e3 * max(render), "-"],
        ])
        print(f"\ncold / disk-cached: {median(cold) / median(disk):.0f}x; "
              f"cold / memory-cached: {median(cold) / max(median(memory), 1e-9):.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Hostile SQL against the PostgreSQL and DuckDB engines. Prints figures; asserts nothing.

PostgreSQL (the default): a throwaway server (tests/pg_server.py) logged in as the least-privilege role; how
many statements were tried, refused, and changed anything (every table's rows, relations, sequences, large
objects, roles, read as the superuser after each statement); the worst overshoot of the deadline over all
statements, and over the runaway ones (which only stop because of it).

DuckDB (`--engine duckdb`): a .duckdb file and a folder of CSV/Parquet files, built in a temporary folder from
tests/test_duckdb.py's shop; the SQLite corpus (tests/data/hostile_sql.txt: its refuse, any and runaway
sections) plus DuckDB's own ways out (COPY, ATTACH, INSTALL, SET, reading other files) and DuckDB runaways.
Changed anything: the rows (a content query) or any file (the database's folder hashed, the folder a
statement would leak to, the outside file's folder listed) after each statement.

    python benchmarks/bench_hostile_engines.py [--engine postgres|duckdb] [--deadline 0.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macsql.engines.postgres import PostgresDatabase  # noqa: E402
from tests.pg_server import READER_ROLE_SQL, Unavailable, start_server  # noqa: E402
from tests.test_postgres import GRANTS_SQL, HOSTILE, SHOP_SQL, checksums  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "hostile_sql.txt"
RUNAWAY = [
    "SELECT pg_sleep(60)",
    "SELECT count(*) FROM generate_series(1, 100000000) a CROSS JOIN generate_series(1, 100000000) b",
    "SELECT g FROM generate_series(1, 1000000000) g ORDER BY random()",
    "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 100000000) g",
    "SELECT repeat('x', 100000000) FROM generate_series(1, 100)",
    "SELECT count(DISTINCT g::text || random()) FROM generate_series(1, 100000000) g",
]


def runaway_corpus() -> list[str]:
    """The SQLite corpus's runaway section (the recursive CTEs run on PostgreSQL too), then the PostgreSQL ones."""
    return corpus_section("runaway") + RUNAWAY


# DuckDB's own runaway queries: each stops only at the deadline (or at DuckDB's memory limit)
DUCKDB_RUNAWAY = [
    "SELECT count(*) FROM range(100000) a, range(100000) b WHERE (a.range * b.range) % 7 = 3",
    "SELECT count(*) FROM range(1000000000000) t WHERE t.range % 7 = 3",
    "SELECT range FROM range(1000000000) ORDER BY random()",
    "SELECT count(DISTINCT range::VARCHAR || random()) FROM range(1000000000)",
    "SELECT string_agg(md5(range::VARCHAR), '') FROM range(100000000)",
    "SELECT * FROM range(1000000000)",
    "SELECT count(*) FROM customers a, customers b, customers c, range(100000000) d",
    # one string built in a call the interrupt cannot stop, for every row of a chunk (refused before running)
    "SELECT format('{:>{}}', 'x', 1000000000)",
    "SELECT printf('%999999d%999999d%999999d%999999d', 1, 2, 3, 4) FROM range(2048)",
    "SELECT printf('%999999d', range) FROM range(2048)",
    "SELECT repeat('x', 10000000) FROM range(1000)",
    "SELECT lpad('x', 1000000000, 'y')",
    "SELECT * FROM query('SELECT printf(''%.1000000000f'', 1.5)')",
]


def corpus_section(name: str) -> list[str]:
    """The statements of one section of the SQLite corpus (tests/data/hostile_sql.txt)."""
    section, out = None, []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif section == name and line.strip() and not line.startswith("#"):
            out.append(line)
    return out


def duckdb_main(deadline: float) -> None:
    import hashlib
    import tempfile

    try:
        import duckdb
    except ImportError:
        print("duckdb is not installed: pip install 'macsql[duckdb]'")
        return
    from macsql.engines.duckdb import DuckDBDatabase
    from tests.test_duckdb import CONTENT, DUCKDB_HOSTILE, SHOP_DUCKDB

    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    with tempfile.TemporaryDirectory(prefix="macsql-hostile-duckdb-") as tmp:
        root = Path(tmp)
        (root / "duck").mkdir()
        conn = duckdb.connect(str(root / "duck" / "shop.duckdb"))
        conn.execute(SHOP_DUCKDB)
        conn.close()
        files = root / "files"
        files.mkdir()
        conn = duckdb.connect(":memory:")
        conn.execute(SHOP_DUCKDB)
        conn.execute(f"COPY customers TO '{files / 'customers.parquet'}' (FORMAT parquet)")
        conn.execute(f"COPY (SELECT order_id, customer_id, amount, status FROM orders) TO '{files / 'orders.csv'}' "
                     "(HEADER)")
        conn.close()
        outside = root / "outside"
        outside.mkdir()
        (outside / "secret.csv").write_text("token\nhunter2\n")
        leak = root / "leak"
        names = {"leak": leak / "out.csv", "leak_dir": leak, "leak_db": leak / "evil.duckdb",
                 "secret": outside / "secret.csv", "outside_dir": outside}
        own = [template.format(**names) for template, _why in DUCKDB_HOSTILE]
        sets = (("refuse", corpus_section("refuse") + own), ("any", corpus_section("any")),
                ("runaway", corpus_section("runaway") + DUCKDB_RUNAWAY))
        for kind, spec, folder in (("file", root / "duck" / "shop.duckdb", root / "duck"), ("files", files, files)):
            db = DuckDBDatabase(spec)

            def state(db=db, folder=folder):
                return (db.execute(CONTENT, timeout_s=10).rows, digest(folder), leak.exists(),
                        sorted(p.name for p in outside.iterdir()))

            for name, statements in sets:
                before = state()
                refused = changed = timed_out = raised = 0
                worst = (0.0, "")
                for sql in statements:
                    start = time.perf_counter()
                    try:
                        result = db.execute(sql, timeout_s=deadline)
                    except Exception as exc:  # noqa: BLE001 - counted, not hidden
                        raised += 1
                        print(f"  raised {type(exc).__name__}: {sql[:60]!r}")
                        continue
                    over = time.perf_counter() - start - deadline
                    worst = max(worst, (over, sql[:60]))
                    refused += not result.ok
                    timed_out += result.timed_out
                    if over > deadline:
                        print(f"  overshoot {over:.2f}s: {sql[:70]!r}")
                    if result.ok and name != "any":
                        print(f"  ran ({len(result.rows)} rows): {sql[:70]!r}")
                    after = state()
                    if after != before:
                        changed += 1
                        print(f"  CHANGED: {sql[:60]!r}")
                        before = after
                print(f"duckdb {kind} {name}: {len(statements)} tried, {refused} refused or stopped ({timed_out} by "
                      f"the {deadline:g}s deadline), {changed} changed anything, {raised} raised; worst overshoot "
                      f"{max(worst[0], 0.0):.3f}s ({worst[1]!r})")
            db.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=("postgres", "duckdb"), default="postgres")
    ap.add_argument("--deadline", type=float, default=0.5)
    args = ap.parse_args()
    if args.engine == "duckdb":
        duckdb_main(args.deadline)
        return
    try:
        server = start_server()
    except Unavailable as exc:
        print(f"no PostgreSQL server: {exc}")
        return
    try:
        server.script(SHOP_SQL + READER_ROLE_SQL + GRANTS_SQL)
        db = PostgresDatabase(server.url())
        for name, statements in (("refuse", HOSTILE), ("runaway", runaway_corpus())):
            before = checksums(server)
            refused = changed = timed_out = raised = 0
            worst = (0.0, "")
            for sql in statements:
                start = time.perf_counter()
                try:
                    result = db.execute(sql, timeout_s=args.deadline)
                except Exception as exc:  # noqa: BLE001 - counted, not hidden
                    raised += 1
                    print(f"  raised {type(exc).__name__}: {sql[:60]!r}")
                    continue
                worst = max(worst, (time.perf_counter() - start - args.deadline, sql[:60]))
                refused += not result.ok
                timed_out += result.timed_out
                after = checksums(server)
                if after != before:
                    changed += 1
                    print(f"  CHANGED: {sql[:60]!r}")
                    before = after
            print(f"postgres {name}: {len(statements)} tried, {refused} refused or stopped ({timed_out} by the "
                  f"{args.deadline:g}s deadline), {changed} changed anything, {raised} raised; worst overshoot "
                  f"{max(worst[0], 0.0):.3f}s ({worst[1]!r})")
        db.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()

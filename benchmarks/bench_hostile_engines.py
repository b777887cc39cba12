"""Hostile SQL against the PostgreSQL engine, on a throwaway server (tests/pg_server.py) logged in as the
least-privilege role: how many statements were tried, refused, and changed anything (every table's rows,
relations, sequences, large objects, roles, read as the superuser after each statement); the worst overshoot
of the deadline over all statements, and over the runaway ones (which only stop because of it). Prints
figures; asserts nothing.

    python benchmarks/bench_hostile_engines.py [--deadline 0.5]
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
    section, out = None, []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif section == "runaway" and line.strip() and not line.startswith("#"):
            out.append(line)
    return out + RUNAWAY


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=0.5)
    args = ap.parse_args()
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

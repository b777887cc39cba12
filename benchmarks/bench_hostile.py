"""Hostile SQL against the executor (read-only, bounded, under a deadline): how many statements were tried,
refused, changed a byte or left a file; the worst overshoot of the deadline and how many statements ended
later than deadline + 0.5 s (the strict bar; the tests check that the deadline stopped them, which holds on
a busy machine too); the peak RSS of each memory-hungry statement, each in a fresh process. Prints figures;
asserts nothing.

    python benchmarks/bench_hostile.py [--deadline 0.5]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macsql.sqlexec import execute  # noqa: E402
from tests.conftest import SHOP_SQL  # noqa: E402
from tests.test_hostile_sql import CASES, MEMORY_HOGS, MEMORY_PROBE, SLACK_S  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=0.5)
    args = ap.parse_args()
    for mode in ("delete", "wal"):
        folder = Path(tempfile.mkdtemp(prefix=f"hostile-{mode}-"))
        db = folder / "shop.sqlite"
        conn = sqlite3.connect(db)
        conn.executescript(SHOP_SQL + "CREATE VIRTUAL TABLE notes USING fts5(body);")
        conn.execute(f"PRAGMA journal_mode = {mode}")
        conn.commit()
        conn.close()
        digest = hashlib.sha256(db.read_bytes()).hexdigest()
        refused = changed = new_files = raised = timed_out = late = 0
        worst = (0.0, "")
        for _section, sql in CASES:
            start = time.perf_counter()
            try:
                r = execute(db, sql, timeout_s=args.deadline)
            except Exception as exc:  # noqa: BLE001 - counted, not hidden
                raised += 1
                print(f"  raised {type(exc).__name__}: {sql[:60]!r}")
                continue
            wall = time.perf_counter() - start
            over = wall - args.deadline
            worst = max(worst, (over, sql[:60]))
            late += over > SLACK_S
            refused += bool(r.error)
            timed_out += r.timed_out
            if hashlib.sha256(db.read_bytes()).hexdigest() != digest:
                changed += 1
                digest = hashlib.sha256(db.read_bytes()).hexdigest()
            files = sorted(p.name for p in folder.iterdir())
            if files != ["shop.sqlite"]:
                new_files += 1
        print(f"{mode:6s}: tried {len(CASES)}, refused or failed {refused} (timed out {timed_out}), changed the "
              f"database {changed}, left files {new_files}, raised {raised}; worst wall time over the "
              f"{args.deadline}s deadline: {worst[0]:+.3f}s ({worst[1]!r}); over deadline + {SLACK_S}s: {late}")
    print("peak RSS per memory statement (fresh process each; VmHWM):")
    for sql in ["SELECT 1", *MEMORY_HOGS]:
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(db)], input=sql, capture_output=True,
                             text=True, timeout=300)
        print(f"  {int(out.stdout) / 1024:6.0f} MB  {sql[:100]}")


if __name__ == "__main__":
    main()

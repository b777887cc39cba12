"""The hostile-SQL corpus (tests/data/hostile_sql.txt plus generated shapes) through `execute()` and through
the model-reply path, on copies of a rollback-journal and a WAL database; what safe execution promises:
no byte changes, no new files beside the database, no exception out of `execute()`, every statement stopped
by the deadline (parsing included), results bounded in memory, and every write form refused."""

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from macsql.agents.parsing import extract_sql
from macsql.errors import NoSQLError
from macsql.sqlexec import MAX_RESULT_BYTES, SQLITE_HEAP_LIMIT, _row_bytes, connect_readonly, execute
from tests.conftest import SHOP_SQL

CORPUS = Path(__file__).parent / "data" / "hostile_sql.txt"
DEADLINE_S = 0.4
SLACK_S = 0.5  # past deadline + SLACK_S, a result must say why it ended (timed out, or refused)
# The guarantee checked here: a statement that outlives its deadline is stopped by it, long before it would
# end on its own (these run for hours or for ever). The strict figure, every statement over within
# deadline + 0.5 s of wall time, depends on how busy the machine is: benchmarks/bench_hostile.py reports it.
BOUND_S = max(10 * DEADLINE_S, DEADLINE_S + 5)


def _nest(depth: int, open_: str, close: str, core: str = "1") -> str:
    return open_ * depth + core + close * depth


def corpus() -> list[tuple[str, str]]:
    """(section, statement) pairs: the file, then shapes too long to write out."""
    out, section = [], None
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() and not line.startswith("#"):
            out.append((section, line))
    for depth in (41, 48, 49, 80, 121, 500):
        out += [("runaway", "SELECT " + _nest(depth, "(", ")")),
                ("runaway", "SELECT " + _nest(depth, "(SELECT ", ")")),
                ("runaway", "SELECT " + _nest(depth, "abs(", ")")),
                ("runaway", "SELECT * FROM " + _nest(depth, "(SELECT * FROM ", ")", "customers") + "")]
    out += [
        ("runaway", "SELECT 1 WHERE 1 IN (" + ",".join(map(str, range(150_000))) + ")"),
        ("runaway", "SELECT " + "+".join(["1"] * 200_000)),
        ("runaway", " UNION ALL ".join(["SELECT 1"] * 100_000)),
        ("runaway", " UNION ALL ".join(["SELECT 1"] * 600)),  # under the length limit, over SQLite's terms
        ("runaway", "SELECT " + " || ".join(["'x'"] * 4000)),
        ("runaway", "SELECT count(*) FROM customers WHERE " + " OR ".join(f"name = 'n{i}'" for i in range(1500))),
        ("runaway", "SELECT " + "1" * 30_000),
        ("runaway", "SELECT '" + "x" * 1_000_000 + "'"),
        ("runaway", "SELECT 1 " + "-- x\n" * 10_000),
        ("refuse", "SELECT 1;" + " DELETE FROM customers;" * 500),
        ("any", "SELECT '\ud800'"),  # a lone surrogate
        ("any", "SELECT 1\x00; DROP TABLE customers"),
    ]
    return out


CASES = corpus()
WRITE_WORDS = ("DROP", "DELETE", "UPDATE", "INSERT", "REPLACE", "CREATE", "ALTER", "ATTACH", "PRAGMA", "VACUUM")


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 150
    assert sum(1 for s, _ in CASES if s == "refuse") >= 100 and sum(1 for s, _ in CASES if s == "runaway") >= 60


@pytest.fixture(scope="module", params=["delete", "wal"])
def database(request, tmp_path_factory):
    """A copy of the shop database in one journal mode, in a folder of its own (so new files show)."""
    folder = tmp_path_factory.mktemp(f"hostile-{request.param}")
    db = folder / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(SHOP_SQL + "CREATE VIEW spain AS SELECT * FROM customers WHERE country = 'Spain';"
                       "CREATE VIRTUAL TABLE notes USING fts5(body); INSERT INTO notes VALUES ('hello world');")
    conn.execute(f"PRAGMA journal_mode = {request.param}")
    conn.commit()
    conn.close()
    assert sorted(p.name for p in folder.iterdir()) == ["shop.sqlite"]
    return db


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(db: Path, sql: str):
    before, files = _digest(db), sorted(p.name for p in db.parent.iterdir())
    start = time.perf_counter()
    result = execute(db, sql, timeout_s=DEADLINE_S)  # an exception here fails the test
    wall = time.perf_counter() - start
    assert _digest(db) == before, f"{sql[:80]!r} changed the database"
    assert sorted(p.name for p in db.parent.iterdir()) == files, f"{sql[:80]!r} left files beside the database"
    assert wall <= BOUND_S, f"{sql[:80]!r} ran {wall:.2f}s with a {DEADLINE_S}s deadline"
    if result.seconds > DEADLINE_S + SLACK_S:  # late (a busy machine): then the deadline must have ended it
        assert result.timed_out or not result.ok, f"{sql[:80]!r} answered after {result.seconds:.2f}s"
    assert sum(_row_bytes(r) for r in result.rows) <= MAX_RESULT_BYTES
    return result


@pytest.mark.parametrize("section, sql", CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(CASES)])
def test_hostile_statement(database, section, sql):
    result = _check(database, sql)
    if section == "refuse":
        assert result.error, f"{sql[:80]!r} was not refused"
    elif section == "ok":
        assert result.ok, f"{sql!r}: {result.error}"
    if result.error:
        assert "\n" not in result.error  # a one-line message, shown as-is in traces and reports
    if section == "refuse" and any(w in sql.upper() for w in WRITE_WORDS):
        # the same statement as a model would send it: fenced, with chatter around it
        try:
            extracted = extract_sql(f"Here is the query you asked for:\n```sql\n{sql}\n```\nIt should work.")
        except NoSQLError:
            return
        # extraction may keep only a read inside the write (INSERT ... SELECT): that read may run, no write may
        reply_result = _check(database, extracted)
        assert reply_result.error or extracted.upper().startswith(("SELECT", "WITH")), extracted[:80]


NEVER_ENDING = [
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c ORDER BY x DESC LIMIT 1",
    "SELECT count(*) FROM customers a, customers b, customers c, customers d, customers e, customers f, "
    "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100000000) SELECT x FROM c)",
]


@pytest.mark.parametrize("sql", NEVER_ENDING)
def test_a_runaway_is_stopped_by_the_deadline(database, sql):
    start = time.perf_counter()
    result = execute(database, sql, timeout_s=DEADLINE_S)
    assert result.timed_out and result.error == f"query exceeded the {DEADLINE_S:g}s deadline"
    assert time.perf_counter() - start <= BOUND_S


def test_database_still_answers_after_the_corpus(database):
    assert execute(database, "SELECT count(*) FROM customers").rows == ((3,),)
    assert execute(database, "SELECT rowid FROM notes WHERE notes MATCH 'hello'").rows == ((1,),)


MEMORY_PROBE = """
import resource, sys
from macsql.sqlexec import execute
db = sys.argv[1]
for sql in sys.stdin.read().split("\\n@@\\n"):
    execute(db, sql, timeout_s=2)
# VmHWM is this process's own peak (ru_maxrss keeps the parent's across fork+exec on Linux)
try:
    print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
MEMORY_HOGS = [
    "SELECT zeroblob(1000000000)",
    "WITH RECURSIVE t(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM t) SELECT length(s) FROM t",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10000) SELECT randomblob(1000000) FROM c",
    "SELECT printf('%.*c', 1000000000, 'x')",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) "
    "SELECT length(group_concat(printf('%.*c', 100, 'a'))) FROM c",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000) "
    "SELECT randomblob(100000) FROM c ORDER BY 1 LIMIT 1",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000) SELECT x, x, x, x FROM c",
]


def test_memory_hogs_stay_small(tmp_path, shop_db):
    """Peak RSS of a process that runs the worst memory statements: without the limits one alone took
    ~3 GB (doubling string) or asked for 10 GB (randomblob rows)."""
    db = tmp_path / "copy.sqlite"
    shutil.copy(shop_db, db)
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(db)], input="\n@@\n".join(MEMORY_HOGS),
                         capture_output=True, text=True, timeout=120, check=True)
    peak_mb = int(out.stdout.strip()) / 1024  # KiB
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"  # ~40 MB of Python + the 64 MB result ceiling


TEMP_PROBE = """
import json, sys, time
from macsql import sqlexec
sqlexec.SQLITE_HEAP_LIMIT = int(sys.argv[2])  # before the first connection sets SQLite's ceiling
def written():  # bytes this process passed to write(): temp files are unlinked at once, so never listed
    return next(int(line.split()[1]) for line in open("/proc/self/io") if line.startswith("wchar:"))
for sql in sys.stdin.read().split("\\n@@\\n"):
    before, start = written(), time.perf_counter()
    r = sqlexec.execute(sys.argv[1], sql, timeout_s=float(sys.argv[3]))
    seconds, wrote = time.perf_counter() - start, written() - before
    print(json.dumps({"error": r.error, "rows": [list(x) for x in r.rows[:3]], "seconds": seconds, "wrote": wrote}))
"""
BLOBS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) "  # 10 GB at 50 kB a row
TEMP_HOGS = [
    BLOBS + "SELECT randomblob(50000) AS b FROM c ORDER BY b",
    BLOBS + "SELECT randomblob(50000) FROM c UNION SELECT randomblob(50000) FROM c",
    BLOBS + "SELECT count(*) FROM (SELECT DISTINCT randomblob(50000) FROM c)",
    BLOBS + "SELECT x FROM c GROUP BY randomblob(50000) LIMIT 1",
]


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts written bytes with Linux's /proc/self/io")
def test_sorts_over_big_values_write_no_temp_files(shop_db):
    """Working storage of sorts, DISTINCT and UNION stays in memory under the heap ceiling: a sort over 10 GB
    of generated blobs wrote 3.45 GB of temp files within a 30 s deadline and overran it by seconds. Run in
    a fresh process with a 96 MB ceiling (the same mechanism as the default 1 GB, in a second's work)."""
    ceiling, deadline = 96 * 1024 * 1024, 20.0
    legit = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000) "
             "SELECT count(*), max(b) FROM (SELECT DISTINCT printf('%08d', x % 5000) AS b FROM c ORDER BY b)")
    out = subprocess.run([sys.executable, "-c", TEMP_PROBE, str(shop_db), str(ceiling), str(deadline)],
                         input="\n@@\n".join([*TEMP_HOGS, legit, "SELECT count(*) FROM customers"]),
                         capture_output=True, text=True, timeout=300, check=True)
    *hogs, small_sort, after = [json.loads(line) for line in out.stdout.splitlines()]
    for sql, r in zip(TEMP_HOGS, hogs, strict=True):
        assert r["error"] and ("working memory" in r["error"] or "deadline" in r["error"]), (sql, r)
        assert r["wrote"] < 8 * 1024 * 1024, f"{sql!r} wrote {r['wrote'] / 1e6:.0f} MB"
        assert r["seconds"] <= deadline + 5, (sql, r)
    assert small_sort["error"] is None and small_sort["rows"] == [[5000, "00004999"]]  # a real sort still runs
    assert after["error"] is None and after["rows"] == [[3]]  # the memory came back


def test_connections_keep_temp_storage_in_memory_under_the_ceiling(shop_db):
    conn = connect_readonly(shop_db)
    try:
        assert conn.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
        assert 0 < conn.execute("PRAGMA hard_heap_limit").fetchone()[0] <= SQLITE_HEAP_LIMIT
    finally:
        conn.close()

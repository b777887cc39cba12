"""Scoring throughput: predictions compared to gold by execution, questions per second.

    .venv/bin/python benchmarks/bench_score.py --limit 480 --workers 2

Predictions are the gold queries of Spider dev, every other one perturbed (its LIMIT or ORDER BY direction
changed, a literal bumped) so that the comparator sees both matches and mismatches. All rows measure the
same questions in the same run:

- one process per query: a fresh process is started (fork) for every question, runs
  `compare.execution_match` and sends the verdict back, one after the other (the shape of evaluation scripts
  that isolate each query in its own process to be able to kill it);
- in-process loop: `execution_match` called in a plain loop (sqlexec's deadline needs no extra process);
- process pool: `execution_match` mapped over a `ProcessPoolExecutor` with `--workers` workers;
- `macsql score` path: `macsql.evaluate.scoring.score_examples` (process pool for execution, plus exact
  match, ROUGE-L and schema grounding per question), when that module is present.

The first three must agree on every verdict; the benchmark checks that.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SPIDER_DEV, table  # noqa: E402


def perturb(sql: str, i: int) -> str:
    """A plausible wrong prediction: change a LIMIT, flip an ORDER BY, or bump the first number."""
    if i % 2 == 0:
        return sql
    if re.search(r"\bLIMIT\s+\d+", sql, re.I):
        return re.sub(r"\bLIMIT\s+(\d+)", lambda m: f"LIMIT {int(m.group(1)) + 1}", sql, count=1, flags=re.I)
    if re.search(r"\bDESC\b", sql, re.I):
        return re.sub(r"\bDESC\b", "ASC", sql, count=1, flags=re.I)
    if re.search(r"\b\d+\b", sql):
        return re.sub(r"\b(\d+)\b", lambda m: str(int(m.group(1)) + 1), sql, count=1)
    return sql


def verdict(job: tuple[str, str, str]) -> tuple[bool, bool]:
    from macsql.compare import execution_match

    db, pred, gold = job
    m = execution_match(db, pred, gold)
    return m.ex_bird, m.ex_spider


def _child(job, conn) -> None:
    conn.send(verdict(job))
    conn.close()


def one_process_per_query(jobs) -> list[tuple[bool, bool]]:
    ctx = mp.get_context("fork")
    out = []
    for job in jobs:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(job, child))
        proc.start()
        child.close()
        out.append(parent.recv())
        proc.join()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=SPIDER_DEV)
    ap.add_argument("--limit", type=int, default=480)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    from macsql.evaluate.datasets import load_examples

    examples = load_examples(args.data)[: args.limit]
    jobs = [(str(e.db_path), perturb(e.gold_sql, i), e.gold_sql) for i, e in enumerate(examples)]
    verdict(jobs[0])  # import sqlglot & co. once in this process before anything is timed

    results, rows = {}, []

    def run(name, fn):
        start = time.perf_counter()
        results[name] = fn()
        seconds = time.perf_counter() - start
        rows.append([name, len(jobs), seconds, len(jobs) / seconds])
        print(f"# {name}: {seconds:.2f}s", flush=True)

    run("one process per query (baseline)", lambda: one_process_per_query(jobs))
    run("in-process loop", lambda: [verdict(j) for j in jobs])

    def pool():
        with ProcessPoolExecutor(max_workers=args.workers) as ex:
            return list(ex.map(verdict, jobs, chunksize=8))

    run(f"process pool, {args.workers} workers", pool)
    try:
        from macsql.evaluate.scoring import score_examples
    except ImportError:
        score_examples = None
    if score_examples is not None:
        preds = {e.question_id: {"pred_sql": j[1]} for e, j in zip(examples, jobs, strict=True)}

        def score():
            scores = score_examples(examples, preds, workers=args.workers, progress=False)
            return [(s.ex_bird, s.ex_spider) for s in scores]

        run(f"macsql score path (score_examples, {args.workers} workers)", score)

    reference = results["one process per query (baseline)"]
    for name, res in results.items():
        if res != reference:
            diff = sum(a != b for a, b in zip(res, reference, strict=True))
            print(f"!! {name} disagrees with the baseline on {diff} questions")
    base = rows[0][3]
    print(f"\n## scoring {len(jobs)} Spider dev questions ({sum(c for c, _ in reference)} correct by BIRD "
          f"semantics)\n")
    table(["method", "questions", "seconds", "questions/s", "vs baseline"],
          [r + [f"{r[3] / base:.1f}x"] for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

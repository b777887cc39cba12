"""How sure was the model of its direct query, and how often was it right then? Chooses `confident_prob`.

Reads a finished `macsql eval` run whose trace records the direct query's token probabilities (llama.cpp:
`min_prob`, the smallest probability of a greedy token, and `mean_prob`, their geometric mean), executes that
query and the gold one (the one executor, the one comparator), and prints, for each threshold, how many
questions would stop after the direct query (it ran with rows and the model was at least that sure) and how
many of those were right:

    python benchmarks/confident_stop.py runs/bird274/baseline --data ../shared/data/bird/dev.json

A threshold is worth it where the stopped questions are about as often right as the full pipeline is on them:
every question stopped saves the decomposed query, the samples and the repairs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from macsql.compare import compare_results
from macsql.evaluate.datasets import load_examples
from macsql.graph import score
from macsql.sqlexec import execute

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def direct_rows(run: Path, data: str, db_root: str | None) -> list[dict]:
    examples = {e.question_id: e for e in load_examples(data, db_root=db_root)}
    out = []
    for line in (run / "predictions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        direct = next((t for t in rec.get("trace", []) if t.get("source") == "direct" and "prompt_tokens" in t), None)
        if direct is None or direct.get("min_prob") is None:
            continue
        ex = examples[rec["question_id"]]
        sql = direct.get("sql") or ""
        res = execute(ex.db_path, sql, timeout_s=30) if sql else None
        gold = execute(ex.db_path, ex.gold_sql, timeout_s=30, max_rows=100_000)
        right = bool(res is not None and compare_results(res, gold, ex.gold_sql).correct)
        out.append({"min_prob": direct["min_prob"], "mean_prob": direct.get("mean_prob"), "ran": score(sql, res) == 2,
                    "right": right})
    return out


def _pct_right(rows: list[dict]) -> str:
    return f"{100.0 * sum(r['right'] for r in rows) / len(rows):.1f}%" if rows else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run folder with predictions.jsonl (its trace has min_prob)")
    ap.add_argument("--data", required=True, help="the benchmark file the run used")
    ap.add_argument("--db-root", default=None)
    args = ap.parse_args()
    rows = direct_rows(args.run, args.data, args.db_root)
    n = len(rows)
    if not n:
        raise SystemExit("no direct query with token probabilities in this run (llama.cpp records them)")
    print(f"{n} direct queries from {args.run}; right: {100.0 * sum(r['right'] for r in rows) / n:.1f}%\n")
    print("| signal | threshold | stop (ran with rows and sure) | right among stopped | right among the rest |")
    print("|---|---|---|---|---|")
    for signal in ("min_prob", "mean_prob"):
        for t in THRESHOLDS:
            stop = [r for r in rows if r["ran"] and r[signal] is not None and r[signal] >= t]
            rest = [r for r in rows if r not in stop]
            print(f"| {signal} | {t} | {len(stop)} ({100.0 * len(stop) / n:.0f}%) | {_pct_right(stop)} | {_pct_right(rest)} |")


if __name__ == "__main__":
    main()

"""The Selector's recall: the share of questions where every table and column the gold SQL uses survives
selection (value linking included when the database file is there).

Small schemas are never pruned (recall 1 by construction, reported apart); big ones cost one model call.
BIRD works from `dev_tables.json` alone (no .sqlite needed; then there are no values to link):

    python benchmarks/selector_recall.py --data ../shared/data/spider/dev.json --tables ../shared/data/spider/tables.json
    python benchmarks/selector_recall.py --data ../shared/data/bird/dev.json --tables ../shared/data/bird/dev_tables.json --limit 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from macsql.agents import selector
from macsql.backends import make_llm
from macsql.schema import introspect, schema_from_tables_json
from macsql.sql import names_used


def covered(gold: dict[str, list[str]], kept: dict[str, list[str]]) -> bool:
    return all(t in kept and set(cols) <= set(kept[t]) for t, cols in gold.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--tables", required=True, help="tables.json (Spider) or dev_tables.json (BIRD)")
    ap.add_argument("--db-root", default=None, help="folder of <db>/<db>.sqlite for value linking")
    ap.add_argument("--model", default="Qwen/Qwen2.5-Coder-1.5B-Instruct")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    questions = json.loads(Path(args.data).read_text())
    if args.limit:
        questions = random.Random(args.seed).sample(questions, min(args.limit, len(questions)))
    schemas = {e["db_id"]: schema_from_tables_json(e) for e in json.loads(Path(args.tables).read_text())}
    root = Path(args.db_root) if args.db_root else Path(args.data).parent / (
        "database" if (Path(args.data).parent / "database").is_dir() else "dev_databases")
    llm = None
    small = big = big_kept = 0
    seconds = []
    for q in questions:
        sql = q.get("query") or q.get("SQL")
        db_file = root / q["db_id"] / f"{q['db_id']}.sqlite"
        schema = introspect(db_file) if db_file.is_file() else schemas[q["db_id"]]
        gold = names_used(sql, schema).columns
        if not selector.needs_selection(schema):
            small += 1
            continue
        llm = llm or make_llm(args.model, args.backend, **({"n_threads": args.threads} if args.threads else {}))
        matches = selector.matches_map(selector.link_values(q["question"], db_file)) if db_file.is_file() else {}
        start = time.perf_counter()
        out = selector.select_schema(q["question"], schema, llm=llm, evidence=q.get("evidence", ""),
                                     matches=matches)
        seconds.append(time.perf_counter() - start)
        big += 1
        big_kept += covered(gold, out.selection)
    n = small + big
    print(f"{n} questions: {small} on schemas kept whole (recall 1), {big} pruned by the Selector")
    if big:
        print(f"recall on pruned schemas: {100.0 * big_kept / big:.1f}% ({big_kept}/{big}); "
              f"all questions: {100.0 * (small + big_kept) / n:.1f}%; "
              f"median Selector call {sorted(seconds)[len(seconds) // 2]:.1f}s")


if __name__ == "__main__":
    main()

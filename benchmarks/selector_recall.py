"""The Selector's recall: the share of questions where every table and column the gold SQL uses survives
selection (value linking included when the database file is there).

Small schemas are never pruned (recall 1 by construction, reported apart); big ones cost one model call.
BIRD works from `dev_tables.json` alone (no .sqlite needed; then there are no values to link):

    python benchmarks/selector_recall.py --data ../shared/data/spider/dev.json --tables ../shared/data/spider/tables.json
    python benchmarks/selector_recall.py --data ../shared/data/bird/dev.json --tables ../shared/data/bird/dev_tables.json --limit 100 --seed 0

`--cheap` needs no model: the default path's recall (what the prompt shows: a schema under
`prune_above_tokens` is shown whole) with each database's schema tokens, then retrieval pruning
(macsql.linking.retrieve_tables on question + evidence, values linked on the question as the pipeline does)
at `--sizes` tables kept: recall and the share of the schema's tokens kept.

    nice -n 19 python benchmarks/selector_recall.py --cheap --data ../shared/data/bird/dev.json --tables ../shared/data/bird/dev_tables.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from macsql.agents import selector
from macsql.backends import make_llm
from macsql.schema import introspect, render_schema, schema_from_tables_json
from macsql.sql import names_used


def covered(gold: dict[str, list[str]], kept: dict[str, list[str]]) -> bool:
    return all(t in kept and set(cols) <= set(kept[t]) for t, cols in gold.items())


def tokens(schema, selection=None) -> int:
    return int(len(render_schema(schema, selection)) / selector.CHARS_PER_TOKEN)


def cheap(questions, schemas, root: Path, sizes: list[int], above_tokens: int) -> None:
    """Recall and prompt size without a model call: the default path, then retrieval pruning at each size."""
    from macsql.linking import retrieve_tables
    from macsql.schema import _add_descriptions  # BIRD descriptions for a schema read from dev_tables.json

    loaded = {}
    per_db: dict[str, list[int]] = {}
    default_kept = 0
    stats = {k: [0, 0.0, 0] for k in sizes}  # covered, share of tokens kept, tokens kept
    for q in questions:
        db = q["db_id"]
        db_file = root / db / f"{db}.sqlite"
        if db not in loaded:
            if db_file.is_file():
                loaded[db] = introspect(db_file)
            else:
                loaded[db] = schemas[db]
                _add_descriptions(loaded[db], root / db / "database_description")
        schema = loaded[db]
        full = tokens(schema)
        per_db.setdefault(db, [full, 0])[1] += 1
        gold = names_used(q.get("query") or q.get("SQL"), schema).columns
        pruned = selector.needs_selection(schema, above_tokens)
        default_kept += 1 if not pruned else 0  # pruned ones need the model: not counted here
        matches = selector.matches_map(selector.link_values(q["question"], db_file)) if db_file.is_file() else {}
        for k in sizes:
            kept = retrieve_tables(q["question"], schema, evidence=q.get("evidence", ""), max_tables=k,
                                   matches=matches)
            n = tokens(schema, kept)
            stats[k][0] += covered(gold, kept)
            stats[k][1] += n / full
            stats[k][2] += n
    n = len(questions)
    print(f"{n} questions on {len(per_db)} databases; prune_above_tokens {above_tokens}")
    print("database                      tables  schema tokens  questions  default path")
    for db, (full, count) in sorted(per_db.items(), key=lambda kv: -kv[1][0]):
        shown = "pruned by the model" if full > above_tokens else "shown whole: recall 1"
        print(f"{db:<29} {len(loaded[db].tables):>6}  {full:>13}  {count:>9}  {shown}")
    print(f"default path, no model call: {default_kept}/{n} questions shown the whole schema (recall 1)")
    print("retrieval (macsql.linking), tables kept whole: recall (every gold table and column kept) | "
          "mean share of the schema's tokens kept | mean tokens kept")
    for k in sizes:
        covered_n, share, kept_tokens = stats[k]
        print(f"  top {k}: {100.0 * covered_n / n:5.1f}% | {100.0 * share / n:5.1f}% | {kept_tokens / n:.0f}")


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
    ap.add_argument("--cheap", action="store_true", help="no model: default-path and retrieval recall")
    ap.add_argument("--sizes", default="1,2,3,4", help="--cheap: tables kept by retrieval, comma-separated")
    ap.add_argument("--above-tokens", type=int, default=selector.PRUNE_ABOVE_TOKENS)
    ap.add_argument("--db", action="append", help="only these databases (repeatable)")
    ap.add_argument("--skip-db", action="append", default=[], help="leave these databases out (repeatable)")
    args = ap.parse_args()

    questions = [q for q in json.loads(Path(args.data).read_text())
                 if (not args.db or q["db_id"] in args.db) and q["db_id"] not in args.skip_db]
    if args.limit:
        questions = random.Random(args.seed).sample(questions, min(args.limit, len(questions)))
    schemas = {e["db_id"]: schema_from_tables_json(e) for e in json.loads(Path(args.tables).read_text())}
    root = Path(args.db_root) if args.db_root else Path(args.data).parent / (
        "database" if (Path(args.data).parent / "database").is_dir() else "dev_databases")
    if args.cheap:
        cheap(questions, schemas, root, [int(k) for k in args.sizes.split(",")], args.above_tokens)
        return
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

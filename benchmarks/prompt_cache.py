"""Does keeping each agent's prompt state pay on llama.cpp? The whole pipeline, question by question, on two
instances of the same GGUF model: one with saved prompt states (`prompt_cache_mb`, the default) and one with
llama.cpp's single KV cache alone. The two answer each question in turn, so load on the machine hits both
alike; the questions run in file order, as `macsql eval` reads them (by database).

    python benchmarks/prompt_cache.py --db dog_kennels --db concert_singer --limit 8 --threads 2

Reports seconds per question, prompt tokens evaluated vs served from a cache, and whether both instances
wrote the same SQL (they should: the same greedy decoding from the same KV values).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ask import question_row  # noqa: E402
from common import SPIDER_DEV, median, percentile, table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=SPIDER_DEV)
    ap.add_argument("--db", action="append", default=None, help="databases (repeatable; default: all)")
    ap.add_argument("--limit", type=int, default=8, help="questions per database")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None, help="a GGUF model (default: the default model)")
    ap.add_argument("--cache-mb", type=int, default=1024)
    args = ap.parse_args(argv)

    from macsql.evaluate.datasets import load_examples, select
    from macsql.schema import introspect

    examples = load_examples(args.data)
    dbs = args.db or sorted({e.db_id for e in examples})
    sample = [e for db in dbs for e in select(examples, dbs=[db], limit=args.limit)]
    for e in sample:
        introspect(e.db_path)  # warm the schema cache: this is about the model's prompt work
    variants = {"saved states": {"prompt_cache_mb": args.cache_mb}, "one KV cache": {"prompt_cache_mb": 0}}
    pipes, rows = side_by_side(variants, sample, model=args.model, threads=args.threads)
    states = pipes["saved states"].llm.prompt_states
    summary(rows, sample, dbs, f"saved prompt states on llama.cpp: {pipes['saved states'].llm.name}, "
                              f"{args.threads or 'all'} threads")
    print(f"\nsaved states at the end: {len(states)} ({states.size_bytes / 2 ** 20:.0f} MiB), "
          f"{states.hits} hits, {states.misses} misses")
    return 0


def side_by_side(variants: dict[str, dict], sample, *, model=None, threads=None):
    """One llama.cpp instance of the model per variant (its backend options), each answering every question
    in turn, so that load on the machine hits all alike. Returns the pipelines and each variant's rows."""
    from macsql.backends import make_llm
    from macsql.pipeline import Pipeline

    pipes = {name: Pipeline(make_llm(model, backend="llamacpp", n_threads=threads, **options))
             for name, options in variants.items()}
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    for i, e in enumerate(sample, 1):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            answer = pipe.ask(e.question, e.db_path, evidence=e.evidence or "")
            row = question_row(name, answer, time.perf_counter() - start, e)
            rows[name].append(row)
            print(f"[{i}/{len(sample)}] {e.db_id:<16} {name:<12} {'ok' if row['correct'] else '--'} "
                  f"{row['wall_s']:6.1f}s prompt {row['prompt_tokens']:5d} cached {row['cached_tokens']:5d}",
                  flush=True)
    return pipes, rows


def summary(rows: dict[str, list[dict]], sample, dbs, title: str) -> None:
    """The side-by-side table; "same SQL" compares each variant's answers with the first variant's."""
    first = next(iter(rows.values()))
    out = []
    for name, rs in rows.items():
        prompt = sum(r["prompt_tokens"] for r in rs)
        cached = sum(r["cached_tokens"] for r in rs)
        out.append([name, len(rs), sum(r["correct"] for r in rs), median([r["wall_s"] for r in rs]),
                    percentile([r["wall_s"] for r in rs], 90), sum(r["prefill_s"] for r in rs) / len(rs),
                    prompt / len(rs), 100.0 * cached / max(prompt, 1),
                    f"{sum(a['sql'] == b['sql'] for a, b in zip(rs, first, strict=True))}/{len(rs)}"])
    print(f"\n## {title}; {len(sample)} Spider dev questions ({', '.join(dbs)})\n")
    table(["variant", "n", "EX", "median s", "p90 s", "prefill s/q", "prompt tok/q", "cached %",
           "same SQL"], out)


if __name__ == "__main__":
    raise SystemExit(main())

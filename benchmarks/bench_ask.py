"""End-to-end `ask` latency, tokens and execution accuracy, several backends side by side in one run.

Spider sample (the end-to-end acceptance run; ~25 minutes on 2 cores, most of it the transformers path):

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_ask.py --limit 20 --seed 0 \
        --backends hf,llamacpp --out /tmp/bench_ask.jsonl

Non-model overhead on the demo database (no gold, so no accuracy):

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_ask.py --db demo --backends llamacpp

Questions are a seeded sample of Spider dev (`datasets.select(..., seed=)`), so every run and every backend
sees the same questions. They are interleaved (question 1 on every backend, then question 2, ...) so that
noise from other jobs on a shared machine hits all backends alike; compare the ratios more than the
absolute seconds. Each backend answers one warm-up question first (not counted), and the schema cache is
warmed for every sampled database (cold introspection is `bench_schema.py`'s business).

Per question, from the answer's trace: wall seconds of `Pipeline.ask`; model seconds (the agents' model
calls), split into prefill (reading the prompt) and decode (writing the reply); everything else (schema,
graph, SQL execution, Python); prompt, completion and KV-cached prompt tokens; model calls. Accuracy is
`compare.execution_match` against the gold SQL (BIRD semantics; Spider-strict alongside).

Backend specs are `name[:key=value,...]`, passed as backend options: `hf:dtype=bf16`, `hf:dtype=fp32`,
`llamacpp:n_threads=1`; keys that are pipeline options (`macsql.state.Context` fields) go to the pipeline
instead: `llamacpp:decompose=sub-sql` (the Decomposer's reply style), `hf:use_refiner=false`.
`--prompt-variant` switches schema-rendering policies of macsql.schema for a prompt
A/B on the same run (see `--help`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SPIDER_DEV, mean, median, parse_backend_spec, peak_rss_mb, percentile, table  # noqa: E402


def question_row(spec: str, answer, wall: float, example=None) -> dict:
    from macsql.backends.base import AGENTS

    calls = [t for t in answer.trace if t["agent"] in AGENTS]
    model = sum(t.get("seconds", 0.0) for t in calls)
    prefill = sum(t.get("prefill_seconds", 0.0) for t in calls)
    row = {
        "backend": spec, "question": answer.question, "wall_s": wall, "model_s": model, "prefill_s": prefill,
        "decode_s": model - prefill, "other_s": wall - model,
        "schema_s": sum(t.get("seconds", 0.0) for t in answer.trace if t["agent"] == "schema"),
        "execute_s": sum(t.get("seconds", 0.0) for t in answer.trace if t["agent"] == "execute"),
        "llm_calls": len(calls), "prompt_tokens": sum(t.get("prompt_tokens", 0) for t in calls),
        "completion_tokens": sum(t.get("completion_tokens", 0) for t in calls),
        "cached_tokens": sum(t.get("cached_tokens", 0) for t in calls), "rounds": answer.rounds,
        "sql": answer.sql, "error": answer.error,
    }
    if example is not None:
        from macsql.compare import execution_match

        m = execution_match(example.db_path, answer.sql, example.gold_sql)
        row.update({"question_id": example.question_id, "db_id": example.db_id, "gold_sql": example.gold_sql,
                    "correct": m.ex_bird, "spider": m.ex_spider})
    return row


def summarize(spec: str, rows: list[dict], load_s: float) -> dict:
    wall = [r["wall_s"] for r in rows]
    out = {
        "backend": spec, "n": len(rows), "load_s": load_s,
        "wall_med": median(wall), "wall_p90": percentile(wall, 90),
        "model_med": median([r["model_s"] for r in rows]),
        "prefill_med": median([r["prefill_s"] for r in rows]),
        "decode_med": median([r["decode_s"] for r in rows]),
        "other_med": median([r["other_s"] for r in rows]),
        "other_pct": 100.0 * sum(r["other_s"] for r in rows) / max(sum(wall), 1e-9),
        "prompt_tok": mean([r["prompt_tokens"] for r in rows]),
        "compl_tok": mean([r["completion_tokens"] for r in rows]),
        "cached_tok": mean([r["cached_tokens"] for r in rows]),
        "calls": mean([r["llm_calls"] for r in rows]),
    }
    if rows and "correct" in rows[0]:
        out["ex"] = sum(r["correct"] for r in rows)
        out["ex_spider"] = sum(r["spider"] for r in rows)
    return out


PROMPT_VARIANTS = ("current", "full")


def apply_prompt_variant(name: str) -> None:
    """`current`: the renderer as shipped. `full`: value examples on every column (the pre-compaction
    prompt), to measure what compaction saves and whether accuracy holds."""
    from macsql import schema

    if name == "full":
        schema.NUMERIC_EXAMPLES = True
        schema.FREE_TEXT_EXAMPLES = schema.MAX_EXAMPLES


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=SPIDER_DEV, help="Spider/BIRD-format questions (default: Spider dev).")
    ap.add_argument("--db", default=None, help="`demo` or a .sqlite file: time the demo questions instead.")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default="hf,llamacpp",
                    help="comma-separated specs, e.g. hf:dtype=bf16,llamacpp; separate them with ';' when a spec "
                         "has several options: 'llamacpp;llamacpp:candidates=1,use_values=false'")
    ap.add_argument("--model", default=None, help="model name or path (default: the default model)")
    ap.add_argument("--prompt-variant", choices=PROMPT_VARIANTS, default="current")
    ap.add_argument("--repeat", type=int, default=1, help="ask every question this many times (demo mode)")
    ap.add_argument("--out", default=None, help="write one JSON line per question and backend here")
    ap.add_argument("--summarize", default=None, metavar="JSONL",
                    help="print the summary of an earlier run's --out file (e.g. one cut short) and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        rows: dict[str, list[dict]] = {}
        for line in Path(args.summarize).read_text().splitlines():
            row = json.loads(line)
            rows.setdefault(row["backend"], []).append(row)
        n = min(len(r) for r in rows.values())  # only questions every backend answered
        print_summary([summarize(spec, r[:n], float("nan")) for spec, r in rows.items()],
                      f"{n} questions from {args.summarize}")
        return 0

    from macsql.pipeline import Pipeline
    from macsql.schema import introspect
    from macsql.state import Context
    from macsql.weights import DEFAULT_MODEL

    apply_prompt_variant(args.prompt_variant)
    if args.db:
        from macsql.demo import DEMO_QUESTIONS, resolve_db

        db = resolve_db(args.db)
        work = [(q, db, None) for q in DEMO_QUESTIONS] * args.repeat
    else:
        from macsql.evaluate.datasets import load_examples, select

        sample = select(load_examples(args.data), limit=args.limit, seed=args.seed)
        work = [(e.question, e.db_path, e) for e in sample]
    for db in {str(w[1]) for w in work}:
        introspect(db)  # warm the schema cache: this benchmark is about answering, not first contact

    pipes, loads = {}, {}
    pipeline_keys = {f.name for f in dataclasses.fields(Context)} - {"llm", "db_path"}
    # ";" separates backends when a spec carries several options (`llamacpp:candidates=1,use_values=false`)
    specs = args.backends.split(";") if ";" in args.backends else args.backends.split(",")
    for spec, name, options in map(parse_backend_spec, specs):
        pipe_options = {k: options.pop(k) for k in list(options) if k in pipeline_keys}
        start = time.perf_counter()
        pipes[spec] = Pipeline.from_pretrained(args.model or DEFAULT_MODEL, backend=name, backend_options=options,
                                               **pipe_options)
        loads[spec] = time.perf_counter() - start
        print(f"# {spec}: {type(pipes[spec].llm).__name__} loaded in {loads[spec]:.1f}s, "
              f"peak RSS so far {peak_rss_mb():.0f} MB", flush=True)
        pipes[spec].ask(work[0][0], work[0][1])  # warm-up, not counted

    rows: dict[str, list[dict]] = {spec: [] for spec in pipes}
    out = open(args.out, "w") if args.out else None  # noqa: SIM115 - closed below
    for i, (question, db, example) in enumerate(work, 1):
        for spec, pipe in pipes.items():
            start = time.perf_counter()
            answer = pipe.ask(question, db, evidence=getattr(example, "evidence", "") or "")
            row = question_row(spec, answer, time.perf_counter() - start, example)
            rows[spec].append(row)
            mark = "" if example is None else (" ok " if row["correct"] else " -- ")
            print(f"[{i}/{len(work)}] {spec:<18}{mark}{row['wall_s']:6.1f}s model {row['model_s']:6.1f}s "
                  f"(prefill {row['prefill_s']:.1f}) tok {row['prompt_tokens']}+{row['completion_tokens']} "
                  f"cached {row['cached_tokens']} calls {row['llm_calls']}  {question[:60]}", flush=True)
            if out:
                out.write(json.dumps(row, default=str) + "\n")
                out.flush()
    if out:
        out.close()

    sums = [summarize(spec, rows[spec], loads[spec]) for spec in pipes]
    print_summary(sums, f"{len(work)} questions ({'demo' if args.db else f'{args.data}, seed {args.seed}'}), "
                  f"prompt variant {args.prompt_variant}")
    print(f"\npeak RSS of this process (all backends loaded): {peak_rss_mb():.0f} MB")
    return 0


def print_summary(sums: list[dict], title: str) -> None:
    print(f"\n## {title}; seconds per question\n")
    headers = ["backend", "n", "EX (BIRD)", "EX (Spider)", "median s", "p90 s", "model", "prefill", "decode", "other",
               "other %", "prompt tok", "compl tok", "cached tok", "calls", "load s"]
    table(headers, [[s["backend"], s["n"], s.get("ex", "-"), s.get("ex_spider", "-"), s["wall_med"],
                     s["wall_p90"], s["model_med"], s["prefill_med"], s["decode_med"], s["other_med"],
                     s["other_pct"], s["prompt_tok"], s["compl_tok"], s["cached_tok"], s["calls"], s["load_s"]]
                    for s in sums])
    if len(sums) > 1:
        base = sums[0]
        print()
        for s in sums[1:]:
            print(f"median speed-up {s['backend']} vs {base['backend']}: {base['wall_med'] / s['wall_med']:.2f}x "
                  f"(p90 {base['wall_p90'] / s['wall_p90']:.2f}x)")


if __name__ == "__main__":
    raise SystemExit(main())

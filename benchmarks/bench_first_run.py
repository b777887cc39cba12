"""README's first command on a fresh machine, and decoding on the transformers path, in one run.

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_first_run.py --limit 10 \
        --before ../main/.venv/bin/python --fast-build-s 560

1. First command: `macsql ask "How many customers live in Spain?" --db demo` in a child process on a fresh
   cache (`MACSQL_CACHE` in a new temporary folder: the GGUF is assembled, verified, converted for
   transformers, then the question is answered), then once more on the now warm cache. Peak RSS (the
   child's own `ru_maxrss`) and wall seconds, for each `--backends` entry; `--before PYTHON` adds a run of
   the hf backend by another environment's interpreter (one with an older version of macsql installed). `--fast-build-s` is the source build time of llama-cpp-python (from its pip log), added to the
   llama.cpp row's time to a first answer on a fresh machine, because that backend needs the build.
2. Decoding: one transformers model (`HFCausalLM`, loaded once) answers seeded Spider dev questions through
   the whole pipeline with each `--variants` entry in turn, question by question (so a busy neighbour hits
   all variants alike): `greedy` (plain), `lookup` (prompt-lookup decoding of single prompts, the default),
   `lookup-serial` (every greedy prompt alone, with prompt lookup, instead of batched), `static` (greedy
   with a static KV cache), `compile` (static + torch.compile of the forward pass). Median seconds per
   question, generated tokens per model second, EX, and how many final queries equal the first variant's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ask import question_row  # noqa: E402
from common import SPIDER_DEV, median, table  # noqa: E402

QUESTION = "How many customers live in Spain?"
# The child reports its own peak RSS at exit (click's main ends with sys.exit, so atexit still runs).
CHILD = ("import atexit, resource, sys\n"
         "atexit.register(lambda: print(f'PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', "
         "file=sys.stderr))\n"
         "from macsql.cli import main\n"
         "sys.argv = ['macsql', 'ask', sys.argv[1], '--db', 'demo', '--backend', sys.argv[2]]\n"
         "main()\n")


def ask_in_child(backend: str, cache: Path, python: str) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, the answer's first line) of one `macsql ask` in a fresh process."""
    env = {**os.environ, "MACSQL_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run([python, "-c", CHILD, QUESTION, backend], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB=")]
    if proc.returncode != 0 or not peak:
        raise SystemExit(f"Error: `macsql ask` ({backend}) failed with exit code {proc.returncode}:\n"
                         f"{proc.stderr[-2000:]}")
    first = next((line.strip() for line in proc.stdout.splitlines() if line.strip()), "")
    return wall, int(peak[-1].split("=")[1]) / 1024.0, first


def first_command(backends: list[str], before: str | None, build_s: float) -> None:
    runs = ([("before", "hf", before)] if before else []) + [("after", b, sys.executable) for b in backends]
    rows = []
    for label, backend, python in runs:
        with tempfile.TemporaryDirectory(prefix="macsql-fresh-") as cache:
            cold, cold_rss, answer = ask_in_child(backend, Path(cache), python)
            warm, warm_rss, _ = ask_in_child(backend, Path(cache), python)
        build = build_s if backend == "llamacpp" else 0.0
        rows.append([label, backend, cold, cold_rss, warm, warm_rss, build, build + cold, answer[:40]])
        print(f"# {label} {backend}: fresh cache {cold:.1f}s, {cold_rss:.0f} MB; warm {warm:.1f}s", flush=True)
    print(f"\n## README's first command ({QUESTION!r} --db demo), a child process each\n")
    table(["code", "backend", "fresh cache s", "peak RSS MB", "warm cache s", "peak RSS MB", "build s",
           "fresh machine s", "first line"], rows)


VARIANTS = ("greedy", "lookup", "lookup-serial", "static", "compile")


def set_variant(llm, name: str, lookup_tokens: int, batch_size: int) -> None:
    """Switch the one loaded model between decoding variants (`_decode_kwargs` is what generate() gets)."""
    import torch

    base = type(llm)._decode_kwargs
    llm.prompt_lookup = lookup_tokens if name.startswith("lookup") else 0
    # lookup-serial: a batch of greedy prompts (the direct and the decomposed query) decoded one prompt at a
    # time, each with prompt lookup, instead of together without it
    llm.batch_size = 1 if name == "lookup-serial" else batch_size
    if name in ("static", "compile"):
        def static(n_prompts, n, temperature):  # greedy replies only: sampling keeps the dynamic cache
            kwargs = base(llm, n_prompts, n, temperature)
            return kwargs if kwargs["do_sample"] else {**kwargs, "cache_implementation": "static"}
        llm._decode_kwargs = static
    else:
        llm.__dict__.pop("_decode_kwargs", None)
    if name == "compile" and not hasattr(llm, "_eager_forward"):
        llm._eager_forward = llm.model.forward
        llm._compiled_forward = torch.compile(llm.model.forward)
    if hasattr(llm, "_eager_forward"):
        llm.model.forward = llm._compiled_forward if name == "compile" else llm._eager_forward


def decoding(model: str, variants: list[str], limit: int, seed: int, lookup_tokens: int) -> None:
    from macsql.backends.hf import HFCausalLM
    from macsql.evaluate.datasets import load_examples, select
    from macsql.pipeline import Pipeline
    from macsql.schema import introspect
    from macsql.weights import resolve

    sample = select(load_examples(SPIDER_DEV), limit=limit, seed=seed)
    for e in sample:
        introspect(e.db_path)  # warm the schema cache: this part is about decoding
    start = time.perf_counter()
    llm = HFCausalLM(resolve(model))
    print(f"# {type(llm).__name__} {llm.name} loaded in {time.perf_counter() - start:.1f}s", flush=True)
    pipe = Pipeline(llm)
    batch_size = llm.batch_size  # the backend's own; lookup-serial sets 1
    for name in variants:  # warm-up (and the compile) outside the timings
        set_variant(llm, name, lookup_tokens, batch_size)
        start = time.perf_counter()
        pipe.ask(sample[0].question, sample[0].db_path)
        print(f"# warm-up {name}: {time.perf_counter() - start:.1f}s", flush=True)
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    for i, e in enumerate(sample, 1):
        for name in variants:
            set_variant(llm, name, lookup_tokens, batch_size)
            start = time.perf_counter()
            answer = pipe.ask(e.question, e.db_path, evidence=e.evidence or "")
            row = question_row(name, answer, time.perf_counter() - start, e)
            rows[name].append(row)
            print(f"[{i}/{len(sample)}] {name:<8} {'ok' if row['correct'] else '--'} {row['wall_s']:6.1f}s "
                  f"model {row['model_s']:5.1f}s tok {row['completion_tokens']}  {e.question[:60]}", flush=True)
    first = rows[variants[0]]
    out = []
    for name in variants:
        rs = rows[name]
        # per model second, not per decode second: with prompt lookup transformers calls the logits processors
        # (the prefill clock) for the drafts before the prompt's forward pass, so the split is not measured
        model_s = sum(r["model_s"] for r in rs)
        out.append([name, len(rs), sum(r["correct"] for r in rs), median([r["wall_s"] for r in rs]),
                    median([r["model_s"] for r in rs]), sum(r["completion_tokens"] for r in rs) / max(model_s, 1e-9),
                    sum(r["completion_tokens"] for r in rs) / len(rs),
                    f"{sum(a['sql'] == b['sql'] for a, b in zip(rs, first, strict=True))}/{len(rs)}"])
    print(f"\n## decoding on the transformers path: {len(sample)} Spider dev questions (seed {seed}), "
          f"{llm.name}, the whole pipeline\n")
    table(["variant", "n", "EX", "median s", "median model s", "tok per model s", "compl tok",
           f"same SQL as {variants[0]}"], out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="hf,llamacpp", help="backends for the first command")
    ap.add_argument("--before", default=None, metavar="PYTHON",
                    help="interpreter of an environment with an older macsql, timed first (hf)")
    ap.add_argument("--fast-build-s", type=float, default=0.0,
                    help="llama-cpp-python's source build seconds (from its pip log)")
    ap.add_argument("--variants", default="greedy,lookup", help=f"decoding variants: {', '.join(VARIANTS)}")
    ap.add_argument("--limit", type=int, default=10, help="Spider questions for the decoding part (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lookup-tokens", type=int, default=None, help="draft length (default: the backend's)")
    ap.add_argument("--model", default=None, help="model for the decoding part (default: the default model)")
    ap.add_argument("--skip-first-command", action="store_true")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    from macsql.backends.hf import PROMPT_LOOKUP_TOKENS
    from macsql.weights import DEFAULT_MODEL

    if not args.skip_first_command:
        first_command(args.backends.split(","), args.before, args.fast_build_s)
    if args.limit:
        decoding(args.model or DEFAULT_MODEL, variants, args.limit, args.seed,
                 args.lookup_tokens or PROMPT_LOOKUP_TOKENS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The transformers path on CPU: float32 vs bfloat16, and batched vs one-at-a-time generation.

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_hf.py --dtypes fp32,bf16 --batch 4

For each dtype the default model is loaded (`HFCausalLM`, the cached bf16 checkpoint) and, on the same
`--batch` Decomposer prompts built from seeded Spider dev questions (greedy, `--max-new-tokens`):
- prefill tokens/s (one prompt, one new token) and decode tokens/s (one prompt, the rest);
- one question at a time (`batch_size=1`) vs all together (`batch_size=N`): wall seconds for the set,
  generated tokens per second, and whether the batched replies equal the one-at-a-time ones (left padding
  can change a greedy reply in reduced precision).
Peak RSS after each load is printed (it grows monotonically, so the first dtype's figure is its own).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SPIDER_DEV, peak_rss_mb, table  # noqa: E402


def spider_prompts(n: int, seed: int):
    from macsql.agents import decomposer
    from macsql.evaluate.datasets import load_examples, select
    from macsql.schema import introspect, render_schema

    out = []
    for e in select(load_examples(SPIDER_DEV), limit=n, seed=seed):
        out.append(decomposer.build_prompt(e.question, render_schema(introspect(e.db_path)), direct=True))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)

    import torch

    from macsql.backends.hf import HFCausalLM
    from macsql.weights import DEFAULT_MODEL, resolve

    prompts = spider_prompts(args.batch, args.seed)
    rows = []
    for dtype in args.dtypes.split(","):
        start = time.perf_counter()
        llm = HFCausalLM(resolve(args.model or DEFAULT_MODEL), dtype=dtype, batch_size=1)
        load = time.perf_counter() - start
        rss = peak_rss_mb()
        print(f"# {dtype}: loaded in {load:.1f}s, peak RSS {rss:.0f} MB, torch threads {torch.get_num_threads()}",
              flush=True)
        llm.generate(prompts[:1], max_new_tokens=2)  # warm-up
        g = llm.generate(prompts[:1], max_new_tokens=1)[0]
        prefill = g.prompt_tokens / g.prefill_seconds
        g = llm.generate(prompts[:1], max_new_tokens=args.max_new_tokens)[0]
        decode = max(g.completion_tokens - 1, 1) / max(g.seconds - g.prefill_seconds, 1e-9)

        llm.batch_size = 1
        start = time.perf_counter()
        single = llm.generate(prompts, max_new_tokens=args.max_new_tokens)
        t_single = time.perf_counter() - start
        llm.batch_size = len(prompts)
        start = time.perf_counter()
        batched = llm.generate(prompts, max_new_tokens=args.max_new_tokens)
        t_batch = time.perf_counter() - start
        same = sum(a.text == b.text for a, b in zip(single, batched, strict=True))
        toks_single = sum(x.completion_tokens for x in single)
        toks_batch = sum(x.completion_tokens for x in batched)
        rows.append([dtype, load, rss, prefill, decode, t_single, toks_single / t_single, t_batch,
                     toks_batch / t_batch, f"{t_single / t_batch:.2f}x", f"{same}/{len(prompts)}"])
        del llm
        gc.collect()
    print(f"\n## {len(prompts)} Spider Decomposer prompts (~{g.prompt_tokens} tokens each), greedy, "
          f"max {args.max_new_tokens} new tokens\n")
    table(["dtype", "load s", "peak RSS MB", "prefill tok/s", "decode tok/s", "1-at-a-time s", "tok/s",
           f"batch {len(prompts)} s", "tok/s", "batch speed-up", "same replies"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

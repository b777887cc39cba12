"""llama.cpp settings for the default model on this CPU: prefill and decode speed, KV-prefix reuse.

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_llamacpp.py
    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_llamacpp.py \
        --configs "n_threads=1;n_threads=2;n_batch=128;n_batch=1024;flash_attn=true;extra_bufts=false"

Each config (`;`-separated, each `key=value,...` passed to `LlamaCppLLM`; `model=PATH.gguf` picks the weights)
loads the model once and runs,
with the KV cache cleared before each prompt:
- prefill: a Spider-sized prompt (the `dog_kennels` schema, ~1,600 tokens with value examples) → tokens/s
  of reading a prompt;
- decode: a reply forced to `--decode-tokens` tokens → tokens/s of writing;
- prefix reuse: the Decomposer prompt, then a Refiner prompt on the same schema (the agents share the
  system message and schema prefix), the second without clearing the cache → seconds with and without the
  shared prefix cached, and the number of prompt tokens served from the cache.
The library build and its CPU features are printed first (`llama_print_system_info`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, parse_backend_spec, peak_rss_mb, table  # noqa: E402

SPIDER_DB = "/work/shared/data/spider/database/dog_kennels/dog_kennels.sqlite"


def prompts(db: str):
    from macsql.agents import decomposer, refiner
    from macsql.schema import introspect, render_schema

    text = render_schema(introspect(db))
    question = "What is the average age of the dogs who have gone through any treatments?"
    first = decomposer.build_prompt(question, text)
    second = refiner.build_prompt(question, text, "SELECT avg(age) FROM Dogs WHERE dog_id IN "
                                  "(SELECT dog_id FROM Treatment)", "SQLite error: no such table: Treatment")
    decode = [{"role": "user", "content": "Count from 1 to 400, one number per line, nothing else."}]
    return first, second, decode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="extra_bufts=false",
                    help="';'-separated LlamaCppLLM option sets, e.g. 'n_threads=1;n_threads=2'")
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--db", default=SPIDER_DB)
    args = ap.parse_args(argv)

    import llama_cpp

    from macsql.backends.llamacpp import LlamaCppLLM
    from macsql.weights import DEFAULT_MODEL, resolve

    print(f"# llama-cpp-python {llama_cpp.__version__} from {Path(llama_cpp.__file__).parent}")
    print(f"# {llama_cpp.llama_print_system_info().decode().strip()}")
    first, second, decode = prompts(args.db)
    rows = []
    for cfg in args.configs.split(";"):
        _, _, options = parse_backend_spec("x:" + cfg)
        model = options.pop("model", args.model or DEFAULT_MODEL)  # `model=PATH.gguf` compares weight files
        start = time.perf_counter()
        llm = LlamaCppLLM(resolve(model), **options)
        load = time.perf_counter() - start
        llm.generate([decode], max_new_tokens=4)  # warm-up: first compute allocates buffers
        pre, dec, cold, warm, cached = [], [], [], [], []
        for _ in range(args.repeat):
            llm.llama.reset()
            g = llm.generate([first], max_new_tokens=1)[0]
            pre.append(g.prompt_tokens / max(g.prefill_seconds, 1e-9))
            llm.llama.reset()
            g = llm.generate([decode], max_new_tokens=args.decode_tokens)[0]
            dec.append(g.completion_tokens / max(g.seconds - g.prefill_seconds, 1e-9))
            llm.llama.reset()
            cold.append(llm.generate([second], max_new_tokens=1)[0].seconds)
            llm.llama.reset()
            llm.generate([first], max_new_tokens=1)
            g = llm.generate([second], max_new_tokens=1)[0]
            warm.append(g.seconds)
            cached.append(g.cached_tokens)
        rows.append([cfg or "(defaults)", llm.extra_bufts, load, median(pre), median(dec), median(cold),
                     median(warm), f"{int(median(cached))}/{g.prompt_tokens}"])
        print(f"# {cfg}: done", flush=True)
        del llm
    print(f"\n## prompt of {g.prompt_tokens} tokens; decode of {args.decode_tokens} tokens; medians of "
          f"{args.repeat}\n")
    table(["config", "extra bufts", "load s", "prefill tok/s", "decode tok/s", "refiner s (cold)",
           "refiner s (prefix cached)", "cached/prompt tok"], rows)
    print(f"\npeak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

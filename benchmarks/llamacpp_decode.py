"""Which llama.cpp decoding settings pay? The whole pipeline, question by question, on one instance of the
same GGUF model per setting, each answering every question in turn (file order, as `macsql eval` reads
them), so that load on the machine hits all alike:

- `plain`: the default before these settings, one reply at a time, one token per step;
- `together`: the replies of one `generate` call decoded together (`parallel=4`: the direct and decomposed
  queries in one batch, the samples in another);
- `lookupN`: greedy replies check up to N prompt-lookup drafts per step (`lookup=N`, backends/lookup.py);
- `lookupN+together`: both.

    flock /tmp/macsql-heavy.lock python benchmarks/llamacpp_decode.py --db concert_singer --db pets_1 --limit 6 --threads 2 --variants plain,lookup4,lookup8

"same SQL" counts the questions where a setting wrote the same final query as the first one: a batch sums
in another order than a single sequence, so a near-tie between two tokens can go the other way.
"drafts kept" is the share of checked draft tokens the model agreed with.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SPIDER_DEV  # noqa: E402
from prompt_cache import side_by_side, summary  # noqa: E402


def options(name: str) -> dict:
    """`plain`, `together`, `lookupN`, or `lookupN+together`: the backend options of a setting."""
    out: dict = {}
    for part in name.split("+"):
        m = re.fullmatch(r"lookup(\d+)", part)
        if part == "plain":
            continue
        if part == "together":
            out["parallel"] = 4
        elif m:
            out["lookup"] = int(m.group(1))
        else:
            raise SystemExit(f"unknown setting {part!r}: use plain, together, lookupN or lookupN+together")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=SPIDER_DEV)
    ap.add_argument("--db", action="append", default=None, help="databases (repeatable; default: all)")
    ap.add_argument("--limit", type=int, default=6, help="questions per database")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None, help="a GGUF model (default: the default model)")
    ap.add_argument("--variants", default="plain,together",
                    help="comma-separated settings: plain, together, lookupN, lookupN+together")
    args = ap.parse_args(argv)

    from macsql.evaluate.datasets import load_examples, select
    from macsql.schema import introspect

    variants = {name: options(name) for name in args.variants.split(",")}
    examples = load_examples(args.data)
    dbs = args.db or sorted({e.db_id for e in examples})
    sample = [e for db in dbs for e in select(examples, dbs=[db], limit=args.limit)]
    for e in sample:
        introspect(e.db_path)
    pipes, rows = side_by_side(variants, sample, model=args.model, threads=args.threads)
    summary(rows, sample, dbs, f"llama.cpp decoding settings: {next(iter(pipes.values())).llm.name}, "
                               f"{args.threads or 'all'} threads")
    for name, pipe in pipes.items():
        llm = pipe.llm
        if getattr(llm, "drafted", 0):
            print(f"{name}: {llm.accepted} of {llm.drafted} drafted tokens kept "
                  f"({100.0 * llm.accepted / llm.drafted:.0f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

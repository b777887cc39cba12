"""Does decoding a call's replies together pay on llama.cpp? The whole pipeline, question by question, on two
instances of the same GGUF model: one decoding the replies of each `generate` call together (`parallel=4`:
the direct and decomposed queries in one batch, the samples in another) and one decoding them one after
another (the default). Both answer each question in turn, in file order as `macsql eval` reads them.

    flock /tmp/macsql-heavy.lock python benchmarks/parallel_decode.py --db concert_singer --db pets_1 --limit 6 --threads 2

"same SQL" counts the questions where both wrote the same final query: a batch sums in another order than
a single sequence, so a near-tie between two tokens can go the other way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SPIDER_DEV  # noqa: E402
from prompt_cache import side_by_side, summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=SPIDER_DEV)
    ap.add_argument("--db", action="append", default=None, help="databases (repeatable; default: all)")
    ap.add_argument("--limit", type=int, default=6, help="questions per database")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None, help="a GGUF model (default: the default model)")
    ap.add_argument("--parallel", type=int, default=4, help="sequences decoded together")
    args = ap.parse_args(argv)

    from macsql.evaluate.datasets import load_examples, select
    from macsql.schema import introspect

    examples = load_examples(args.data)
    dbs = args.db or sorted({e.db_id for e in examples})
    sample = [e for db in dbs for e in select(examples, dbs=[db], limit=args.limit)]
    for e in sample:
        introspect(e.db_path)
    variants = {"one at a time": {}, f"together ({args.parallel})": {"parallel": args.parallel}}
    pipes, rows = side_by_side(variants, sample, model=args.model, threads=args.threads)
    summary(rows, sample, dbs, f"replies decoded together on llama.cpp: {next(iter(pipes.values())).llm.name}, "
                               f"{args.threads or 'all'} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

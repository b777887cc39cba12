"""Which candidates should vote? Re-plays the execution vote of a finished `macsql eval` run on subsets of
its candidates, so that k and the mix are chosen by measurement from one run with the most candidates.

Every candidate query recorded in predictions.jsonl is executed again (the one executor) and compared with
the gold result (the one comparator); then `macsql.vote.vote` picks a winner among each subset:

    python benchmarks/vote_mix.py runs/s150/full --data ../shared/data/spider/dev.json

Rows: a single greedy query (direct, decomposed), the direct query plus the decomposed one, then plus 1..n
samples, the direct query plus samples only (no Decomposer), a router that keeps the decomposed candidate
only for questions that look nested, and each mix with and without the Refiner's fixes. Figures are EX
with BIRD semantics (the same set of rows), the same notion the vote groups by.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from macsql.compare import compare_results
from macsql.evaluate.datasets import load_examples
from macsql.graph import score
from macsql.sqlexec import execute
from macsql.vote import vote

# Words that mark a question needing nesting, set operations or several aggregates (the router's rule).
_COMPLEX = re.compile(r"\b(not|never|without|except|both|and also|more than (the )?average|than any|"
                      r"at least|for each|each|every|per|most|least|highest|lowest|largest|smallest)\b", re.I)


def _candidate_rows(rec, db_path, gold):
    out = []
    for c in rec.get("candidates", []):
        res = execute(db_path, c["sql"], timeout_s=10) if c["sql"] else None
        right = bool(res is not None and compare_results(res, gold, rec["gold_sql"]).correct)
        out.append({"source": c["source"], "round": c["round"], "result": res, "score": score(c["sql"], res),
                    "right": right})
    return out


def _pick(cands, keep) -> bool:
    chosen = [c for c in cands if keep(c)]
    return bool(chosen) and chosen[vote(chosen).winner]["right"]


def mixes(n_samples: int):
    def samples(j):
        return lambda c: c["source"].startswith("sample") and int(c["source"].split()[1]) <= j

    def fixes_of(base):  # a fix joins when the candidate it repairs is in the mix (recorded as "fix of #i")
        return lambda c, cands: c["source"].startswith("fix of #") and base(cands[int(c["source"][8:])])

    rows = [("direct only", lambda c: c["source"] == "direct"),
            ("decomposed only", lambda c: c["source"] == "decomposed"),
            ("direct + decomposed", lambda c: c["source"] in ("direct", "decomposed"))]
    for j in range(1, n_samples + 1):
        rows.append((f"direct + decomposed + {j} sample(s)",
                     lambda c, j=j: c["source"] in ("direct", "decomposed") or samples(j)(c)))
    rows.append((f"direct + {n_samples} samples (no decomposed)",
                 lambda c: c["source"] == "direct" or samples(n_samples)(c)))
    return rows, fixes_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run folder with predictions.jsonl")
    ap.add_argument("--data", required=True, help="the benchmark file the run used")
    ap.add_argument("--db-root", default=None)
    args = ap.parse_args()
    records = [json.loads(line) for line in (args.run / "predictions.jsonl").read_text().splitlines()]
    examples = {e.question_id: e for e in load_examples(args.data, db_root=args.db_root)}
    table = []
    n_samples = 0
    for rec in records:
        ex = examples[rec["question_id"]]
        gold = execute(ex.db_path, ex.gold_sql, timeout_s=30, max_rows=100_000)
        cands = _candidate_rows(rec, ex.db_path, gold)
        n_samples = max([n_samples] + [int(c["source"].split()[1]) for c in cands if c["source"].startswith("sample")])
        table.append((rec, cands))
    rows, fixes_of = mixes(n_samples)
    print(f"{len(table)} questions from {args.run}\n")
    print("| candidates | EX without fixes | EX with the Refiner's fixes |\n|---|---|---|")

    def ex(keep, with_fixes):
        right = 0
        fix = fixes_of(keep)
        for _rec, cands in table:
            if with_fixes:
                right += _pick(cands, lambda c, cands=cands: (keep(c) and c["round"] == 0) or fix(c, cands))
            else:
                right += _pick(cands, lambda c: keep(c) and c["round"] == 0)
        return 100.0 * right / len(table)

    for name, keep in rows:
        print(f"| {name} | {ex(keep, False):.1f} | {ex(keep, True):.1f} |")
    full = lambda c: c["round"] == 0  # noqa: E731
    routed = 0
    for rec, cands in table:
        nested = bool(_COMPLEX.search(rec["question"]))
        routed += _pick(cands, lambda c, nested=nested: full(c) and (nested or c["source"] != "decomposed"))
    print(f"| router: decomposed only for nested-looking questions, + all samples | "
          f"{100.0 * routed / len(table):.1f} | |")
    # Adaptive: samples are drawn only when the direct and the decomposed query do not already agree on a
    # result with values (the graph's `early_stop`); an agreeing pair is settled, so no fix follows either.
    adaptive = [0, 0, 0]  # right without fixes, right with fixes, questions stopped early
    for _rec, cands in table:
        pair = [c for c in cands if c["source"] in ("direct", "decomposed") and c["round"] == 0]
        if len(pair) == 2 and vote(pair).settled:
            adaptive[2] += 1
            adaptive[0] += _pick(pair, lambda c: True)
            adaptive[1] += _pick(pair, lambda c: True)
        else:
            adaptive[0] += _pick(cands, full)
            adaptive[1] += _pick(cands, lambda c: True)
    n = len(table)
    print(f"| adaptive: samples only when direct and decomposed disagree ({adaptive[2]} of {n} stop at two) | "
          f"{100.0 * adaptive[0] / n:.1f} | {100.0 * adaptive[1] / n:.1f} |")
    oracle = sum(any(c["right"] for c in cands) for _, cands in table)
    print(f"\nany candidate right (the vote's ceiling): {100.0 * oracle / len(table):.1f}")


if __name__ == "__main__":
    main()

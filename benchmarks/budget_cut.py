"""Questions the budget may have cut short: those of an eval run whose vote had no candidate that ran with
rows and that stopped before the last repair round. Writes them as a data file of their own (outside the
repository: it holds the benchmark's text) to answer again with other budget settings, then merges the new
answers into the run's report to give the whole set's figures under the new rule.

    python benchmarks/budget_cut.py select runs/sp480/full --data ../shared/data/spider/dev.json --to /tmp/cut.json
    macsql eval --data /tmp/cut.json --db-root ../shared/data/spider/database --budget-x 0 --out runs/cut
    python benchmarks/budget_cut.py merge runs/sp480/full runs/cut --ids /tmp/cut.ids.json --baseline runs/sp480/baseline

A question with a candidate that ran with rows takes the same steps whatever the budget does to questions
without one (graph.out_of_time), so only the selected questions can change.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

MAX_ROUNDS = 3  # the default Settings.max_rounds: a question that used them all was not cut by the budget


def select(run: Path, data: Path, to: Path) -> None:
    ids = []
    for line in (run / "predictions.jsonl").open(encoding="utf-8"):
        rec = json.loads(line)
        votes = [t for t in rec.get("trace") or [] if t.get("agent") == "vote"]
        ran = any(g.get("score") == 2 for v in votes for g in v.get("groups") or [])
        if not ran and (rec.get("refine_rounds") or 0) < MAX_ROUNDS:
            ids.append(rec["question_id"])
    entries = json.loads(data.read_text(encoding="utf-8"))
    to.write_text(json.dumps([entries[int(i)] for i in ids], indent=1), encoding="utf-8")
    to.with_suffix(".ids.json").write_text(json.dumps(dict(enumerate(ids))), encoding="utf-8")
    print(f"{len(ids)} questions -> {to} (their ids in the run: {to.with_suffix('.ids.json')})")


def _report(run: Path) -> dict[str, dict]:
    return {r["question_id"]: r for r in csv.DictReader((run / "report.csv").open(encoding="utf-8"))}


def _line(name: str, rows: list[dict]) -> str:
    secs = sorted(float(r["seconds"]) for r in rows)
    pct = lambda key: 100 * sum(r[key] == "True" for r in rows) / len(rows)  # noqa: E731
    return (f"{name}: n={len(rows)} EX(Spider) {pct('ex_spider'):.2f} EX(BIRD) {pct('ex_bird'):.2f} "
            f"fails {100 - pct('executes'):.2f}% median {statistics.median(secs):.2f}s p90 "
            f"{secs[int(0.9 * len(secs))]:.2f}s calls {statistics.mean(int(r['llm_calls']) for r in rows):.2f}")


def merge(run: Path, again: Path, ids: Path, baseline: Path | None) -> None:
    old, new = _report(run), _report(again)
    id_of = {str(k): v for k, v in json.loads(ids.read_text()).items()}
    merged = {**old, **{id_of[k]: r for k, r in new.items()}}
    changed = [id_of[k] for k in new]
    fixed = sum(merged[i]["ex_spider"] == "True" and old[i]["ex_spider"] != "True" for i in changed)
    broken = sum(merged[i]["ex_spider"] != "True" and old[i]["ex_spider"] == "True" for i in changed)
    print(f"asked again: {len(changed)}; EX (Spider) fixed {fixed}, broken {broken}")
    print(_line("run", list(old.values())))
    print(_line("merged", list(merged.values())))
    if baseline:
        print(_line("baseline", list(_report(baseline).values())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("select")
    s.add_argument("run", type=Path)
    s.add_argument("--data", type=Path, required=True, help="the run's Spider-format data file")
    s.add_argument("--to", type=Path, required=True)
    m = sub.add_parser("merge")
    m.add_argument("run", type=Path)
    m.add_argument("again", type=Path)
    m.add_argument("--ids", type=Path, required=True)
    m.add_argument("--baseline", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "select":
        select(args.run, args.data, args.to)
    else:
        merge(args.run, args.again, args.ids, args.baseline)


if __name__ == "__main__":
    main()

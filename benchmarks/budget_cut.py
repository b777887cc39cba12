"""Questions the budget may have cut short: those of an eval run whose vote had no candidate that ran with
rows and that stopped before the last repair round. Writes them as a data file of their own (outside the
repository: it holds the benchmark's text) to answer again with other budget settings, then merges the new
answers into the run's report to give the whole set's figures under the new rule.

    python benchmarks/budget_cut.py select runs/sp480/full --data ../shared/data/spider/dev.json --to /tmp/cut.json
    macsql eval --data /tmp/cut.json --db-root ../shared/data/spider/database --budget-x 0 --out runs/cut
    python benchmarks/budget_cut.py merge runs/sp480/full runs/cut --ids /tmp/cut.ids.json --baseline runs/sp480/baseline

A question with a candidate that ran with rows takes the same steps whatever the budget does to questions
without one (graph.out_of_time), so only the selected questions can change.

`replay` reads the unbudgeted answers (`--budget-x 0`: every step the question would take is in its trace)
and cuts each trace where `graph.out_of_time` would have: before a step of r replies once the calls so far
plus r first calls cost more than `--budget-x` first calls (`graph.call_cost`) while a candidate has run with
rows, or more than CAP first calls while none has; the vote then picks among the candidates run before the
cut (each run again and compared with the gold result: the one executor, the one comparator, the one vote).
CAP `inf` is the default rule (no cut while nothing ran), 6 the rule it replaced (twice the budget):

    python benchmarks/budget_cut.py replay runs/cut --data /tmp/cut.json --caps 6,9,12,inf \
        --run runs/sp480/full --ids /tmp/cut.ids.json --verdicts /tmp/verdicts.json

`sample` counts those answers (and a run's, `--run`) per database on a seeded sample drawn as `macsql eval`
draws it, over databases that need not be here (only their questions are read): another run's questions,
such as the BIRD issue's 100 over three databases of which two are in ../shared:

    python benchmarks/budget_cut.py sample /tmp/verdicts.json --data ../shared/data/bird/dev.json \
        --db-id student_club --db-id superhero --db-id toxicology --limit 100 --seed 0 --run runs/bird274/baseline
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


def _id_map(ids: Path, asked: list[str]) -> dict[str, str]:
    """The run's question id of each question answered again. A data file whose entries carry their own
    `question_id` (BIRD's) keeps those ids; otherwise the new run numbers them 0.. in the ids file's order."""
    id_of = {str(k): str(v) for k, v in json.loads(ids.read_text()).items()}
    if set(asked) <= set(id_of.values()):
        return {v: v for v in id_of.values()}
    return id_of


def merge(run: Path, again: Path, ids: Path, baseline: Path | None) -> None:
    old, new = _report(run), _report(again)
    id_of = _id_map(ids, list(new))
    merged = {**old, **{id_of[k]: r for k, r in new.items()}}
    changed = [id_of[k] for k in new]
    fixed = sum(merged[i]["ex_spider"] == "True" and old[i]["ex_spider"] != "True" for i in changed)
    broken = sum(merged[i]["ex_spider"] != "True" and old[i]["ex_spider"] == "True" for i in changed)
    print(f"asked again: {len(changed)}; EX (Spider) fixed {fixed}, broken {broken}")
    print(_line("run", list(old.values())))
    print(_line("merged", list(merged.values())))
    if baseline:
        print(_line("baseline", list(_report(baseline).values())))


def _steps(trace: list[dict]) -> list[tuple[list[dict], list[dict]]]:
    """The trace as (model calls, executions) steps: a step is the calls made between two executions (one
    reply, the samples of one draw, or one repair round's replies) and the executions that follow them."""
    from macsql.backends.base import AGENTS

    steps: list[tuple[list[dict], list[dict]]] = []
    for t in trace:
        if t.get("agent") in AGENTS:
            if not steps or steps[-1][1]:
                steps.append(([], []))
            steps[-1][0].append(t)
        elif t.get("agent") == "execute" and steps:
            steps[-1][1].append(t)
    return steps


def cut(trace: list[dict], budget_x: float, cap: float) -> tuple[set[int], int, float, int]:
    """The candidates (ids) run before graph.out_of_time would stop the question, with the model calls,
    seconds and prompt tokens spent by then."""
    from macsql.graph import call_cost

    steps = _steps(trace)
    if not steps:
        return set(), 0, 0.0, 0
    first = call_cost(steps[0][0][0])
    kept: set[int] = set()
    ran, calls, cost, seconds, prompt = False, 0, 0.0, 0.0, 0
    for i, (replies, runs) in enumerate(steps):
        limit = budget_x if ran else cap
        if i and budget_x > 0 and first > 0 and cost + len(replies) * first > limit * first:
            break
        calls += len(replies)
        prompt += sum(t.get("prompt_tokens", 0) for t in replies)
        cost += sum(call_cost(t) for t in replies)
        seconds += sum(t.get("seconds", 0.0) for t in replies) + sum(t.get("seconds", 0.0) for t in runs)
        for t in runs:
            kept.add(t["candidate"])
            ran = ran or (not t.get("error") and t.get("rows", 0) > 0)
    return kept, calls, seconds, prompt


def replay(again: Path, data: Path, db_root: str | None, caps: list[float], budget_x: float,
           run: Path | None, ids: Path | None, verdicts_to: Path | None = None) -> None:
    from macsql.compare import execution_match
    from macsql.evaluate.datasets import load_examples
    from macsql.graph import score
    from macsql.vote import vote

    examples = {e.question_id: e for e in load_examples(str(data), db_root=db_root)}
    table = []
    for line in (again / "predictions.jsonl").open(encoding="utf-8"):
        rec = json.loads(line)
        ex = examples[rec["question_id"]]
        cands = []
        for c in rec.get("candidates") or []:
            m = execution_match(ex.db_path, c["sql"] or "", ex.gold_sql)
            cands.append({"id": c["id"], "result": m.pred, "score": score(c["sql"], m.pred),
                          "bird": m.ex_bird, "spider": m.ex_spider})
        table.append((rec, cands))
    old = _report(run) if run else {}
    id_of = _id_map(ids, [rec["question_id"] for rec, _ in table]) if ids else {}
    print(f"{len(table)} questions answered again without a budget ({again}); budget x{budget_x:g} once a "
          "candidate ran with rows\n")
    print("| cap while nothing ran | EX (Spider) | EX (BIRD) | calls (mean) | s/q (median) | s/q (mean) |"
          + (" whole set EX (Spider) | whole set EX (BIRD) | whole set s/q median | p90 | prompt tokens median |"
             if old else ""))
    print("|---|---|---|---|---|---|" + ("---|---|---|---|---|" if old else ""))
    for cap in caps:
        right = {"spider": 0, "bird": 0}
        calls, secs, verdicts, spent, read = [], [], {}, {}, {}
        for rec, cands in table:
            kept, n, seconds, prompt = cut(rec.get("trace") or [], budget_x, cap)
            chosen = [c for c in cands if c["id"] in kept]
            calls.append(n)
            secs.append(seconds)
            spent[rec["question_id"]] = seconds
            read[rec["question_id"]] = prompt
            if chosen:
                win = chosen[vote(chosen).winner]
                verdicts[rec["question_id"]] = (win["spider"], win["bird"])
                right["spider"] += win["spider"]
                right["bird"] += win["bird"]
        n = len(table)
        line = (f"| {cap:g} | {100 * right['spider'] / n:.1f} ({right['spider']}) | "
                f"{100 * right['bird'] / n:.1f} ({right['bird']}) | {statistics.mean(calls):.2f} | "
                f"{statistics.median(secs):.1f} | {statistics.mean(secs):.1f} |")
        if old:
            whole = {key: sum(r[f"ex_{key}"] == "True" for r in old.values()) for key in ("spider", "bird")}
            for qid, (sp, bd) in verdicts.items():
                prev = old[id_of[qid]]
                whole["spider"] += sp - (prev["ex_spider"] == "True")
                whole["bird"] += bd - (prev["ex_bird"] == "True")
            # the replayed questions' seconds are their steps' (model calls and executions), the others' as run
            times = {i: float(r["seconds"]) for i, r in old.items()}
            times.update({id_of[qid]: t for qid, t in spent.items()})
            ordered = sorted(times.values())
            tokens = {i: int(r["prompt_tokens"]) for i, r in old.items()}
            tokens.update({id_of[qid]: t for qid, t in read.items()})
            if verdicts_to is not None:  # the last cap's answers, per question, to compare on any subset
                per = {i: {"ex_spider": r["ex_spider"] == "True", "ex_bird": r["ex_bird"] == "True",
                           "seconds": times[i], "prompt_tokens": tokens[i]} for i, r in old.items()}
                for qid, (sp, bd) in verdicts.items():
                    per[id_of[qid]].update(ex_spider=bool(sp), ex_bird=bool(bd))
                verdicts_to.write_text(json.dumps({"cap": cap, "budget_x": budget_x, "questions": per}, indent=1))
            line += (f" {100 * whole['spider'] / len(old):.2f} | {100 * whole['bird'] / len(old):.2f} |"
                     f" {statistics.median(ordered):.2f} | {ordered[int(0.9 * len(ordered))]:.2f} |"
                     f" {statistics.median(tokens.values()):.0f} |")
        print(line)


def sample(verdicts: Path, data: Path, dbs: list[str], limit: int, seed: int, run: Path | None) -> None:
    from macsql.evaluate.datasets import load_examples, select

    chosen = select(load_examples(str(data)), limit=limit, dbs=dbs or None, seed=seed, nested=True)
    answers = json.loads(verdicts.read_text())["questions"]
    other = _report(run) if run else {}
    print(f"{len(chosen)} questions sampled (seed {seed}); right by EX (BIRD), of those with answers here\n")
    print("| database | sampled | answered here | right (verdicts) |" + (" right (run) |" if run else ""))
    print("|---|---|---|---|" + ("---|" if run else ""))
    for db in dict.fromkeys(e.db_id for e in chosen):
        ids = [e.question_id for e in chosen if e.db_id == db]
        here = [i for i in ids if i in answers]
        line = f"| {db} | {len(ids)} | {len(here)} | {sum(answers[i]['ex_bird'] for i in here)} |"
        if run:
            line += f" {sum(other[i]['ex_bird'] == 'True' for i in here if i in other)} |"
        print(line)


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
    r = sub.add_parser("replay")
    r.add_argument("again", type=Path, help="the selected questions answered with --budget-x 0")
    r.add_argument("--data", type=Path, required=True, help="the data file they were answered from")
    r.add_argument("--db-root", default=None)
    r.add_argument("--caps", default="6,9,12,inf", help="caps (in first calls) while nothing ran")
    r.add_argument("--budget-x", type=float, default=3.0, help="the budget once a candidate ran with rows")
    r.add_argument("--run", type=Path, default=None, help="the whole run, for whole-set figures")
    r.add_argument("--ids", type=Path, default=None, help="select's ids file (with --run)")
    r.add_argument("--verdicts", type=Path, default=None,
                   help="write the whole set's answers per question at the last cap (with --run) to this JSON")
    p = sub.add_parser("sample")
    p.add_argument("verdicts", type=Path, help="replay --verdicts output")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--db-id", action="append", default=[])
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run", type=Path, default=None, help="another run's report, counted on the same questions")
    args = ap.parse_args()
    if args.cmd == "sample":
        sample(args.verdicts, args.data, args.db_id, args.limit, args.seed, args.run)
    elif args.cmd == "select":
        select(args.run, args.data, args.to)
    elif args.cmd == "merge":
        merge(args.run, args.again, args.ids, args.baseline)
    else:
        replay(args.again, args.data, args.db_root, [float(c) for c in args.caps.split(",")], args.budget_x,
               args.run, args.ids, args.verdicts)


if __name__ == "__main__":
    main()

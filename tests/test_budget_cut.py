"""benchmarks/budget_cut.py's replay: an unbudgeted trace cut where graph.out_of_time would stop it."""

from types import SimpleNamespace

import pytest

from benchmarks.budget_cut import cut
from macsql.graph import out_of_time


def call(agent: str, source: str, prompt: int = 100, cached: int = 0, completion: int = 20) -> dict:
    # call_cost: (prompt - cached) * 0.1 + completion = 30 decoded-token equivalents by default
    return {"agent": agent, "source": source, "prompt_tokens": prompt, "cached_tokens": cached,
            "completion_tokens": completion, "seconds": 1.0}


def run(candidate: int, rows: int = 0, error: str | None = "no such column: x") -> dict:
    return {"agent": "execute", "candidate": candidate, "rows": rows, "error": error, "seconds": 0.01}


# direct fails, its repair fails, the decomposed query runs with rows, then three samples, then a repair round
TRACE = [call("decomposer", "direct"), run(0),
         call("refiner", "fix of #0"), run(1),
         call("decomposer", "decomposed"), run(2, rows=3, error=None),
         call("decomposer", "sample 1"), call("decomposer", "sample 2"), call("decomposer", "sample 3"),
         run(3), run(4, rows=3, error=None), run(5, rows=1, error=None),
         call("refiner", "fix of #3"), run(6, rows=3, error=None)]


@pytest.mark.parametrize("budget_x, cap, kept, calls", [
    (3, float("inf"), {0, 1, 2}, 3),  # ran with rows after 3 first calls: the 3 samples do not fit 3x
    (6, float("inf"), {0, 1, 2, 3, 4, 5}, 6),  # 3 + 3 samples fit 6x; the repair round would pass it
    (3, 2, {0, 1}, 2),  # nothing ran after 2 calls: the decomposed query would pass the cap of 2
    (0, 2, {0, 1, 2, 3, 4, 5, 6}, 7),  # no budget: the whole trace
])
def test_the_trace_is_cut_before_the_step_that_would_pass_the_budget(budget_x, cap, kept, calls):
    got, n, seconds, prompt = cut(TRACE, budget_x, cap)
    assert (got, n, prompt) == (kept, calls, 100 * calls) and seconds == pytest.approx(n * 1.0 + 0.01 * len(kept))


@pytest.mark.parametrize("budget_x", [1.5, 3.0, 6.0, 100.0])
def test_without_a_cap_it_stops_where_the_graph_does(budget_x):
    """Cap inf is graph.out_of_time's own rule: the first step boundary where the graph, given the same prefix
    (its candidates' scores and its model calls) and the next step's replies, says stop is where the replay
    stopped; where it never says stop, the replay keeps the whole trace."""
    ctx = SimpleNamespace(budget_s=0.0, budget_x=budget_x)
    kept, _n, _s, _p = cut(TRACE, budget_x, float("inf"))
    starts = [i for i, t in enumerate(TRACE) if i and t["agent"] != "execute" and TRACE[i - 1]["agent"] == "execute"]
    stopped_at = None
    for i in starts:
        cands = [{"score": 2 if not t["error"] and t["rows"] else 0} for t in TRACE[:i] if t["agent"] == "execute"]
        replies = next(j for j, t in enumerate(TRACE[i:]) if t["agent"] == "execute")
        if out_of_time({"candidates": cands, "trace": TRACE[:i]}, ctx, replies=replies):
            stopped_at = len(cands)
            break
    assert len(kept) == (stopped_at if stopped_at is not None else 7)


def test_answers_map_back_to_the_run_by_their_own_ids_or_by_position(tmp_path):
    from benchmarks.budget_cut import _id_map

    ids = tmp_path / "cut.ids.json"
    ids.write_text('{"0": "730", "1": "12"}')
    assert _id_map(ids, ["730", "12"]) == {"730": "730", "12": "12"}  # BIRD entries keep their question_id
    assert _id_map(ids, ["0", "1"]) == {"0": "730", "1": "12"}  # Spider's are numbered in the file's order


def test_a_sample_is_drawn_as_eval_draws_it_over_databases_that_are_absent(tmp_path, capsys):
    """The BIRD issue's 100 were drawn over three databases, one held out: their questions alone give the
    sample, and the answers here are counted on the part of it they cover."""
    import json

    from benchmarks.budget_cut import sample
    from macsql.evaluate.datasets import load_examples, select

    data = tmp_path / "dev.json"
    data.write_text(json.dumps([{"question_id": i, "db_id": db, "question": f"q{i}", "evidence": "",
                                 "SQL": "SELECT 1", "difficulty": "simple"}
                                for i, db in enumerate(["absent", "here", "here", "absent", "here", "other"] * 5)]))
    chosen = select(load_examples(str(data)), limit=12, dbs=["absent", "here"], seed=0, nested=True)
    here = [e.question_id for e in chosen if e.db_id == "here"]
    verdicts = tmp_path / "verdicts.json"
    verdicts.write_text(json.dumps({"questions": {i: {"ex_bird": n % 2 == 0} for n, i in enumerate(here)}}))
    sample(verdicts, data, ["absent", "here"], 12, 0, None)
    out = capsys.readouterr().out
    absent = 12 - len(here)
    assert f"| here | {len(here)} | {len(here)} | {(len(here) + 1) // 2} |" in out
    assert f"| absent | {absent} | 0 | 0 |" in out and "| other |" not in out

"""The resumable runner: one JSONL line per question, nothing lost or duplicated when a run dies."""

import json
import threading
import time

import pytest

from macsql.backends.base import ScriptedLLM
from macsql.backends.batching import BatchingLLM, SerializedLLM, for_threads
from macsql.errors import ModelError
from macsql.evaluate.datasets import Example
from macsql.evaluate.run import PredictionStore
from macsql.evaluate.runner import run_predictions
from macsql.pipeline import Pipeline


def _single(llm):
    """The single-query pipeline: these tests count model calls per question."""
    return Pipeline(llm, candidates=1)


def _examples(db, n=6):
    return [Example(question_id=str(i), db_id="shop", question=f"How many customers are in group {i}?",
                    gold_sql="SELECT count(*) FROM customers", db_path=db) for i in range(n)]


def _reply(messages, agent):
    return "```sql\nSELECT count(*) FROM customers\n```"


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_hold_prediction_trace_summary_and_costs(shop_db, tmp_path):
    out = tmp_path / "predictions.jsonl"
    records = run_predictions(_single(ScriptedLLM(_reply)), _examples(shop_db, 2), out, progress=False)
    lines = _lines(out)
    assert [r["question_id"] for r in lines] == ["0", "1"] and set(records) == {"0", "1"}
    rec = lines[0]
    assert rec["pred_sql"] == "SELECT count(*) FROM customers" and rec["error"] is None
    assert rec["llm_calls"] == 1 and rec["refine_rounds"] == 0 and rec["prompt_tokens"] > 0
    assert {t["agent"] for t in rec["trace"]} >= {"decomposer", "execute"}
    assert all("prompt" not in t and "reply" not in t for t in rec["trace"])


def test_backend_dying_midway_then_rerun_completes_without_duplicates(shop_db, tmp_path):
    out = tmp_path / "predictions.jsonl"
    calls = {"n": 0}

    def flaky(messages, agent):
        calls["n"] += 1
        if calls["n"] > 3:
            raise ModelError("server went away")
        return _reply(messages, agent)

    examples = _examples(shop_db)
    with pytest.raises(ModelError):
        run_predictions(_single(ScriptedLLM(flaky)), examples, out, progress=False)
    assert [r["question_id"] for r in _lines(out)] == ["0", "1", "2"]

    second = ScriptedLLM(_reply)
    records = run_predictions(_single(second), examples, out, progress=False)
    ids = [r["question_id"] for r in _lines(out)]
    assert ids == ["0", "1", "2", "3", "4", "5"] and len(records) == 6
    assert len(second.calls) == 3  # only the missing questions were asked


def test_ctrl_c_leaves_whole_lines(shop_db, tmp_path):
    out = tmp_path / "predictions.jsonl"
    calls = {"n": 0}

    def interrupted(messages, agent):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return _reply(messages, agent)

    with pytest.raises(KeyboardInterrupt):
        run_predictions(_single(ScriptedLLM(interrupted)), _examples(shop_db), out, progress=False)
    assert out.read_bytes().endswith(b"\n") and len(_lines(out)) == 2
    run_predictions(_single(ScriptedLLM(_reply)), _examples(shop_db), out, progress=False)
    assert sorted(r["question_id"] for r in _lines(out)) == [str(i) for i in range(6)]


def test_torn_last_line_is_cut_and_redone(shop_db, tmp_path):
    out = tmp_path / "predictions.jsonl"
    run_predictions(_single(ScriptedLLM(_reply)), _examples(shop_db, 3), out, progress=False)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 25])  # a kill in the middle of writing the third line
    store = PredictionStore(out)
    assert store.repaired and set(store.done) == {"0", "1"}
    store.close()
    llm = ScriptedLLM(_reply)
    run_predictions(_single(llm), _examples(shop_db, 3), out, progress=False)
    assert [r["question_id"] for r in _lines(out)] == ["0", "1", "2"] and len(llm.calls) == 1


def test_one_crashing_question_is_recorded_not_fatal(shop_db, tmp_path):
    def odd(messages, agent):
        if "group 1?" in messages[-1]["content"]:
            raise RuntimeError("tokenizer exploded")
        return _reply(messages, agent)

    records = run_predictions(_single(ScriptedLLM(odd)), _examples(shop_db, 3), tmp_path / "p.jsonl",
                              progress=False)
    assert records["1"]["error"].startswith("pipeline crashed: RuntimeError") and records["1"]["pred_sql"] == ""
    assert records["2"]["error"] is None


def test_workers_run_concurrently_and_write_each_question_once(shop_db, tmp_path):
    out = tmp_path / "predictions.jsonl"
    records = run_predictions(_single(ScriptedLLM(_reply)), _examples(shop_db, 9), out, workers=3,
                              progress=False)
    assert sorted(r["question_id"] for r in _lines(out)) == [str(i) for i in range(9)] and len(records) == 9


def test_batching_llm_merges_concurrent_calls():
    seen = []

    def echo(messages, agent):
        seen.append(agent)
        return messages[-1]["content"].upper()

    llm = BatchingLLM(ScriptedLLM(echo), max_batch=4, max_wait_s=0.5)
    results = {}

    def ask(i):
        results[i] = llm.generate([[{"role": "user", "content": f"q{i}"}]], agent="decomposer")[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    llm.close()
    assert results == {i: f"Q{i}" for i in range(4)}  # each caller gets its own reply back
    assert max(llm.batches) > 1 and sum(llm.batches) == 4


def test_batching_llm_groups_by_agent_and_propagates_errors():
    def reply(messages, agent):
        if agent == "refiner":
            raise ModelError("boom")
        return agent

    llm = BatchingLLM(ScriptedLLM(reply), max_batch=8, max_wait_s=0.05)
    assert llm.generate([[{"role": "user", "content": "a"}]] * 2, agent="selector")[0].text == "selector"
    with pytest.raises(ModelError):
        llm.generate([[{"role": "user", "content": "a"}]], agent="refiner")
    llm.close()


def test_serialized_llm_never_overlaps():
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(messages, agent):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return "x"

    llm = SerializedLLM(ScriptedLLM(slow))
    threads = [threading.Thread(target=llm.generate, args=([[{"role": "user", "content": "q"}]],)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert peak[0] == 1


def test_for_threads_choice():
    scripted = ScriptedLLM(_reply)
    assert for_threads(scripted, 1) is scripted and for_threads(scripted, 4) is scripted


def test_batching_a_real_transformers_model_gives_the_serial_answers(tiny_causal_dir):
    from macsql.backends import make_llm

    hf = make_llm(str(tiny_causal_dir), "hf", batch_size=4)
    prompts = [[{"role": "user", "content": text}] for text in ("select", "how many customers", "what is", "sql")]
    serial = [hf.generate([p], agent="decomposer", max_new_tokens=4)[0].text for p in prompts]
    llm = for_threads(hf, 4)
    assert isinstance(llm, BatchingLLM)
    llm.max_wait_s = 0.5  # let all four threads arrive before the batch goes
    results = {}

    def ask(i):
        results[i] = llm.generate([prompts[i]], agent="decomposer", max_new_tokens=4)[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    llm.close()
    assert [results[i] for i in range(4)] == serial
    assert max(llm.batches) > 1


def test_questions_are_answered_grouped_by_database(shop_db, tmp_path):
    from tests.conftest import SHOP_SQL, make_db

    other = make_db(tmp_path / "a_other.sqlite", SHOP_SQL + "CREATE TABLE extra (x INTEGER);")
    # the sample interleaves two databases; answering them grouped lets a prompt cache keep the schema
    examples = [Example(question_id=str(i), db_id="x", question=f"How many customers in group {i}?",
                        gold_sql="SELECT count(*) FROM customers", db_path=shop_db if i % 2 else other)
                for i in range(6)]
    llm = ScriptedLLM(_reply)
    run_predictions(_single(llm), examples, tmp_path / "p.jsonl", progress=False)
    assert [r["question_id"] for r in _lines(tmp_path / "p.jsonl")] == ["0", "2", "4", "1", "3", "5"]
    schemas = [messages[-1]["content"].split("Question:")[0] for _, messages in llm.calls]
    assert len(set(schemas)) == 2 and schemas == sorted(schemas, key=schemas.index)  # one run per database


def test_reading_a_run_never_writes(shop_db, tmp_path):
    from macsql.evaluate.run import RunFolder

    folder = RunFolder(tmp_path / "run")
    run_predictions(_single(ScriptedLLM(_reply)), _examples(shop_db, 3), folder.predictions_file, progress=False)
    data = folder.predictions_file.read_bytes()
    folder.predictions_file.write_bytes(data[: len(data) - 25])  # a run killed while writing its third line
    torn = folder.predictions_file.read_bytes()
    assert set(folder.predictions()) == {"0", "1"}
    assert folder.predictions_file.read_bytes() == torn  # the reader skipped the torn line and cut nothing


def test_answers_can_stay_in_memory(shop_db):
    from macsql.evaluate.runner import evaluate

    records, summary, scores = evaluate(_single(ScriptedLLM(_reply)), _examples(shop_db, 2), progress=False)
    assert set(records) == {"0", "1"} and summary["n"] == 2 and summary["ex_bird"] == 100.0
    assert [s.question_id for s in scores] == ["0", "1"]

"""`macsql score`, `macsql eval` (scripted model) and `macsql compare` through the CLI, and their report files."""

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from macsql.backends.base import ScriptedLLM
from macsql.cli import main
from macsql.pipeline import Pipeline
from tests.conftest import SHARED_DATA, SHOP_SQL, make_db, needs_shared_data

QUESTIONS = [
    ("How many customers are there?", "SELECT count(*) FROM customers"),
    ("Which customers live in Spain?", "SELECT name FROM customers WHERE country = 'Spain'"),
    ("What is the largest order amount?", "SELECT max(amount) FROM orders"),
    ("List shipped order ids.", "SELECT order_id FROM orders WHERE status = 'shipped' ORDER BY order_id"),
]


@pytest.fixture
def spider_set(tmp_path) -> Path:
    """A Spider-format benchmark: dev.json beside database/<db_id>/<db_id>.sqlite."""
    (tmp_path / "database" / "shop").mkdir(parents=True)
    make_db(tmp_path / "database" / "shop" / "shop.sqlite", SHOP_SQL)
    data = [{"db_id": "shop", "question": q, "query": sql} for q, sql in QUESTIONS]
    (tmp_path / "dev.json").write_text(json.dumps(data))
    return tmp_path / "dev.json"


@pytest.fixture
def bird_set(tmp_path) -> Path:
    """BIRD layout: dev.json (SQL, evidence, difficulty) + dev_databases/<db_id>/<db_id>.sqlite."""
    (tmp_path / "bird" / "dev_databases" / "shop").mkdir(parents=True)
    make_db(tmp_path / "bird" / "dev_databases" / "shop" / "shop.sqlite", SHOP_SQL)
    data = [{"question_id": i, "db_id": "shop", "question": q, "SQL": sql, "evidence": "",
             "difficulty": ["simple", "moderate"][i % 2]} for i, (q, sql) in enumerate(QUESTIONS)]
    (tmp_path / "bird" / "dev.json").write_text(json.dumps(data))
    return tmp_path / "bird" / "dev.json"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_gold_as_pred_is_perfect_and_writes_reports(spider_set, tmp_path):
    out = tmp_path / "gold"
    r = run("score", "--gold-as-pred", "--data", spider_set, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert "n=4  EX(Spider) 100.0  EX(BIRD) 100.0  exact 100.0" in r.output
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["ex"] == report["metrics"]["ex_bird"] == report["metrics"]["ex_spider"] == 100.0
    assert report["config"]["format"] == "spider" and report["config"]["keep_distinct"] is False
    assert len(report["config"]["data_sha256"]) == 64 and report["config"]["variant"] == "gold-as-pred"
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["question_id"] for r in rows] == ["0", "1", "2", "3"] and {r["ex"] for r in rows} == {"True"}
    assert {r["ex_spider"] for r in rows} == {r["ex_bird"] for r in rows} == {"True"}
    summary = (out / "summary.md").read_text()
    assert "| EX (Spider) | 100.00 |" in summary and "| EX (BIRD) | 100.00 |" in summary
    assert (out / "ex_by_database.png").read_bytes()[:4] == b"\x89PNG"


def test_real_bird_layout_works_unchanged(bird_set):
    root = bird_set.parent / "dev_databases"
    r = run("score", "--gold-as-pred", "--data", bird_set, "--db-root", root, "-q")
    assert r.exit_code == 0 and "EX(BIRD) 100.0" in r.output
    r = run("score", "--gold-as-pred", "--data", bird_set, "-q")  # dev_databases found beside dev.json
    assert r.exit_code == 0 and "EX(BIRD) 100.0" in r.output


def test_score_prediction_files(spider_set, tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"question_id": "0", "pred_sql": "SELECT count(*) FROM customers"}) + "\n"
                     + json.dumps({"question_id": "1", "sql": "SELECT nam FROM customers"}) + "\n"
                     + '{"question_id": "2", "pred_')  # torn last line of a killed run: ignored
    r = run("score", "--pred", preds, "--data", spider_set, "-q")
    assert r.exit_code == 0, r.output
    assert "n=2  EX(Spider) 50.0  EX(BIRD) 50.0" in r.output and "hallucination 50.0%" in r.output
    bird = tmp_path / "predict_dev.json"  # BIRD's own prediction format
    bird.write_text(json.dumps({"0": "SELECT count(*) FROM customers\t----- bird -----\tshop"}))
    r = run("score", "--pred", bird, "--data", spider_set, "-q")
    assert r.exit_code == 0 and "n=1  EX(Spider) 100.0  EX(BIRD) 100.0" in r.output


def test_score_reports_spider_and_bird_ex_and_keep_distinct(spider_set, tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"question_id": q, "pred_sql": sql}) + "\n" for q, sql in (
        ("0", "SELECT count(DISTINCT country) FROM customers"),  # Spider drops DISTINCT: 3 = 3; BIRD: 2 != 3
        ("3", "SELECT order_id FROM orders WHERE status = 'shipped' ORDER BY order_id DESC"))))  # order counts
    r = run("score", "--pred", preds, "--data", spider_set, "--out", tmp_path / "s", "-q", "--no-plots")
    assert r.exit_code == 0 and "n=2  EX(Spider) 50.0  EX(BIRD) 50.0" in r.output, r.output
    rows = {row["question_id"]: row for row in csv.DictReader((tmp_path / "s" / "report.csv").open())}
    assert (rows["0"]["ex_spider"], rows["0"]["ex_bird"]) == ("True", "False")
    assert (rows["3"]["ex_spider"], rows["3"]["ex_bird"]) == ("False", "True")
    r = run("score", "--pred", preds, "--data", spider_set, "--keep-distinct", "-q")
    assert r.exit_code == 0 and "n=2  EX(Spider) 0.0  EX(BIRD) 50.0" in r.output, r.output


@pytest.mark.parametrize("args, message", [
    (["--data", "{data}"], "Error: pass either --pred PATH or --gold-as-pred"),
    (["--pred", "{tmp}/none.jsonl", "--data", "{data}"],
     "Error: prediction file '{tmp}/none.jsonl' does not exist; pass --pred PATH (predictions.jsonl)"),
    (["--gold-as-pred", "--data", "{tmp}/none.json"],
     "Error: data file '{tmp}/none.json' does not exist; pass --data PATH to dev.json"),
    (["--gold-as-pred", "--data", "{data}", "--db-id", "shp"],
     "Error: no questions for database 'shp' (did you mean 'shop'?) in {data}"),
    (["--gold-as-pred", "--data", "{data}", "--db-root", "{tmp}/nowhere"],
     "Error: 1 database file(s) missing under --db-root {tmp}/nowhere, e.g. {tmp}/nowhere/shop/shop.sqlite; "
     "pass --db-root DIR holding <db_id>/<db_id>.sqlite (BIRD: dev_databases)"),
])
def test_score_errors(spider_set, tmp_path, args, message):
    fill = {"data": str(spider_set), "tmp": str(tmp_path)}
    r = run("score", *[a.format(**fill) for a in args])
    assert r.exit_code == 1 and r.output.strip() == message.format(**fill)


def _scripted_pipeline(calls):
    """A stand-in for build_pipeline: the real graph over ScriptedLLM, answering the gold SQL."""
    answers = dict(QUESTIONS)

    def reply(messages, agent):
        calls.append(agent)
        question = next(q for q in answers if q in messages[-1]["content"])
        sql = answers[question] if "Spain" not in question else "SELECT name FROM customer"  # one wrong
        return f"```sql\n{sql}\n```"

    def build(**opts):
        calls.append("build")
        return Pipeline(ScriptedLLM(reply), max_rounds=opts["max_rounds"], timeout_s=opts["timeout_s"],
                        use_selector=not opts["no_selector"], use_decomposer=not opts["no_decomposer"],
                        use_refiner=not opts["no_refiner"], candidates=opts["candidates"])
    return build


def test_eval_ablations_resume_and_compare(spider_set, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("macsql.cli.options.build_pipeline", _scripted_pipeline(calls))
    out = tmp_path / "run"
    args = ["eval", "--data", spider_set, "--out", out, "--ablations", "--variants", "full,baseline", "-q"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "full: n=4  EX(Spider) 75.0  EX(BIRD) 75.0" in r.output
    assert "baseline: n=4  EX(Spider) 75.0  EX(BIRD) 75.0" in r.output
    for variant in ("full", "baseline"):
        lines = (out / variant / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 4 and json.loads(lines[0])["variant"] == variant
        assert (out / variant / "report.json").exists() and (out / variant / "summary.md").exists()
    base = [json.loads(x) for x in (out / "baseline" / "predictions.jsonl").read_text().splitlines()]
    assert all(rec["llm_calls"] == 1 and rec["refine_rounds"] == 0 for rec in base)  # single prompt
    full = {json.loads(x)["question_id"]: json.loads(x) for x in (out / "full" / "predictions.jsonl").read_text().splitlines()}
    # the wrong one was refined once: the fix repeated the query, which ends the loop instead of 2 more rounds
    assert full["1"]["refine_rounds"] == 1
    table = (out / "ablations.md").read_text()
    assert "| variant | n | EX (Spider) | EX (BIRD) |" in table
    assert "| full | 4 | 75.00 | 75.00 |" in table and "| baseline | 4 | 75.00 | 75.00 |" in table

    n_calls = len(calls)
    r = run(*args)  # everything is done: no model is loaded, the reports and the table are rebuilt
    assert r.exit_code == 0 and len(calls) == n_calls and "full: n=4  EX(Spider) 75.0" in r.output

    r = run("compare", out / "baseline", out / "full")
    assert r.exit_code == 0 and "EX (BIRD)" in r.output and "0 fixed by B, 0 broken by B" in r.output


def test_compare_lists_flipped_questions(spider_set, tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(json.dumps({"question_id": str(i), "pred_sql": "SELECT 1"}) for i in range(4)))
    assert run("score", "--pred", preds, "--data", spider_set, "--out", tmp_path / "a", "-q").exit_code == 0
    assert run("score", "--gold-as-pred", "--data", spider_set, "--out", tmp_path / "b", "-q").exit_code == 0
    r = run("compare", tmp_path / "a", tmp_path / "b / report.json".replace(" ", ""))
    assert r.exit_code == 0, r.output
    assert "EX (BIRD)" in r.output and "+100.00" in r.output and "4 fixed by B, 0 broken by B" in r.output
    assert "  0 [shop] How many customers are there?" in r.output
    r = run("compare", tmp_path, tmp_path / "b")
    assert r.exit_code == 1 and r.output.startswith("Error: no report.json in")


def test_compare_reads_reports_written_before_ex_bird(spider_set, tmp_path):
    """Older runs have `ex` (BIRD's verdict) and `ex_strict`, no ex_bird/ex_spider: compare still reads them."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.json").write_text(json.dumps({"config": {}, "metrics": {"n": 4, "ex": 0.0, "ex_strict": 0.0}}))
    (old / "report.csv").write_text("question_id,db_id,question,ex,ex_strict\n"
                                    + "".join(f"{i},shop,q{i},False,False\n" for i in range(4)))
    assert run("score", "--gold-as-pred", "--data", spider_set, "--out", tmp_path / "new", "-q").exit_code == 0
    r = run("compare", old, tmp_path / "new")
    assert r.exit_code == 0, r.output
    lines = {line[:22].strip(): line[22:].split() for line in r.output.splitlines()}
    assert lines["EX (BIRD)"] == ["0.00", "100.00", "+100.00"] and lines["EX (Spider)"] == ["–", "100.00", "–"]
    assert "4 fixed by B" in r.output


def test_eval_refuses_to_mix_runs(spider_set, tmp_path, monkeypatch):
    monkeypatch.setattr("macsql.cli.options.build_pipeline", _scripted_pipeline([]))
    out = tmp_path / "run"
    assert run("eval", "--data", spider_set, "--out", out, "-q").exit_code == 0
    r = run("eval", "--data", spider_set, "--out", out, "--no-refiner", "-q")
    assert r.exit_code == 1 and "holds a run with a different variant" in r.output
    assert run("eval", "--data", spider_set, "--out", out, "--no-refiner", "--overwrite", "-q").exit_code == 0


def test_eval_needs_out_and_known_variants(spider_set):
    assert run("eval", "--data", spider_set).output.strip() == (
        "Error: no output folder; pass --out DIR (predictions.jsonl and the report go there)")
    r = run("eval", "--data", spider_set, "--out", "x", "--ablations", "--variants", "ful")
    assert r.exit_code == 1 and "unknown variant 'ful' (did you mean 'full'?)" in r.output


@pytest.mark.shared_data
@needs_shared_data()
def test_gold_as_pred_on_spider_dev_is_100():
    r = run("score", "--gold-as-pred", "--data", SHARED_DATA / "spider" / "dev.json", "-q")
    assert r.exit_code == 0 and "n=480  EX(Spider) 100.0  EX(BIRD) 100.0" in r.output


@pytest.mark.shared_data
@needs_shared_data()
def test_gold_as_pred_on_geoquery_lists_failing_gold():
    r = run("score", "--gold-as-pred", "--data", SHARED_DATA / "geoquery" / "geography.json", "-q")
    assert r.exit_code == 0 and "n=877" in r.output
    assert "gold fails: 38-0" in r.output and "gold fails: 222-0" in r.output


def test_eval_sample_can_grow(spider_set, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("macsql.cli.options.build_pipeline", _scripted_pipeline(calls))
    out = tmp_path / "run"
    assert run("eval", "--data", spider_set, "--out", out, "--limit", "2", "--seed", "1", "--no-refiner", "--candidates", "1",
               "-q").exit_code == 0
    assert calls.count("decomposer") == 2
    r = run("eval", "--data", spider_set, "--out", out, "--limit", "4", "--seed", "1", "--no-refiner", "--candidates", "1", "-q")
    assert r.exit_code == 0 and "n=4" in r.output
    assert calls.count("decomposer") == 4  # only the two new questions were asked


def test_score_survives_hostile_predictions(spider_set, tmp_path):
    """Deeply nested or huge predicted SQL once raised RecursionError and aborted the whole score run."""
    hostile = ["SELECT " + "(" * 121 + "1" + ")" * 121, "SELECT " + "(SELECT " * 121 + "1" + ")" * 121,
               "SELECT 1 WHERE 1 IN (" + ",".join(map(str, range(150_000))) + ")",
               "SELECT printf('%.*c', 1000000000, 'x')"]
    pred = tmp_path / "hostile.jsonl"
    pred.write_text("".join(json.dumps({"question_id": str(i), "pred_sql": sql}) + "\n" for i, sql in enumerate(hostile)))
    r = run("score", "--pred", pred, "--data", spider_set, "--timeout", "1", "-q", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("n=4  EX(Spider) 0.0  EX(BIRD) 0.0")


def test_a_prediction_file_that_is_not_utf8_is_one_line(tmp_path):
    from macsql.errors import InputError
    from macsql.evaluate.run import read_predictions

    bad = tmp_path / "pred.jsonl"
    bad.write_bytes(b'{"question_id": "0", "pred_sql": "SELECT \xff"}\n')
    with pytest.raises(InputError, match="is not UTF-8 text"):
        read_predictions(bad)

"""Judge-based error analysis: parsing, a scripted judge, and a real loopback OpenAI-compatible server."""

import csv
import json

import pytest
from click.testing import CliRunner

from macsql.backends import make_llm
from macsql.backends.base import ScriptedLLM
from macsql.cli import MacSQLGroup
from macsql.cli.judge import judge_cmd
from macsql.evaluate.judge import (
    CATEGORIES,
    judge_records,
    load_run,
    normalize_category,
    parse_judgement,
)
from tests.conftest import SHOP_SQL, make_db

QUESTIONS = [  # (question, gold, prediction)
    ("How many customers live in Spain?", "SELECT count(*) FROM customers WHERE country = 'Spain'",
     "SELECT count(*) FROM customers WHERE country = 'spain'"),  # wrong: value case
    ("Names of all customers.", "SELECT name FROM customers", "SELECT name FROM customers"),  # right
    ("Total amount per customer name.",
     "SELECT c.name, SUM(o.amount) FROM customers c JOIN orders o ON c.customer_id = o.customer_id GROUP BY c.name",
     "SELECT name, SUM(amount) FROM customers, orders GROUP BY name"),  # wrong: join without condition
    ("Largest order amount.", "SELECT max(amount) FROM orders", "SELECT amount FROM orders ORDER BY amount LIMIT 1"),
    ("Statuses of orders.", "SELECT status FROM orders", "SELECT stat FROM orders"),  # fails to run
]


@pytest.mark.parametrize("reply, category, parsed", [
    ('{"category": "join", "explanation": "The join has no ON condition."}', "join", True),
    ('```json\n{"category": "Schema Linking", "explanation": "wrong column"}\n```', "schema_linking", True),
    ("{'category': 'aggregation error', 'explanation': 'max missing'}", "aggregation", True),
    ('Sure! {"Category": "ORDER BY", "Explanation": "ascending"} Hope this helps.', "ordering_limit", True),
    ("Category: filter value\nExplanation: 'spain' vs 'Spain'.", "filter_value", True),
    ("The main issue is nesting: a subquery is needed.", "nesting", True),
    ('{"category": "gold", "explanation": "the reference is ambiguous"}', "gold_error", True),
    ("I cannot tell.", "other", False),
    ("", "other", False),
])
def test_parse_judgement(reply, category, parsed):
    got = parse_judgement(reply)
    assert got[0] == category and got[2] is parsed


def test_normalize_category_aliases():
    assert normalize_category("wrong join condition") == "join"
    assert normalize_category("group-by") == "aggregation"
    assert normalize_category("LIMIT") == "ordering_limit"
    assert normalize_category("bananas") is None
    assert set(CATEGORIES) == {"schema_linking", "join", "aggregation", "filter_value", "nesting", "ordering_limit",
                               "gold_error", "other"}


def records_for(db_path):
    return [{"question_id": str(i), "db_id": "shop", "question": q, "gold_sql": g, "pred_sql": p,
             "db_path": str(db_path)} for i, (q, g, p) in enumerate(QUESTIONS)]


def scripted_judge():
    def reply(messages, agent):
        user = messages[-1]["content"]
        if "'spain'" in user:
            return '{"category": "filter_value", "explanation": "The value must be \'Spain\'."}'
        if "customers, orders" in user:
            return "```json\n{\"category\": \"join\", \"explanation\": \"No join condition.\"}\n```"
        if "ORDER BY amount" in user:
            return "Category: ordering/limit"
        return "no idea"
    return ScriptedLLM(reply)


def test_scripted_judge_classifies_only_wrong_predictions(shop_db, tmp_path):
    llm = scripted_judge()
    report = judge_records(records_for(shop_db), llm, out_dir=tmp_path / "out", progress=False)
    assert len(llm.calls) == 4 and all(agent == "judge" for agent, _ in llm.calls)
    assert (report["questions"], report["correct"], report["judged"]) == (5, 1, 4)
    got = {j["question_id"]: j["category"] for j in report["judgements"]}
    assert got == {"0": "filter_value", "2": "join", "3": "ordering_limit", "4": "other"}
    assert report["unparsed_replies"] == 1
    assert report["categories"]["join"] == {"n": 1, "pct": 25.0, "description": CATEGORIES["join"]}
    # the prompt carries the question, both queries, both results and the pruned schema
    prompt = llm.calls[0][1][-1]["content"]
    assert "Gold result:\n1 row(s)" in prompt and "Predicted result:\n1 row(s)" in prompt
    assert "CREATE TABLE customers" in prompt and "CREATE TABLE orders" not in prompt
    assert "ERROR: no such column: stat" in llm.calls[3][1][-1]["content"]
    files = tmp_path / "out"
    rows = list(csv.DictReader((files / "errors.csv").open()))
    assert [r["category"] for r in rows] == ["filter_value", "join", "ordering_limit", "other"]
    table = list(csv.DictReader((files / "error_categories.csv").open()))
    assert [r["category"] for r in table] == list(CATEGORIES) and sum(int(r["n"]) for r in table) == 4
    assert json.loads((files / "errors.json").read_text())["judged"] == 4


def test_rerun_skips_judged_questions_and_uses_correct_field(shop_db, tmp_path):
    records = records_for(shop_db)
    judge_records(records, scripted_judge(), out_dir=tmp_path, progress=False)
    again = ScriptedLLM([])  # would raise if asked anything
    again.name = "scripted"
    report = judge_records(records, again, out_dir=tmp_path, progress=False)
    assert report["judged"] == 4 and not again.calls
    # a `correct` field wins over executing; a record with neither database nor schema is skipped
    flagged = [{**records[1], "correct": False}, {**records[0], "correct": True},
               {**records[2], "db_path": "", "correct": None}]
    llm = ScriptedLLM(['{"category": "gold_error", "explanation": "x"}'])
    report = judge_records(flagged, llm, progress=False)
    assert [j["category"] for j in report["judgements"]] == ["gold_error"]
    assert report["skipped"] == [{"question_id": "2", "why": "no database to execute on and no `correct` field"}]


def _judge_reply(body: dict) -> str:
    user = body["messages"][-1]["content"]
    return ('{"category": "join", "explanation": "cross join"}' if "customers, orders" in user
            else '{"category": "filter_value", "explanation": "value case"}')


@pytest.fixture
def judge_server(openai_server):
    return openai_server(_judge_reply)


def test_judge_over_a_loopback_openai_server(shop_db, judge_server):
    url, requests = judge_server
    llm = make_llm("judge-7b", "openai", base_url=url)
    report = judge_records(records_for(shop_db)[:3], llm, progress=False)
    assert [(j["question_id"], j["category"]) for j in report["judgements"]] == [("0", "filter_value"),
                                                                                  ("2", "join")]
    assert len(requests) == 2 and all(path == "/v1/chat/completions" for path, _ in requests)
    assert all(body["model"] == "judge-7b" and body["temperature"] == 0.0 for _, body in requests)


@pytest.fixture
def run_dir(tmp_path):
    """A `macsql eval --out` folder over a Spider-format benchmark of one database."""
    (tmp_path / "database" / "shop").mkdir(parents=True)
    make_db(tmp_path / "database" / "shop" / "shop.sqlite", SHOP_SQL)
    data = tmp_path / "dev.json"
    data.write_text(json.dumps([{"db_id": "shop", "question": q, "query": g} for q, g, _ in QUESTIONS]))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"data": str(data), "format": "spider", "db_root": None}))
    with (run / "predictions.jsonl").open("w") as fh:
        for i, (q, g, p) in enumerate(QUESTIONS):
            fh.write(json.dumps({"question_id": str(i), "db_id": "shop", "question": q, "gold_sql": g,
                                 "pred_sql": p, "variant": "full", "error": None}) + "\n")
    return run


def test_load_run_adds_database_paths(run_dir):
    records = load_run(run_dir)
    assert len(records) == 5 and records[0]["db_path"].endswith("database/shop/shop.sqlite")
    assert "correct" not in records[0]  # not scored yet: the judge executes and compares itself


def _cli():
    group = MacSQLGroup("macsql")
    group.add_command(judge_cmd)
    return group


def test_cli_judges_a_run_folder(run_dir, judge_server):
    url, _ = judge_server
    result = CliRunner().invoke(_cli(), ["judge", "--run", str(run_dir), "--model", "judge-7b", "--base-url", url,
                                         "-q"])
    assert result.exit_code == 0, result.output
    assert "4 wrong predictions judged by judge-7b (1 correct of 5" in result.output
    assert "| join | 1 | 25.0 |" in result.output
    assert (run_dir / "errors.json").is_file() and (run_dir / "errors.csv").is_file()
    result = CliRunner().invoke(_cli(), ["judge", "--run", str(run_dir), "--model", "judge-7b", "--base-url", url,
                                         "--limit", "1", "--out", str(run_dir / "one"), "-q"])
    assert "1 wrong predictions judged" in result.output


@pytest.mark.parametrize("args, message", [
    (["--run", "nowhere"], "Error: run folder 'nowhere' does not exist; pass --run DIR"),
    (["--run", "{empty}"], "Error: no predictions.jsonl or report.csv in"),
    (["--run", "{run}", "--base-url", "http://127.0.0.1:9/v1"], "Error: cannot reach the model server at"),
])
def test_cli_errors(run_dir, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{run}", str(run_dir)).replace("{empty}", str(tmp_path / "empty")) for a in args]
    result = CliRunner().invoke(_cli(), ["judge", "--model", "m", "-q", *args])
    assert result.exit_code == 1
    assert message in result.output


def test_registered_as_macsql_judge(run_dir, judge_server):
    from macsql.cli import main

    url, _ = judge_server
    result = CliRunner().invoke(main, ["judge", "--run", str(run_dir), "--model", "judge-7b", "--base-url", url,
                                       "--out", str(run_dir / "errors"), "-q"])
    assert result.exit_code == 0, result.output
    assert "| filter_value | 3 | 75.0 |" in result.output
    assert (run_dir / "errors" / "error_categories.csv").is_file()

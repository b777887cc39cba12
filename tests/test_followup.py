"""Follow-ups in the Python API: `Pipeline.ask(..., history=...)` puts a bounded context into the
Decomposer's prompt; `on_step` reports each graph node as it finishes."""

import json

import pytest

from macsql.agents.decomposer import build_prompt
from macsql.agents.prompting import HISTORY_SQL_CHARS, HISTORY_TURNS, history_block, question_block
from macsql.backends.base import ScriptedLLM
from macsql.errors import InputError
from macsql.pipeline import Pipeline


def fenced(sql):
    return f"Final SQL:\n```sql\n{sql}\n```"


def test_follow_up_prompt_holds_the_earlier_turns(shop_db):
    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'"),
                       fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain' AND name LIKE 'A%'")])
    pipe = Pipeline(llm, candidates=1)
    first = pipe.ask("How many customers are in Spain?", shop_db)
    second = pipe.ask("and whose name starts with A?", shop_db,
                      history=[{"question": first.question, "sql": first.sql}])
    assert second.rows == [[1]]
    first_prompt, follow_prompt = (c[1][-1]["content"] for c in llm.calls)
    assert "Earlier questions" not in first_prompt
    assert ("Earlier questions in this conversation (the question below may refer to them):\n"
            "- Question: How many customers are in Spain?\n"
            "  SQL: SELECT COUNT(*) FROM customers WHERE country = 'Spain'\n"
            "Question: and whose name starts with A?") in follow_prompt


def test_history_is_bounded_and_cut_short():
    turns = [{"question": f"question {i}", "sql": f"SELECT {i}"} for i in range(6)]
    turns[-1]["sql"] = "SELECT " + "x, " * 1000 + "y"
    block = history_block(turns)
    assert [f"question {i}" in block for i in range(6)] == [False] * (6 - HISTORY_TURNS) + [True] * HISTORY_TURNS
    longest = max(block.splitlines(), key=len)
    assert longest.endswith("...") and len(longest) == len("  SQL: ") + HISTORY_SQL_CHARS
    assert history_block([]) == "" and history_block(None) == ""
    assert question_block("Q?", "", None) == "Question: Q?"
    assert build_prompt("Q?", "CREATE TABLE t (a)", history=turns[:1])[-1]["content"].count("question 0") == 1


def test_bad_history_is_refused(shop_db):
    with pytest.raises(InputError, match="history must be a list"):
        Pipeline(ScriptedLLM([fenced("SELECT 1")]), candidates=1).ask("x?", shop_db, history=[{"sql": "SELECT 1"}])
    with pytest.raises(InputError, match="history must be a list"):
        Pipeline(ScriptedLLM([fenced("SELECT 1")]), candidates=1).ask("x?", shop_db, history=["How many?"])


def test_on_step_reports_each_node_as_it_finishes(shop_db):
    steps = []
    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM customer"), fenced("SELECT COUNT(*) FROM customers")])
    ans = Pipeline(llm, candidates=1).ask("How many customers?", shop_db, on_step=lambda node, update: steps.append((node, update)))
    nodes = [n for n, _ in steps]
    assert nodes[0] == "schema" and nodes[-1] == "vote"
    assert nodes.count("execute") == 2 and nodes.index("decomposer") < nodes.index("refiner")
    assert next(u for n, u in steps if n == "refiner")["drafts"][0]["sql"] == "SELECT COUNT(*) FROM customers"
    # the updates add up to the answer's trace
    assert [t for _, u in steps for t in u.get("trace", [])] == ans.trace


def test_ask_follow_up_on_a_saved_answer(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import macsql.cli
    import macsql.cli.options
    from tests.conftest import demo_reply

    llm = ScriptedLLM(demo_reply)
    monkeypatch.setattr(macsql.cli.options, "build_pipeline", lambda **_: Pipeline(llm, candidates=1))
    runner = CliRunner()
    first = runner.invoke(macsql.cli.main, ["ask", "How many customers live in Spain?", "--db", "demo", "--json"])
    assert first.exit_code == 0, first.output
    saved = tmp_path / "a.json"
    saved.write_text(first.stdout)
    r = runner.invoke(macsql.cli.main, ["ask", "and only those in Madrid?", "--db", "demo", "--json",
                                        "--follow-up", str(saved)])
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout)
    assert "city = 'Madrid'" in payload["sql"]
    assert payload["history"] == [{"question": "How many customers live in Spain?", "sql": json.loads(first.stdout)["sql"]}]
    # a follow-up on the follow-up carries both turns
    saved.write_text(r.stdout)
    r = runner.invoke(macsql.cli.main, ["ask", "and in Porto?", "--db", "demo", "--follow-up", str(saved)])
    assert "- Question: How many customers live in Spain?" in llm.calls[-1][1][-1]["content"]
    assert "- Question: and only those in Madrid?" in llm.calls[-1][1][-1]["content"]
    saved.write_text("not json")
    r = runner.invoke(macsql.cli.main, ["ask", "x?", "--db", "demo", "--follow-up", str(saved)])
    assert r.exit_code == 1 and r.output.startswith(f"Error: --follow-up {saved}: not the JSON `macsql ask --json` prints")


def test_the_selector_sees_the_earlier_turns_on_a_big_schema(tmp_path):
    from tests.conftest import make_db

    ddl = "".join(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, {', '.join(f'c{j} TEXT' for j in range(8))});"
                  for i in range(5))
    db = make_db(tmp_path / "big.sqlite", ddl + "INSERT INTO t3 (id, c1) VALUES (1, 'x');")
    llm = ScriptedLLM(['{"t3": ["c1"]}', fenced("SELECT c1 FROM t3 WHERE id = 1")])
    Pipeline(llm, candidates=1, prune_above_tokens=100).ask("only the first one?", db, history=[{"question": "What is c1 in t3?", "sql": "SELECT c1 FROM t3"}])
    (selector_agent, selector_prompt), (decomposer_agent, _) = llm.calls
    assert selector_agent == "selector" and decomposer_agent == "decomposer"
    assert "- Question: What is c1 in t3?\n  SQL: SELECT c1 FROM t3\nQuestion: only the first one?" in selector_prompt[-1]["content"]


@pytest.mark.parametrize("text, expected", [
    ('{"question": "q", "sql": "SELECT 1", "history": 5}', '"history" must be a list'),
    ('{"question": "q", "sql": "SELECT 1", "history": [7]}', "history must be a list"),
    ("[" * 100_000 + "]" * 100_000, "not the JSON"),
    ('{"question": "q", "sql": "SELECT 1", "n": ' + "9" * 5000 + "}", "not the JSON"),
])
def test_a_malformed_follow_up_file_is_one_line(tmp_path, shop_db, text, expected):
    from click.testing import CliRunner

    from macsql.cli import main

    saved = tmp_path / "a.json"
    saved.write_text(text)
    r = CliRunner().invoke(main, ["ask", "and then?", "--db", str(shop_db), "--follow-up", str(saved),
                                  "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.stderr.strip().splitlines()[-1].startswith("Error: ") and expected in r.stderr

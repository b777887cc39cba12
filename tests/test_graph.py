"""The pipeline end to end with a scripted backend: routing, refine rounds, best-candidate choice, trace.

These tests pin the single-query MAC-SQL loop (`candidates=1`); the vote over several candidates is in
test_vote.py."""

import pytest

from macsql.backends.base import ScriptedLLM
from macsql.errors import InputError
from macsql.pipeline import Pipeline


def fenced(sql):
    return f"Final SQL:\n```sql\n{sql}\n```"


def test_correct_sql_needs_one_call(shop_db):
    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'")])
    ans = Pipeline(llm, candidates=1).ask("How many customers are in Spain?", shop_db)
    assert ans.rows == [[2]] and ans.error is None and ans.rounds == 0
    assert [a for a, _ in llm.calls] == ["decomposer"]  # small schema: no Selector call
    agents = [t["agent"] for t in ans.trace]
    assert agents == ["schema", "values", "decomposer", "execute", "vote"]
    assert ans.llm_calls == 1 and ans.prompt_tokens > 0


def test_refiner_fixes_an_error(shop_db):
    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM customer"), fenced("SELECT COUNT(*) FROM customers")])
    ans = Pipeline(llm, candidates=1).ask("How many customers?", shop_db)
    assert ans.sql == "SELECT COUNT(*) FROM customers" and ans.rows == [[3]] and ans.rounds == 1
    refiner_prompt = llm.calls[1][1][-1]["content"]
    assert "no such table: customer" in refiner_prompt  # the real SQLite error reaches the model


def test_stops_at_the_round_limit_and_executes_the_last_fix(shop_db):
    bad = [fenced(f"SELECT nope{i} FROM customers") for i in range(10)]
    llm = ScriptedLLM(bad)
    ans = Pipeline(llm, candidates=1, max_rounds=2).ask("Anything?", shop_db)
    assert ans.rounds == 2
    assert [a for a, _ in llm.calls] == ["decomposer", "refiner", "refiner"]
    executes = [t for t in ans.trace if t["agent"] == "execute"]
    assert len(executes) == 3 and "nope2" in executes[-1]["sql"]  # the last fix ran too
    assert ans.error and "no such column" in ans.error


def test_best_candidate_wins_over_a_later_worse_one(shop_db):
    # empty result → refine → SQL error: the earlier empty-but-valid SQL is kept
    llm = ScriptedLLM([fenced("SELECT name FROM customers WHERE country = 'Mars'"), fenced("SELECT broken FROM")])
    ans = Pipeline(llm, candidates=1, max_rounds=1).ask("Who lives on Mars?", shop_db)
    assert ans.sql == "SELECT name FROM customers WHERE country = 'Mars'" and ans.error is None


def test_reply_without_sql_goes_to_the_refiner(shop_db):
    llm = ScriptedLLM(["I am not sure what you mean.", fenced("SELECT name FROM customers WHERE customer_id = 1")])
    ans = Pipeline(llm, candidates=1).ask("Name of customer 1?", shop_db)
    assert ans.rows == [["Ana"]]
    assert "contains no SQL" in llm.calls[1][1][-1]["content"]


def test_no_refiner_ablation(shop_db):
    llm = ScriptedLLM([fenced("SELECT nope FROM customers")])
    ans = Pipeline(llm, candidates=1, use_refiner=False).ask("x?", shop_db)
    assert ans.rounds == 0 and ans.error and len(llm.calls) == 1


def test_selector_runs_on_a_big_schema(tmp_path):
    from tests.conftest import make_db

    ddl = "".join(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, {', '.join(f'c{j} TEXT' for j in range(8))});"
                  for i in range(5))
    db = make_db(tmp_path / "big.sqlite", ddl + "INSERT INTO t3 (id, c1) VALUES (1, 'x');")
    llm = ScriptedLLM(['{"t3": ["c1"]}', fenced("SELECT c1 FROM t3")])
    ans = Pipeline(llm, candidates=1, prune_above_tokens=100).ask("What is c1 in t3?", db)
    assert ans.selection == {"t3": ["id", *(f"c{j}" for j in range(8))]}  # a named table is kept whole
    decomposer_prompt = llm.calls[1][1][-1]["content"]
    assert "CREATE TABLE t3" in decomposer_prompt and "CREATE TABLE t0" not in decomposer_prompt
    assert ans.rows == [["x"]]


def test_selector_keeps_the_foreign_key_neighbours_of_the_tables_it_names(tmp_path):
    from tests.conftest import make_db

    cols = ", ".join(f"c{j} TEXT" for j in range(8))
    ddl = (f"CREATE TABLE owners (owner_id INTEGER PRIMARY KEY, {cols});"
           f"CREATE TABLE dogs (dog_id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners(owner_id), {cols});"
           f"CREATE TABLE treatments (id INTEGER PRIMARY KEY, dog_id INTEGER REFERENCES dogs(dog_id), {cols});"
           f"CREATE TABLE breeds (code TEXT PRIMARY KEY, {cols});"
           f"CREATE TABLE sizes (code TEXT PRIMARY KEY, {cols});"
           "INSERT INTO owners (owner_id, c0) VALUES (1, 'Ann');")
    db = make_db(tmp_path / "kennel.sqlite", ddl)
    llm = ScriptedLLM(['{"owners": ["c0"]}', fenced("SELECT c0 FROM owners")])
    ans = Pipeline(llm, candidates=1, prune_above_tokens=100).ask("Which owners have dogs?", db)
    # dogs is one key away from owners (the join the question needs); treatments is two, breeds none
    assert list(ans.selection) == ["owners", "dogs"]


def test_empty_question_is_refused(shop_db):
    with pytest.raises(InputError, match="question is empty"):
        Pipeline(ScriptedLLM([])).ask("   ", shop_db)


def test_evidence_reaches_the_prompt(shop_db):
    llm = ScriptedLLM([fenced("SELECT 1")])
    Pipeline(llm, candidates=1).ask("q?", shop_db, evidence="big spender = amount > 50")
    assert "Evidence: big spender = amount > 50" in llm.calls[0][1][-1]["content"]


def test_reasoning_format_end_to_end(shop_db):
    reply = ("<reasoning>customers.country holds the country; count the rows for Spain</reasoning>\n"
             "<sql>SELECT COUNT(*) FROM customers WHERE country = 'Spain'</sql>")
    llm = ScriptedLLM([reply])
    ans = Pipeline(llm, candidates=1, output_format="reasoning").ask("How many customers are in Spain?", shop_db)
    assert ans.rows == [[2]]
    assert "<reasoning>" in llm.calls[0][1][-1]["content"]  # the prompt asks for the format
    step = next(t for t in ans.trace if t["agent"] == "decomposer")
    assert step["reasoning"] == "customers.country holds the country; count the rows for Spain"


def test_max_new_tokens_caps_every_reply(shop_db, monkeypatch):
    seen = []

    class Capped(ScriptedLLM):
        def generate(self, prompts, *, max_new_tokens=512, **kw):
            seen.append(max_new_tokens)
            return super().generate(prompts, max_new_tokens=max_new_tokens, **kw)

    llm = Capped([fenced("SELECT COUNT(*) FROM customer"), fenced("SELECT COUNT(*) FROM customers")])
    ans = Pipeline(llm, candidates=1, max_new_tokens=64).ask("How many customers?", shop_db)
    assert ans.rows == [[3]] and seen == [64, 64]  # the Decomposer's query and the Refiner's fix
    # From the command line: --max-new-tokens reaches the pipeline's options.
    from click.testing import CliRunner

    import macsql.cli.options as options
    from macsql.cli import main

    got = {}
    monkeypatch.setattr(options, "build_pipeline", lambda **kw: got.update(kw) or Pipeline(
        ScriptedLLM([fenced("SELECT COUNT(*) FROM customers")]), candidates=1))
    result = CliRunner().invoke(main, ["ask", "How many customers?", "--db", str(shop_db), "--max-new-tokens", "96"])
    assert result.exit_code == 0, result.output
    assert got["max_new_tokens"] == 96

"""`Settings`: every inference option checked before any model runs; the confident stop and the time budget."""

import pytest

from macsql.backends.base import Generation, ScriptedLLM
from macsql.errors import InputError
from macsql.pipeline import Pipeline
from macsql.state import Settings, ablation_name
from tests.conftest import SHOP_SQL, make_db


def fenced(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def test_an_unknown_option_names_the_closest_valid_one():
    with pytest.raises(InputError, match=r"unknown option 'max_round' \(did you mean 'max_rounds'\?\)"):
        Pipeline(ScriptedLLM([]), max_round=2)


@pytest.mark.parametrize("option, value, expected", [
    ("candidates", 0, "candidates must be a finite number >= 1"),
    ("temperature", 0.0, "temperature must be a finite number > 0"),
    ("timeout_s", float("nan"), "timeout_s must be a finite number"),
    ("max_rounds", "3", "max_rounds must be int"),
    ("use_values", 1, "use_values must be bool"),
    ("decompose", "tree", "decompose must be one of steps, sub-sql"),
    ("confident_prob", 1.5, "confident_prob must be a finite number >= 0 and <= 1"),
])
def test_a_wrong_value_is_one_input_error_before_any_model_loads(option, value, expected):
    with pytest.raises(InputError, match=expected.replace("(", r"\(")):
        Pipeline(ScriptedLLM([]), **{option: value})
    # from_pretrained checks the settings before it resolves (or loads) a model
    with pytest.raises(InputError, match=expected.replace("(", r"\(")):
        Pipeline.from_pretrained("no/such-model-anywhere", backend="hf", **{option: value})


def test_replace_and_with_llm_keep_the_rest():
    pipe = Pipeline(ScriptedLLM([]), candidates=3)
    other = pipe.replace(use_hints=False)
    assert other.settings.candidates == 3 and not other.settings.use_hints and pipe.settings.use_hints
    llm = ScriptedLLM([])
    assert pipe.with_llm(llm).llm is llm and pipe.with_llm(llm).settings == pipe.settings
    assert Settings(candidates=3).changed() == {"candidates": 3}
    assert ablation_name("use_values") == "no-values"


def test_a_sure_direct_query_that_runs_ends_the_question(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    sure = Generation(fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'"), 10, 5, 0.0, mean_prob=0.95)
    llm = ScriptedLLM([sure])
    ans = Pipeline(llm).ask("How many customers live in Spain?", db)
    assert len(llm.calls) == 1 and ans.rows == [[2]]
    assert ans.candidates[0]["confidence"] == 0.95


def test_an_unsure_direct_query_gets_the_decomposed_one_and_the_vote(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    unsure = Generation(fenced("SELECT COUNT(*) FROM customers"), 10, 5, 0.0, mean_prob=0.6)
    decomposed = "Steps:\n1. count Spanish customers\nFinal SQL:\n" + fenced(
        "SELECT COUNT(*) FROM customers WHERE country = 'Spain'")
    samples = [fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'")] * 3
    llm = ScriptedLLM([unsure, decomposed, *samples])
    ans = Pipeline(llm, budget_x=0).ask("How many customers live in Spain?", db)  # the ladder, not the budget
    sources = [c["source"] for c in ans.candidates]
    assert sources[:2] == ["direct", "decomposed"] and "sample 1" in sources  # they disagreed: samples drawn
    assert ans.rows == [[2]]  # the decomposed query and the samples outvote the unsure direct one


def test_a_failing_direct_query_is_repaired_first_and_a_working_repair_ends_it(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    sure_but_wrong = Generation(fenced("SELECT COUNT(*) FROM customers WHERE nation = 'Spain'"), 10, 5, 0.0,
                                mean_prob=0.99)
    fixed = fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'")
    llm = ScriptedLLM([sure_but_wrong, fixed])
    ans = Pipeline(llm).ask("How many customers live in Spain?", db)
    assert [agent for agent, _ in llm.calls] == ["decomposer", "refiner"] and ans.rows == [[2]]
    assert "no such column: nation" in llm.calls[1][1][-1]["content"]  # the Refiner saw the real problem


def test_a_repair_that_fails_too_brings_the_other_candidates(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    wrong = fenced("SELECT COUNT(*) FROM customers WHERE nation = 'Spain'")
    right = fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'")
    llm = ScriptedLLM([wrong, wrong.replace("nation", "land"), "Final SQL:\n" + right, right, right, right,
                       right, right, right])
    ans = Pipeline(llm).ask("How many customers live in Spain?", db)
    agents = [agent for agent, _ in llm.calls]
    assert agents[:3] == ["decomposer", "refiner", "decomposer"] and ans.rows == [[2]]


def test_without_fix_first_a_failing_direct_query_gets_the_decomposed_one(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    wrong = fenced("SELECT COUNT(*) FROM customers WHERE nation = 'Spain'")
    right = fenced("SELECT COUNT(*) FROM customers WHERE country = 'Spain'")
    llm = ScriptedLLM([wrong, "Final SQL:\n" + right, right, right, right, right, right])
    Pipeline(llm, fix_first=False).ask("How many customers live in Spain?", db)
    assert [agent for agent, _ in llm.calls][:2] == ["decomposer", "decomposer"]


def test_the_time_budget_stops_new_model_calls(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    failing = fenced("SELECT nope FROM customers")
    unbounded = ScriptedLLM(lambda messages, agent: failing)
    Pipeline(unbounded, candidates=1).ask("How many customers?", db)
    assert any(agent == "refiner" for agent, _ in unbounded.calls)  # without a budget the Refiner runs
    bounded = ScriptedLLM(lambda messages, agent: failing)
    ans = Pipeline(bounded, candidates=1, budget_s=1e-9).ask("How many customers?", db)
    assert [agent for agent, _ in bounded.calls] == ["decomposer"] and ans.error  # the best answer so far


def test_the_relative_budget_counts_in_first_calls(tmp_path):
    """budget_x: no step starts that would take the question past budget_x times its first call's cost in
    tokens (computed prompt tokens at PROMPT_TOKEN_COST, plus completion tokens), once a candidate has run
    with rows; before that only the rounds bound the question. Tokens, not seconds: the same steps on a busy
    and a quiet machine."""
    from macsql.graph import call_cost

    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)

    def replying(sql):  # every call: 40 prompt tokens (30 from the KV cache) and 5 completion tokens
        return lambda messages, agent: Generation(fenced(sql), 40, 5, 0.0, cached_tokens=30)

    assert call_cost({"prompt_tokens": 40, "cached_tokens": 30, "completion_tokens": 5}) == 6.0
    running = ScriptedLLM(replying("SELECT name FROM customers"))
    Pipeline(running, budget_x=1.75).ask("Who are the customers?", db)
    assert [agent for agent, _ in running.calls] == ["decomposer"]  # a second reply would pass 1.75 first calls
    failing = ScriptedLLM(replying("SELECT nope FROM customers"))
    Pipeline(failing, budget_x=1.75).ask("How many customers?", db)
    unbounded = ScriptedLLM(replying("SELECT nope FROM customers"))
    Pipeline(unbounded, budget_x=0).ask("How many customers?", db)
    # nothing ran with rows: the budget does not cut the question, the rounds do, as without a budget
    assert len(failing.calls) > 3 and failing.calls == unbounded.calls

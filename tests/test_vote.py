"""The execution vote over several candidates, value linking and repair hints (no real model)."""


from macsql.agents.hints import repair_hint
from macsql.backends.base import ScriptedLLM
from macsql.pipeline import Pipeline
from macsql.schema import introspect
from macsql.sqlexec import ExecResult, execute
from macsql.values import value_index
from macsql.vote import vote
from tests.conftest import make_db

SPAIN = "SELECT COUNT(*) FROM customers WHERE country = 'Spain'"


def fenced(sql):
    return f"```sql\n{sql}\n```"


def _cand(rows=None, error=None, score=2):
    return {"result": ExecResult(rows=tuple(rows or ()), error=error), "score": score}


def test_vote_picks_the_largest_result_group():
    cands = [_cand([(1,)]), _cand([(2,)]), _cand(error="no such column: x", score=0), _cand([(2,)]),
             _cand([(2,)])]
    v = vote(cands)
    assert v.winner == 1 and v.groups[0].members == (1, 3, 4) and v.groups[0].votes == 3
    assert 2 not in v.group_of  # an error is not a result: it does not vote
    assert v.settled  # 3 of 5 agree on rows with values


def test_vote_ties_go_to_the_better_score_then_the_earliest():
    assert vote([_cand([], score=1), _cand([(5,)])]).winner == 1  # rows beat an empty result
    assert vote([_cand([(1,)]), _cand([(2,)])]).winner == 0  # the direct query comes first
    # row order does not split a group (BIRD semantics, like the metric)
    assert vote([_cand([(1,), (2,)]), _cand([(2,), (1,)]), _cand([(3,)])]).groups[0].votes == 2
    failed = vote([_cand(error="e1", score=0), _cand(error="e2", score=0)])
    assert failed.winner == 0 and not failed.groups and not failed.settled


def _by_prompt(direct, decomposed, samples, fix=None):
    """Scripted replies by prompt: the direct task, the decomposed task, sampled repeats, Refiner fixes."""
    state = {"sample": 0}

    def reply(messages, agent):
        text = messages[-1]["content"]
        if agent == "refiner":
            return fenced(fix(text))
        if "Final SQL:" in text:
            return "Steps:\n1. count them\nFinal SQL:\n" + fenced(decomposed)
        if state.get("greedy_done"):
            state["sample"] += 1
            return fenced(samples[(state["sample"] - 1) % len(samples)])
        state["greedy_done"] = True
        return fenced(direct)
    return reply


def test_the_pipeline_answers_with_the_majority(shop_db):
    wrong = "SELECT COUNT(*) FROM customers"
    llm = ScriptedLLM(_by_prompt(direct=wrong, decomposed=SPAIN, samples=[SPAIN, SPAIN, wrong]))
    # the vote, not the budget (which counts tokens; the scripted replies' counts would end it early)
    ans = Pipeline(llm, candidates=5, budget_x=0).ask("How many customers are in Spain?", shop_db)
    assert ans.sql == SPAIN and ans.rows == [[2]]
    assert [c["source"] for c in ans.candidates] == ["direct", "decomposed", "sample 1", "sample 2", "sample 3"]
    chosen = [c for c in ans.candidates if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["votes"] == 3 and chosen[0]["id"] == 1
    assert ans.candidates[0]["votes"] == 2 and ans.candidates[0]["rows"] == [[3]]
    assert ans.rounds == 0  # a settled vote needs no Refiner
    assert ans.to_dict()["candidates"][1]["group"] == 0


def test_samples_are_drawn_only_when_the_greedy_queries_disagree(shop_db):
    agree = ScriptedLLM(_by_prompt(direct=SPAIN, decomposed=SPAIN, samples=["SELECT 1"]))
    ans = Pipeline(agree, candidates=5).ask("How many customers are in Spain?", shop_db)
    assert [c["source"] for c in ans.candidates] == ["direct", "decomposed"] and len(agree.calls) == 2
    assert ans.sql == SPAIN and ans.candidates[0]["votes"] == 2
    # the same replies with every sample drawn (`--all-samples`): three more candidates, and they outvote
    always = ScriptedLLM(_by_prompt(direct=SPAIN, decomposed=SPAIN, samples=["SELECT 1"]))
    ans = Pipeline(always, candidates=5, early_stop=False).ask("How many customers are in Spain?", shop_db)
    assert len(ans.candidates) == 5 and len(always.calls) == 5 and ans.sql == "SELECT 1"
    # an empty result does not settle the vote, so samples follow
    empty = "SELECT COUNT(*) FROM customers WHERE country = 'Atlantis' GROUP BY country"
    unsure = ScriptedLLM(_by_prompt(direct=empty, decomposed=empty, samples=[SPAIN]))
    ans = Pipeline(unsure, candidates=4, use_refiner=False).ask("How many customers are in Spain?", shop_db)
    assert [c["source"] for c in ans.candidates] == ["direct", "decomposed", "sample 1", "sample 2"]


def test_a_failing_candidate_goes_to_the_refiner_and_its_fix_joins_the_vote(shop_db):
    broken = "SELECT COUNT(*) FROM customers WHERE countrry = 'Spain'"
    llm = ScriptedLLM(_by_prompt(direct=broken, decomposed=SPAIN, samples=["SELECT 1"],
                                 fix=lambda prompt: SPAIN))
    ans = Pipeline(llm, candidates=3, fix_first=False, budget_x=0).ask("How many customers are in Spain?", shop_db)
    refiner_prompts = [m[-1]["content"] for a, m in llm.calls if a == "refiner"]
    assert len(refiner_prompts) == 1 and "no such column: countrry" in refiner_prompts[0]
    assert "Hint:" in refiner_prompts[0] and "customers.country" in refiner_prompts[0]
    fix = ans.candidates[-1]
    assert fix["source"] == "fix of #0" and fix["round"] == 1 and fix["votes"] == 2
    assert ans.sql == SPAIN and ans.rows == [[2]]


def test_a_fix_that_repeats_a_tried_query_ends_the_loop(shop_db):
    bad = "SELECT nope FROM customers"
    llm = ScriptedLLM(_by_prompt(direct=bad, decomposed=bad, samples=[bad], fix=lambda prompt: bad))
    ans = Pipeline(llm, candidates=3, max_rounds=3).ask("Anything?", shop_db)
    assert [a for a, _ in llm.calls].count("refiner") == 1 and ans.rounds == 1
    assert ans.error and "no such column" in ans.error


def test_openai_backend_asks_for_n_samples_in_one_request(openai_server, shop_db):
    from macsql.backends import make_llm

    url, requests = openai_server(lambda body: fenced(SPAIN))
    llm = make_llm("m", "openai", base_url=url)
    gens = llm.generate([[{"role": "user", "content": "q"}]], n=3, temperature=0.8)
    assert len(gens) == 3 and len(requests) == 1
    assert requests[0][1]["n"] == 3 and requests[0][1]["temperature"] == 0.8


def test_transformers_backend_samples_n_replies_in_one_generate(tiny_causal_dir):
    from macsql.backends import make_llm

    llm = make_llm(str(tiny_causal_dir), "hf")
    prompts = [[{"role": "user", "content": "how many customers"}], [{"role": "user", "content": "list names"}]]
    gens = llm.generate(prompts, max_new_tokens=4, n=3, temperature=1.0)
    assert len(gens) == 6 and all(g.completion_tokens <= 4 for g in gens)


# ------------------------------------------------------------------------------------------ values
def _zoo(tmp_path):
    return make_db(tmp_path / "zoo.sqlite", """
        CREATE TABLE keeper (keeper_id INTEGER PRIMARY KEY, full_name TEXT, home_town TEXT);
        CREATE TABLE animal (animal_id INTEGER PRIMARY KEY, species TEXT, keeper_id INTEGER,
                             weight REAL);
        INSERT INTO keeper VALUES (1, 'Mary Jones', 'New York'), (2, 'Li Wei', 'York'), (3, 'Ola Berg', 'Oslo');
        INSERT INTO animal VALUES (1, 'Snow Leopard', 1, 40.5), (2, 'red panda', 2, 5.0), (3, 'Lion', 3, 190);
    """)


def test_value_matching_finds_a_literal_in_a_table_it_never_saw(tmp_path):
    db = _zoo(tmp_path)
    found = value_index(db).match("Which keepers from new york look after a snow leopard?")
    assert {(m.table, m.column, m.value) for m in found} == {("keeper", "home_town", "New York"),
                                                             ("animal", "species", "Snow Leopard")}
    assert not value_index(db).match("How many animals are there?")  # no value, no stopword noise


def test_matches_reach_the_prompt_after_the_schema(tmp_path):
    db = _zoo(tmp_path)
    llm = ScriptedLLM([fenced("SELECT COUNT(*) FROM animal WHERE species = 'red panda'")])
    ans = Pipeline(llm, candidates=1).ask("How many Red Panda animals are there?", db)
    prompt = llm.calls[0][1][-1]["content"]
    assert "-- Values the question mentions, as stored in the database:\n-- animal.species = 'red panda'" in prompt
    assert ans.matches == [{"table": "animal", "column": "species", "value": "red panda"}]
    plain = ScriptedLLM([fenced("SELECT 1")])
    Pipeline(plain, candidates=1, use_values=False).ask("How many Red Panda animals are there?", db)
    assert "Values the question mentions" not in plain.calls[0][1][-1]["content"]
    # The schema part is the same with and without the question's values: one cached prefix per database
    schema_part = plain.calls[0][1][-1]["content"].split("\n\nTask:")[0]
    assert prompt.startswith(schema_part)


# ------------------------------------------------------------------------------------------- hints
def _hint(db, sql):
    return repair_hint(sql, execute(db, sql), introspect(db), db)


def test_hint_for_a_column_on_the_wrong_table(tmp_path):
    db = _zoo(tmp_path)
    hint = _hint(db, "SELECT k.weight FROM keeper AS k")
    assert "animal.weight" in hint and "join animal" in hint
    assert "closest: keeper.full_name" in _hint(db, "SELECT fullname FROM keeper")


def test_hint_for_a_missing_table_and_an_ambiguous_column(tmp_path):
    db = _zoo(tmp_path)
    assert "closest: keeper" in _hint(db, "SELECT * FROM keepers")
    hint = _hint(db, "SELECT keeper_id FROM keeper JOIN animal ON keeper.keeper_id = animal.keeper_id")
    assert "keeper.keeper_id or animal.keeper_id" in hint


def test_hint_for_an_empty_result_names_the_real_values(tmp_path):
    db = _zoo(tmp_path)
    hint = _hint(db, "SELECT animal_id FROM animal WHERE species = 'snow leopard'")
    assert "animal.species has no value 'snow leopard'" in hint and "'Snow Leopard'" in hint
    elsewhere = _hint(db, "SELECT * FROM keeper WHERE full_name = 'Oslo'")
    assert "keeper.home_town as 'Oslo'" in elsewhere
    assert _hint(db, "SELECT * FROM animal WHERE weight > 1000") is None  # nothing to say about numbers

"""Each GRPO reward on hand-made completions over a tiny database."""

from __future__ import annotations

import sqlite3

import pytest

from macsql.finetune import rewards

SHOP = """
CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, amount REAL);
INSERT INTO customer VALUES (1, 'Ann', 'Spain'), (2, 'Bob', 'France'), (3, 'Cid', 'Spain');
INSERT INTO orders VALUES (1, 1, 10.0), (2, 1, 5.5), (3, 2, 7.0);
"""
GOLD = "SELECT name FROM customer WHERE country = 'Spain'"


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(SHOP)
    return str(path)


def final(sql):
    return [{"role": "assistant", "content": f"Final SQL:\n```sql\n{sql}\n```"}]


def cols(db, n, task="decomposer"):
    return {"task": [task] * n, "gold_sql": [GOLD] * n, "db_path": [db] * n}


def test_completion_text_accepts_strings_and_messages():
    assert rewards.completion_text("x") == "x"
    assert rewards.completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"


def test_format_reward():
    completions = [
        final("SELECT 1"),  # the Decomposer's format
        "```sql\nSELECT 1\n```",  # SQL but not the Decomposer's layout: partial
        "I think you should look at the customer table.",  # no SQL
    ]
    assert rewards.format_reward(completions, task=["decomposer"] * 3) == [1.0, 0.5, 0.0]
    refiner = ["```sql\nSELECT 1\n```", "Here: SELECT 1", "no idea"]
    assert rewards.format_reward(refiner, task=["refiner"] * 3) == [1.0, 0.5, 0.0]
    selector = ['{"customer": ["name"]}', 'Sure: {"customer": "keep_all"}', "customer"]
    assert rewards.format_reward(selector, task=["selector"] * 3) == [1.0, 0.5, 0.0]
    # the direct prompt's row asks for the query alone: there that layout is the full mark
    direct = rewards.format_reward(completions, task=["decomposer"] * 3, reply=["direct"] * 3)
    assert direct == [0.5, 1.0, 0.0]


def test_execution_and_partial_credit(db):
    completions = [
        final("SELECT name FROM customer WHERE country = 'Spain'"),
        final("SELECT c.name FROM customer c WHERE c.country LIKE 'spain'"),  # different SQL, same rows
        final("SELECT name FROM customer"),  # runs, wrong rows
        final("SELECT name FROM client"),  # error
        [{"role": "assistant", "content": "no sql here"}],
    ]
    c = cols(db, len(completions))
    assert rewards.execution_reward(completions, **c) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert rewards.executes_reward(completions, **c) == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_execution_graded_reward_is_one_tenth_or_zero(db):
    completions = [
        final("SELECT c.name FROM customer c WHERE c.country LIKE 'spain'"),  # same rows as the gold SQL
        final("SELECT name FROM customer"),  # runs, wrong rows
        final("SELECT name FROM customer WHERE country = 'Mars'"),  # runs, empty: still executable
        final("SELECT name FROM client"),  # fails
        "no sql here",
        '{"customer": "keep_all"}',  # a Selector row: not scored
    ]
    c = cols(db, len(completions))
    c["task"][-1] = "selector"
    assert rewards.execution_graded_reward(completions, **c) == [1.0, 0.1, 0.1, 0.0, 0.0, None]
    # beside the other rewards, with its own weight (and the defaults dropped by weight 0)
    weights = rewards.parse_weights({"execution_graded": 1, "execution": 0, "executes": 0, "complexity": 0})
    assert weights == {"format": 0.2, "execution_graded": 1.0, "grounding": 0.2}


def test_execution_rewards_skip_selector_rows_and_respect_the_deadline(db, monkeypatch):
    c = cols(db, 2)
    c["task"] = ["selector", "decomposer"]
    assert rewards.execution_reward(['{"customer": "keep_all"}', final(GOLD)], **c) == [None, 1.0]
    monkeypatch.setattr(rewards, "TIMEOUT_S", 0.05)
    rewards._execute.cache_clear()
    slow = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
            "SELECT count(*) FROM r WHERE i < 0")
    assert rewards.execution_reward([final(slow)], **cols(db, 1)) == [0.0]
    rewards._execute.cache_clear()


def test_complexity_reward(db):
    gold = "SELECT T1.name FROM customer AS T1 JOIN orders AS T2 ON T1.id = T2.customer_id WHERE T2.amount > 6"
    c = {"task": ["decomposer"] * 3, "gold_sql": [gold] * 3, "db_path": [db] * 3}
    same = final("SELECT c.name FROM customer c JOIN orders o ON c.id = o.customer_id WHERE o.amount > 1")
    simpler = final("SELECT name FROM customer")
    scores = rewards.complexity_reward([same, simpler, "nothing"], **c)
    assert scores[0] == 1.0 and 0.0 < scores[1] < 1.0 and scores[2] == 0.0


def test_grounding_reward(db):
    completions = [
        final("SELECT c.name AS who, count(*) AS n FROM customer c JOIN orders o ON c.id = o.customer_id "
              "GROUP BY who ORDER BY n DESC"),  # aliases are not invented names
        final("WITH spain AS (SELECT * FROM customer WHERE country = \"Spain\") SELECT name FROM spain"),
        final("SELECT email FROM customer"),  # invented column
        final("SELECT name FROM clients"),  # invented table
    ]
    assert rewards.grounding_reward(completions, **cols(db, 4)) == [1.0, 1.0, 0.0, 0.0]
    from macsql.schema import introspect

    assert rewards.invented_names("SELECT email, name FROM clients", introspect(db)) == ["clients", "email"]


def test_parse_weights():
    assert rewards.parse_weights(None) == rewards.DEFAULT_WEIGHTS
    w = rewards.parse_weights("execution=2, complexity=0")
    assert w["execution"] == 2.0 and "complexity" not in w
    from macsql.errors import InputError

    with pytest.raises(InputError, match="unknown reward 'exec'.*did you mean"):
        rewards.parse_weights("exec=1")
    with pytest.raises(InputError, match="bad reward weight"):
        rewards.parse_weights("execution")


def test_dpo_pairs_reject_invented_schema(db):
    """DPO's rejected replies name a table or column the database lacks; the chosen one is the gold reply."""
    from macsql.agents import decomposer
    from macsql.finetune.dpo import hallucination_pairs
    from macsql.schema import introspect

    schema = introspect(db)
    gold = "SELECT T1.name FROM customer AS T1 JOIN orders AS T2 ON T1.id = T2.customer_id WHERE T2.amount > 6"
    row = {"task": "decomposer", "gold_sql": gold, "db_path": db, "prompt": [{"role": "user", "content": "q"}],
           "completion": [{"role": "assistant", "content": decomposer.format_target(gold)}]}
    pairs = hallucination_pairs([row] * 20 + [{**row, "task": "selector"}], seed=0)
    assert len(pairs) == 20  # Selector rows make no pairs
    for p in pairs:
        assert p["chosen"] == row["completion"] and p["prompt"] == row["prompt"]
        bad_sql = rewards.reply_sql(p["rejected"][0]["content"], "decomposer")
        assert rewards.invented_names(bad_sql, schema)
        assert rewards.grounding_reward([p["rejected"]], **cols(db, 1)) == [0.0]
    assert len({p["rejected"][0]["content"] for p in pairs}) > 3  # varied inventions, tables and columns


def test_rewards_survive_sql_that_sqlglot_cannot_tokenise(db):
    """An unterminated quote makes sqlglot's tokenizer (not its parser) fail; that is a wrong answer, not a crash."""
    broken = [final("SELECT `name FROM customer")]
    c = cols(db, 1)
    assert rewards.execution_reward(broken, **c) == [0.0]
    assert rewards.executes_reward(broken, **c) == [0.0]
    assert rewards.complexity_reward(broken, **c) == [0.0]
    assert rewards.grounding_reward(broken, **c) == [0.0]


def test_format_reward_accepts_the_reasoning_layout():
    from macsql.finetune.rewards import format_reward

    good = "<reasoning>singer.name for singers from France</reasoning>\n<sql>SELECT name FROM singer</sql>"
    assert format_reward([good, "<reasoning></reasoning>SELECT 1"], task=["decomposer", "refiner"]) == [1.0, 0.5]

"""The reasoning-quality GRPO reward on hand-made completions over a tiny database."""

import pytest

from macsql.finetune.reasoning_reward import reasoning_reward, schema_from_ddl, score_reasoning, sql_names
from macsql.schema import introspect, render_schema
from tests.conftest import SHARED_DATA, needs_shared_data

SQL = "SELECT count(*) FROM customers WHERE country = 'Spain'"
JOIN_SQL = ("SELECT c.name, SUM(o.amount) FROM customers AS c JOIN orders AS o ON c.customer_id = o.customer_id "
            "GROUP BY c.name")


def reply(reasoning: str, sql: str = SQL) -> str:
    return f"<reasoning>{reasoning}</reasoning>\n<sql>{sql}</sql>"


GOOD = reply("Count the rows of the customers table whose country column is Spain.")
PARTIAL = reply("Count the customers living in the requested place, one row each.")  # table only
BOILERPLATE = reply("I will write a query that answers the question.")
EMPTY = reply("")
SHORT = reply("customers country")
PASTED = reply(SQL)
INVENTED = reply("Count the customers table rows filtered by the nation_code column.")


def test_scores_rank_good_partial_and_bad_reasoning(shop_db):
    scores = reasoning_reward([GOOD, PARTIAL, BOILERPLATE, EMPTY, SHORT, PASTED, INVENTED],
                              db_path=[str(shop_db)] * 7)
    good, partial, boiler, empty, short, pasted, invented = scores
    assert good == 1.0
    assert partial == 0.5  # names the table, not the filtered column
    assert boiler == empty == short == 0.0
    assert pasted == 0.5  # names for free by pasting the SQL: halved
    assert invented == 0.25  # half covered, and its one identifier-like word is not in the schema
    assert len(set(scores)) > 2  # the reward varies within a group, so GRPO gets a gradient


def test_conversational_completions_and_task_column(shop_db):
    chat = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": BOILERPLATE}],
            [{"role": "assistant", "content": GOOD}]]
    scores = reasoning_reward(chat, db_path=[str(shop_db)] * 3, task=["decomposer", "refiner", "selector"])
    assert scores == [1.0, 0.0, None]


def test_schema_from_rendered_text_and_from_prompt(shop_db):
    text = render_schema(introspect(shop_db))
    assert reasoning_reward([GOOD, PARTIAL], schema=[text, text]) == [1.0, 0.5]
    prompt = [{"role": "system", "content": "You are an expert."},
              {"role": "user", "content": f"Database schema:\n{text}\n\nQuestion: how many customers in Spain?"}]
    assert reasoning_reward([GOOD, PARTIAL], prompt=[prompt, prompt]) == [1.0, 0.5]
    parsed = schema_from_ddl(text)
    assert [t.name for t in parsed.tables] == ["customers", "orders"]
    assert [c.name for c in parsed.table("orders").columns] == ["order_id", "customer_id", "amount", "status"]


def test_no_schema_or_no_tables_is_none_and_missing_sql_is_zero(shop_db):
    assert reasoning_reward([GOOD], db_path=[None]) == [None]
    assert reasoning_reward([reply("Just return the number one, nothing to look up.", "SELECT 1")],
                            db_path=[str(shop_db)]) == [None]
    assert reasoning_reward(["<reasoning>Count the customers table rows by country.</reasoning>"],
                            db_path=[str(shop_db)]) == [0.0]
    assert reasoning_reward([reply("Count the customers table rows by country.", "SELECT FROM WHERE (")],
                            db_path=[str(shop_db)]) == [0.0]


def test_join_with_aliases_counts_every_used_name(shop_db):
    schema = introspect(shop_db)
    assert sql_names(JOIN_SQL, schema) == ["customers", "customer_id", "name", "orders", "amount"]
    full = reply("Join customers to orders on customer_id, sum the order amount per customer name.", JOIN_SQL)
    half = reply("Join the customers table with the orders table and add things up per person.", JOIN_SQL)
    assert score_reasoning(full, schema) == 1.0
    assert score_reasoning(half, schema) == pytest.approx(0.4)


def test_star_columns_are_not_required_and_invented_sql_names_lower_coverage(shop_db):
    schema = introspect(shop_db)
    assert sql_names("SELECT * FROM orders", schema) == ["orders"]
    assert sql_names("SELECT nickname FROM customers", schema) == ["customers", None]
    text = reply("Read the nickname column of the customers table.", "SELECT nickname FROM customers")
    assert score_reasoning(text, schema) == pytest.approx(0.5)


def test_plurals_spacing_and_word_boundaries(make_names_db):
    schema = introspect(make_names_db)
    sql = "SELECT Song_release_year FROM singer WHERE Age > 30"
    assert score_reasoning(reply("For each singer older than 30 by age, give the song release year.", sql),
                           schema) == 1.0
    # `average` must not count as `age`, and `singers` counts as `singer`
    assert score_reasoning(reply("Take the singers and report the song release year on average.", sql),
                           schema) == pytest.approx(2 / 3, abs=1e-3)


def test_long_rambling_reasoning_is_discounted(shop_db):
    schema = introspect(shop_db)
    long = reply("Count the customers table rows whose country is Spain. " + "This is filler text. " * 100)
    assert 0.5 <= score_reasoning(long, schema) < 1.0


@pytest.fixture
def make_names_db(tmp_path):
    from tests.conftest import make_db

    return make_db(tmp_path / "names.sqlite", "CREATE TABLE singer (Singer_ID INT PRIMARY KEY, Name TEXT, "
                                              "Song_release_year TEXT, Age INT);")


@needs_shared_data()
def test_real_spider_schema():
    db = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
    sql = ("SELECT T2.name, T2.capacity FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
           "WHERE T1.year >= 2014 GROUP BY T2.stadium_id ORDER BY count(*) DESC LIMIT 1")
    good = reply("Join concert to stadium on Stadium_ID, keep concerts with year at least 2014, group by "
                 "stadium and return the name and capacity of the one with the most concerts.", sql)
    vague = reply("Find the place that hosted the most events recently and show some details about it.", sql)
    assert reasoning_reward([good, vague], db_path=[str(db)] * 2) == [1.0, 0.0]


def test_registered_in_the_grpo_reward_registry():
    from macsql.finetune.rewards import REWARDS, parse_weights

    assert REWARDS["reasoning"] is reasoning_reward
    assert parse_weights("reasoning=0.3")["reasoning"] == 0.3
    assert "reasoning" not in parse_weights(None)  # off unless asked for: it only fits the reasoning format

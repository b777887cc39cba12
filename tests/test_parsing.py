import pytest

from macsql.agents import decomposer, selector
from macsql.agents.parsing import extract_sql
from macsql.errors import NoSQLError
from macsql.schema import introspect


@pytest.mark.parametrize("reply, sql", [
    ("```sql\nSELECT 1\n```", "SELECT 1"),
    ("Sure! Here it is:\n```sql\nSELECT name FROM t WHERE x = 'a;b';\n```\nHope this helps.",
     "SELECT name FROM t WHERE x = 'a;b'"),
    ("```\nSELECT a FROM t\n```", "SELECT a FROM t"),
    ("The query is SELECT COUNT(*) FROM singer; it counts singers.", "SELECT COUNT(*) FROM singer"),
    ("<reasoning>use t</reasoning><sql>SELECT a FROM t</sql>", "SELECT a FROM t"),
    ("SQL: WITH x AS (SELECT 1) SELECT * FROM x", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("```sql\nSELECT 1\n```\nFinal SQL:\n```sql\nSELECT 2\n```", "SELECT 2"),
    ("```sql\nSELECT a\nFROM t\n", "SELECT a\nFROM t"),  # unclosed fence
    # CTE forms SQLite accepts: they once came out as the first inner SELECT
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT x FROM c",
     "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT x FROM c"),
    ("SQL: WITH t(a) AS (SELECT 1) SELECT a FROM t", "WITH t(a) AS (SELECT 1) SELECT a FROM t"),
    ('```sql\nWITH "my t" AS (SELECT 1 AS a) SELECT a FROM "my t"\n```', 'WITH "my t" AS (SELECT 1 AS a) SELECT a FROM "my t"'),
    ("```sql\nWITH t AS MATERIALIZED (SELECT 1) SELECT * FROM t\n```", "WITH t AS MATERIALIZED (SELECT 1) SELECT * FROM t"),
    ("```sql\nWITH t AS NOT MATERIALIZED (SELECT 1) SELECT * FROM t\n```",
     "WITH t AS NOT MATERIALIZED (SELECT 1) SELECT * FROM t"),
    ("```sql\nWITH [t x] AS (SELECT 1) SELECT * FROM [t x]\n```", "WITH [t x] AS (SELECT 1) SELECT * FROM [t x]"),
    # a ';' inside a comment or [brackets] does not end the statement
    ("```sql\nSELECT a -- first; then b\nFROM t;\n```", "SELECT a -- first; then b\nFROM t"),
    ("```sql\nSELECT a /* x; y */ FROM t\n```", "SELECT a /* x; y */ FROM t"),
    ("```sql\nSELECT [a;b] FROM t; extra\n```", "SELECT [a;b] FROM t"),
    ("SELECT '\ud800' FROM t", "SELECT '?' FROM t"),  # a lone surrogate cannot reach SQLite
])
def test_extract_sql(reply, sql):
    assert extract_sql(reply) == sql


@pytest.mark.parametrize("reply", ["", "I cannot answer that.", "```python\nprint(1)\n```"])
def test_no_sql_raises(reply):
    with pytest.raises(NoSQLError):
        extract_sql(reply)


def test_decomposer_reply_with_sub_questions():
    reply = ("Sub-questions:\n1. Which customers are in Spain?\n```sql\nSELECT customer_id FROM customers "
             "WHERE country = 'Spain'\n```\nFinal SQL:\n```sql\nSELECT COUNT(*) FROM orders WHERE customer_id IN "
             "(SELECT customer_id FROM customers WHERE country = 'Spain')\n```")
    sql, subs = decomposer.parse_reply(reply)
    assert sql.startswith("SELECT COUNT(*) FROM orders")
    assert subs == [{"question": "Which customers are in Spain?",
                     "sql": "SELECT customer_id FROM customers WHERE country = 'Spain'"}]
    again, again_subs = decomposer.parse_reply(decomposer.format_target(sql, subs, style="sub-sql"))
    assert (again, again_subs) == (sql, subs)  # the training target parses back to itself


def test_decomposer_steps_reply():
    reply = ("Steps:\n1. Find the customers in Spain.\n2. Count their orders.\n\nFinal SQL:\n```sql\n"
             "SELECT COUNT(*) FROM orders JOIN customers USING (customer_id) WHERE country = 'Spain'\n```")
    sql, subs = decomposer.parse_reply(reply)
    assert sql == "SELECT COUNT(*) FROM orders JOIN customers USING (customer_id) WHERE country = 'Spain'"
    assert subs == [{"question": "Find the customers in Spain.", "sql": ""},
                    {"question": "Count their orders.", "sql": ""}]
    target = decomposer.format_target(sql, subs)  # the default style writes steps, no sub-question SQL
    assert target.startswith("Steps:\n1. Find the customers in Spain.\n2. Count their orders.\nFinal SQL:")
    assert decomposer.parse_reply(target) == (sql, subs)
    assert decomposer.format_target(sql) == f"Final SQL:\n```sql\n{sql}\n```"  # no steps: just the query


def test_decomposer_prompt_styles():
    steps = decomposer.build_prompt("How many?", "CREATE TABLE t (a INT);")[-1]["content"]
    sub_sql = decomposer.build_prompt("How many?", "CREATE TABLE t (a INT);", style="sub-sql")[-1]["content"]
    assert "Steps:" in steps and "Sub-questions" not in steps
    assert "Sub-questions" in sub_sql
    with pytest.raises(ValueError, match="unknown Decomposer style"):
        decomposer.build_prompt("How many?", "CREATE TABLE t (a INT);", style="tree")


def test_selector_reply_maps_onto_schema(shop_db):
    s = introspect(shop_db)
    reply = 'Here you go: {"ORDERS": ["amount"], "customers": "keep_all", "ghost": ["x"]}'
    parsed = selector.parse_reply(reply, s)
    assert parsed == {"orders": ["amount"], "customers": ["customer_id", "name", "country"]}
    assert selector.parse_reply("no json here", s) is None
    assert selector.parse_reply(selector.format_target(parsed, s), s) == parsed


def test_reasoning_format_round_trip():
    from macsql.agents import refiner
    from macsql.agents.parsing import extract_reasoning

    target = decomposer.format_target("SELECT a FROM t", reasoning="t.a is the answer")
    assert target == "<reasoning>t.a is the answer</reasoning>\n<sql>SELECT a FROM t</sql>"
    assert extract_reasoning(target) == "t.a is the answer" and extract_sql(target) == "SELECT a FROM t"
    assert extract_reasoning("```sql\nSELECT 1\n```") == ""
    assert refiner.format_target("SELECT 1", reasoning="x").startswith("<reasoning>x</reasoning>")
    prompt = refiner.build_prompt("q", "CREATE TABLE t (a INT);", "SELECT b FROM t", "no such column: b",
                                  output_format="reasoning")
    assert "<reasoning>" in prompt[-1]["content"] and "```sql block" not in prompt[-1]["content"]

"""The one SQL analyser (macsql/sql.py) on hand-made SQL over tiny schemas built from SQL text."""

import random

import pytest

from macsql.schema import introspect
from macsql.sql import (
    CORRUPTIONS,
    MAX_NESTING,
    MAX_SQL_CHARS,
    corrupt,
    double_quoted_strings,
    keyword_spans,
    names_used,
    normalize_sql,
    parse_error,
    parse_query,
    sql_features,
    sql_spans,
    sqlglot_schema,
    statement_error,
    strip_statement,
    unknown_names,
)
from tests.conftest import make_db
from tests.test_data_build import SCHOOL

JOIN = "SELECT T1.name, T2.amount FROM orders AS T2 JOIN customers AS T1 ON T1.customer_id = T2.customer_id"


@pytest.fixture
def shop(shop_db):
    return introspect(shop_db)


@pytest.fixture
def school(tmp_path):
    return introspect(make_db(tmp_path / "school.sqlite", SCHOOL))


def test_spans_tell_code_from_strings_and_comments():
    text = "SELECT ';--' FROM t -- note\n/* x */"
    assert [kind for kind, _, _ in sql_spans(text)] == ["code", "quoted", "code", "comment", "code", "comment"]
    assert "".join(text[s:e] for _, s, e in sql_spans(text)) == text
    assert strip_statement("SELECT 1; -- note\n ;") == "SELECT 1"
    assert strip_statement("SELECT '--x';") == "SELECT '--x'"


def test_parse_and_why_not():
    assert parse_query("SELECT 1;") is not None and parse_error("SELECT 1;") is None
    assert parse_query("SELECT * FROM (SELECT") is None and parse_error("SELECT * FROM (SELECT")
    assert parse_error("  ; -- nothing") == "empty SQL"
    assert "characters long" in parse_error("SELECT " + "1 + " * MAX_SQL_CHARS + "1")
    assert "levels of brackets" in parse_error("SELECT " + "(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1))


@pytest.mark.parametrize("sql, problem", [
    ("WITH a AS (SELECT 1 AS x) SELECT x FROM a", None),
    ("SELECT 1; -- trailing comment", None),
    ("", "empty SQL"),
    ("SELECT 1; SELECT 2", "only one statement is allowed, got 2"),
    ("DELETE FROM customers", "only SELECT/WITH queries are allowed, got DELETE"),
])
def test_statement_error(sql, problem):
    assert statement_error(sql) == problem


def test_keyword_spans():
    text = "SELECT DISTINCT name FROM t WHERE x = 'distinct' ORDER BY name"
    [(start, end)] = keyword_spans(text, "DISTINCT")
    assert text[start:end] == "DISTINCT"
    assert len(keyword_spans(text, "ORDER_BY")) == 1
    assert keyword_spans("SELECT 'unclosed", "DISTINCT") is None


def test_sqlglot_schema(shop):
    assert sqlglot_schema(shop)["orders"] == {"order_id": "INTEGER", "customer_id": "INTEGER", "amount": "REAL",
                                              "status": "TEXT"}


def test_names_used_tables_aliases_and_columns(shop):
    used = names_used(JOIN, shop)
    assert used.tables == ["orders", "customers"]  # in the order the query names them
    assert used.aliases == {"orders": "orders", "t2": "orders", "customers": "customers", "t1": "customers"}
    assert used.columns == {"customers": ["customer_id", "name"], "orders": ["customer_id", "amount"]}
    assert names_used(JOIN, shop, columns=False).columns == {}
    assert names_used("SELECT * FROM orders", shop).columns["orders"] == ["order_id", "customer_id", "amount",
                                                                          "status"]
    assert names_used("SELECT * FROM orders", shop, star=False).columns == {"orders": []}
    assert names_used("not sql (", shop) == names_used("", shop) == names_used("SELECT 1", shop)


@pytest.mark.parametrize("sql, expected", [
    ("SELECT name FROM teacher WHERE age > 30", {"teacher": ["name", "age"]}),
    ("SELECT T1.name, T2.title FROM teacher AS T1 JOIN course AS T2 ON T1.teacher_id = T2.teacher_id",
     {"teacher": ["teacher_id", "name"], "course": ["title", "teacher_id"]}),
    ("SELECT count(*) FROM course WHERE teacher_id IN (SELECT teacher_id FROM teacher WHERE hometown = 'Bolton')",
     {"teacher": ["teacher_id", "hometown"], "course": ["teacher_id"]}),
    ("SELECT count(*) FROM room", {"room": []}),
    ("SELECT * FROM room", {"room": ["room_id", "building"]}),
    ("SELECT TEACHERalias0.NAME FROM TEACHER AS TEACHERalias0", {"teacher": ["name"]}),  # GeoQuery style
])
def test_names_used_is_the_selector_target(school, sql, expected):
    assert names_used(sql, school).columns == expected


def test_unknown_names(shop):
    for sql in ['SELECT count(*) FROM customers WHERE country = "Spain"',  # a string in SQLite
                JOIN,
                "WITH a AS (SELECT name AS n FROM customers) SELECT n FROM a",
                "SELECT s.name FROM (SELECT name FROM customers) AS s",
                "SELECT avg(amount) AS a FROM orders ORDER BY a",
                "SELECT NAME FROM Customers"]:
        assert unknown_names(sql, shop).names == [], sql
    found = unknown_names("SELECT email, name FROM clients", shop)
    assert (found.tables, found.columns) == (("clients",), ("email",))
    assert unknown_names("SELECT T1.amount FROM customers AS T1", shop).names == ["T1.amount"]
    assert unknown_names("SELECT `Spain` FROM customers", shop).names == ["Spain"]  # backticks: a name
    assert unknown_names("not sql at all (", shop) is None
    # one alias for a subquery in a CTE and for a table in the main query is not claimed either way
    sql = ("WITH w AS (SELECT T4.m FROM (SELECT max(amount) AS m FROM orders) AS T4) "
           "SELECT T4.name FROM w JOIN customers AS T4")
    assert unknown_names(sql, shop).names == []


def test_double_quoted_strings():
    sql = 'SELECT "name" FROM customers WHERE country = "Spain" AND `city` = 1'
    tree = double_quoted_strings(parse_query(sql), sql, {"name", "country", "city"})
    assert tree.sql(dialect="sqlite") == "SELECT \"name\" FROM customers WHERE country = 'Spain' AND \"city\" = 1"


@pytest.mark.parametrize("a, b", [
    ("select Name from CUSTOMERS;", "SELECT name FROM customers"),
    ("SELECT count(*)  FROM customers WHERE country = 'Spain'", 'SELECT COUNT(*) FROM customers WHERE country = "Spain"'),
    ("SELEC broken (", "selec   BROKEN ("),
])
def test_normalize_sql(a, b):
    assert normalize_sql(a) == normalize_sql(b)
    assert normalize_sql("SELECT name FROM t WHERE x = 'Spain'") != normalize_sql("SELECT name FROM t WHERE x = 'spain'")


def test_sql_features():
    features = sql_features(JOIN + " WHERE T2.amount > 5 GROUP BY T1.name ORDER BY 2 LIMIT 3")
    assert features == {"tables": 2, "joins": 1, "subqueries": 0, "aggregates": 0, "conditions": 2, "group": 1,
                        "order": 1, "limit": 1, "distinct": 0}
    assert sql_features("SELECT * FROM (") is None


def test_corruptions_are_seeded_and_break_what_they_say(shop):
    sql = JOIN + " WHERE T1.name = 'Ana'"
    kinds = [k for k in CORRUPTIONS if k != "invented_name"]
    first = corrupt(sql, shop, random.Random(3), kinds)
    assert first == corrupt(sql, shop, random.Random(3), kinds)  # same seed, same corruptions
    assert {kind for kind, _ in first} == set(kinds)
    broken = dict(first)
    assert " ON " not in broken["missing_join_condition"]
    assert "'ANA'" in broken["literal_case"]
    assert statement_error(broken["bad_alias"]) is None and broken["bad_alias"] != sql
    for seed in range(10):
        [(kind, invented)] = corrupt(sql, shop, random.Random(seed), ["invented_name"])
        assert unknown_names(invented, shop).names, invented
    assert corrupt("SELECT * FROM (", shop, random.Random(0), ["wrong_table"]) == []

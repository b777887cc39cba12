"""THE comparator (compare.py) on hand-made results: one test per rule of BIRD's EX (sets of rows) and of
Spider's official EX (column order free, row multiset, row order under ORDER BY, DISTINCT dropped)."""

import pytest

from macsql.compare import (
    compare_results,
    execution_match,
    orders_rows,
    result_key,
    rows_match,
    spider_form,
    spider_rows_match,
)
from macsql.sqlexec import ExecResult
from tests.conftest import make_db

SQL = """
CREATE TABLE t (id INTEGER, name TEXT, score REAL, grp TEXT);
INSERT INTO t VALUES (1, 'a', 1.5, 'x'), (2, 'b', NULL, 'x'), (3, 'c', 2.25, 'y'), (4, 'a', 1.5, 'y');
"""


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path / "t.sqlite", SQL)


# ------------------------------------------------------------------------------------ BIRD: sets of rows
def test_bird_compares_sets_of_rows():
    assert rows_match([(1,), (1,), (2,)], [(2,), (1,)])  # duplicates and order do not count
    assert not rows_match([(1, "a")], [("a", 1)])  # column order does
    assert not rows_match([(1,)], [(1,), (2,)])
    assert rows_match([], [])


def test_result_key_is_the_bird_equality_and_hashable():
    a, b, c = [(1, "x"), (2, "y")], [(2, "y"), (1, "x"), (1, "x")], [(1, "x")]
    assert result_key(a) == result_key(b) != result_key(c)
    groups = {}
    for rows in (a, b, c):
        groups.setdefault(result_key(rows), []).append(rows)  # how the vote groups candidates
    assert sorted(len(g) for g in groups.values()) == [1, 2]
    for x, y in ((a, b), (a, c), ([(None,)], [(None,)]), ([(1,)], [(1.0,)])):
        assert rows_match(x, y) == (result_key(x) == result_key(y))


# --------------------------------------------------------------------------------- Spider: exec_eval rule
def test_spider_column_order_is_free():
    gold = [(1, "a", 1.5), (2, "b", None)]
    pred = [("a", 1.5, 1), ("b", None, 2)]
    assert spider_rows_match(pred, gold, ordered=False) and spider_rows_match(pred, gold, ordered=True)
    assert not rows_match(pred, gold)  # BIRD: column order counts


def test_spider_permutation_must_be_one_for_all_rows():
    # each column holds the same values, but no single column order makes the rows equal
    gold = [(1, 2), (2, 1), (1, 1)]
    pred = [(1, 2), (2, 1), (2, 2)]
    assert not spider_rows_match(pred, gold, ordered=False)
    # columns with equal bags of values: the search must try both assignments
    gold = [(1, 2, "p"), (2, 1, "q")]
    pred = [(2, "p", 1), (1, "q", 2)]
    assert spider_rows_match(pred, gold, ordered=False)
    assert not spider_rows_match([(1, 2, 3)], [(1, 2)], ordered=False)  # a column too many


def test_spider_compares_row_multisets():
    assert not spider_rows_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], ordered=False)
    assert not spider_rows_match([(1,), (2,)], [(1,), (1,), (2,)], ordered=False)
    assert spider_rows_match([(2,), (1,), (1,)], [(1,), (2,), (1,)], ordered=False)
    assert rows_match([(1,), (1,), (2,)], [(1,), (2,), (2,)])  # BIRD: the sets are equal


def test_spider_row_order_only_when_gold_orders():
    pred, gold = [(2, "b"), (1, "a")], [(1, "a"), (2, "b")]
    assert spider_rows_match(pred, gold, ordered=False)
    assert not spider_rows_match(pred, gold, ordered=True)
    assert spider_rows_match([("b", 2), ("a", 1)], [(2, "b"), (1, "a")], ordered=True)
    a, b = ExecResult(rows=((1,), (2,))), ExecResult(rows=((2,), (1,)))
    assert compare_results(a, b, "SELECT x FROM y").ex_spider
    assert not compare_results(a, b, "SELECT x FROM y ORDER BY x").ex_spider
    assert compare_results(a, b, "SELECT x FROM y ORDER BY x").ex_bird


def test_orders_rows_reads_order_by_anywhere_like_spiders_evaluator():
    assert orders_rows("SELECT a FROM t ORDER BY a LIMIT 1")
    assert orders_rows("SELECT a FROM t WHERE b = (SELECT b FROM u ORDER BY c LIMIT 1)")  # a subquery's
    assert orders_rows("select a from t order\n  by a")
    assert not orders_rows("SELECT a FROM t WHERE b = 'order by'")  # a string is data
    assert not orders_rows("SELECT border, byte FROM t")
    assert orders_rows('SELECT "abc FROM t ORDER BY x')  # unclosed quote: the text decides
    assert not orders_rows('SELECT "abc FROM t')


def test_spider_empty_results_match_and_values_compare_like_python():
    assert spider_rows_match([], [], ordered=True)
    assert not spider_rows_match([], [(1,)], ordered=False)
    assert spider_rows_match([(1, None)], [(1.0, None)], ordered=False)  # 1 == 1.0, NULL == NULL
    assert not spider_rows_match([(0.1 + 0.2,)], [(0.3,)], ordered=False)  # floats exactly, no tolerance
    assert not rows_match([(0.1 + 0.2,)], [(0.3,)])
    assert not spider_rows_match([("1",)], [(1,)], ordered=False)  # text is not a number
    # Spider's quick rejection sorts each row's values by text: 1.0 and 1 land on different sides of 1.5
    assert not spider_rows_match([(1.0, 1.5)], [(1, 1.5)], ordered=False)
    assert spider_rows_match([(2.0, 1.5)], [(2, 1.5)], ordered=False) and rows_match([(1.0, 1.5)], [(1, 1.5)])


def test_spider_form_drops_every_distinct_keyword():
    assert spider_form("SELECT DISTINCT a FROM t") == "SELECT  a FROM t"
    assert spider_form("SELECT count(DISTINCT a) FROM t") == "SELECT count( a) FROM t"
    assert spider_form("select distinct \"distinct\", 'Distinct' FROM t") == "select  \"distinct\", 'Distinct' FROM t"
    assert spider_form("SELECT DISTINCT a FROM t", keep_distinct=True) == "SELECT DISTINCT a FROM t"
    assert spider_form("SELECT a FROM t WHERE b > = 2 AND c ! = 3") == "SELECT a FROM t WHERE b >= 2 AND c != 3"
    assert spider_form("SELECT distinct_id FROM t") == "SELECT distinct_id FROM t"
    assert spider_form("SELECT DISTINCT 'abc FROM t") == "SELECT DISTINCT 'abc FROM t"  # untokenizable: as is


# ------------------------------------------------------------------------------- executed, both verdicts
def test_distinct_is_dropped_from_both_queries_for_spider_only(db):
    m = execution_match(db, "SELECT name FROM t", "SELECT DISTINCT name FROM t")
    assert m.ex_bird and m.ex_spider  # gold runs again without DISTINCT: a, b, c, a on both sides
    kept = execution_match(db, "SELECT name FROM t", "SELECT DISTINCT name FROM t", keep_distinct=True)
    assert kept.ex_bird and not kept.ex_spider  # multisets differ
    # COUNT(DISTINCT x) loses its DISTINCT too, on both sides, as in Spider's evaluator
    m = execution_match(db, "SELECT count(name) FROM t", "SELECT count(DISTINCT name) FROM t")
    assert not m.ex_bird and m.ex_spider
    assert m.gold.rows == ((3,),)  # the reported gold result is the query as written


def test_column_order_counts_for_bird_not_for_spider(db):
    m = execution_match(db, "SELECT name, id FROM t", "SELECT id, name FROM t")
    assert not m.ex_bird and m.ex_spider and not m.correct


def test_row_order_under_order_by(db):
    gold = "SELECT id FROM t ORDER BY id"
    m = execution_match(db, "SELECT id FROM t ORDER BY id DESC", gold)
    assert m.ex_bird and not m.ex_spider
    m = execution_match(db, "SELECT id FROM t ORDER BY id DESC", "SELECT id FROM t")
    assert m.ex_bird and m.ex_spider  # gold without ORDER BY: order is not part of the answer


def test_duplicates_count_for_spider_not_for_bird(db):
    m = execution_match(db, "SELECT grp FROM t", "SELECT grp FROM t WHERE id IN (1, 3)")
    assert m.ex_bird and not m.ex_spider


def test_nulls_are_values(db):
    m = execution_match(db, "SELECT score FROM t WHERE id = 2", "SELECT NULL")
    assert m.ex_bird and m.ex_spider
    assert not execution_match(db, "SELECT score FROM t WHERE id = 2", "SELECT 0").correct


def test_ints_equal_floats(db):
    m = execution_match(db, "SELECT id * 1.0 FROM t", "SELECT id FROM t")
    assert m.ex_bird and m.ex_spider


def test_prediction_error_is_wrong_never_raises(db):
    m = execution_match(db, "SELECT nope FROM t", "SELECT id FROM t")
    assert not m.ex_bird and not m.ex_spider and "no such column" in m.pred.error
    assert not execution_match(db, "", "SELECT id FROM t").ex_spider  # no SQL at all
    assert not execution_match(db, "DELETE FROM t", "SELECT id FROM t").correct


def test_gold_error_makes_question_unanswerable(db):
    m = execution_match(db, "SELECT id FROM t", "SELECT id FROM missing")
    assert not m.ex_bird and not m.ex_spider and m.gold.error


def test_timeout_is_wrong(db):
    slow = ("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000000) "
            "SELECT count(*) FROM c")
    m = execution_match(db, slow, "SELECT 1", timeout_s=0.2)
    assert not m.ex_bird and not m.ex_spider and m.pred.timed_out


def test_reused_gold_result(db):
    gold = ExecResult(rows=((1,), (2,), (3,), (4,)), columns=("id",))
    m = execution_match(db, "SELECT id FROM t", "unused", gold=gold)
    assert m.ex_bird and m.ex_spider

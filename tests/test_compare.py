"""THE comparator (compare.py) on hand-made results: BIRD set semantics and the Spider-style strict variant."""

import pytest

from macsql.evaluate.compare import compare_results, execution_match, gold_is_ordered, rows_match
from macsql.sqlexec import ExecResult
from tests.conftest import make_db

SQL = """
CREATE TABLE t (id INTEGER, name TEXT, score REAL, grp TEXT);
INSERT INTO t VALUES (1, 'a', 1.5, 'x'), (2, 'b', NULL, 'x'), (3, 'c', 2.25, 'y'), (4, 'a', 1.5, 'y');
"""


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path / "t.sqlite", SQL)


def test_row_order_ignored_by_bird_counted_by_strict_when_gold_orders(db):
    gold = "SELECT id FROM t ORDER BY id"
    m = execution_match(db, "SELECT id FROM t ORDER BY id DESC", gold)
    assert m.correct and not m.strict
    unordered = execution_match(db, "SELECT id FROM t ORDER BY id DESC", "SELECT id FROM t")
    assert unordered.correct and unordered.strict  # gold without ORDER BY: order is not part of the answer


def test_duplicates_equal_as_sets_not_as_multisets(db):
    m = execution_match(db, "SELECT name FROM t", "SELECT DISTINCT name FROM t")
    assert m.correct and not m.strict


def test_column_order_counts(db):
    m = execution_match(db, "SELECT name, id FROM t", "SELECT id, name FROM t")
    assert not m.correct and not m.strict


def test_floats_compare_exactly_and_ints_equal_floats():
    assert not rows_match([(0.1 + 0.2,)], [(0.3,)])  # BIRD compares values exactly: no tolerance
    assert rows_match([(1,)], [(1.0,)])
    assert rows_match([(2.25,)], [(2.25,)], strict=True)


def test_nulls_are_values(db):
    assert execution_match(db, "SELECT score FROM t WHERE id = 2", "SELECT NULL").correct
    assert not execution_match(db, "SELECT score FROM t WHERE id = 2", "SELECT 0").correct


def test_prediction_error_is_wrong_never_raises(db):
    m = execution_match(db, "SELECT nope FROM t", "SELECT id FROM t")
    assert not m.correct and not m.strict and "no such column" in m.pred.error
    assert not execution_match(db, "", "SELECT id FROM t").correct  # no SQL at all
    assert not execution_match(db, "DELETE FROM t", "SELECT id FROM t").correct


def test_gold_error_makes_question_unanswerable(db):
    m = execution_match(db, "SELECT id FROM t", "SELECT id FROM missing")
    assert not m.correct and m.gold.error


def test_timeout_is_wrong(db):
    slow = ("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000000) "
            "SELECT count(*) FROM c")
    m = execution_match(db, slow, "SELECT 1", timeout_s=0.2)
    assert not m.correct and m.pred.timed_out


def test_reused_gold_result(db):
    gold = ExecResult(rows=((1,), (2,), (3,), (4,)), columns=("id",))
    assert execution_match(db, "SELECT id FROM t", "unused", gold=gold).correct


def test_compare_results_and_ordering_detection():
    a = ExecResult(rows=((1,), (2,)))
    b = ExecResult(rows=((2,), (1,)))
    assert compare_results(a, b, "SELECT x FROM y").strict
    assert not compare_results(a, b, "SELECT x FROM y ORDER BY x").strict
    assert gold_is_ordered("SELECT a FROM t ORDER BY a LIMIT 1")
    assert not gold_is_ordered("SELECT a FROM (SELECT a FROM t ORDER BY a)")


def test_unclosed_quote_in_gold_does_not_raise():
    assert gold_is_ordered('SELECT "abc FROM t ORDER BY x')  # sqlglot cannot tokenize it; the text decides
    assert not gold_is_ordered('SELECT "abc FROM t')

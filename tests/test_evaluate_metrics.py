"""Text metrics, schema grounding, VES/R-VES and summaries, each on hand-made cases."""

import math

import pytest

from macsql.evaluate import metrics
from macsql.evaluate.datasets import Example
from macsql.evaluate.scoring import score_examples, summarize
from macsql.schema import introspect
from macsql.sql import normalize_sql
from tests.conftest import make_db

SQL = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER REFERENCES singer(singer_id), year TEXT);
INSERT INTO singer VALUES (1, 'Ann', 'France', 30), (2, 'Bob', 'Spain', 40), (3, 'Cid', 'France', 50);
INSERT INTO concert VALUES (10, 1, '2014'), (11, 2, '2015'), (12, 1, '2015');
"""


@pytest.fixture
def db(tmp_path):
    return make_db(tmp_path / "music.sqlite", SQL)


@pytest.mark.parametrize("pred, gold, same", [
    ("select Name from SINGER;", "SELECT name FROM singer", True),
    ("SELECT count(*)  FROM singer WHERE country = 'France'", 'SELECT COUNT(*) FROM singer WHERE country = "France"',
     True),
    ("SELECT name FROM singer WHERE country = 'france'", "SELECT name FROM singer WHERE country = 'France'", False),
    ("SELECT name, age FROM singer", "SELECT age, name FROM singer", False),
    ("", "SELECT 1", False),
    ("SELEC broken (", "selec   BROKEN (", True),  # unparsable: whitespace/case-folded text
])
def test_exact_match_after_normalisation(pred, gold, same):
    assert metrics.exact_match(pred, gold) is same


def test_rouge_l():
    assert metrics.rouge_l("SELECT name FROM singer", "SELECT name FROM singer") == 1.0
    partial = metrics.rouge_l("SELECT name FROM singer", "SELECT name, age FROM singer WHERE age > 3")
    assert 0 < partial < 1
    assert metrics.rouge_l("", "SELECT 1") == 0.0


def test_grounding(db):
    schema = introspect(db)
    ok = [
        'SELECT count(*) FROM singer WHERE country = "France"',  # Spider's double-quoted string
        "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id",
        "WITH a AS (SELECT name AS n FROM singer) SELECT n FROM a",
        "SELECT s.name FROM (SELECT name FROM singer) AS s",
        "SELECT avg(age) AS a FROM singer ORDER BY a",
        "SELECT NAME FROM Singer",  # identifiers are case-insensitive
    ]
    for sql in ok:
        g = metrics.grounding(sql, schema)
        assert g.parsed and not g.hallucinated, (sql, g)
    g = metrics.grounding("SELECT salary FROM employees", schema)
    assert g.unknown_tables == ("employees",) and g.unknown_columns == ("salary",)
    g = metrics.grounding("SELECT T1.name, T2.venue FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id",
                          schema)
    assert g.unknown == ["T2.venue"]
    assert metrics.grounding("SELECT name FROM singer WHERE nationality = 'x'", schema).unknown == ["nationality"]
    assert not metrics.grounding("not sql at all (", schema).hallucinated


def test_ves_definitions():
    assert metrics.time_ratio([2.0, 2.0, 2.0], [1.0, 1.0, 1.0]) == 2.0
    # one wild outlier among many timings is dropped (BIRD: > 3 standard deviations from the mean)
    times = [1.0] * 20 + [100.0]
    assert metrics.time_ratio(times, [1.0] * 21) == pytest.approx(1.0)
    assert metrics.ves_reward(4.0, True) == 2.0
    assert metrics.ves_reward(4.0, False) == 0.0
    assert [metrics.rves_reward(r, True) for r in (3, 1.5, 0.6, 0.3, 0.1)] == [1.25, 1.0, 0.75, 0.5, 0.25]
    assert metrics.rves_reward(3, False) == 0.0


def test_quantiles():
    q = metrics.quantiles(range(1, 11))
    assert q["median"] == 5.5 and q["p90"] == pytest.approx(9.1) and q["mean"] == 5.5
    assert metrics.quantiles([]) == {"median": None, "p90": None, "mean": None}


def _ex(qid, db, gold, difficulty="simple"):
    return Example(question_id=qid, db_id="music", question=f"q{qid}", gold_sql=gold, db_path=db,
                   difficulty=difficulty)


def test_score_examples_per_question_and_summary(db):
    examples = [
        _ex("0", db, "SELECT name FROM singer ORDER BY age"),
        _ex("1", db, "SELECT name FROM singer ORDER BY age", "moderate"),
        _ex("2", db, "SELECT count(*) FROM singer", "moderate"),
        _ex("3", db, "SELECT name FROM singer WHERE country = 'France'", "challenging"),
        _ex("4", db, "SELECT 1"),  # no prediction: not scored
    ]
    preds = {
        "0": {"pred_sql": "SELECT name FROM singer ORDER BY age", "refine_rounds": 0, "llm_calls": 1,
              "prompt_tokens": 100, "completion_tokens": 10, "seconds": 1.0},
        "1": {"pred_sql": "SELECT name FROM singer ORDER BY age DESC", "refine_rounds": 1, "llm_calls": 2,
              "prompt_tokens": 200, "completion_tokens": 20, "seconds": 3.0},
        "2": {"pred_sql": "SELECT count(*) FROM singers", "refine_rounds": 3, "llm_calls": 4,
              "prompt_tokens": 400, "completion_tokens": 40, "seconds": 9.0},
        "3": {"pred_sql": "SELECT name FROM singer WHERE nation = 'France'"},
    }
    scores = score_examples(examples, preds, workers=1, progress=False)
    by = {s.question_id: s for s in scores}
    assert set(by) == {"0", "1", "2", "3"}
    assert by["0"].ex_bird and by["0"].ex_spider and by["0"].exact and by["0"].rouge_l == 1.0
    assert by["1"].ex_bird and not by["1"].ex_spider and not by["1"].exact  # order counts under ORDER BY
    assert by["1"].ex and by["1"].to_dict()["ex"] is True  # `ex` still reads as BIRD's verdict
    assert not by["2"].ex and not by["2"].executes and by["2"].hallucinated and by["2"].unknown == ["singers"]
    assert by["3"].hallucinated and "no such column" in by["3"].pred_error
    s = summarize(scores)
    assert s["n"] == 4 and s["ex_bird"] == 50.0 and s["ex_spider"] == 25.0 and s["exact_match"] == 25.0
    assert s["ex"] == s["ex_bird"]  # the old key, for readers of earlier reports
    assert s["hallucination_rate"] == 50.0 and s["execution_failure_rate"] == 50.0
    assert list(s["by_difficulty"]) == ["simple", "moderate", "challenging"]
    assert s["by_difficulty"]["moderate"] == {"n": 2, "ex_spider": 0.0, "ex_bird": 50.0}
    assert s["by_refine_rounds"] == {"0": {"n": 1, "ex_spider": 100.0, "ex_bird": 100.0},
                                     "1": {"n": 1, "ex_spider": 0.0, "ex_bird": 100.0},
                                     "3": {"n": 1, "ex_spider": 0.0, "ex_bird": 0.0}}
    assert s["cost_per_question"]["seconds"]["median"] == 3.0
    assert s["cost_per_question"]["llm_calls"]["p90"] == pytest.approx(3.6)
    assert s["gold_errors"] == []


def test_scoring_in_processes_matches_in_process(db):
    examples = [_ex(str(i), db, f"SELECT name FROM singer WHERE age > {i * 5}") for i in range(10)]
    preds = {str(i): {"pred_sql": f"SELECT name FROM singer WHERE age > {i * 5 if i % 2 else i}"}
             for i in range(10)}
    serial = score_examples(examples, preds, workers=1, progress=False)
    pooled = score_examples(examples, preds, workers=2, progress=False)
    assert [s.to_dict() for s in serial] == [s.to_dict() for s in pooled]


def test_ves_scoring(db):
    examples = [_ex("0", db, "SELECT name FROM singer"), _ex("1", db, "SELECT age FROM singer")]
    preds = {"0": {"pred_sql": "SELECT name FROM singer"}, "1": {"pred_sql": "SELECT nope FROM singer"}}
    scores = score_examples(examples, preds, workers=1, progress=False, ves_repeats=3)
    assert scores[0].ves_ratio is not None and scores[0].ves == pytest.approx(math.sqrt(scores[0].ves_ratio), abs=1e-3)
    assert scores[1].ves == 0.0 and scores[1].rves == 0.0 and scores[1].ves_ratio is None
    s = summarize(scores, ves=True, noisy=True)
    assert s["ves_noisy"] is True and s["ves"] >= 0 and s["rves"] in (0.0, 12.5, 25.0, 37.5, 50.0, 62.5)


def test_gold_failures_are_listed(db):
    scores = score_examples([_ex("0", db, "SELECT x FROM nowhere")], {"0": {"pred_sql": "SELECT x FROM nowhere"}},
                            workers=1, progress=False)
    s = summarize(scores)
    assert s["ex_bird"] == s["ex_spider"] == 0.0 and s["gold_errors"][0]["question_id"] == "0"


def test_unclosed_quotes_are_handled(db):
    assert normalize_sql("SELECT `abc FROM singer") == "select `abc from singer"
    assert not metrics.grounding('SELECT "abc FROM singer', introspect(db)).parsed

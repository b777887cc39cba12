"""THE result comparator, shared by the metrics, the GRPO execution reward and the candidate vote.

Two execution accuracies, each as its benchmark's official evaluator computes it, so that figures read
against papers:

- **EX (BIRD)** (`ex_bird`): the SETS of result rows are equal (BIRD's evaluation script compares
  `set(pred) == set(gold)`). Column order counts (rows are tuples), duplicates and row order do not.
  `result_key` is that equality as a hashable value: the vote groups candidates by it, and `rows_match`
  compares with it, so there is one definition of "the same answer".
- **EX (Spider)** (`ex_spider`): the official test-suite evaluator's `exec_eval` rule. Both queries are
  first rewritten the way that evaluator does (`spider_form`: `> =` spacing repaired, and every DISTINCT
  keyword dropped unless `keep_distinct`) and executed again; then the row MULTISETS must be equal under
  SOME order of the predicted columns, and the row order must match too when the gold query contains
  ORDER BY anywhere (a subquery's or a window's ORDER BY counts, as in the official text test).

Value details are Python's, as in both official scripts: 1 == 1.0, floats compare exactly (no tolerance),
NULL equals NULL, text is compared after decoding (and Spider's pre-check quirk with 1 vs 1.0 beside other
values is kept, see `spider_rows_match`). Any error or timeout on either query is wrong.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from macsql.sql import keyword_spans
from macsql.sqlexec import DEFAULT_TIMEOUT_S, ExecResult, execute


@dataclass(frozen=True)
class Match:
    ex_bird: bool  # BIRD: set(pred rows) == set(gold rows)
    ex_spider: bool  # Spider test-suite exec_eval: column order free, multiset, ordered under ORDER BY
    pred: ExecResult
    gold: ExecResult

    @property
    def correct(self) -> bool:
        """The verdict the pipeline's own parts use (rewards, judge, sweep): BIRD's set semantics."""
        return self.ex_bird


# ----------------------------------------------------------------------------------------- BIRD (sets)
def result_key(rows: Sequence[Sequence]) -> frozenset:
    """A hashable key that two results share exactly when BIRD's EX calls them equal (same set of rows)."""
    return frozenset(tuple(r) for r in rows)


def rows_match(pred: Sequence[Sequence], gold: Sequence[Sequence]) -> bool:
    """BIRD's EX on two row lists."""
    return result_key(pred) == result_key(gold)


# ---------------------------------------------------------------------------------- Spider (exec_eval)
def spider_rows_match(pred: Sequence[Sequence], gold: Sequence[Sequence], *, ordered: bool) -> bool:
    """Spider's EX on two row lists: equal under some permutation of the predicted columns, as row
    multisets, or as row lists when `ordered`. Two empty results match whatever their columns."""
    pred_rows, gold_rows = [tuple(r) for r in pred], [tuple(r) for r in gold]
    if not pred_rows and not gold_rows:
        return True
    if len(pred_rows) != len(gold_rows) or len(pred_rows[0]) != len(gold_rows[0]):
        return False
    # Spider's quick rejection, kept for agreement: each row's values sorted by their text and type name
    # must match (as row sets, or row lists when ordered). It is a necessary condition except in one
    # corner, which the official figures carry: 1 and 1.0 sort apart from a value whose text falls
    # between them ("1.5" < "1<class..."), so (1, 1.5) differs from (1.0, 1.5).
    pred_sorted, gold_sorted = _sorted_rows(pred_rows), _sorted_rows(gold_rows)
    if (pred_sorted != gold_sorted) if ordered else (set(pred_sorted) != set(gold_sorted)):
        return False
    pred_cols, gold_cols = list(zip(*pred_rows, strict=True)), list(zip(*gold_rows, strict=True))
    if ordered:
        # rows stay in place, so a column permutation exists iff the columns pair up as whole vectors
        return Counter(pred_cols) == Counter(gold_cols)
    return _column_permutation_exists(pred_cols, gold_cols)


def _sorted_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(sorted(r, key=lambda v: f"{v}{type(v)}")) for r in rows]


def _column_permutation_exists(pred_cols: list[tuple], gold_cols: list[tuple]) -> bool:
    """Depth-first search for a map gold column -> distinct pred column under which the row multisets
    agree. Exact, not sampled: a gold column can only take a pred column with the same bag of values, and
    every partial map must already give equal multisets of (projected) rows, which prunes the search."""
    width = len(gold_cols)
    gold_bags = [Counter(c) for c in gold_cols]
    pred_bags = [Counter(c) for c in pred_cols]
    options = [[j for j in range(width) if pred_bags[j] == gold_bags[i]] for i in range(width)]
    if any(not o for o in options):
        return False
    gold_prefix = [Counter(zip(*gold_cols[:i + 1], strict=True)) for i in range(width)]

    def search(i: int, chosen: list[int]) -> bool:
        if i == width:
            return True
        tried: set[tuple] = set()
        for j in options[i]:
            if j in chosen or pred_cols[j] in tried:  # identical columns are interchangeable: try one
                continue
            tried.add(pred_cols[j])
            picked = [*chosen, j]
            projected = Counter(zip(*(pred_cols[k] for k in picked), strict=True))
            if projected == gold_prefix[i] and search(i + 1, picked):
                return True
        return False

    return search(0, [])


_SPACED_OPERATORS = (("> =", ">="), ("< =", "<="), ("! =", "!="))


def spider_form(sql: str, *, keep_distinct: bool = False) -> str:
    """The query Spider's evaluator executes in place of `sql`: operators written `> =` joined up, and,
    unless `keep_distinct`, every DISTINCT keyword removed (SELECT DISTINCT and COUNT(DISTINCT x) alike).

    The keyword is found with sqlglot's tokenizer (`sql.keyword_spans`) and cut out of the text by position,
    so quoted names and strings that read "distinct" stay, and nothing else in the query is re-rendered. Text
    the tokenizer rejects (an unclosed quote) is returned as it is; it fails to execute either way.
    """
    text = sql or ""
    for spaced, joined in _SPACED_OPERATORS:
        text = text.replace(spaced, joined)
    if keep_distinct or "distinct" not in text.lower():
        return text
    for start, end in reversed(keyword_spans(text, "DISTINCT") or []):
        text = text[:start] + text[end:]
    return text


def orders_rows(sql: str) -> bool:
    """True when the query contains ORDER BY anywhere: Spider's evaluator then compares row order."""
    spans = keyword_spans(sql or "", "ORDER_BY")
    if spans is None:  # an unclosed quote: the text decides
        return re.search(r"\border\s+by\b", sql or "", re.IGNORECASE) is not None
    return bool(spans)


# ---------------------------------------------------------------------------------------- comparing
def compare_results(pred: ExecResult, gold: ExecResult, gold_sql: str = "", *,
                    pred_spider: ExecResult | None = None, gold_spider: ExecResult | None = None) -> Match:
    """Both verdicts from executed results. `pred_spider`/`gold_spider` are the results of the queries'
    `spider_form`s; when a caller has not run them (their text was unchanged, or only BIRD's verdict is
    wanted) the plain results stand in."""
    ex_bird = pred.ok and gold.ok and rows_match(pred.rows, gold.rows)
    pred_spider, gold_spider = pred_spider or pred, gold_spider or gold
    ex_spider = pred_spider.ok and gold_spider.ok and spider_rows_match(
        pred_spider.rows, gold_spider.rows, ordered=orders_rows(gold_sql))
    return Match(ex_bird, ex_spider, pred, gold)


def execution_match(db_path: str | Path, pred_sql: str, gold_sql: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                    gold: ExecResult | None = None, max_rows: int = 100_000,
                    keep_distinct: bool = False, pred_db=None) -> Match:
    """Execute both queries (or reuse a gold result) and compare them. A query whose `spider_form`
    differs from its text (it has DISTINCT) runs a second time in that form for the Spider verdict.
    `pred_db`: the prediction runs there instead (a copy of the database in another engine, which holds the
    same rows, so the gold result from SQLite stands; evaluate/copies.py)."""

    def run(sql: str, database=None) -> ExecResult:
        if not sql:
            return ExecResult(error="no SQL")
        if database is None:
            return execute(db_path, sql, timeout_s=timeout_s, max_rows=max_rows)
        return database.execute(sql, timeout_s=timeout_s, max_rows=max_rows)

    if pred_db is not None:
        from macsql.engines import open_database

        pred_db = open_database(pred_db)
    gold = gold if gold is not None else run(gold_sql)
    pred = run(pred_sql, pred_db)
    pred_form, gold_form = (spider_form(s, keep_distinct=keep_distinct) for s in (pred_sql, gold_sql))
    pred_spider = run(pred_form, pred_db) if pred_form != pred_sql else pred
    gold_spider = run(gold_form) if gold_form != gold_sql else gold
    return compare_results(pred, gold, gold_sql, pred_spider=pred_spider, gold_spider=gold_spider)

"""THE result comparator, shared by the metrics and the GRPO execution reward.

BIRD semantics (the headline metric): prediction and gold are equal when their SETS of result rows are
equal; an error or a timeout on the prediction is wrong. The stricter Spider-style variant compares row
MULTISETS and, when the gold query has a top-level ORDER BY, the row order too. Rows are tuples, so column
order counts in both (as in BIRD's evaluation script).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from macsql.sqlexec import ExecResult, execute, parse_query


@dataclass(frozen=True)
class Match:
    correct: bool  # BIRD semantics
    strict: bool  # Spider-style: multiset, ordered when the gold query orders
    pred: ExecResult
    gold: ExecResult


def result_key(rows) -> frozenset:
    """A hashable form of a result under BIRD semantics: two results are equal when their keys are (the
    vote groups candidates by it)."""
    return frozenset(tuple(r) for r in rows)


def rows_match(pred: tuple | list, gold: tuple | list, *, strict: bool = False, ordered: bool = False) -> bool:
    if not strict:
        return result_key(pred) == result_key(gold)
    pred_rows = [tuple(r) for r in pred]
    gold_rows = [tuple(r) for r in gold]
    if ordered:
        return pred_rows == gold_rows
    return Counter(pred_rows) == Counter(gold_rows)


def gold_is_ordered(sql: str) -> bool:
    """True when the query's outermost SELECT has ORDER BY (so row order is part of the answer)."""
    from sqlglot import exp

    tree = parse_query(sql)
    if tree is None:  # unparsable (an unclosed quote, a dialect quirk): fall back to the text
        return "order by" in (sql or "").lower()
    return isinstance(tree, exp.Query) and tree.args.get("order") is not None


def compare_results(pred: ExecResult, gold: ExecResult, gold_sql: str = "") -> Match:
    if not pred.ok or not gold.ok:
        return Match(False, False, pred, gold)
    correct = rows_match(pred.rows, gold.rows)
    strict = correct and rows_match(pred.rows, gold.rows, strict=True, ordered=gold_is_ordered(gold_sql))
    return Match(correct, strict, pred, gold)


def execution_match(db_path: str | Path, pred_sql: str, gold_sql: str, *, timeout_s: float = 30.0,
                    gold: ExecResult | None = None, max_rows: int = 100_000) -> Match:
    """Execute both queries (or reuse a gold result) and compare them."""
    gold = gold if gold is not None else execute(db_path, gold_sql, timeout_s=timeout_s, max_rows=max_rows)
    pred = execute(db_path, pred_sql, timeout_s=timeout_s, max_rows=max_rows) if pred_sql else ExecResult(
        error="no SQL")
    return compare_results(pred, gold, gold_sql)

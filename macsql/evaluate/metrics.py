"""Per-question text metrics beside execution accuracy: exact match after sqlglot normalisation, ROUGE-L,
schema grounding (does the SQL name tables or columns the database does not have), BIRD's VES/R-VES
rewards, and the median/p90 summaries used for cost figures.

Execution accuracy itself lives in compare.py (THE comparator); this module never compares result rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from macsql.schema import Schema
from macsql.sql import normalize_sql, unknown_names


# ------------------------------------------------------------------------------------------ exact match
def exact_match(pred_sql: str, gold_sql: str) -> bool:
    """The two queries are the same after `sql.normalize_sql` (layout, keyword and identifier case)."""
    pred, gold = normalize_sql(pred_sql), normalize_sql(gold_sql)
    return bool(pred) and pred == gold


# ------------------------------------------------------------------------------------------- ROUGE-L
_ROUGE = None


def rouge_l(pred_sql: str, gold_sql: str) -> float:
    """ROUGE-L F1 between the two SQL texts (rouge-score's tokenizer: lowercase alphanumeric tokens)."""
    global _ROUGE
    if not (pred_sql or "").strip() or not (gold_sql or "").strip():
        return 0.0
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(_ROUGE.score(gold_sql, pred_sql)["rougeL"].fmeasure)


# ---------------------------------------------------------------------------------- schema grounding
@dataclass(frozen=True)
class Grounding:
    parsed: bool  # False when sqlglot cannot parse the query (then nothing is claimed about it)
    unknown_tables: tuple[str, ...] = ()
    unknown_columns: tuple[str, ...] = ()

    @property
    def hallucinated(self) -> bool:
        return bool(self.unknown_tables or self.unknown_columns)

    @property
    def unknown(self) -> list[str]:
        return [*self.unknown_tables, *self.unknown_columns]


def grounding(sql: str, schema: Schema) -> Grounding:
    """The hallucination metric of one query: the tables and columns it names that the schema lacks, as the
    one analyser finds them (`sql.unknown_names`, which the grounding reward, DPO and data cleaning use too).
    Names the query defines itself (CTEs, subquery and SELECT aliases) and Spider's double-quoted strings
    ("France") are not counted."""
    found = unknown_names(sql, schema)
    return Grounding(parsed=False) if found is None else Grounding(True, found.tables, found.columns)


# ------------------------------------------------------------------------------------------- VES
def _drop_outliers(times: Sequence[float]) -> list[float]:
    """BIRD's rule: drop timings more than 3 standard deviations from the mean."""
    if len(times) < 3:
        return list(times)
    mean, sd = statistics.fmean(times), statistics.pstdev(times)
    kept = [t for t in times if abs(t - mean) <= 3 * sd]
    return kept or list(times)


def time_ratio(gold_times: Sequence[float], pred_times: Sequence[float]) -> float:
    """gold time / predicted time, each the mean of its repeats with outliers removed (>1: pred is faster)."""
    gold = statistics.fmean(_drop_outliers(gold_times))
    pred = statistics.fmean(_drop_outliers(pred_times))
    return gold / pred if pred > 0 else 1.0


def ves_reward(ratio: float | None, correct: bool) -> float:
    """BIRD VES per question: sqrt(time ratio) when the result is correct, else 0."""
    return math.sqrt(ratio) if correct and ratio is not None and ratio > 0 else 0.0


def rves_reward(ratio: float | None, correct: bool) -> float:
    """BIRD mini-dev's Reward-based VES: bucketed time ratio, so one very fast query cannot dominate."""
    if not correct or ratio is None:
        return 0.0
    if ratio >= 2:
        return 1.25
    if ratio >= 1:
        return 1.0
    if ratio >= 0.5:
        return 0.75
    if ratio >= 0.25:
        return 0.5
    return 0.25


def timed_pair(db_path, gold_sql: str, pred_sql: str, *, repeats: int, timeout_s: float
               ) -> tuple[list[float], list[float]] | None:
    """Wall seconds of `repeats` executions of each query through the one executor, interleaved (gold,
    pred, gold, ...) so that drifting machine load hits both alike; None when any run fails.

    The executor's time includes its statement check (a sqlglot parse, about a millisecond): negligible on
    BIRD-sized databases, but on toy databases it pulls every ratio towards 1."""
    from macsql.sqlexec import execute

    gold_t, pred_t = [], []
    for _ in range(repeats):
        for sql, times in ((gold_sql, gold_t), (pred_sql, pred_t)):
            res = execute(db_path, sql, timeout_s=timeout_s)
            if not res.ok:
                return None
            times.append(res.seconds)
    return gold_t, pred_t


# -------------------------------------------------------------------------------------- summaries
def quantiles(values: Iterable[float]) -> dict[str, float | None]:
    """Median, p90 and mean of `values` (None for an empty list). p90 uses linear interpolation."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return {"median": None, "p90": None, "mean": None}
    pos = 0.9 * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    p90 = vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)
    return {"median": round(statistics.median(vals), 4), "p90": round(p90, 4),
            "mean": round(statistics.fmean(vals), 4)}

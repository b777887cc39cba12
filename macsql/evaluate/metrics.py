"""Per-question text metrics beside execution accuracy: exact match after sqlglot normalisation, ROUGE-L,
schema grounding (does the SQL name tables or columns the database does not have), BIRD's VES/R-VES
rewards, and the median/p90 summaries used for cost figures.

Execution accuracy itself lives in compare.py (THE comparator); this module never compares result rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from macsql.schema import Schema


# ------------------------------------------------------------------------------------------ exact match
def normalize_sql(sql: str) -> str:
    """A canonical text for `sql`: sqlglot's SQLite output with identifiers case-folded.

    Parsing removes layout, keyword case, redundant parentheses and a trailing ';'. Identifiers are
    case-insensitive in SQLite, so they are folded; string literals keep their case (they are data).
    Double-quoted strings (SQLite accepts "France" as a string) become one form by going through the parser.
    When sqlglot cannot parse the query, whitespace-collapsed lowercase text is the fallback.
    """
    import sqlglot
    from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

    from macsql.sqlexec import parse_query

    text = (sql or "").strip().rstrip(";").strip()
    if not text:
        return ""
    try:
        tree = parse_query(text)  # None when too long or deep to parse safely (issue 12), or unparseable
        if tree is None:
            return " ".join(text.lower().split())
        tree = tree.transform(lambda node: _quoted_to_string(node, text))
        tree = normalize_identifiers(tree, dialect="sqlite")
        return tree.sql(dialect="sqlite", normalize=True, comments=False)
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        return " ".join(text.lower().split())


def _quoted_to_string(node, text: str):
    """An unqualified double-quoted name is a string in Spider's SQL ("France"): make it 'France', so
    that a prediction written with single quotes matches and the value keeps its case."""
    from sqlglot import exp

    if (isinstance(node, exp.Column) and not node.table and isinstance(node.this, exp.Identifier)
            and node.this.args.get("quoted") and _double_quoted(node.this, text)):
        return exp.Literal.string(node.name)
    return node


def exact_match(pred_sql: str, gold_sql: str) -> bool:
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


@dataclass
class _Scope:
    tables: dict[str, set[str]] = field(default_factory=dict)  # lower table -> lower columns


def grounding(sql: str, schema: Schema) -> Grounding:
    """Which tables and columns in `sql` the schema lacks.

    Names the query defines itself are not hallucinations: CTE names and their columns, subquery aliases,
    SELECT aliases. An unqualified, double-quoted name that matches no column is a string literal in
    SQLite ("France"), as Spider's gold SQL uses it, so it is not counted either.
    """
    from sqlglot import exp

    from macsql.sqlexec import parse_query

    text = (sql or "").strip().rstrip(";").strip()
    if not text:
        return Grounding(parsed=False)
    tree = parse_query(text)
    if tree is None:
        return Grounding(parsed=False)

    known = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
    all_columns = set().union(*known.values()) if known else set()
    defined: set[str] = set()  # names the query itself defines (CTEs, derived tables, aliases)
    for cte in tree.find_all(exp.CTE):
        defined.add(cte.alias_or_name.lower())
        defined.update(c.name.lower() for c in cte.args.get("alias", exp.TableAlias()).columns or [])
        if isinstance(cte.this, exp.Query):
            defined.update(n.lower() for n in cte.this.named_selects)
    for sub in tree.find_all(exp.Subquery):
        if sub.alias:
            defined.add(sub.alias.lower())
        if isinstance(sub.this, exp.Query):
            defined.update(n.lower() for n in sub.this.named_selects)
    for alias in tree.find_all(exp.Alias):
        defined.add(alias.alias.lower())

    aliases: dict[str, str] = {}  # alias or name -> real table (lower)
    unknown_tables: list[str] = []
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if not name or isinstance(table.this, exp.Anonymous):  # table-valued functions
            continue
        if name in known:
            aliases[name] = name
            if table.alias:
                aliases[table.alias.lower()] = name
        elif name not in defined:
            unknown_tables.append(table.name)
        elif table.alias:
            defined.add(table.alias.lower())

    unknown_columns: list[str] = []
    for col in tree.find_all(exp.Column):
        name = col.name
        if not name or isinstance(col.this, exp.Star):
            continue
        low = name.lower()
        qualifier = col.table.lower() if col.table else ""
        if qualifier:
            real = aliases.get(qualifier)
            if real is None:
                continue  # qualified by a CTE/subquery alias (checked where it is defined) or an unknown table
            if low not in known[real]:
                unknown_columns.append(f"{col.table}.{name}")
            continue
        if low in all_columns or low in defined:
            continue
        if col.this.args.get("quoted") and _double_quoted(col.this, text):
            continue  # SQLite reads an unresolvable "..." as a string literal
        unknown_columns.append(name)
    return Grounding(True, tuple(dict.fromkeys(unknown_tables)), tuple(dict.fromkeys(unknown_columns)))


def _double_quoted(identifier, text: str) -> bool:
    """True when the identifier was written with double quotes (not backticks or brackets)."""
    return f'"{identifier.name}"' in text


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

"""GRPO reward functions: small pure functions `(completions, **columns) -> list[float | None]`.

TRL's GRPOTrainer calls each with the generated completions and every dataset column as a list (`task`,
`gold_sql`, `db_path`, ...). A reward returns None where it does not apply (TRL averages over the rest), e.g.
execution rewards for Selector rows. The execution rewards reuse THE executor and THE comparator, run the
completions of a batch in parallel (SQLite releases the GIL) and each query under a deadline.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from macsql.errors import InputError, NoSQLError
from macsql.finetune.data import SQL_TASKS, completion_text
from macsql.finetune.reasoning_reward import reasoning_reward

TIMEOUT_S = 5.0  # per query: a reward must not stall a training step
WORKERS = 8


def reply_sql(text: str, task: str) -> str | None:
    """The SQL an agent's reply would run (parsed as the agent parses it), or None."""
    from macsql.agents import decomposer
    from macsql.agents.parsing import extract_sql

    try:
        return decomposer.parse_reply(text)[0] if task == "decomposer" else extract_sql(text)
    except NoSQLError:
        return None


def _column(columns: dict, name: str, n: int, default=None) -> list:
    values = columns.get(name)
    return list(values) if values is not None else [default] * n


@functools.lru_cache(maxsize=4096)
def _execute(db_path: str, sql: str):
    from macsql.sqlexec import execute

    return execute(db_path, sql, timeout_s=TIMEOUT_S, max_rows=100_000)


@functools.lru_cache(maxsize=1024)
def _schema(db_path: str):
    from macsql.schema import introspect

    return introspect(db_path)


def _parallel(fn: Callable, items: Sequence) -> list:
    if len(items) <= 1:
        return [fn(*it) for it in items]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        return list(pool.map(lambda it: fn(*it), items))


# -------------------------------------------------------------------------------------------- format
_REASONING_REPLY = re.compile(r"(?s)<reasoning>.+?</reasoning>\s*<sql>.+?</sql>")


def format_reward(completions, task=None, reply=None, **columns) -> list[float | None]:
    """1.0 when the reply is in the agent's format, 0.5 when its answer can be read but the layout is off.
    A Decomposer row built from the direct prompt (`reply` "direct") asks for the query alone in a sql block,
    so that layout is its full mark: rewarding "Final SQL:" there would teach the vote's direct candidate
    and its samples the other prompt's layout."""
    from macsql.agents.parsing import extract_json_object

    tasks = _column({"task": task}, "task", len(completions), "decomposer")
    replies = _column({"reply": reply}, "reply", len(completions), "")
    out = []
    for completion, t, kind in zip(completions, tasks, replies, strict=True):
        text = completion_text(completion).strip()
        if t == "selector":
            obj = extract_json_object(text)
            ok = obj is not None and all(isinstance(v, (list, str)) for v in obj.values())
            out.append(1.0 if ok and text.startswith("{") else 0.5 if ok else 0.0)
            continue
        sql = reply_sql(text, t)
        if sql is None:
            out.append(0.0)
        elif _REASONING_REPLY.fullmatch(text):  # the `--reply-format reasoning` layout is as valid as the default
            out.append(1.0)
        elif t == "decomposer" and kind != "direct":
            out.append(1.0 if "Final SQL:" in text and "```sql" in text else 0.5)
        else:
            out.append(1.0 if text.startswith("```sql") and text.endswith("```") else 0.5)
    return out


# ----------------------------------------------------------------------------------------- execution
def _match(db_path: str, pred: str | None, gold: str):
    from macsql.compare import compare_results
    from macsql.sqlexec import ExecResult

    pred_res = _execute(db_path, pred) if pred else ExecResult(error="no SQL")
    return compare_results(pred_res, _execute(db_path, gold), gold)


def _sql_rows(completions, columns) -> list[tuple]:
    n = len(completions)
    tasks = _column(columns, "task", n, "decomposer")
    return [(t, reply_sql(completion_text(c), t), g, d) for c, t, g, d in
            zip(completions, tasks, _column(columns, "gold_sql", n), _column(columns, "db_path", n),
                strict=True)]


def execution_reward(completions, **columns) -> list[float | None]:
    """1.0 when the reply's SQL returns the gold result (THE comparator, BIRD semantics), else 0.0."""
    rows = _sql_rows(completions, columns)
    todo = [(d, s, g) for t, s, g, d in rows if t in SQL_TASKS and g and d]
    results = iter(_parallel(_match, todo))
    return [float(next(results).correct) if t in SQL_TASKS and g and d else None for t, s, g, d in rows]


def executes_reward(completions, **columns) -> list[float | None]:
    """Partial credit for SQL that runs without error and returns rows but gives the wrong result."""
    rows = _sql_rows(completions, columns)
    todo = [(d, s, g) for t, s, g, d in rows if t in SQL_TASKS and g and d]
    results = iter(_parallel(_match, todo))
    out = []
    for t, _s, g, d in rows:
        if t not in SQL_TASKS or not g or not d:
            out.append(None)
            continue
        m = next(results)
        out.append(1.0 if m.pred.ok and m.pred.rows and not m.correct else 0.0)
    return out


GRADED_WRONG = 0.1  # the field's credit for SQL that runs but returns the wrong result (SLM-SQL, Reasoning-SQL)


def execution_graded_reward(completions, **columns) -> list[float | None]:
    """The field's execution reward in one function: 1.0 when the reply's SQL returns the gold result (THE
    comparator), 0.1 when it runs without error but returns something else (empty results included), 0.0
    when there is no SQL or it fails. Alone it is enough for GRPO in the small-model recipes; the separate
    `execution` and `executes` rewards stay for mixing with other weights."""
    rows = _sql_rows(completions, columns)
    todo = [(d, s, g) for t, s, g, d in rows if t in SQL_TASKS and g and d]
    results = iter(_parallel(_match, todo))
    out: list[float | None] = []
    for t, _s, g, d in rows:
        if t not in SQL_TASKS or not g or not d:
            out.append(None)
            continue
        m = next(results)
        out.append(1.0 if m.correct else GRADED_WRONG if m.pred.ok else 0.0)
    return out


# ---------------------------------------------------------------------------------------- complexity
def complexity_reward(completions, **columns) -> list[float | None]:
    """1 - normalised distance between the reply's and the gold SQL's construct counts (`sql.sql_features`)."""
    from macsql.sql import sql_features

    out = []
    for t, s, g, _d in _sql_rows(completions, columns):
        if t not in SQL_TASKS or not g:
            out.append(None)
            continue
        gold = sql_features(g)
        pred = sql_features(s) if s else None
        if gold is None:
            out.append(None)
        elif pred is None:
            out.append(0.0)
        else:
            diff = sum(abs(pred[k] - gold[k]) for k in gold)
            out.append(1.0 - diff / (diff + sum(gold.values()) + 1))
    return out


# ------------------------------------------------------------------------------------------ grounding
def invented_names(sql: str, schema) -> list[str] | None:
    """Tables and columns in `sql` that the schema does not have (aliases and CTE names are not invented);
    None when the SQL cannot be parsed. The one analyser's answer (`sql.unknown_names`), so the reward and the
    hallucination metric agree."""
    from macsql.sql import unknown_names

    found = unknown_names(sql, schema)
    return None if found is None else found.names


def grounding_reward(completions, **columns) -> list[float | None]:
    """1.0 when every table and column the reply names exists in the database (no hallucinated schema)."""
    out = []
    for t, s, _g, d in _sql_rows(completions, columns):
        if t not in SQL_TASKS or not d:
            out.append(None)
            continue
        bad = invented_names(s, _schema(d)) if s else None
        out.append(0.0 if bad is None else 1.0 if not bad else 0.0)
    return out


# ---------------------------------------------------------------------------------------------- choose
REWARDS: dict[str, Callable] = {
    "format": format_reward,
    "execution": execution_reward,
    "executes": executes_reward,
    "execution_graded": execution_graded_reward,  # 1 / 0.1 / 0: the field's reward, off unless weighted
    "complexity": complexity_reward,
    "grounding": grounding_reward,
    "reasoning": reasoning_reward,  # for the <reasoning>/<sql> format; off unless weighted
}
DEFAULT_WEIGHTS = {"format": 0.2, "execution": 1.0, "executes": 0.2, "complexity": 0.1, "grounding": 0.2}


def parse_weights(text: str | dict | None) -> dict[str, float]:
    """`execution=1,format=0.2` (or a dict) over the defaults; weight 0 drops a reward."""
    from macsql.errors import did_you_mean

    weights = dict(DEFAULT_WEIGHTS)
    if not text:
        return weights
    items = text.items() if isinstance(text, dict) else (
        part.split("=", 1) for part in str(text).split(",") if part.strip())
    for item in items:
        try:
            name, value = item
            name, value = str(name).strip(), float(value)
        except ValueError as exc:
            raise InputError(f"bad reward weight {item!r}; write NAME=NUMBER, e.g. execution=1,format=0.2") from exc
        if name not in REWARDS:
            raise InputError(f"unknown reward {name!r}{did_you_mean(name, REWARDS)}; "
                             f"choose from {', '.join(REWARDS)}")
        weights[name] = value
    return {k: v for k, v in weights.items() if v}

"""Refiner: given SQL and what went wrong when it ran, asks the model for a corrected query.

"Wrong" means an SQLite error, a reply with no SQL, an empty result, or a result of only NULLs (MAC-SQL
refines on errors and empty results; NULL-only rows usually mean a wrong join or column).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from macsql.agents.parsing import extract_reasoning, extract_sql
from macsql.agents.prompting import (
    REASONING_FORMAT,
    engine_name,
    for_dialect,
    messages,
    question_block,
    reasoning_target,
    sql_block,
    trace_entry,
)
from macsql.backends.base import LLM, Messages
from macsql.errors import NoSQLError
from macsql.sqlexec import ExecResult

TASK = """Task: the SQLite query below was written for the question, but it has a problem. Fix it, using only
the tables and columns above. Answer with only the corrected query in a ```sql block, no explanation.

{question}
Query:
```sql
{sql}
```
Problem: {problem}"""
# Without "no explanation" the default model explained its fix at length after the block: on Spider, one
# refine call wrote up to ~500 tokens, most of a question's time when it needed the Refiner.
REASONING_TASK = TASK.replace(" Answer with only the corrected query in a ```sql block, no explanation.", "") + "\n\n" + REASONING_FORMAT


@dataclass
class Refinement:
    sql: str  # "" when the reply held no SQL
    error: str | None = None
    trace: list[dict] = field(default_factory=list)


def problem_with(result: ExecResult | None, parse_error: str | None = None, dialect: str = "sqlite") -> str | None:
    """What is wrong with an execution, in words the model can act on; None when nothing is."""
    if parse_error:
        return f"{parse_error}; write a complete {engine_name(dialect)} query"
    if result is None:
        return "the query was not executed"
    if result.timed_out:
        return f"{result.error}; write a simpler, faster query"
    if result.error:
        return f"{engine_name(dialect)} error: {result.error}"
    if not result.rows:
        return "the query ran but returned no rows; check the filter values, joins and column names"
    if all(all(v is None for v in row) for row in result.rows):
        return "the query returned only NULL values; check the columns and joins"
    return None


def problem_text(sql: str, result: ExecResult | None, schema, db_path, *, parse_error: str | None = None,
                 hints: bool = True, dialect: str = "sqlite") -> str:
    """What the Refiner is told: the problem, then (with `hints`) the repair hint from the schema and data.
    The same text goes into training rows (macsql.finetune.data)."""
    from macsql.agents.hints import repair_hint

    problem = problem_with(result, parse_error, dialect) or "the result looks wrong"
    if hints and sql:
        hint = repair_hint(sql, result, schema, db_path)
        if hint:
            problem += f"\nHint: {hint}"
    return problem


def build_prompt(question: str, schema_text: str, sql: str, problem: str, evidence: str = "", *,
                 output_format: str = "sql", dialect: str = "sqlite") -> Messages:
    task = for_dialect(REASONING_TASK if output_format == "reasoning" else TASK, dialect)
    return messages(schema_text, task.format(question=question_block(question, evidence),
                                             sql=sql.strip() or "(none)", problem=problem), dialect)


def format_target(sql: str, *, reasoning: str | None = None) -> str:
    if reasoning is not None:
        return reasoning_target(reasoning, sql)
    return sql_block(sql)


def refine(question: str, schema_text: str, sql: str, problem: str, *, llm: LLM, evidence: str = "",
           round_: int = 1, output_format: str = "sql", max_new_tokens: int = 512,
           dialect: str = "sqlite") -> Refinement:
    prompt = build_prompt(question, schema_text, sql, problem, evidence, output_format=output_format,
                          dialect=dialect)
    gen = llm.generate([prompt], agent="refiner", max_new_tokens=max_new_tokens)[0]
    try:
        fixed, error = extract_sql(gen.text), None
    except NoSQLError as exc:
        fixed, error = "", str(exc)
    reasoning = extract_reasoning(gen.text)
    return Refinement(fixed, error, [trace_entry("refiner", prompt, gen, round_, sql=fixed, problem=problem,
                                                 reasoning=reasoning)])


def same_sql(a: str, b: str) -> bool:
    """Two queries that differ only in layout, case or a trailing ';' (a "fix" that changes nothing)."""
    def canon(s: str) -> str:
        return " ".join((s or "").strip().rstrip(";").lower().split())
    return canon(a) == canon(b)


def to_refine(candidates: list[dict], round_: int, limit: int) -> list[dict]:
    """The failing candidates of the latest round worth a model call: distinct queries not tried in an
    earlier round, earliest first."""
    earlier = [c["sql"] for c in candidates if c["round"] < round_]
    picked: list[dict] = []
    for cand in candidates:
        if cand["round"] != round_ or cand["score"] == 2:
            continue
        if any(same_sql(cand["sql"], s) for s in earlier) or any(same_sql(cand["sql"], p["sql"]) for p in picked):
            continue
        picked.append(cand)
    return picked[:limit]


def node(state, runtime) -> dict:
    """Fix the latest round's failing candidates; each fix becomes a draft that joins the vote. A fix that
    repeats a query already tried is not run again (its result is reused: when it repeats another candidate
    it is one more vote for that result), and a round that brings no new query ends the loop."""
    ctx = runtime.context
    round_ = state.get("rounds", 0) + 1
    tried = [c["sql"] for c in state["candidates"]]
    drafts, trace = [], []
    for cand in to_refine(state["candidates"], round_ - 1, ctx.max_refine):
        problem = problem_text(cand["sql"], cand["result"], state["schema"], ctx.db_path,
                               parse_error=cand.get("error"), hints=ctx.use_hints, dialect=ctx.dialect)
        out = refine(state["question"], state["schema_text"], cand["sql"], problem, llm=ctx.llm,
                     evidence=state.get("evidence", ""), round_=round_, output_format=ctx.output_format,
                     max_new_tokens=ctx.max_new_tokens, dialect=ctx.prompt_dialect)
        entry = {**out.trace[0], "candidate": cand["id"]}
        repeated = next((t for t in tried if out.sql and same_sql(out.sql, t)), None)
        entry["repeated"] = repeated is not None
        drafts.append({"sql": repeated if repeated is not None else out.sql, "source": f"fix of #{cand['id']}",
                       "error": out.error, "parent": cand["id"], "repeated": repeated is not None})
        tried.append(out.sql)
        trace.append(entry)
    update = {"drafts": drafts, "rounds": round_, "trace": trace, "stalled": all(d["repeated"] for d in drafts)}
    if state.get("ladder") == "direct":
        update["ladder"] = "fixed"  # the direct query's repair: the graph stops if it runs with rows
    return update

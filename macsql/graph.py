"""The MAC-SQL graph: schema → Selector → Decomposer → execute ⇄ Refiner (bounded) → finish.

Unlike the original MAC-SQL loop, the last fix is executed too, and the answer is the best SQL seen rather
than the last one: SQL that runs and returns values beats SQL that returns nothing, which beats SQL that fails.
"""

from __future__ import annotations

import time
from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from macsql.agents import decomposer, refiner, selector
from macsql.schema import introspect, render_schema
from macsql.sqlexec import ExecResult, execute
from macsql.state import Candidate, Context, State


def score(sql: str, result: ExecResult | None) -> int:
    if not sql or result is None or not result.ok:
        return 0
    if refiner.problem_with(result) is not None:
        return 1
    return 2


def load_schema(state: State, runtime: Runtime[Context]) -> dict:
    if state.get("schema") is not None:
        return {}
    start = time.perf_counter()
    schema = introspect(runtime.context.db_path)
    return {"schema": schema, "trace": [{"agent": "schema", "seconds": round(time.perf_counter() - start, 4)}]}


def render_selected(state: State, runtime: Runtime[Context]) -> dict:
    text = render_schema(state["schema"], state["selection"], examples=runtime.context.schema_examples)
    return {"schema_text": text}


def run_sql(state: State, runtime: Runtime[Context]) -> dict:
    ctx = runtime.context
    sql = state.get("sql", "")
    result = execute(ctx.db_path, sql, timeout_s=ctx.timeout_s, max_rows=ctx.max_rows) if sql else None
    round_ = state.get("rounds", 0)
    cand = Candidate(sql=sql, round=round_, result=result, score=score(sql, result))
    entry = {"agent": "execute", "round": round_, "sql": sql,
             "error": result.error if result else state.get("parse_error"),
             "rows": len(result.rows) if result else 0, "seconds": round(result.seconds, 4) if result else 0.0}
    return {"result": result, "candidates": [cand], "trace": [entry]}


def route_after_execute(state: State, runtime: Runtime[Context]) -> Literal["refine", "finish"]:
    ctx = runtime.context
    if not ctx.use_refiner or state.get("rounds", 0) >= ctx.max_rounds:
        return "finish"
    if refiner.problem_with(state.get("result"), state.get("parse_error") if not state.get("sql") else None):
        return "refine"
    return "finish"


def finish(state: State, runtime: Runtime[Context]) -> dict:
    # max() keeps the first of equal scores: a "fix" that is no better than the original does not replace it
    best = max(state["candidates"], key=lambda c: c["score"])
    return {"final": best}


def build_graph():
    graph = StateGraph(State, context_schema=Context)
    graph.add_node("schema", load_schema)
    graph.add_node("selector", selector.node)
    graph.add_node("render", render_selected)
    graph.add_node("decomposer", decomposer.node)
    graph.add_node("execute", run_sql)
    graph.add_node("refiner", refiner.node)
    graph.add_node("finish", finish)
    graph.add_edge(START, "schema")
    graph.add_edge("schema", "selector")
    graph.add_edge("selector", "render")
    graph.add_edge("render", "decomposer")
    graph.add_edge("decomposer", "execute")
    graph.add_conditional_edges("execute", route_after_execute, {"refine": "refiner", "finish": "finish"})
    graph.add_edge("refiner", "execute")
    graph.add_edge("finish", END)
    return graph.compile()

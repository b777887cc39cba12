"""The MAC-SQL graph: schema → Selector → render → Decomposer (candidates) → execute ⇄ Refiner → vote.

The Decomposer writes several candidate queries (the direct one, the decomposed one, sampled ones); each is
executed with the one executor; the samples are drawn (execute → sample → execute) only when the two
greedy queries do not already agree (`Context.early_stop`); while the vote is not settled, the Refiner fixes the latest round's failing
candidates (with repair hints) and its fixes are executed and join the vote, for a bounded number of rounds;
then the biggest group of equal results wins (macsql.vote). With one candidate this is MAC-SQL's loop, except
that the last fix is executed too and the answer is the best query seen rather than the last one.
"""

from __future__ import annotations

import time
from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from macsql import knowledge
from macsql.agents import decomposer, refiner, selector
from macsql.backends.base import AGENTS
from macsql.engines import open_database
from macsql.errors import InputError
from macsql.schema import introspect
from macsql.sqlexec import ExecResult
from macsql.state import Candidate, Context, State
from macsql.vote import Vote, vote


def score(sql: str, result: ExecResult | None) -> int:
    if not sql or result is None or not result.ok:
        return 0
    if refiner.problem_with(result) is not None:
        return 1
    return 2


def load_schema(state: State, runtime: Runtime[Context]) -> dict:
    # The first node: a graph invoked without its context would otherwise fail deep in a node
    if not isinstance(runtime.context, Context):
        raise InputError(f"the graph needs its context, got {type(runtime.context).__name__}: call "
                         "graph.invoke(inputs, context=Context(llm=..., db_path=...)), or Pipeline.ask")
    started = {"started": time.monotonic()}  # when the question's time budget (`budget_s`) began
    if state.get("schema") is not None:
        return {**started, **load_knowledge(state["schema"], state, runtime.context)}
    start = time.perf_counter()
    schema = introspect(open_database(runtime.context.db_path), timeout_s=runtime.context.timeout_s)
    trace = [{"agent": "schema", "seconds": round(time.perf_counter() - start, 4)}]
    known = load_knowledge(schema, state, runtime.context)
    trace += known.pop("trace", [])
    return {**started, "schema": schema, **known, "trace": trace}


def load_knowledge(schema, state: State, ctx: Context) -> dict:
    """What was taught about the database (macsql.knowledge) for this question: the schema with its
    descriptions merged, and the examples and terms the Decomposer shows; {} when there is none."""
    if not ctx.use_knowledge:
        return {} if ctx.use_descriptions else {"schema": knowledge.without_descriptions(schema)}
    start = time.perf_counter()
    merged, shown = knowledge.for_question(
        schema, ctx.db_path, state["question"], examples=ctx.examples, examples_file=ctx.examples_file,
        descriptions_file=ctx.descriptions_file, descriptions=ctx.use_descriptions,
        exclude=[state["question"]] if ctx.exclude_asked else ())
    if merged is schema and not shown:
        return {}
    return {"schema": merged, "knowledge": shown,
            "trace": [{"agent": "knowledge", "examples": [e["id"] for e in shown.get("examples", [])],
                       "terms": [t["term"] for t in shown.get("terms", [])],
                       "seconds": round(time.perf_counter() - start, 4)}]}


def render_selected(state: State, runtime: Runtime[Context]) -> dict:
    text = selector.render_for_question(state["schema"], state["selection"], selector.matches_map(state.get("matches")),
                                        examples=runtime.context.schema_examples)
    return {"schema_text": text}


def run_sql(state: State, runtime: Runtime[Context]) -> dict:
    """Execute the new drafts (a query seen before reuses its result) and add them as candidates."""
    ctx = runtime.context
    seen = {c["sql"]: c["result"] for c in state.get("candidates", []) if c["sql"]}
    round_ = state.get("rounds", 0)
    first = len(state.get("candidates", []))
    cands, trace = [], []
    database = open_database(ctx.db_path)
    for i, draft in enumerate(state.get("drafts", [])):
        sql = draft["sql"]
        if sql and sql not in seen:
            seen[sql] = database.execute(sql, timeout_s=ctx.timeout_s, max_rows=ctx.max_rows)
        result = seen.get(sql) if sql else None
        cand = Candidate(id=first + i, sql=sql, source=draft["source"], round=round_, result=result,
                         error=draft.get("error"), score=score(sql, result))
        if "parent" in draft:
            cand["parent"] = draft["parent"]
        if draft.get("confidence") is not None:
            cand["confidence"] = draft["confidence"]
        cands.append(cand)
        trace.append({"agent": "execute", "round": round_, "candidate": cand["id"], "source": cand["source"],
                      "sql": sql, "error": result.error if result else draft.get("error"),
                      "rows": len(result.rows) if result else 0,
                      "seconds": round(result.seconds, 4) if result else 0.0})
    return {"candidates": cands, "drafts": [], "trace": trace}


def confident(cand: Candidate, threshold: float) -> bool:
    """The model was sure of this greedy query (its tokens' geometric mean probability >= threshold) and it
    ran with rows."""
    prob = cand.get("confidence")
    return threshold > 0 and prob is not None and prob >= threshold and cand["score"] == 2


# What reading one prompt token costs next to decoding one, for the budget's arithmetic: llama.cpp on two
# CPU cores read 136 prompt tokens/s and decoded 11.7 tokens/s (benchmarks/README.md, decode_batch.py).
PROMPT_TOKEN_COST = 0.1


def call_cost(step: dict) -> float:
    """A model call's cost in decoded-token equivalents: the prompt tokens it actually computed (not those
    reused from the KV cache) at PROMPT_TOKEN_COST each, plus its completion tokens."""
    computed = max(0, step.get("prompt_tokens", 0) - step.get("cached_tokens", 0))
    return computed * PROMPT_TOKEN_COST + step.get("completion_tokens", 0)


def out_of_time(state: State, ctx: Context, replies: int = 1) -> bool:
    """Whether the next step (`replies` model replies) would take the question past its budget.

    `budget_s` is wall-clock seconds. `budget_x` counts in tokens, not seconds, so that the same question
    takes the same steps on a busy machine and a quiet one, on a CPU and on a GPU server: the question's
    model calls so far plus the next step's replies, each at the first call's cost, must stay within
    budget_x times the first call's cost (`call_cost`). It trims work on questions that already have an
    answer that runs with rows; one with none yet is not cut by it (the Refiner's rounds and the samples
    still bound it): stopping there returns an error or an empty answer, and that is where the budget's
    losses were. Cut at twice the budget, 53 of 480 Spider dev questions ended with nothing that ran with
    rows; asked again without the cut, 14 more were right and none went wrong (benchmarks/README.md)."""
    if ctx.budget_s > 0 and time.monotonic() - state.get("started", time.monotonic()) >= ctx.budget_s:
        return True
    if ctx.budget_x <= 0 or not any(c["score"] == 2 for c in state.get("candidates", [])):
        return False
    calls = [t for t in state.get("trace", []) if t.get("agent") in AGENTS]
    first = call_cost(calls[0]) if calls else 0.0
    if first <= 0:
        return False
    return sum(call_cost(t) for t in calls) + replies * first > ctx.budget_x * first


def route_after_execute(state: State, runtime: Runtime[Context]) -> Literal["decompose", "sample", "refine", "vote"]:
    ctx = runtime.context
    if out_of_time(state, ctx):
        return "vote"
    ladder, cands = state.get("ladder"), state["candidates"]
    if ladder == "direct":  # only the direct query so far
        direct = cands[0]
        if confident(direct, ctx.confident_prob):
            return "vote"
        if direct["score"] < 2 and ctx.fix_first and ctx.use_refiner and ctx.max_rounds > 0:
            return "refine"  # repair it first (with its hint): one call where a failing query needs one
        return "decompose"
    if ladder == "fixed":  # the direct query failed and was repaired once
        return "vote" if cands[-1]["score"] == 2 else "decompose"
    if state.get("pending_samples") and not vote(state["candidates"]).settled \
            and not out_of_time(state, ctx, replies=state["pending_samples"]):
        return "sample"
    if not ctx.use_refiner or state.get("rounds", 0) >= ctx.max_rounds or state.get("stalled"):
        return "vote"
    if vote(cands).settled:
        return "vote"
    picked = refiner.to_refine(cands, state.get("rounds", 0), ctx.max_refine)
    return "refine" if picked and not out_of_time(state, ctx, replies=len(picked)) else "vote"


def route_after_refine(state: State, runtime: Runtime[Context]) -> Literal["execute", "vote"]:
    return "execute" if state.get("drafts") else "vote"


def finish(state: State, runtime: Runtime[Context]) -> dict:
    cands = state["candidates"]
    result = vote(cands)
    summary = vote_summary(result, cands)
    return {"final": cands[result.winner], "vote": summary, "trace": [{"agent": "vote", **summary}]}


def vote_summary(result: Vote, cands: list[Candidate]) -> dict:
    return {"winner": result.winner,
            "groups": [{"members": list(g.members), "votes": g.votes, "rows": g.n_rows, "score": g.score}
                       for g in result.groups],
            "group_of": {str(k): v for k, v in result.group_of.items()}, "candidates": len(cands)}


def build_graph():
    graph = StateGraph(State, context_schema=Context)
    graph.add_node("schema", load_schema)
    graph.add_node("selector", selector.node)
    graph.add_node("render", render_selected)
    graph.add_node("decomposer", decomposer.node)
    graph.add_node("decompose", decomposer.decomposed_node)
    graph.add_node("sample", decomposer.sample_node)
    graph.add_node("execute", run_sql)
    graph.add_node("refiner", refiner.node)
    graph.add_node("vote", finish)
    graph.add_edge(START, "schema")
    graph.add_edge("schema", "selector")
    graph.add_edge("selector", "render")
    graph.add_edge("render", "decomposer")
    graph.add_edge("decomposer", "execute")
    graph.add_edge("decompose", "execute")
    graph.add_edge("sample", "execute")
    graph.add_conditional_edges("execute", route_after_execute,
                                {"decompose": "decompose", "sample": "sample", "refine": "refiner", "vote": "vote"})
    graph.add_conditional_edges("refiner", route_after_refine, {"execute": "execute", "vote": "vote"})
    graph.add_edge("vote", END)
    return graph.compile()

"""Decomposer: breaks a question into sub-questions, then writes the final SQL; and the candidates the
execution vote chooses among (`write_candidates`).

Two reply styles, both plain text a small model can learn, both ending in `Final SQL:` and a fenced query:
- `steps` (the default): the sub-questions as short numbered lines, no SQL of their own;
- `sub-sql` (MAC-SQL's original layout): each numbered sub-question followed by its own fenced SQL.
`steps` was chosen by measurement (benchmarks/README.md, "Decomposer reply style"): on 20 Spider questions
the default model wrote 67 instead of 111 tokens per reply and got 15 instead of 12 right. With `sub-sql` it
spent most of its tokens repeating itself: the last sub-question's SQL is usually the final SQL again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from macsql.agents.parsing import extract_reasoning, extract_sql
from macsql.agents.prompting import (
    REASONING_FORMAT,
    for_dialect,
    knowledge_block,
    messages,
    question_block,
    reasoning_target,
    sql_block,
    trace_entry,
)
from macsql.backends.base import LLM, Messages
from macsql.errors import NoSQLError

STEPS_TASK = """Task: write one SQLite query that answers the question, using only the tables and columns above.
Answer in this format, with no other text: the steps the query needs, one short line each (a simple
question needs one step), then the query.
Steps:
1. <step>
Final SQL:
```sql
<the query that answers the question>
```

{question}"""

SUB_SQL_TASK = """Task: write one SQLite query that answers the question, using only the tables and columns above.
Answer in this format, with no other text:
Sub-questions (only when the question needs several steps):
1. <sub-question>
```sql
<query for it>
```
Final SQL:
```sql
<the query that answers the question>
```

{question}"""

# "no explanation": without it the default model explains its query at length after the block (up to 460
# tokens on Spider questions, 130 on average, against ~25 for the query).
DIRECT_TASK = """Task: write one SQLite query that answers the question, using only the tables and columns
above. Answer with only the query in a ```sql block, no explanation.

{question}"""

STYLE_TASKS = {"steps": STEPS_TASK, "sub-sql": SUB_SQL_TASK}
STYLES = tuple(STYLE_TASKS)

REASONING_TASK = """Task: write one SQLite query that answers the question, using only the tables and columns
above. """ + REASONING_FORMAT + """

{question}"""

SAMPLE_MAX_TOKENS = 192  # Spider/BIRD gold queries are under ~150 tokens; a longer sample is mostly prose

_SUBQ = re.compile(r"(?m)^\s*(?:Sub-question\s*)?(\d+)[.):]\s+(.+?)\s*$")


def build_prompt(question: str, schema_text: str, evidence: str = "", *, direct: bool = False,
                 output_format: str = "sql", style: str = "steps",
                 history: list[dict] | None = None, knowledge: dict | None = None,
                 dialect: str = "sqlite") -> Messages:
    """`knowledge`: what a person taught about the database for this question (table descriptions, terms,
    approved examples: prompting.knowledge_block), shown after the schema text and before the task.
    `dialect`: the database's engine, named in the task (SQLite by default)."""
    _check_style(style)
    task = REASONING_TASK if output_format == "reasoning" else DIRECT_TASK if direct else STYLE_TASKS[style]
    return messages(schema_text, knowledge_block(knowledge)
                    + for_dialect(task, dialect).format(question=question_block(question, evidence, history)),
                    dialect)


def _check_style(style: str) -> None:
    if style not in STYLE_TASKS:
        raise ValueError(f"unknown Decomposer style {style!r}; choose from {', '.join(STYLES)}")


def format_target(sql: str, sub_questions: list[dict] | None = None, *, reasoning: str | None = None,
                  style: str = "steps", direct: bool = False) -> str:
    """The reply the Decomposer should give (used to build training data); `direct`: the reply to the
    direct prompt (`build_prompt(direct=True)`), the query alone in a ```sql block."""
    if reasoning is not None:
        return reasoning_target(reasoning, sql)
    if direct:
        return sql_block(sql)
    _check_style(style)
    parts = ["Steps:"] if sub_questions and style == "steps" else []
    for i, sq in enumerate(sub_questions or [], 1):
        if style == "steps":
            parts.append(f"{i}. {sq['question']}")
        else:
            parts.append(f"{i}. {sq['question']}\n{sql_block(sq['sql'])}")
    parts.append(f"Final SQL:\n{sql_block(sql)}")
    return "\n".join(parts)


def parse_reply(reply: str) -> tuple[str, list[dict]]:
    """(final SQL, sub-questions) from a reply in either style (a `steps` sub-question has sql "").
    Raises NoSQLError when the reply holds no query."""
    text = reply or ""
    final_at = text.lower().rfind("final sql")
    final = extract_sql(text[final_at:]) if final_at != -1 and _has_sql(text[final_at:]) else extract_sql(text)
    body = text[:final_at] if final_at != -1 else ""
    subs = []
    matches = list(_SUBQ.finditer(body))
    for i, m in enumerate(matches):
        chunk = body[m.end():matches[i + 1].start() if i + 1 < len(matches) else len(body)]
        try:
            subs.append({"question": m.group(2), "sql": extract_sql(chunk)})
        except NoSQLError:
            subs.append({"question": m.group(2), "sql": ""})
    return final, subs


def _has_sql(text: str) -> bool:
    try:
        extract_sql(text)
        return True
    except NoSQLError:
        return False


@dataclass
class Candidates:
    drafts: list[dict]  # {"sql", "source", "error"}, in vote order: direct, decomposed, samples
    sub_questions: list[dict] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    pending: int = 0  # samples left to draw (`defer_samples`): drawn by `write_samples` if the vote needs them


def _draft(reply: str, source: str, *, decomposed: bool, confidence: float | None = None) -> tuple[dict, list[dict]]:
    extra = {} if confidence is None else {"confidence": confidence}
    try:
        sql, subs = parse_reply(reply) if decomposed else (extract_sql(reply), [])
        return {"sql": sql, "source": source, "error": None, **extra}, subs
    except NoSQLError as exc:
        return {"sql": "", "source": source, "error": str(exc), **extra}, []


def write_candidates(question: str, schema_text: str, *, llm: LLM, evidence: str = "", k: int = 1,
                     use_decomposer: bool = True, temperature: float = 0.8, output_format: str = "sql",
                     style: str = "steps", max_new_tokens: int = 512,
                     history: list[dict] | None = None, defer_samples: bool = False,
                     stage: str = "all", knowledge: dict | None = None, dialect: str = "sqlite") -> Candidates:
    """The SQL candidates for the vote.

    k=1 is one greedy query: decomposed, or direct when the Decomposer is off (MAC-SQL's single answer).
    k>1: the direct query first (the single prompt's answer, so a tie goes to it), then the decomposed one,
    then k-2 (or k-1 without the Decomposer) queries sampled from the direct prompt: short replies whose
    prompt is already in the KV cache, the cheapest extra votes a backend can give. With `defer_samples`
    (and both greedy queries) the samples are left `pending`, for the graph to draw only when the two greedy
    queries do not already agree.

    `stage` splits the greedy queries for a graph that may stop after the first: "direct" writes the direct
    query alone (the samples left `pending`), "decomposed" the decomposed one alone, "all" both.
    """
    reasoning = output_format == "reasoning"
    use_decomposer = use_decomposer and not reasoning  # one reasoning prompt serves both
    direct = build_prompt(question, schema_text, evidence, direct=True, output_format=output_format, style=style,
                          history=history, knowledge=knowledge, dialect=dialect)
    decomposed = build_prompt(question, schema_text, evidence, output_format=output_format, style=style,
                              history=history, knowledge=knowledge, dialect=dialect)
    if k <= 1:
        plan = [(decomposed, "decomposed", True)] if use_decomposer else [(direct, "direct", False)]
    else:
        plan = [(direct, "direct", False)] + ([(decomposed, "decomposed", True)] if use_decomposer else [])
    n_greedy = len(plan)  # the samples make up the rest of k, whichever stage writes the greedy queries
    if stage == "direct":
        plan = plan[:1]
    elif stage == "decomposed":
        plan = plan[1:]
    greedy = llm.generate([p for p, _, _ in plan], agent="decomposer", max_new_tokens=max_new_tokens) if plan else []
    drafts, trace, subs = [], [], []
    for (prompt, source, is_decomposed), gen in zip(plan, greedy, strict=True):
        draft, found = _draft(gen.text, source, decomposed=is_decomposed or reasoning, confidence=gen.mean_prob)
        subs = found if is_decomposed else subs
        drafts.append(draft)
        trace.append(trace_entry("decomposer", prompt, gen, source=source, sql=draft["sql"],
                                 sub_questions=found, reasoning=extract_reasoning(gen.text),
                                 min_prob=gen.min_prob, mean_prob=gen.mean_prob))
    out = Candidates(drafts, subs, trace)
    n_samples = max(0, k - n_greedy) if k > 1 else 0
    if stage == "direct" or (defer_samples and n_greedy == 2):
        out.pending = n_samples
    elif n_samples:
        more = write_samples(question, schema_text, llm=llm, n=n_samples, evidence=evidence,
                             temperature=temperature, output_format=output_format, style=style,
                             max_new_tokens=max_new_tokens, history=history, knowledge=knowledge,
                             dialect=dialect)
        out.drafts += more.drafts
        out.trace += more.trace
    return out


def write_samples(question: str, schema_text: str, *, llm: LLM, n: int, evidence: str = "",
                  temperature: float = 0.8, output_format: str = "sql", style: str = "steps",
                  max_new_tokens: int = 512, history: list[dict] | None = None,
                  knowledge: dict | None = None, dialect: str = "sqlite") -> Candidates:
    """n queries sampled from the direct prompt, in one `generate` call (batched or prefix-cached)."""
    reasoning = output_format == "reasoning"
    direct = build_prompt(question, schema_text, evidence, direct=True, output_format=output_format, style=style,
                          history=history, knowledge=knowledge, dialect=dialect)
    # A sampled reply that rambles past a query's length is rarely worth its tokens: cap it.
    gens = llm.generate([direct], agent="decomposer", max_new_tokens=min(max_new_tokens, SAMPLE_MAX_TOKENS),
                        n=n, temperature=temperature)
    drafts, trace = [], []
    for i, gen in enumerate(gens, 1):
        draft, _ = _draft(gen.text, f"sample {i}", decomposed=reasoning)
        drafts.append(draft)
        trace.append(trace_entry("decomposer", direct, gen, source=f"sample {i}", sql=draft["sql"]))
    return Candidates(drafts, [], trace)


def _options(state, ctx) -> dict:
    return dict(evidence=state.get("evidence", ""), temperature=ctx.temperature, output_format=ctx.output_format,
                style=ctx.decompose, max_new_tokens=ctx.max_new_tokens, history=state.get("history"),
                knowledge=_kept(state.get("knowledge"), state.get("selection")), dialect=ctx.prompt_dialect)


def _kept(knowledge: dict | None, selection: dict | None) -> dict | None:
    """The knowledge with only the descriptions of the tables the Selector kept."""
    if not knowledge or selection is None or not knowledge.get("tables"):
        return knowledge
    return {**knowledge, "tables": {t: d for t, d in knowledge["tables"].items() if t in selection}}


def node(state, runtime) -> dict:
    """The greedy candidates; with `confident_prob` (and a vote) the direct query alone first, so that the
    graph can stop there when the model was sure of it (`decomposed_node` writes the rest otherwise)."""
    ctx = runtime.context
    # Only a backend that reports token probabilities can be sure; the others keep the two greedy queries
    # in one call (a transformers backend decodes them as one batch).
    sure_possible = ctx.confident_prob > 0 and getattr(ctx.llm, "token_probs", False)
    stage = "direct" if sure_possible and ctx.candidates > 1 and ctx.output_format == "sql" else "all"
    out = write_candidates(state["question"], state["schema_text"], llm=ctx.llm, k=ctx.candidates,
                           use_decomposer=ctx.use_decomposer, defer_samples=ctx.early_stop,
                           stage=stage, **_options(state, ctx))
    return {"drafts": out.drafts, "sub_questions": out.sub_questions, "trace": out.trace,
            "pending_samples": out.pending, "ladder": "direct" if stage == "direct" else ""}


def decomposed_node(state, runtime) -> dict:
    """The rest of the candidates, written because the direct query alone was not sure enough: the decomposed
    query (its samples stay pending while the two greedy queries may still agree, with `early_stop`), or
    the samples at once when there is no Decomposer or no early stop."""
    ctx = runtime.context
    update: dict = {"drafts": [], "trace": [], "ladder": "", "stalled": False}
    pending = state.get("pending_samples", 0)
    if ctx.use_decomposer:
        out = write_candidates(state["question"], state["schema_text"], llm=ctx.llm, k=ctx.candidates,
                               use_decomposer=True, defer_samples=True, stage="decomposed", **_options(state, ctx))
        update.update(drafts=out.drafts, sub_questions=out.sub_questions, trace=out.trace)
    if pending and not (ctx.use_decomposer and ctx.early_stop):
        more = write_samples(state["question"], state["schema_text"], llm=ctx.llm, n=pending, **_options(state, ctx))
        update["drafts"] = update["drafts"] + more.drafts
        update["trace"] = update["trace"] + more.trace
        pending = 0
    update["pending_samples"] = pending
    return update


def sample_node(state, runtime) -> dict:
    """The deferred samples, drawn because the direct and the decomposed query did not settle the vote."""
    ctx = runtime.context
    out = write_samples(state["question"], state["schema_text"], llm=ctx.llm, n=state["pending_samples"],
                        **_options(state, ctx))
    return {"drafts": out.drafts, "trace": out.trace, "pending_samples": 0}

"""Selector: links the question to the schema's values, and prunes a large schema to what it needs.

Linking runs on every schema and costs no model call: the question's words are looked up in the database's
value index (macsql.values), and the matched columns are shown with the values in every agent's prompt.
Small schemas are kept whole without a model call (pruning them saves few tokens and risks dropping what
the question needs). The model answers with a JSON object {table: [columns] | "keep_all"}; that reply is read
as the tables the question is about, and pruning is by table, for recall: every table it names is kept whole,
and so is every table one foreign key away from a named one (the link tables a join needs), and every table
with a column whose values the question mentions. Tables beyond that are dropped.
Why not its columns: on Spider dev's pruned questions (the 1.5B default model, 20 questions of the seed-0
sample) the tables it named covered the gold query's on 13 of 20, its columns on fewer (32% of 25 in
benchmarks/selector_recall.py); the named tables plus their foreign-key neighbours covered all 20, keeping
58% of the columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from macsql.agents.parsing import extract_json_object
from macsql.agents.prompting import messages, question_block, trace_entry
from macsql.backends.base import LLM, Messages
from macsql.schema import Schema, Selection, render_schema

# Prune with the model only when the whole schema is long: a pruning call reads the whole schema itself, so on
# a schema under this many tokens it costs more prefill than the shorter prompts it buys, and a schema kept
# whole is read once per database from the KV cache (schema.render_schema puts the question's values last).
# BIRD's superhero (10 tables) renders to about 1,000 tokens, Spider's biggest dev schemas to under 2,000.
PRUNE_ABOVE_TOKENS = 3000
CHARS_PER_TOKEN = 3.2  # rendered DDL with comments, Qwen2.5's tokenizer: measured 3.1-3.4 on BIRD and Spider

TASK = """Task: choose the tables and columns needed to write an SQL query for the question.
Answer with one JSON object only. Each key is a table name; the value is the list of needed column names,
or "keep_all" to keep every column. Leave out tables that are not needed.

{question}
Answer:"""


@dataclass
class SelectorOutput:
    selection: Selection
    pruned: bool  # False when the whole schema was kept without asking the model
    trace: list[dict] = field(default_factory=list)


def schema_tokens(schema: Schema) -> int:
    """About how many tokens the whole schema's rendering is (no tokenizer needed)."""
    return int(len(render_schema(schema)) / CHARS_PER_TOKEN)


def needs_selection(schema: Schema, above_tokens: int = PRUNE_ABOVE_TOKENS) -> bool:
    return schema_tokens(schema) > above_tokens


def build_prompt(question: str, schema: Schema, evidence: str = "", *,
                 matches: dict[tuple[str, str], list[str]] | None = None,
                 history: list[dict] | None = None, dialect: str = "sqlite") -> Messages:
    return messages(render_schema(schema, matches=matches),
                    TASK.format(question=question_block(question, evidence, history)), dialect)


def format_target(selection: Selection, schema: Schema) -> str:
    """The reply the Selector should give for `selection` (used to build training data)."""
    import json

    out = {}
    for table in schema.tables:
        if table.name in selection:
            cols = selection[table.name]
            out[table.name] = "keep_all" if len(cols) == len(table.columns) else cols
    return json.dumps(out)


def parse_reply(reply: str, schema: Schema) -> Selection | None:
    """Map a reply onto the schema (case-insensitive); None when nothing usable is in it."""
    obj = extract_json_object(reply)
    if not obj:
        return None
    chosen: Selection = {}
    for key, value in obj.items():
        table = schema.table(str(key))
        if table is None or value in ("drop_all", None, False):
            continue
        if isinstance(value, str):  # "keep_all" or anything else that is not a list
            chosen[table.name] = [c.name for c in table.columns]
            continue
        cols = {c.name for v in value if isinstance(v, str) and (c := table.column(v.split(".")[-1]))}
        chosen[table.name] = [c.name for c in table.columns if c.name in cols]
    return chosen or None


def widen(named: Selection, schema: Schema, matches: dict[tuple[str, str], list[str]] | None = None) -> Selection:
    """The tables kept for a Selector reply naming `named`: those, their foreign-key neighbours and the tables
    of matched values, each whole (see the module docstring for the measurement behind it)."""
    core = {t.lower() for t in named} | {table.lower() for table, _ in matches or {}}
    keep = set(core)
    for table in schema.tables:
        for fk in table.foreign_keys:
            if table.name.lower() in core:
                keep.add(fk.ref_table.lower())
            if fk.ref_table.lower() in core:
                keep.add(table.name.lower())
    return {t.name: [c.name for c in t.columns] for t in schema.tables if t.name.lower() in keep}


def select_schema(question: str, schema: Schema, *, llm: LLM, evidence: str = "",
                  force: bool = False, max_new_tokens: int = 256, above_tokens: int = PRUNE_ABOVE_TOKENS,
                  matches: dict[tuple[str, str], list[str]] | None = None,
                  history: list[dict] | None = None, dialect: str = "sqlite") -> SelectorOutput:
    """Prune `schema` for `question`. Falls back to the full schema when the reply is unusable. Columns in
    `matches` (the question's values, from macsql.values) are always kept; a follow-up's `history` is shown
    so that it keeps the tables of the earlier turns."""
    if not force and not needs_selection(schema, above_tokens):
        return SelectorOutput(schema.full_selection(), pruned=False)
    prompt = build_prompt(question, schema, evidence, matches=matches, history=history, dialect=dialect)
    gen = llm.generate([prompt], agent="selector", max_new_tokens=max_new_tokens)[0]
    parsed = parse_reply(gen.text, schema)
    selection = widen(parsed, schema, matches) if parsed else schema.full_selection()
    entry = trace_entry("selector", prompt, gen, parsed=parsed is not None,
                        kept={t: len(c) for t, c in selection.items()})
    return SelectorOutput(selection, pruned=parsed is not None, trace=[entry])


def link_values(question: str, db_path, *, meanings: bool = True) -> list[dict]:
    """The database values the question mentions: [{"table", "column", "value"}] (macsql.values);
    `meanings=False` (no descriptions shown): not through the codes' meanings in value descriptions."""
    from macsql.values import value_index

    return [{"table": m.table, "column": m.column, "value": m.value}
            for m in value_index(db_path).match(question, meanings=meanings)]


def matches_map(matches: list[dict] | None) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for m in matches or []:
        vals = out.setdefault((m["table"], m["column"]), [])
        if m["value"] not in vals:
            vals.append(m["value"])
    return out


def render_for_question(schema: Schema, selection: Selection, matches: dict[tuple[str, str], list[str]], *,
                        examples: bool = True) -> str:
    """The schema text the Decomposer and the Refiner see: the selection, with the values the question
    mentions on their (kept) columns. Training prompts are built by this same function."""
    return render_schema(schema, selection, examples=examples, matches=matches)


def node(state, runtime) -> dict:
    """LangGraph node: link values (unless switched off), then prune the schema (unless switched off)."""
    import time

    ctx = runtime.context
    update: dict = {}
    if ctx.use_values:
        start = time.perf_counter()
        update["matches"] = link_values(state["question"], ctx.db_path, meanings=ctx.use_descriptions)
        update["trace"] = [{"agent": "values", "matches": update["matches"],
                            "seconds": round(time.perf_counter() - start, 4)}]
    if not ctx.use_selector:
        return {**update, "selection": state["schema"].full_selection()}
    out = select_schema(state["question"], state["schema"], llm=ctx.llm, evidence=state.get("evidence", ""),
                        matches=matches_map(update.get("matches")), history=state.get("history"),
                        max_new_tokens=min(256, ctx.max_new_tokens), above_tokens=ctx.prune_above_tokens,
                        dialect=ctx.prompt_dialect)
    return {**update, "selection": out.selection, "trace": update.get("trace", []) + out.trace}

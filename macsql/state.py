"""The graph's state (what changes while a question is answered) and context (what stays fixed)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from typing_extensions import TypedDict

from macsql.backends.base import LLM
from macsql.schema import Schema, Selection
from macsql.sqlexec import DEFAULT_MAX_ROWS, ExecResult


class Candidate(TypedDict, total=False):
    id: int  # position in the state's candidate list
    sql: str
    source: str  # "direct", "decomposed", "sample 2", "fix of #1"
    round: int  # 0: written by the Decomposer; n: a Refiner fix of round n
    result: ExecResult | None
    error: str | None  # why there is no SQL (the reply held none)
    score: int  # 2: rows with a value, 1: ran but empty/NULL, 0: error or no SQL
    parent: int  # the candidate a fix repairs


class State(TypedDict, total=False):
    question: str
    evidence: str
    history: list[dict]  # a follow-up's earlier turns, {"question", "sql"} (rendered by agents/prompting.py)
    schema: Schema
    selection: Selection
    schema_text: str
    matches: list[dict]  # database values the question mentions: {"table", "column", "value"}
    sub_questions: list[dict]
    drafts: list[dict]  # SQL written but not yet executed: {"sql", "source", "error", "parent"?}
    pending_samples: int  # sampled candidates not drawn yet: drawn only if the greedy ones disagree
    rounds: int
    stalled: bool  # the Refiner's last round brought no query not tried before: stop refining
    candidates: Annotated[list[Candidate], operator.add]
    trace: Annotated[list[dict], operator.add]
    vote: dict  # the groups and the winner, as in the trace
    final: Candidate


@dataclass(frozen=True)
class Context:
    """Per-run dependencies, passed as LangGraph's runtime context (never globals)."""

    llm: LLM
    db_path: Path
    max_rounds: int = 3
    timeout_s: float = 30.0
    max_rows: int = DEFAULT_MAX_ROWS
    max_new_tokens: int = 512
    use_selector: bool = True
    use_decomposer: bool = True
    use_refiner: bool = True
    # Candidates for the execution vote: 1 is a single greedy query (no vote); k>1 adds the direct query,
    # the decomposed one and sampled ones. Default chosen by measurement (README, "Evaluating").
    candidates: int = 5
    temperature: float = 0.8  # for the sampled candidates
    # Draw the samples only when the direct and the decomposed query do not already agree on rows with
    # values: on 150 Spider questions the same EX as always sampling, with 56% of questions stopping at two
    # calls (benchmarks/vote_mix.py, "adaptive").
    early_stop: bool = True
    use_values: bool = True  # link question words to the database's values (macsql.values)
    use_hints: bool = True  # repair hints from the schema and the data in the Refiner's problem text
    max_refine: int = 2  # failing candidates the Refiner fixes per round, at most
    decompose: str = "steps"  # the Decomposer's reply style: "steps" or "sub-sql" (agents/decomposer.py)
    schema_examples: bool = True
    output_format: str = "sql"  # or "reasoning": <reasoning>…</reasoning><sql>…</sql>
    extra: Any = None

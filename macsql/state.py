"""The graph's state (what changes while a question is answered) and context (what stays fixed)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from typing_extensions import TypedDict

from macsql.llm import LLM
from macsql.schema import Schema, Selection
from macsql.sqlexec import DEFAULT_MAX_ROWS, ExecResult


class Candidate(TypedDict):
    sql: str
    round: int
    result: ExecResult | None
    score: int  # 2: rows with a value, 1: ran but empty/NULL, 0: error or no SQL


class State(TypedDict, total=False):
    question: str
    evidence: str
    history: list[dict]  # a follow-up's earlier turns, {"question", "sql"} (rendered by agents/prompting.py)
    schema: Schema
    selection: Selection
    schema_text: str
    sub_questions: list[dict]
    sql: str
    parse_error: str | None
    result: ExecResult | None
    rounds: int
    candidates: Annotated[list[Candidate], operator.add]
    trace: Annotated[list[dict], operator.add]
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
    decompose: str = "steps"  # the Decomposer's reply style: "steps" or "sub-sql" (agents/decomposer.py)
    schema_examples: bool = True
    output_format: str = "sql"  # or "reasoning": <reasoning>…</reasoning><sql>…</sql>
    extra: Any = None

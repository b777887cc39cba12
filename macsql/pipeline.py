"""`Pipeline`: the Python entry point. Holds one backend and the compiled graph; `ask()` answers one question."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from macsql.agents.prompting import HISTORY_TURNS
from macsql.backends import make_llm
from macsql.backends.base import AGENTS, LLM
from macsql.errors import InputError
from macsql.state import Context, Settings, make_settings


@dataclass
class Answer:
    question: str
    sql: str
    columns: list[str]
    rows: list[list]
    error: str | None
    truncated: bool
    sub_questions: list[dict]
    selection: dict[str, list[str]]
    rounds: int
    trace: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    candidates: list[dict] = field(default_factory=list)  # every query tried, with its group and votes
    matches: list[dict] = field(default_factory=list)  # database values the question mentions

    @property
    def llm_calls(self) -> int:
        return sum(1 for t in self.trace if t["agent"] in AGENTS)

    @property
    def prompt_tokens(self) -> int:
        return sum(t.get("prompt_tokens", 0) for t in self.trace if t["agent"] in AGENTS)

    @property
    def completion_tokens(self) -> int:
        return sum(t.get("completion_tokens", 0) for t in self.trace if t["agent"] in AGENTS)

    @property
    def model_seconds(self) -> float:
        return sum(t.get("seconds", 0.0) for t in self.trace if t["agent"] in AGENTS)

    def to_dict(self, *, with_prompts: bool = True) -> dict:
        trace = self.trace if with_prompts else [{k: v for k, v in t.items() if k != "prompt"} for t in self.trace]
        return {
            "question": self.question, "sql": self.sql, "columns": self.columns, "rows": self.rows,
            "error": self.error, "truncated": self.truncated, "sub_questions": self.sub_questions,
            "selection": self.selection, "refine_rounds": self.rounds, "llm_calls": self.llm_calls,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "model_seconds": round(self.model_seconds, 4), "seconds": round(self.seconds, 4),
            "matches": self.matches, "candidates": self.candidates, "trace": trace,
        }


class Pipeline:
    """MAC-SQL over one backend. `Pipeline.from_pretrained().ask("How many ...?", "shop.sqlite")`."""

    def __init__(self, llm: LLM, settings: Settings | None = None, **options):
        """`settings` (or single options by name: `Pipeline(llm, candidates=1)`) are checked here, before any
        question: an unknown or wrong option is one InputError line."""
        from macsql.graph import build_graph

        self.llm = llm
        self.settings = make_settings(settings, **options)
        self.graph = build_graph()

    @property
    def options(self) -> dict:
        """Every setting by name (what a run's config records)."""
        return self.settings.to_dict()

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, backend: str = "auto",
                        adapters: dict[str, str] | str | Path | None = None, backend_options: dict | None = None,
                        settings: Settings | None = None, **options) -> Pipeline:
        """`model`: a name or path (default `weights.DEFAULT_MODEL`), resolved once by `make_llm`. The settings
        are checked before the model loads."""
        checked = make_settings(settings, **options)
        if isinstance(adapters, (str, Path)):
            adapters = adapters_in(adapters)
        return cls(make_llm(model, backend, adapters=adapters, **(backend_options or {})), checked)

    def context(self, db: str | Path) -> Context:
        """The run's context for a database: a SQLite file, a DuckDB file, CSV/Parquet files or a PostgreSQL
        URL (macsql.engines), checked here (DatabaseError, one line)."""
        from macsql.engines import check_db, engine_of

        checked = check_db(db)
        return Context(llm=self.llm, db_path=checked, dialect=engine_of(checked), **self.settings.to_dict())

    def replace(self, **changes) -> Pipeline:
        """The same backend and graph with some settings changed."""
        new = copy.copy(self)
        new.settings = self.settings.replace(**changes)
        return new

    with_options = replace  # the older name

    def with_llm(self, llm: LLM) -> Pipeline:
        """The same settings and graph over another backend (a wrapped or counting one)."""
        new = copy.copy(self)
        new.llm = llm
        return new

    def _start(self, question: str, db: str | Path, evidence: str, history: list[dict] | None) -> tuple[dict, Context]:
        """The graph's inputs and context for one question; InputError on an empty question or a bad history."""
        if not question or not question.strip():
            raise InputError("the question is empty; ask something about the database, e.g. "
                             '"How many customers are there?"')
        inputs = {"question": question.strip(), "evidence": evidence or "", "rounds": 0,
                  "history": checked_history(history)}
        return inputs, self.context(db)

    def ask(self, question: str, db: str | Path, *, evidence: str = "", history: list[dict] | None = None,
            on_step: Callable[[str, dict], None] | None = None) -> Answer:
        """Answer one question. `history`: earlier turns of a conversation ({"question", "sql"}, oldest
        first) that a follow-up builds on; the Selector and the Decomposer see the last few.
        `on_step(node, update)` is called as each graph node finishes, with the state keys it changed (what
        `macsql serve` streams)."""
        inputs, ctx = self._start(question, db, evidence, history)
        start = time.perf_counter()
        state: dict = {}
        # "values" gives the whole state after each step (the last one is the result), "updates" what each
        # node changed; both come from one run, whatever nodes the graph has.
        for mode, chunk in self.graph.stream(inputs, context=ctx, stream_mode=["updates", "values"]):
            if mode == "values":
                state = chunk
            elif on_step is not None:
                for node, update in chunk.items():
                    on_step(node, update or {})
        return to_answer(state, time.perf_counter() - start)

    async def astream(self, question: str, db: str | Path, *, evidence: str = "",
                      history: list[dict] | None = None):
        """`ask` for async code, step by step: yields `(node, update)` as each graph node finishes (what
        `on_step` gets), then `("answer", Answer)` last. The nodes run in LangGraph's threads, so the event
        loop stays free while a model writes."""
        inputs, ctx = self._start(question, db, evidence, history)
        start = time.perf_counter()
        state: dict = {}
        async for mode, chunk in self.graph.astream(inputs, context=ctx, stream_mode=["updates", "values"]):
            if mode == "values":
                state = chunk
            else:
                for node, update in chunk.items():
                    yield node, update or {}
        yield "answer", to_answer(state, time.perf_counter() - start)

    async def aask(self, question: str, db: str | Path, *, evidence: str = "", history: list[dict] | None = None,
                   on_step: Callable[[str, dict], None] | None = None) -> Answer:
        """`ask` for async code: `answer = await pipeline.aask("How many ...?", "shop.sqlite")`."""
        answer = None
        async for node, update in self.astream(question, db, evidence=evidence, history=history):
            if node == "answer":
                answer = update
            elif on_step is not None:
                on_step(node, update)
        return answer

    def as_tool(self, databases, *, name: str = "ask_database", description: str | None = None):
        """A LangChain tool (StructuredTool: question, db, evidence) answering over the named databases only
        (`{"shop": "shop.sqlite"}`, a path, or "demo"): what a LangChain or LangGraph agent calls. Needs the
        [langchain] extra; see macsql.integrations."""
        from macsql.integrations import langchain_tool

        return langchain_tool(self, databases, name=name, description=description)


CANDIDATE_ROWS = 20  # rows of each candidate's result kept in an answer (the winner keeps all of its rows)


def candidate_summaries(state: dict) -> list[dict]:
    """Each candidate as JSON-ready data: its SQL, where it came from, its result, its group and votes."""
    vote = state.get("vote") or {}
    groups = vote.get("groups", [])
    out = []
    for cand in state.get("candidates", []):
        res = cand.get("result")
        group = vote.get("group_of", {}).get(str(cand["id"]))
        out.append({"id": cand["id"], "sql": cand["sql"], "source": cand.get("source", ""),
                    "round": cand["round"], "score": cand["score"], "confidence": cand.get("confidence"),
                    "error": (res.error if res is not None else cand.get("error")),
                    "n_rows": len(res.rows) if res is not None else 0,
                    "rows": [list(r) for r in res.rows[:CANDIDATE_ROWS]] if res is not None else [],
                    "group": group, "votes": groups[group]["votes"] if group is not None else 0,
                    "chosen": cand["id"] == vote.get("winner")})
    return out


def follow_up_history(saved: dict) -> list[dict]:
    """The history a follow-up on a saved answer (the JSON of `macsql ask --json`) continues: the answer's
    own history, then its question and SQL."""
    if not isinstance(saved, dict) or not isinstance(saved.get("question"), str) \
            or not isinstance(saved.get("sql"), str):
        raise InputError("a follow-up needs the JSON object `macsql ask --json` printed (with question and sql)")
    earlier = saved.get("history") or []
    if not isinstance(earlier, list):
        raise InputError('a follow-up\'s "history" must be a list of {"question": str, "sql": str} turns')
    return checked_history([*earlier, {"question": saved["question"], "sql": saved["sql"]}])


def checked_history(history: list[dict] | None) -> list[dict]:
    """The last HISTORY_TURNS turns as {"question", "sql"} strings; InputError on any other shape."""
    turns = []
    for turn in history or []:
        if not isinstance(turn, dict) or not isinstance(turn.get("question"), str) \
                or not isinstance(turn.get("sql") or "", str):
            raise InputError('history must be a list of {"question": str, "sql": str} turns, oldest first')
        turns.append({"question": turn["question"], "sql": turn.get("sql") or ""})
    return turns[-HISTORY_TURNS:]


def to_answer(state: dict, seconds: float) -> Answer:
    final = state["final"]
    result = final["result"]
    error = None
    if not final["sql"]:
        error = final.get("error") or "no SQL was produced"
    elif result is not None and result.error:
        error = result.error
    return Answer(
        question=state["question"], sql=final["sql"],
        columns=list(result.columns) if result else [], rows=[list(r) for r in result.rows] if result else [],
        error=error, truncated=bool(result and result.truncated), sub_questions=state.get("sub_questions", []),
        selection=state.get("selection", {}), rounds=state.get("rounds", 0), trace=state.get("trace", []),
        seconds=seconds, candidates=candidate_summaries(state), matches=state.get("matches", []),
    )


def adapters_in(folder: str | Path) -> dict[str, str]:
    """Adapters saved by `macsql finetune`: <folder>/<agent>/adapter_config.json for each trained agent."""
    root = Path(folder)
    found = {a: str(root / a) for a in AGENTS if (root / a / "adapter_config.json").exists()}
    if not found and (root / "adapter_config.json").exists():
        found = {a: str(root) for a in AGENTS}  # one adapter shared by all agents
    if not found:
        raise InputError(f"no adapters in {str(root)!r}: expected <dir>/<agent>/adapter_config.json "
                         "(selector, decomposer, refiner) or one adapter_config.json")
    return found


__all__ = ["Answer", "Pipeline", "adapters_in", "follow_up_history"]

"""The graph's state (what changes while a question is answered) and context (what stays fixed)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated

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
    confidence: float  # a greedy query's geometric mean token probability, where the backend tells it


class State(TypedDict, total=False):
    question: str
    evidence: str
    history: list[dict]  # a follow-up's earlier turns, {"question", "sql"} (rendered by agents/prompting.py)
    schema: Schema
    selection: Selection
    schema_text: str
    matches: list[dict]  # database values the question mentions: {"table", "column", "value"}
    knowledge: dict  # what was taught about the database, for this question: {"examples", "terms", "tables"}
    sub_questions: list[dict]
    drafts: list[dict]  # SQL written but not yet executed: {"sql", "source", "error", "parent"?}
    pending_samples: int  # sampled candidates not drawn yet: drawn only if the greedy ones disagree
    # The cheap path first: "direct" (only the direct query is written; the graph stops there if the model
    # was sure of it), "fixed" (it failed and was repaired once; the graph stops if the repair ran with
    # rows), "" (the decomposed query, samples and repair rounds as the vote needs them).
    ladder: str
    started: float  # time.monotonic() when the question began (its time budget)
    rounds: int
    stalled: bool  # the Refiner's last round brought no query not tried before: stop refining
    candidates: Annotated[list[Candidate], operator.add]
    trace: Annotated[list[dict], operator.add]
    vote: dict  # the groups and the winner, as in the trace
    final: Candidate


def _option(default, help: str, *, ablation: str | None = None, choices: tuple | None = None,
            min: float | None = None, max: float | None = None, min_open: bool = False):
    """A `Settings` field with what the CLI, config files and eval's variants are generated from: its help,
    its choices or range, and the ablation flag (`--no-values`) that turns a switch off."""
    return field(default=default, metadata={"help": help, "ablation": ablation, "choices": choices,
                                            "min": min, "max": max, "min_open": min_open})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every inference option, with its one default. `Pipeline(llm, settings)` checks them before any model
    runs; `macsql ask/eval/serve` options and eval's ablation variants are generated from these fields."""

    max_rounds: int = _option(3, "Refiner rounds at most.", min=0, max=10)
    timeout_s: float = _option(30.0, "Seconds a query may run before it is stopped.", min=0, min_open=True)
    max_rows: int = _option(DEFAULT_MAX_ROWS, "Rows a query returns at most.", min=1)
    max_new_tokens: int = _option(512, "Tokens one reply may have at most.", min=1, max=4096)
    use_selector: bool = _option(True, "Prune a long schema with the Selector.", ablation="no-selector")
    use_decomposer: bool = _option(True, "Write a decomposed candidate.", ablation="no-decomposer")
    use_refiner: bool = _option(True, "Repair failing candidates.", ablation="no-refiner")
    # Candidates for the execution vote: 1 is a single greedy query (no vote); k>1 adds the direct query,
    # the decomposed one and sampled ones. Default chosen by measurement (README, "Evaluating").
    candidates: int = _option(5, "SQL candidates for the execution vote (1: one greedy query).", min=1, max=32)
    temperature: float = _option(0.8, "Sampling temperature of the extra candidates.", min=0, max=2,
                                 min_open=True)
    # Draw the samples only when the direct and the decomposed query do not already agree on rows with
    # values: on 150 Spider questions the same EX as always sampling, with 56% of questions stopping at two
    # calls (benchmarks/vote_mix.py, "adaptive").
    early_stop: bool = _option(True, "Draw samples only when the greedy candidates disagree.",
                               ablation="all-samples")
    # Stop after the direct query alone when the model was sure of it: the geometric mean of its greedy
    # tokens' probabilities is at least this, and it ran with rows. 0 turns it off; backends that cannot tell
    # a token's probability (only llama.cpp records them) never stop early this way. Chosen by measurement
    # (benchmarks/confident_stop.py; benchmarks/README.md, "Stopping at the direct query").
    confident_prob: float = _option(0.9, "Stop after the direct query when it ran with rows and the geometric "
                                         "mean of its tokens' probabilities is at least this (0: off).",
                                    min=0, max=1)
    # A direct query that fails (an error, no rows) is repaired first, before any other candidate is written;
    # the graph stops when the repair runs with rows. On BIRD most failing queries name a column on the
    # wrong table, which the repair hint says outright (agents/hints.py).
    fix_first: bool = _option(True, "Repair a failing direct query before writing other candidates.",
                              ablation="no-fix-first")
    use_values: bool = _option(True, "Link question words to the database's values.", ablation="no-values")
    use_hints: bool = _option(True, "Repair hints from the schema and the data.", ablation="no-hints")
    max_refine: int = _option(2, "Failing candidates the Refiner fixes per round, at most.", min=1, max=8)
    decompose: str = _option("steps", "The Decomposer's reply style.", choices=("steps", "sub-sql"))
    schema_examples: bool = _option(True, "Show a few stored values per column in the schema.")
    output_format: str = _option("sql", "The agents' reply format.", choices=("sql", "reasoning"))
    # The engine the prompts name. The default model writes its best SQL when told "SQLite", whatever runs it:
    # on DuckDB copies of Spider dev, a prompt naming DuckDB lost 7.5 EX points to the same prompt naming
    # SQLite (benchmarks/README.md, "What in the prompt"). Queries are parsed, checked and repaired in the
    # database's own dialect either way, and the Refiner is told the engine that raised an error.
    prompt_engine: str = _option("sqlite", "The engine the prompts name: sqlite (what the default model answers "
                                           "best, on every engine) or native (the database's own).",
                                 choices=("sqlite", "native"))
    # The Selector prunes with a model call only above this many schema tokens (agents/selector.py).
    prune_above_tokens: int = _option(3000, "Prune with the Selector only when the schema is longer than "
                                            "this many tokens.", min=0)
    # Seconds one question may take: past it no new model call starts, and the vote picks among the
    # candidates so far (0: no budget).
    budget_s: float = _option(0.0, "Seconds a question may take; then the best answer so far (0: none).",
                              min=0)
    # The same as a multiple of the question's first model call (the direct query, whose reply is what a
    # single prompt costs): no step starts that would take the question past it, counting a step's replies
    # at that call's seconds each. Machine-independent: on a slow CPU and on a GPU server alike a question
    # costs at most about this many single prompts once a candidate has run with rows (before that only the
    # rounds bound it: see graph.out_of_time). Chosen by measurement (benchmarks/README.md, "BIRD").
    budget_x: float = _option(3.0, "Seconds a question may take as a multiple of its first model call's "
                                   "(0: none).", min=0)
    # What a person taught macsql about the database (macsql/knowledge.py, `macsql teach`): descriptions merged
    # into the schema, the glossary terms the question uses and the approved examples most like it.
    use_knowledge: bool = _option(True, "Use what was taught about the database: descriptions, terms, "
                                        "approved examples.", ablation="no-knowledge")
    # Off: the agents see no column descriptions at all, BIRD's database_description texts included (eval's
    # descriptions-on/off comparison; `no-descriptions`).
    use_descriptions: bool = _option(True, "Show column descriptions (BIRD's database_description files, taught "
                                           "ones) in the schema.", ablation="no-descriptions")
    examples: int = _option(3, "Approved examples shown to the Decomposer: those most like the question.",
                            min=0, max=10)
    examples_file: str = _option("", "Question/SQL pairs (JSON or CSV) shown as examples besides the stored "
                                     "ones, for this run only.")
    descriptions_file: str = _option("", "Descriptions (a BIRD description folder, a tables.json with "
                                         "column_descriptions, a knowledge file) for this run only.")
    # `macsql eval` sets it: an approved example with the question's own text would hand the model its answer.
    exclude_asked: bool = _option(False, "Never show an example whose question is the one being answered.")

    def __post_init__(self):
        check_settings(self)

    def replace(self, **changes) -> Settings:
        return make_settings(self, **changes)

    def changed(self) -> dict:
        """The options that differ from the defaults (what a variant or a run's config names)."""
        base = Settings()
        return {f.name: getattr(self, f.name) for f in fields(Settings)
                if getattr(self, f.name) != getattr(base, f.name)}

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(Settings)}


def make_settings(base: Settings | None = None, **options) -> Settings:
    """`base` with `options` changed; an unknown name is one InputError naming the closest valid one."""
    from macsql.errors import InputError, did_you_mean

    for name in options:
        if name not in SETTING_NAMES:
            raise InputError(f"unknown option {name!r}{did_you_mean(name, SETTING_NAMES)}; "
                             f"options: {', '.join(sorted(SETTING_NAMES))}")
    values = (base or Settings()).to_dict()
    values.update(options)
    return Settings(**values)


def check_settings(settings: Settings) -> None:
    """Each field's type, choices and range; one InputError line for the first wrong one."""
    import math

    from macsql.errors import InputError

    for f in fields(Settings):
        value, meta = getattr(settings, f.name), f.metadata
        kind = {"int": int, "float": float, "bool": bool, "str": str}[f.type]
        ok = (isinstance(value, bool) if kind is bool else
              isinstance(value, (int, float)) and not isinstance(value, bool) and
              (kind is float or float(value).is_integer()) if kind in (int, float) else isinstance(value, kind))
        if not ok:
            raise InputError(f"option {f.name} must be {f.type}, got {value!r}")
        if meta.get("choices") and value not in meta["choices"]:
            raise InputError(f"option {f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if kind in (int, float):
            low, high = meta.get("min"), meta.get("max")
            if not math.isfinite(value) or (low is not None and (value < low or (meta["min_open"] and value == low))) \
                    or (high is not None and value > high):
                bound = f"{'>' if meta.get('min_open') else '>='} {low}" if low is not None else ""
                bound += (" and " if bound and high is not None else "") + (f"<= {high}" if high is not None else "")
                raise InputError(f"option {f.name} must be a finite number {bound}, got {value!r}")


SETTING_NAMES = frozenset(f.name for f in fields(Settings))


def ablation_name(option: str) -> str:
    """The variant name of a switch turned off (`use_values` -> `no-values`), from its field's metadata."""
    return {f.name: f.metadata.get("ablation") for f in fields(Settings)}.get(option) or f"no-{option}"


@dataclass(frozen=True, kw_only=True)
class Context(Settings):
    """Per-run dependencies, passed as LangGraph's runtime context (never globals): the settings, the backend
    and the database."""

    llm: LLM
    db_path: Path | str  # a SQLite file's checked path, or another engine's --db value (macsql.engines)
    dialect: str = "sqlite"  # the engine's sqlglot dialect: the analyser reads in it

    @property
    def prompt_dialect(self) -> str:
        """The engine the agents' prompts name (`prompt_engine`): SQLite, or the database's own."""
        return self.dialect if self.prompt_engine == "native" else "sqlite"

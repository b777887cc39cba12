"""Agent datasets: (question, evidence, gold SQL, database) examples turned into one training row per agent.

Every prompt is built by the agent's own `build_prompt` and every target by its `format_target`, over the
schema rendered by THE renderer, so a model is trained on exactly the prompts it sees at inference:

- Selector: the tables and columns the gold SQL uses (`sql.names_used`: sqlglot's qualifier against the schema).
- Decomposer: the gold SQL, over the schema text the Decomposer would see (whole, or pruned to the gold
  tables plus their keys when the schema is big enough for the Selector to prune it); two rows a question,
  one for the decomposed prompt (steps, then the final SQL) and one for the direct prompt (the query alone),
  as the vote asks both (`reply`: "decomposed" / "direct").
- Refiner: the gold SQL broken in a realistic way (wrong column or table name, a JOIN without its condition,
  an undefined alias, a syntax slip, a literal in the wrong case), run through THE executor, with the problem
  the Refiner is shown at inference (`refiner.problem_with`); corruptions that still give a plausible result
  are dropped, since the Refiner never sees those.

Rows are TRL's conversational prompt-completion format (`prompt`: chat messages, `completion`: one
assistant message) plus `task`, `db_id` and the columns the GRPO rewards read (`gold_sql`, `db_path`).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from macsql.backends.base import AGENTS
from macsql.errors import InputError
from macsql.sql import corrupt, names_used

TASKS = AGENTS  # one training task per agent
SQL_TASKS = ("decomposer", "refiner")  # the tasks whose reply is SQL (what GRPO, DPO and the rewards run)
BALANCE = ("undersample", "oversample", "none")
SPLITS = ("db", "row")  # validation databases never in training / a stratified sample of rows


@dataclass(frozen=True)
class Source:
    """One question with its gold SQL, from any format `macsql.evaluate.datasets` reads."""

    question: str
    gold_sql: str
    db_id: str
    db_path: Path
    evidence: str = ""


# ------------------------------------------------------------------------------------ the Decomposer's schema
def decomposer_schema_text(schema, selection: dict[str, list[str]],
                           matches: dict[tuple[str, str], list[str]] | None = None) -> str:
    """The schema text the Decomposer sees: whole for small schemas, Selector-pruned for big ones, with the
    question's value matches on their columns (as at inference)."""
    from macsql.agents import selector

    if not selector.needs_selection(schema) or not selection:
        selection = schema.full_selection()
    else:
        selection = selector.widen(selection, schema, matches)
    return selector.render_for_question(schema, selection, matches or {})


# The Refiner's examples: the gold SQL broken in the ways that make SQLite fail or return nothing, which is
# what the Refiner sees at inference (the corruptions themselves live with the other SQL rewrites in sql.py).
REFINER_CORRUPTIONS = ("wrong_column", "wrong_table", "missing_join_condition", "bad_alias", "literal_case",
                       "syntax_slip")


# ------------------------------------------------------------------------------------------------- rows
def completion_text(completion) -> str:
    """The reply text of a completion: a plain string, or TRL's conversational [{"role", "content"}]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion.get("content", "")
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def _row(task: str, prompt, target: str, src: Source, **extra) -> dict:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": target}], "task": task,
            "db_id": src.db_id, "question": src.question, "evidence": src.evidence, "gold_sql": src.gold_sql,
            "db_path": str(src.db_path), **extra}


def rows_for(src: Source, rng: random.Random, *, tasks: Iterable[str] = TASKS, refiner_per_question: int = 1,
             timeout_s: float = 10.0) -> list[dict]:
    """Training rows for each agent from one gold example ([] when the gold SQL does not run)."""
    from macsql.agents import decomposer, refiner, selector
    from macsql.schema import introspect
    from macsql.sqlexec import execute

    schema = introspect(src.db_path)
    gold = execute(src.db_path, src.gold_sql, timeout_s=timeout_s)
    if not gold.ok:
        return []  # a gold query that fails teaches nothing (and some released gold SQL does fail)
    selection = names_used(src.gold_sql, schema).columns
    # the values the question mentions, as the Selector links them at inference
    matches = selector.matches_map(selector.link_values(src.question, src.db_path))
    rows = []
    tasks = set(tasks)
    if "selector" in tasks and selection:
        rows.append(_row("selector", selector.build_prompt(src.question, schema, src.evidence, matches=matches),
                         selector.format_target(selection, schema), src))
    schema_text = decomposer_schema_text(schema, selection, matches)
    if "decomposer" in tasks:
        # Both of the Decomposer's prompts: the vote's first candidate and its samples come from the direct
        # prompt, its second from the decomposed one. Trained on the decomposed prompt alone, SmolLM2-135M
        # answered the direct one right 9.6% of the time against 27.1% (finetune/README.md).
        for reply in ("decomposed", "direct"):
            direct = reply == "direct"
            rows.append(_row("decomposer", decomposer.build_prompt(src.question, schema_text, src.evidence,
                                                                   direct=direct),
                             decomposer.format_target(src.gold_sql, direct=direct), src, reply=reply))
    if "refiner" in tasks:
        made = 0
        for kind, broken in corrupt(src.gold_sql, schema, rng, REFINER_CORRUPTIONS):
            if made >= refiner_per_question:
                break
            result = execute(src.db_path, broken, timeout_s=timeout_s)
            if refiner.problem_with(result) is None:
                continue  # it runs and looks fine: the Refiner would never be asked about it
            problem = refiner.problem_text(broken, result, schema, src.db_path)  # with the repair hint
            rows.append(_row("refiner", refiner.build_prompt(src.question, schema_text, broken, problem,
                                                             src.evidence),
                             refiner.format_target(src.gold_sql), src, corruption=kind, broken_sql=broken))
            made += 1
    return rows


def load_sources(data: str | Path, db_root: str | Path | None = None, *, fmt: str = "auto",
                 exclude_db: Iterable[str] = (), only_db: Iterable[str] = (), max_per_db: int | None = None,
                 seed: int = 0, missing: set[str] | None = None) -> list[Source]:
    """Gold examples from a BIRD/Spider/GeoQuery file, minus excluded databases, capped per database.
    db_ids whose database file is absent are left out (and added to `missing` when given)."""
    from macsql.evaluate.datasets import load_examples

    exclude, only = set(exclude_db), set(only_db)
    by_db: dict[str, list[Source]] = {}
    missing = set() if missing is None else missing
    for ex in load_examples(data, db_root, fmt=fmt):
        if ex.db_id in exclude or (only and ex.db_id not in only):
            continue
        if not Path(ex.db_path).is_file():
            missing.add(ex.db_id)
            continue
        by_db.setdefault(ex.db_id, []).append(Source(ex.question, ex.gold_sql, ex.db_id, Path(ex.db_path),
                                                     ex.evidence))
    if not by_db:
        hint = f" (databases not found: {', '.join(sorted(missing)[:5])}; pass --db-root)" if missing else ""
        raise InputError(f"no usable examples in {str(data)!r}{hint}")
    rng = random.Random(seed)
    out = []
    for db_id in sorted(by_db):
        items = by_db[db_id]
        if max_per_db is not None and len(items) > max_per_db:
            items = rng.sample(items, max_per_db)
        out.extend(items)
    return out


def build_rows(sources: list[Source], *, seed: int = 0, tasks: Iterable[str] = TASKS,
               refiner_per_question: int = 1, progress: bool = True,
               skipped: dict[str, str] | None = None) -> list[dict]:
    """Rows for every source, database by database. A database whose schema cannot be read or rendered
    is left out whole (its reason recorded in `skipped`, db_id -> "Error: message") instead of ending the
    build: one odd database among Spider train's 140 must not cost the other 139."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    rows: list[dict] = []
    by_db: dict[str, list[Source]] = {}
    for src in sources:
        by_db.setdefault(src.db_id, []).append(src)
    bar = tqdm(total=len(sources), desc="building agent examples", unit="q", disable=not progress or None)
    for db_id, items in by_db.items():
        db_rows: list[dict] = []
        done = 0
        try:
            for src in items:
                db_rows.extend(rows_for(src, rng, tasks=tasks, refiner_per_question=refiner_per_question))
                done += 1
                bar.update()
        except Exception as exc:  # noqa: BLE001 - any failure in one database's schema skips that database
            if skipped is None:
                raise
            first_line = (str(exc).splitlines() or [""])[0]
            skipped[db_id] = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
            bar.update(len(items) - done)
            continue
        rows.extend(db_rows)
    bar.close()
    return rows


# ------------------------------------------------------------------------------- MAC-SQL's SQL-Llama data
# MAC-SQL's released instruction data uses its own prompt templates; the task is recognised from them.
_SQL_LLAMA_TASKS = (
    ("selector", re.compile(r"(?i)database administrator|select relevant (tables|schema)|"
                            r"(keep_all|drop_all)")),
    ("decomposer", re.compile(r"(?i)decompose the question|sub.?questions?")),
    ("refiner", re.compile(r"(?i)fix(\s+up)?\s+(the\s+)?SQL|errors? occurred|When executing SQL")),
)
_SQL_LLAMA_DB = re.compile(r"【DB_ID】\s*([\w-]+)")
_SQL_LLAMA_SUBQ = re.compile(r"(?is)Sub question \d+\s*:\s*(.+?)\s*\nSQL\s*```sql\s*(.+?)```")


def sql_llama_task(source: str) -> str | None:
    head = source[:600]  # the task instruction sits at the prompt's opening
    for task, pattern in _SQL_LLAMA_TASKS:
        if pattern.search(head):
            return task
    return None


def _sql_llama_target(task: str, target: str) -> str:
    """MAC-SQL's replies in our agents' formats where they differ (the Decomposer's sub-question layout)."""
    from macsql.agents import decomposer
    from macsql.agents.parsing import extract_sql

    if task != "decomposer":
        return target.strip()
    subs = [{"question": q.strip(), "sql": s.strip()} for q, s in _SQL_LLAMA_SUBQ.findall(target)]
    final = subs[-1]["sql"] if subs else extract_sql(target)
    # MAC-SQL's data carries SQL for every sub-question: keep it (the `sub-sql` style) rather than drop it
    return decomposer.format_target(final, subs[:-1] if len(subs) > 1 else None, style="sub-sql")


def import_sql_llama(path: str | Path) -> list[dict]:
    """Rows from MAC-SQL's SQL-Llama instruction JSONL (`source` prompt, `target` reply).

    Their prompts stay as they are (one user message): the schema inside is in MAC-SQL's own layout and
    cannot be re-rendered without the database. Such rows teach the skill, not our exact prompt.
    """
    from macsql.errors import NoSQLError

    rows = []
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SQL-Llama file {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                source, target = rec["source"], rec["target"]
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{n}: expected a JSON object with `source` and `target` ({exc})") from exc
            task = sql_llama_task(source)
            if task is None:
                continue
            try:
                reply = _sql_llama_target(task, target)
            except NoSQLError:
                continue
            db = _SQL_LLAMA_DB.search(source)
            rows.append({"prompt": [{"role": "user", "content": source.strip()}],
                         "completion": [{"role": "assistant", "content": reply}], "task": task,
                         "db_id": db.group(1) if db else "", "question": "", "evidence": "", "gold_sql": "",
                         "db_path": ""})
    if not rows:
        raise InputError(f"no Selector/Decomposer/Refiner prompts recognised in {str(path)!r}")
    return rows


# --------------------------------------------------------------------------------- balance and split
def by_task(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


def dedupe(rows: list[dict]) -> list[dict]:
    """The rows with each (task, prompt, completion) once, first occurrence kept: Spider train asks some
    questions twice with the same SQL, and a repeated row is only extra weight on that row."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = json.dumps([r["task"], r["prompt"], r["completion"]], ensure_ascii=False, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def balance(rows: list[dict], mode: str, seed: int = 0) -> list[dict]:
    """Equal rows per task: undersample each to the smallest, or oversample each to the largest (whole
    copies first, then a seeded sample of the rest, so no row is repeated more than needed)."""
    if mode not in BALANCE:
        raise InputError(f"unknown balance mode {mode!r}; choose one of {', '.join(BALANCE)}")
    groups = by_task(rows)
    if mode == "none" or not groups:
        return list(rows)
    rng = random.Random(seed)
    sizes = {t: len(g) for t, g in groups.items()}
    target = min(sizes.values()) if mode == "undersample" else max(sizes.values())
    out = []
    for task in sorted(groups):
        group = groups[task]
        if target <= len(group):
            out.extend(rng.sample(group, target))
        else:
            out.extend(group * (target // len(group)) + rng.sample(group, target % len(group)))
    rng.shuffle(out)
    return out


def split(rows: list[dict], val_frac: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Stratified by task: each task gives exactly round(n * val_frac) rows (at least 1 when val_frac > 0
    and the task has 2 rows or more) to validation."""
    if not 0 <= val_frac < 1:
        raise InputError(f"--val-frac must be in [0, 1), got {val_frac}")
    rng = random.Random(seed)
    train, val = [], []
    for task in sorted(g := by_task(rows)):
        group = list(g[task])
        rng.shuffle(group)
        n_val = round(len(group) * val_frac)
        if val_frac > 0 and n_val == 0 and len(group) >= 2:
            n_val = 1
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    rng.shuffle(train)
    return train, val


def split_by_db(rows: list[dict], val_frac: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Whole databases to validation (seeded order) until they hold round(n * val_frac) rows or more, so no
    validation database is ever seen in training: the held-out loss then measures what Spider dev measures
    (new schemas), not memorised ones. Per-task counts follow the databases, so they are near, not exact."""
    if not 0 <= val_frac < 1:
        raise InputError(f"--val-frac must be in [0, 1), got {val_frac}")
    dbs: dict[str, list[dict]] = {}
    for r in rows:
        dbs.setdefault(r.get("db_id") or "", []).append(r)
    rng = random.Random(seed)
    order = sorted(dbs)
    rng.shuffle(order)
    want = round(len(rows) * val_frac)
    val_dbs: set[str] = set()
    n_val = 0
    for db in order[:-1]:  # at least one database stays for training
        if n_val >= want:
            break
        val_dbs.add(db)
        n_val += len(dbs[db])
    train = [r for db in order if db not in val_dbs for r in dbs[db]]
    val = [r for db in order if db in val_dbs for r in dbs[db]]
    rng.shuffle(train)
    return train, val


def databases(rows: list[dict]) -> int:
    return len({r.get("db_id") or "" for r in rows})


def balance_and_split(rows: list[dict], *, mode: str = "undersample", val_frac: float = 0.1,
                      seed: int = 0, by: str = "row") -> tuple[list[dict], list[dict]]:
    """Undersampling happens before the split (both sides balanced); oversampling after it, on the training
    side only, so no copy of a validation row leaks into training. `by="db"` splits by database
    (`split_by_db`); with a single database that is impossible and the split is by row."""
    if by not in SPLITS:
        raise InputError(f"unknown split {by!r}; choose one of {', '.join(SPLITS)}")
    splitter = split_by_db if by == "db" and databases(rows) > 1 else split
    if mode == "oversample":
        train, val = splitter(rows, val_frac, seed)
        return balance(train, "oversample", seed), val
    return splitter(balance(rows, mode, seed), val_frac, seed)


# --------------------------------------------------------------------------------------------- storage
def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist; build it with `macsql data build --out DIR`")
    rows = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{str(path)!r} line {number} is not JSON ({exc}); rebuild it with "
                                 "`macsql data build --out DIR`") from None
            if not isinstance(row, dict) or "task" not in row:
                raise InputError(f"{str(path)!r} line {number} is not a training row (an object with a "
                                 "`task` field); rebuild it with `macsql data build --out DIR`")
            rows.append(row)
    return rows


def save_dataset(out: str | Path, train: list[dict], val: list[dict], meta: dict) -> dict:
    out = Path(out)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(val, out / "validation.jsonl")
    stats = {**meta, "train": {t: len(g) for t, g in sorted(by_task(train).items())},
             "validation": {t: len(g) for t, g in sorted(by_task(val).items())}}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def load_split(data: str | Path, tasks: Iterable[str] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, validation) rows from a `macsql data build` folder (or one JSONL file, without validation)."""
    path = Path(data)
    if path.is_dir():
        train = read_jsonl(path / "train.jsonl")
        val = read_jsonl(path / "validation.jsonl") if (path / "validation.jsonl").exists() else []
    else:
        train, val = read_jsonl(path), []
    if tasks is not None:
        keep = set(tasks)
        train = [r for r in train if r["task"] in keep]
        val = [r for r in val if r["task"] in keep]
        if not train:
            raise InputError(f"no {'/'.join(sorted(keep))} rows in {str(path)!r}; build them with "
                             "`macsql data build`")
    return train, val


# ------------------------------------------------------------------------------------- `macsql data build`
def build_dataset(out: str | Path, *, data: str | Path | None = None, db_root: str | Path | None = None,
                  fmt: str = "auto", sql_llama: Iterable[str | Path] = (), exclude_db: Iterable[str] = (),
                  only_db: Iterable[str] = (), max_per_db: int | None = None, tasks: Iterable[str] = TASKS,
                  refiner_per_question: int = 1, balance_mode: str = BALANCE[0], val_frac: float = 0.1,
                  split_by: str = SPLITS[0], seed: int = 0, append: bool = False,
                  progress: bool = True) -> tuple[dict, dict[str, str]]:
    """Build, deduplicate, balance and split the agents' rows from a benchmark file and/or SQL-Llama files
    into OUT (all.jsonl, train.jsonl, validation.jsonl, stats.json). With `append`, the rows already in
    OUT/all.jsonl are built on (a second benchmark). Returns (stats, skipped databases: db_id -> reason)."""
    if not data and not sql_llama:
        raise InputError("nothing to build from; pass --data FILE (BIRD/Spider/GeoQuery) or --sql-llama FILE")
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    start = time.perf_counter()
    rows: list[dict] = []
    meta: dict = {"sources": [], "seed": seed, "balance": balance_mode, "val_frac": val_frac, "split": split_by}
    skipped: dict[str, str] = {}
    if data:
        missing: set[str] = set()
        exclude = list(exclude_db)
        sources = load_sources(data, db_root, fmt=fmt, exclude_db=exclude, only_db=only_db,
                               max_per_db=max_per_db, seed=seed, missing=missing)
        for db_id in sorted(missing):
            skipped[db_id] = "no database file"
        rows += build_rows(sources, seed=seed, tasks=tasks, refiner_per_question=refiner_per_question,
                           progress=progress, skipped=skipped)
        meta["sources"].append({"data": str(data), "questions": len(sources), "excluded": ",".join(exclude),
                                "dbs": sorted({s.db_id for s in sources} - set(skipped)),
                                "questions_used": sum(s.db_id not in skipped for s in sources),
                                "skipped_dbs": skipped})
    for path in sql_llama:
        rows += [r for r in import_sql_llama(path) if r["task"] in tasks]
        meta["sources"].append({"sql_llama": str(path)})
    out_dir = Path(out)
    all_rows = out_dir / "all.jsonl"
    if append and all_rows.exists():
        rows = read_jsonl(all_rows) + rows
        old = json.loads((out_dir / "stats.json").read_text()) if (out_dir / "stats.json").exists() else {}
        meta["sources"] = old.get("sources", []) + meta["sources"]
    unique = dedupe(rows)
    meta["duplicates_dropped"] = len(rows) - len(unique)
    rows = unique
    write_jsonl(rows, all_rows)  # unbalanced, unsplit, deduplicated: what `append` builds on
    train, val = balance_and_split(rows, mode=balance_mode, val_frac=val_frac, seed=seed, by=split_by)
    meta["built"] = {t: len(g) for t, g in sorted(by_task(rows).items())}
    meta["validation_dbs"] = sorted({r.get("db_id") or "" for r in val})
    meta["seconds"] = round(time.perf_counter() - start, 1)
    return save_dataset(out_dir, train, val, meta), skipped

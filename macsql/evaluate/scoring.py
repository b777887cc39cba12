"""Score predictions against gold SQL: execution accuracy through compare.py, the text metrics, schema
grounding and (behind a flag) VES/R-VES, one `QuestionScore` per question, then the summary figures.

Gold and predicted SQL run in a process pool: each worker opens its own read-only connections (sqlexec
connects per call) and every query has the executor's deadline, so one slow query holds one worker, not
the run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from macsql.evaluate import metrics
from macsql.evaluate.datasets import Example
from macsql.schema import Schema
from macsql.sqlexec import DEFAULT_TIMEOUT_S

DEFAULT_VES_REPEATS = 10  # BIRD times each query 100 times; 10 keeps a CPU run in minutes


@dataclass
class QuestionScore:
    question_id: str
    db_id: str
    difficulty: str
    question: str
    gold_sql: str
    pred_sql: str
    ex_spider: bool  # Spider's official EX (column order free, multiset, ordered under ORDER BY, no DISTINCT)
    ex_bird: bool  # BIRD's official EX (result sets equal)
    exact: bool
    rouge_l: float
    executes: bool  # the prediction ran without error
    hallucinated: bool  # names a table or column the schema lacks
    unknown: list[str] = field(default_factory=list)
    parsed: bool = True  # sqlglot could parse the prediction (grounding is only checked when it could)
    pred_error: str | None = None
    gold_error: str | None = None
    timed_out: bool = False
    ves_ratio: float | None = None  # gold time / predicted time (only with VES)
    ves: float | None = None
    rves: float | None = None
    # copied from the prediction record when it has them (an eval run, not a bare SQL file)
    refine_rounds: int | None = None
    llm_calls: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None

    @property
    def ex(self) -> bool:
        """The name older runs and callers use: BIRD's EX (what `ex` has always meant here)."""
        return self.ex_bird

    def to_dict(self) -> dict:
        return {**asdict(self), "ex": self.ex_bird}


@dataclass(frozen=True)
class _Job:
    index: int
    db_path: str
    gold_sql: str
    pred_sql: str
    timeout_s: float
    ves_repeats: int
    keep_distinct: bool = False
    pred_db: str | None = None  # the copy in another engine the prediction was written for (copies.py)


def _score_one(job: _Job) -> dict:
    """Run in a worker process: execute, compare, time. Returns plain data (cheap to pickle)."""
    from macsql.compare import execution_match
    from macsql.errors import DatabaseError

    try:
        # another engine's copy is opened once per worker process and kept (macsql.engines)
        match = execution_match(job.db_path, job.pred_sql, job.gold_sql, timeout_s=job.timeout_s,
                                keep_distinct=job.keep_distinct, pred_db=job.pred_db)
    except DatabaseError as exc:  # the database vanished or is unreadable: the question cannot be scored
        return {"index": job.index, "ex_spider": False, "ex_bird": False, "pred_error": str(exc),
                "gold_error": str(exc), "executes": False, "timed_out": False, "ratio": None}
    out = {"index": job.index, "ex_spider": match.ex_spider, "ex_bird": match.ex_bird,
           "pred_error": match.pred.error, "gold_error": match.gold.error, "executes": match.pred.ok,
           "timed_out": match.pred.timed_out, "ratio": None}
    # VES is BIRD's metric: it rewards BIRD-correct answers (timed on SQLite, so not for another engine's SQL)
    if job.ves_repeats and match.ex_bird and not job.pred_db:
        # both queries already ran once above (warm page cache), so every timed run sees the same state
        timed = metrics.timed_pair(job.db_path, job.gold_sql, job.pred_sql, repeats=job.ves_repeats,
                                   timeout_s=job.timeout_s)
        if timed:
            out["ratio"] = metrics.time_ratio(*timed)
    return out


def schema_for(example: Example, cache: dict) -> Schema | None:
    """The schema to check grounding against: introspected from the database (cached per file)."""
    key = str(example.db_path)
    if key not in cache:
        from macsql.errors import MacSQLError
        from macsql.schema import introspect

        try:
            cache[key] = introspect(example.db_path)
        except MacSQLError:
            cache[key] = None
    return cache[key]


def score_examples(examples: Sequence[Example], predictions: dict[str, dict], *, workers: int | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S, ves_repeats: int = 0, progress: bool = True,
                   keep_distinct: bool = False) -> list[QuestionScore]:
    """Score every example that has a prediction (`predictions[question_id]["pred_sql"]`).
    `keep_distinct` is Spider's evaluator flag of that name (DISTINCT then counts in EX (Spider))."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    todo = [e for e in examples if e.question_id in predictions]
    jobs = [_Job(i, str(e.db_path), e.gold_sql, predictions[e.question_id].get("pred_sql") or "", timeout_s,
                 ves_repeats, keep_distinct, e.ask_db) for i, e in enumerate(todo)]
    workers = workers or min(4, os.cpu_count() or 1)
    results: list[dict | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="scoring", unit="q", disable=not progress, leave=False)
    if workers <= 1 or len(jobs) < 8:
        for job in jobs:
            results[job.index] = _score_one(job)
            bar.update()
    else:
        # VES times queries: several timing processes at once would measure each other, so one worker.
        with ProcessPoolExecutor(max_workers=1 if ves_repeats else workers) as pool:
            for res in pool.map(_score_one, jobs, chunksize=4):
                results[res["index"]] = res
                bar.update()
    bar.close()

    schemas: dict = {}
    scores = []
    for e, res in zip(todo, results, strict=True):
        rec = predictions[e.question_id]
        pred_sql = rec.get("pred_sql") or ""
        schema = schema_for(e, schemas)
        ground = metrics.grounding(pred_sql, schema) if schema is not None else metrics.Grounding(parsed=False)
        ratio = res["ratio"]
        scores.append(QuestionScore(
            question_id=e.question_id, db_id=e.db_id, difficulty=e.difficulty, question=e.question,
            gold_sql=e.gold_sql, pred_sql=pred_sql, ex_spider=res["ex_spider"], ex_bird=res["ex_bird"],
            exact=metrics.exact_match(pred_sql, e.gold_sql), rouge_l=round(metrics.rouge_l(pred_sql, e.gold_sql), 4),
            executes=res["executes"], hallucinated=ground.hallucinated, unknown=ground.unknown,
            parsed=ground.parsed, pred_error=res["pred_error"], gold_error=res["gold_error"],
            timed_out=res["timed_out"],
            ves_ratio=round(ratio, 4) if ratio is not None else None,
            ves=round(metrics.ves_reward(ratio, res["ex_bird"]), 4) if ves_repeats else None,
            rves=metrics.rves_reward(ratio, res["ex_bird"]) if ves_repeats else None,
            refine_rounds=rec.get("refine_rounds"), llm_calls=rec.get("llm_calls"),
            prompt_tokens=rec.get("prompt_tokens"), completion_tokens=rec.get("completion_tokens"),
            seconds=rec.get("seconds"),
        ))
    return scores


def _pct(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 2) if den else None


def _group(scores: Sequence[QuestionScore], key) -> dict[str, dict]:
    groups: dict[str, list[QuestionScore]] = defaultdict(list)
    for s in scores:
        groups[str(key(s))].append(s)
    return {k: {"n": len(v), "ex_spider": _pct(sum(s.ex_spider for s in v), len(v)),
                "ex_bird": _pct(sum(s.ex_bird for s in v), len(v))}
            for k, v in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))}


_DIFFICULTY_ORDER = {"simple": 0, "moderate": 1, "challenging": 2}


def _sort_key(name: str):
    if name in _DIFFICULTY_ORDER:
        return (0, _DIFFICULTY_ORDER[name], "")
    return (1, int(name), "") if name.isdigit() else (2, 0, name)


def summarize(scores: Sequence[QuestionScore], *, ves: bool = False, noisy: bool | None = None) -> dict:
    """All headline figures for a list of scored questions."""
    n = len(scores)
    out: dict = {
        "n": n,
        "ex_spider": _pct(sum(s.ex_spider for s in scores), n),
        "ex_bird": _pct(sum(s.ex_bird for s in scores), n),
        "ex": _pct(sum(s.ex_bird for s in scores), n),  # the old name of ex_bird, for earlier readers
        "exact_match": _pct(sum(s.exact for s in scores), n),
        "rouge_l": round(100 * sum(s.rouge_l for s in scores) / n, 2) if n else None,
        "hallucination_rate": _pct(sum(s.hallucinated for s in scores), n),
        "execution_failure_rate": _pct(sum(not s.executes for s in scores), n),
        "unparsed_rate": _pct(sum(bool(s.pred_sql) and not s.parsed for s in scores), n),
        "timeouts": sum(s.timed_out for s in scores),
        "gold_errors": [{"question_id": s.question_id, "db_id": s.db_id, "error": s.gold_error}
                        for s in scores if s.gold_error],
    }
    if ves:
        out["ves"] = round(100 * sum(s.ves or 0.0 for s in scores) / n, 2) if n else None
        out["rves"] = round(100 * sum(s.rves or 0.0 for s in scores) / n, 2) if n else None
        out["ves_noisy"] = noisy
    out["by_difficulty"] = _group([s for s in scores if s.difficulty], lambda s: s.difficulty)
    out["by_database"] = _group(scores, lambda s: s.db_id)
    with_rounds = [s for s in scores if s.refine_rounds is not None]
    out["by_refine_rounds"] = _group(with_rounds, lambda s: s.refine_rounds)
    out["cost_per_question"] = {
        name: metrics.quantiles(getattr(s, name) for s in scores if getattr(s, name) is not None)
        for name in ("llm_calls", "prompt_tokens", "completion_tokens", "seconds")
    }
    return out


def score_and_summarize(examples: Sequence[Example], predictions: dict[str, dict], *,
                        score_workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, ves: bool = False, ves_repeats: int = DEFAULT_VES_REPEATS,
                        progress: bool = True, keep_distinct: bool = False) -> tuple[dict, list[QuestionScore]]:
    """(summary, scores) of the predictions; with `ves`, VES/R-VES too, flagged noisy when the machine is busy
    as the timing starts."""
    noisy = machine_is_noisy() if ves else None
    scores = score_examples(examples, predictions, workers=score_workers, timeout_s=timeout_s,
                            ves_repeats=ves_repeats if ves else 0, progress=progress, keep_distinct=keep_distinct)
    return summarize(scores, ves=ves, noisy=noisy), scores


def machine_is_noisy() -> bool:
    """Timings on a shared machine are unreliable when other work keeps the CPUs busy."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return True
    return load > 0.5 * (os.cpu_count() or 1)


def missing_databases(examples: Sequence[Example]) -> list[Path]:
    return sorted({e.db_path for e in examples if not Path(e.db_path).is_file()})

"""Run the pipeline over a benchmark, one JSONL line per question as soon as it is answered, and `evaluate`:
the one evaluation loop (answer, then score with THE comparator) of `macsql eval`, the suites and the sweep.

The prediction file is the run's only state (run.py's `PredictionStore`): every question already in it is
skipped, so a rerun loses nothing and duplicates nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from macsql.errors import MacSQLError, ModelError
from macsql.evaluate.datasets import Example
from macsql.evaluate.run import PredictionStore, read_predictions

# Pipeline options of each ablation variant. "baseline" is a single prompt: whole schema, SQL asked for
# directly, no value linking, no vote, no repair: exactly one model call per question.
VARIANTS: dict[str, dict] = {
    "full": {},
    "no-selector": {"use_selector": False},
    "no-decomposer": {"use_decomposer": False},
    "no-refiner": {"use_refiner": False},
    "no-vote": {"candidates": 1},
    "no-values": {"use_values": False},
    "no-hints": {"use_hints": False},
    "all-samples": {"early_stop": False},
    "no-confident-stop": {"confident_prob": 0.0},
    "no-fix-first": {"fix_first": False},
    "no-budget": {"budget_x": 0.0},
    "before-ladder": {"confident_prob": 0.0, "fix_first": False, "budget_x": 0.0},
    "no-knowledge": {"use_knowledge": False},
    "no-descriptions": {"use_descriptions": False},
    "baseline": {"use_selector": False, "use_decomposer": False, "use_refiner": False, "candidates": 1,
                 "use_values": False, "use_hints": False},
}


# What every evaluated question runs with, whatever the variant (and what run.json records): no question may
# see its own answer, so an example (taught, or given for the run) whose question is the one being answered,
# or the same text in another case, spacing or punctuation, is left out of its prompt (knowledge.py's
# `similar_examples(exclude=...)`).
EVAL_OPTIONS = {"exclude_asked": True}


def _trace_summary(trace: list[dict]) -> list[dict]:
    """The trace without prompts or replies: who ran, in which round, what it cost, what SQL came out."""
    keep = ("agent", "round", "prompt_tokens", "completion_tokens", "seconds", "sql", "error", "rows", "parsed",
            "kept", "source", "candidate", "repeated", "problem", "winner", "groups", "matches", "cached_tokens",
            "prefill_seconds", "min_prob", "mean_prob", "examples", "terms")
    return [{k: t[k] for k in keep if k in t} for t in trace]


def record_for(example: Example, answer=None, *, variant: str = "full", error: str | None = None) -> dict:
    rec = {"question_id": example.question_id, "db_id": example.db_id, "question": example.question,
           "difficulty": example.difficulty, "gold_sql": example.gold_sql, "variant": variant}
    if answer is None:
        rec.update({"pred_sql": "", "error": error, "refine_rounds": 0, "llm_calls": 0, "prompt_tokens": 0,
                    "completion_tokens": 0, "model_seconds": 0.0, "seconds": 0.0, "trace": []})
        return rec
    rec.update({
        "pred_sql": answer.sql, "error": answer.error, "refine_rounds": answer.rounds,
        "llm_calls": answer.llm_calls, "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens, "model_seconds": round(answer.model_seconds, 4),
        "seconds": round(answer.seconds, 4), "rows": len(answer.rows), "trace": _trace_summary(answer.trace),
        "candidates": [{k: v for k, v in c.items() if k != "rows"} for c in answer.candidates],
    })
    return rec


# A question whose model calls still fail after the backend's own retries is asked again this many times
# (at the end of the queue, so a server that hiccups has time to recover); after that it is left for a rerun.
QUESTION_ATTEMPTS = 3
# This many model failures in a row mean the server is down, not flaky: stop instead of failing every question.
MAX_CONSECUTIVE_MODEL_ERRORS = 5


class _ModelFailure:
    """What `answer()` returns when the model server failed: nothing is written for the question."""

    def __init__(self, example: Example, error: ModelError):
        self.example, self.error = example, error


def run_predictions(pipe, examples: Sequence[Example], out_file: str | Path | None, *, variant: str = "full",
                    workers: int = 1, progress: bool = True,
                    on_record: Callable[[dict], None] | None = None) -> dict[str, dict]:
    """Answer every example not yet in `out_file` (None: keep the answers in memory only); return all
    records (old and new) by question_id.

    A `ModelError` on one question (a server fault that outlived the backend's retries) is no answer: the
    question is asked again later in the run, and the answers of other questions, in flight or not, are
    kept. Only a question that fails QUESTION_ATTEMPTS times, or MAX_CONSECUTIVE_MODEL_ERRORS failures in a
    row (the server is down), end the run with a ModelError; every answer so far is in the file and a
    rerun asks only what is missing. Any other exception inside one question is recorded as that
    question's error, so one odd question cannot end a long run.
    """
    from tqdm import tqdm

    from macsql.backends.batching import BatchingLLM, for_threads

    pipe = pipe.replace(**EVAL_OPTIONS)
    with PredictionStore(out_file) as store:
        # Grouped by database (stable, so the sample's order holds within one): consecutive questions then
        # share the system message and schema at the start of their prompts, which a backend with a prompt
        # cache (llama.cpp) reads once per database instead of once per question.
        todo = sorted((e for e in examples if e.question_id not in store.done), key=lambda e: str(e.db_path))
        bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=variant, unit="q",
                   disable=not progress, dynamic_ncols=True)
        failures = 0
        attempts: dict[str, int] = {}
        streak = [0]  # model failures in a row
        retry_queue: list[Example] = []
        given_up: list[_ModelFailure] = []

        def answer(e: Example, runner) -> dict | _ModelFailure:
            try:
                ans = runner.ask(e.question, e.ask_db or e.db_path, evidence=e.evidence)
                return record_for(e, ans, variant=variant)
            except ModelError as exc:
                return _ModelFailure(e, exc)
            except MacSQLError as exc:
                return record_for(e, variant=variant, error=str(exc))
            except Exception as exc:  # a bug on one question must not cost the whole run
                return record_for(e, variant=variant, error=f"pipeline crashed: {type(exc).__name__}: {exc}")

        def done(rec: dict | _ModelFailure) -> None:
            nonlocal failures
            if isinstance(rec, _ModelFailure):
                streak[0] += 1
                qid = rec.example.question_id
                attempts[qid] = attempts.get(qid, 0) + 1
                if streak[0] >= MAX_CONSECUTIVE_MODEL_ERRORS:
                    raise ModelError(f"{rec.error} ({streak[0]} questions in a row failed; the answers so far "
                                     "are saved: rerun the same command to continue)")
                (retry_queue if attempts[qid] < QUESTION_ATTEMPTS else given_up).append(rec)
                return
            streak[0] = 0
            store.append(rec)
            failures += bool(rec.get("error"))
            bar.set_postfix(failed=failures, refresh=False)
            bar.update()
            if on_record:
                on_record(rec)

        fresh = iter(todo)

        def next_example() -> Example | None:
            """The next question to ask, or None for now: new ones first, then those whose model calls
            failed (asked again at the end). A retry queued later makes it answer again."""
            e = next(fresh, None)
            if e is None and retry_queue:
                e = retry_queue.pop(0).example
            return e

        try:
            if workers <= 1:
                while (e := next_example()) is not None:
                    done(answer(e, pipe))
            else:
                _run_threaded(pipe, next_example, workers, answer, done, for_threads, BatchingLLM)
        finally:
            bar.close()
        if given_up:
            raise ModelError(f"{len(given_up)} question(s) got no answer from the model after "
                             f"{QUESTION_ATTEMPTS} tries (last: {given_up[-1].error}); the other answers are "
                             "saved: rerun the same command to answer them")
        return dict(store.done)


def _run_threaded(pipe, next_example, workers, answer, done, for_threads, batching_cls) -> None:
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    runner = pipe.with_llm(for_threads(pipe.llm, workers))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="macsql-eval")
    pending: set = set()

    def refill() -> None:
        # Keep at most `workers` questions in flight, so Ctrl-C has little to wait for.
        while len(pending) < workers and (e := next_example()) is not None:
            pending.add(pool.submit(answer, e, runner))

    try:
        refill()
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            stop = None
            for fut in finished:
                try:
                    done(fut.result())  # the main thread is the only writer's caller: lines never interleave
                except ModelError as exc:  # the server is down: still write the other finished answers
                    stop = exc
            if stop is not None:
                raise stop
            refill()  # done() may have queued a question to ask again
    except BaseException:
        # Ctrl-C or the server being down: drop queued questions. The ones running finish but are not
        # written; the answers already finished in this batch were written above (done() before raise).
        for fut in pending:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(runner.llm, batching_cls):
            runner.llm.close()


def evaluate(pipe, examples: Sequence[Example], out_file: str | Path | None = None, *, variant: str = "full",
             workers: int = 1, progress: bool = True, **scoring) -> tuple[dict[str, dict], dict, list]:
    """The one evaluation loop: answer every example not yet in `out_file` (in memory when None), then
    score every answer (scoring.score_and_summarize, whose keyword options `scoring` passes on).
    Returns (records by question_id, summary figures, one QuestionScore per example).

    `pipe=None` means every answer is in `out_file` already (a rerun that only rebuilds the reports): it is
    read without writing and no model is needed."""
    from macsql.evaluate.scoring import score_and_summarize

    if pipe is None:
        records = read_predictions(out_file)
    else:
        records = run_predictions(pipe, examples, out_file, variant=variant, workers=workers, progress=progress)
    summary, scores = score_and_summarize(examples, records, progress=progress, **scoring)
    return records, summary, scores

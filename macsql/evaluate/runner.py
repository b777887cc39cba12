"""Run the pipeline over a benchmark, one JSONL line per question as soon as it is answered.

The prediction file is the run's only state. Each line is written with a single `os.write` on an
O_APPEND descriptor and fsync'd, so a killed run leaves whole lines plus at most one torn last line; on
restart the torn tail is cut off (and that question redone) and every question already in the file is
skipped. A rerun therefore loses nothing and duplicates nothing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from macsql.errors import InputError, MacSQLError, ModelError
from macsql.evaluate.datasets import Example

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
    "baseline": {"use_selector": False, "use_decomposer": False, "use_refiner": False, "candidates": 1,
                 "use_values": False, "use_hints": False},
}
PIPELINE_AGENTS = ("selector", "decomposer", "refiner")


class PredictionStore:
    """Append-only JSONL of finished questions, keyed by question_id."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict] = {}
        self.repaired = False  # a torn last line was cut off
        self._lock = threading.Lock()
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0  # byte offset after the last complete, valid line
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # the line a killed run was writing
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if isinstance(rec, dict) and "question_id" in rec:
                self.done[str(rec["question_id"])] = rec
            good_end += len(line)
        if good_end < len(data):
            # Cut the torn tail so the next append starts on a fresh line; anything after a corrupt line is
            # dropped too and those questions are simply answered again.
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
            self.repaired = True

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            os.write(self._fd, line)  # one syscall: a line is either all there or (if killed) torn at the end
            os.fsync(self._fd)
            self.done[str(record["question_id"])] = record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _trace_summary(trace: list[dict]) -> list[dict]:
    """The trace without prompts or replies: who ran, in which round, what it cost, what SQL came out."""
    keep = ("agent", "round", "prompt_tokens", "completion_tokens", "seconds", "sql", "error", "rows", "parsed",
            "kept", "source", "candidate", "repeated", "problem", "winner", "groups", "matches")
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


def run_predictions(pipe, examples: Sequence[Example], out_file: str | Path, *, variant: str = "full",
                    workers: int = 1, progress: bool = True,
                    on_record: Callable[[dict], None] | None = None) -> dict[str, dict]:
    """Answer every example not yet in `out_file`; return all records (old and new) by question_id.

    A `ModelError` (server down, model cannot load) stops the run: the questions done so far stay and a
    rerun continues. Any other exception inside one question is recorded as that question's error, so one
    odd question cannot end a long run.
    """
    from tqdm import tqdm

    from macsql.batching import BatchingLLM, for_threads

    with PredictionStore(out_file) as store:
        # Grouped by database (stable, so the sample's order holds within one): consecutive questions then
        # share the system message and schema at the start of their prompts, which a backend with a prompt
        # cache (llama.cpp) reads once per database instead of once per question.
        todo = sorted((e for e in examples if e.question_id not in store.done), key=lambda e: str(e.db_path))
        bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=variant, unit="q",
                   disable=not progress, dynamic_ncols=True)
        failures = 0

        def answer(e: Example, runner) -> dict:
            try:
                ans = runner.ask(e.question, e.db_path, evidence=e.evidence)
                return record_for(e, ans, variant=variant)
            except ModelError:
                raise
            except MacSQLError as exc:
                return record_for(e, variant=variant, error=str(exc))
            except Exception as exc:  # a bug on one question must not cost the whole run
                return record_for(e, variant=variant, error=f"pipeline crashed: {type(exc).__name__}: {exc}")

        def done(rec: dict) -> None:
            nonlocal failures
            store.append(rec)
            failures += bool(rec.get("error"))
            bar.set_postfix(failed=failures, refresh=False)
            bar.update()
            if on_record:
                on_record(rec)

        try:
            if workers <= 1:
                for e in todo:
                    done(answer(e, pipe))
            else:
                _run_threaded(pipe, todo, workers, answer, done, for_threads, BatchingLLM)
        finally:
            bar.close()
        return dict(store.done)


def _run_threaded(pipe, todo, workers, answer, done, for_threads, batching_cls) -> None:
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from macsql.pipeline import Pipeline

    llm = for_threads(pipe.llm, workers)
    runner = Pipeline(llm, **pipe.options)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="macsql-eval")
    pending: set = set()
    it = iter(todo)
    try:
        # Keep at most `workers` questions in flight, so Ctrl-C has little to wait for.
        for e in it:
            pending.add(pool.submit(answer, e, runner))
            if len(pending) >= workers:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                done(fut.result())  # the main thread is the only writer's caller: lines never interleave
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(answer, nxt, runner))
    except BaseException:
        # Ctrl-C or a ModelError: drop queued questions; running ones finish, but are not written (the
        # file stays consistent: they are redone on the next run).
        for fut in pending:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(llm, batching_cls):
            llm.close()


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_run_config(out_dir: Path, config: dict, *, keys: Sequence[str]) -> None:
    """Refuse to append to predictions made with a different model, variant or data sample."""
    path = out_dir / "run.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        diff = [k for k in keys if old.get(k) != config.get(k)]
        if diff:
            raise InputError(f"{out_dir} holds a run with a different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use a new --out folder "
                             "or --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**config, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                               indent=2, default=str))

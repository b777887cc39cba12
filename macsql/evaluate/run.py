"""A run folder: what `macsql eval --out` and `macsql score --out` leave behind, read and written here only.

    run.json           the run's config (model, variant, pipeline options, data hash), replaced atomically
    predictions.jsonl  one line per answered question, appended as each finishes (`PredictionStore`)
    report.json/.csv   the scored figures and one row per question (written by report.py)

Reading never writes: `read_predictions` skips a torn last line, while only the store, which is about to
append, cuts it off. The judge, `eval`'s resume and `compare` all read through `RunFolder`.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from macsql.errors import InputError

CONFIG = "run.json"
PREDICTIONS = "predictions.jsonl"
REPORT = "report.json"
REPORT_ROWS = "report.csv"

_TORN = object()  # a line that does not parse: the one a killed run was writing, or garbage


def _jsonl_lines(data: bytes) -> Iterator[tuple[object, bool, int]]:
    """Each line of a JSONL file: its JSON value (_TORN when it does not parse), whether it ends in a
    newline, and the byte offset just after it."""
    end = 0
    for line in data.splitlines(keepends=True):
        end += len(line)
        try:
            value = json.loads(line)
        except ValueError:
            value = _TORN
        yield value, line.endswith(b"\n"), end


class PredictionStore:
    """Append-only JSONL of finished questions, keyed by question_id; in memory only when `path` is None.

    Each line is written with a single `os.write` on an O_APPEND descriptor and fsync'd, so a killed run
    leaves whole lines plus at most one torn last line; opening the store cuts that tail off (and that
    question is redone), so a rerun loses nothing and duplicates nothing."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.done: dict[str, dict] = {}
        self.repaired = False  # a torn last line was cut off
        self._lock = threading.Lock()
        self._fd = -1
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0  # byte offset after the last complete, valid line
        for value, whole, end in _jsonl_lines(data):
            if not whole or value is _TORN:
                break  # the line a killed run was writing
            if isinstance(value, dict) and "question_id" in value:
                self.done[str(value["question_id"])] = value
            good_end = end
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
            if self._fd >= 0:
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


def read_predictions(path: str | Path) -> dict[str, dict]:
    """Predictions by question_id, read without writing: our JSONL (a torn last line is skipped), a JSON list
    of {question_id, pred_sql | sql}, or BIRD's `predict_dev.json` ({"0": "SQL\\t----- bird -----\\tdb_id"})."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prediction file {str(p)!r} does not exist; pass --pred PATH (predictions.jsonl)")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise InputError(f"prediction file {str(p)!r} is not UTF-8 text (byte {exc.start}); pass the "
                         "predictions.jsonl an eval wrote, or a JSON list of {question_id, pred_sql}") from None
    try:
        whole = json.loads(text) if text[:1] in "[{" else None
    except (ValueError, RecursionError):
        whole = None  # JSONL: many objects, not one document
    if isinstance(whole, dict) and "question_id" not in whole:
        return {str(k): {"question_id": str(k), "pred_sql": str(v).split("\t----- bird -----\t")[0]}
                for k, v in whole.items()}
    if isinstance(whole, list):
        rows = whole
    elif isinstance(whole, dict):
        rows = [whole]
    else:  # the torn last line of an interrupted run (or a blank one) is passed over
        rows = [value for value, _, _ in _jsonl_lines(data) if value is not _TORN]
    out = {}
    for r in rows:
        if not isinstance(r, dict) or "question_id" not in r:
            raise InputError(f"{str(p)!r}: each prediction needs question_id and pred_sql (or sql)")
        out[str(r["question_id"])] = {**r, "pred_sql": r.get("pred_sql", r.get("sql", r.get("predicted_sql", "")))}
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it and rename it over `path`: a kill at any
    moment leaves the old file or the new one, never half of one (resume reads run.json to compare)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class RunFolder:
    """One run's folder: its config, its predictions (read-only here; `store()` appends) and its reports."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS

    # ------------------------------------------------------------------------------------------- config
    def config(self) -> dict | None:
        """run.json, or None when the folder has none."""
        path = self.path / CONFIG
        if not path.exists():
            return None
        try:
            config = json.loads(path.read_text())
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise InputError(f"{path} is unreadable, so it cannot say which run {self.path} holds; use a new "
                             "--out folder or --overwrite")
        return config

    def claim(self, config: dict, *, keys: Sequence[str],
              recorded: Callable[[dict], dict] | None = None) -> None:
        """Refuse to append to predictions made with a different model, variant or data sample (the `keys`
        of the two configs differ); otherwise write `config` as the folder's run.json. `recorded`: the
        folder's config as the caller writes configs now (an earlier version's, brought up to date)."""
        old = self.config()
        if old is not None and recorded is not None:
            old = recorded(old)
        if old is not None:
            diff = [k for k in keys if old.get(k) != config.get(k)]
            if diff:
                raise InputError(f"{self.path} holds a run with a different {', '.join(diff)} "
                                 f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use a new --out folder "
                                 "or --overwrite")
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / CONFIG, json.dumps(
            {**config, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2, default=str))

    def clear(self) -> None:
        """Forget the run's answers and config (`--overwrite`)."""
        if self.predictions_file.exists():
            self.predictions_file.unlink()
            (self.path / CONFIG).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------- predictions
    def has_predictions(self) -> bool:
        return self.predictions_file.is_file()

    def predictions(self) -> dict[str, dict]:
        """The answered questions by question_id; never writes (a torn last line is skipped, not cut)."""
        return read_predictions(self.predictions_file)

    def store(self) -> PredictionStore:
        """The append-only store of this run's answers (cuts a torn last line off before appending)."""
        return PredictionStore(self.predictions_file)

    # ----------------------------------------------------------------------------------------- reports
    def report(self) -> dict | None:
        """report.json ({"config": ..., "metrics": ...}), or None when the run was not scored."""
        path = self.path / REPORT
        return json.loads(path.read_text()) if path.is_file() else None

    def report_rows(self) -> dict[str, dict]:
        """report.csv's rows (all values as text) by question_id; empty when there is none."""
        path = self.path / REPORT_ROWS
        if not path.is_file():
            return {}
        with path.open(newline="", encoding="utf-8") as fh:
            return {r["question_id"]: r for r in csv.DictReader(fh)}

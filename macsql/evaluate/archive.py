"""A run's answers in one gzip file without the benchmark's own text, and back into a run folder.

Why: a `macsql eval` run of hours outlives neither a machine that is replaced nor a colleague's laptop, and
its folder cannot be shared or committed as it is, because every record carries the benchmark's question
and gold SQL (data whose licence is not ours to pass on). An archive keeps what the run produced (each
answer, its candidates, trace summary, tokens and seconds, and each folder's run.json) and drops what
the data file already holds; `unpack` puts that text back from the same data file (its sha256 must match
the one the run recorded) so that `macsql eval --out DIR` resumes the run, and `score`/`compare` read it.

    gzip JSONL: {"archive": "macsql-run", "version": 1, "runs": {"<subfolder>": <run.json>, ...}}
                {"run": "<subfolder>", ...one prediction record without its benchmark text...}
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from macsql.errors import InputError
from macsql.evaluate.run import CONFIG, PREDICTIONS, RunFolder, write_atomic

KIND = "macsql-run"
VERSION = 1
# The record fields that come from the benchmark file, restored from it on unpack.
BENCHMARK_FIELDS = ("question", "gold_sql", "db_id", "difficulty")


def run_folders(root: str | Path) -> dict[str, RunFolder]:
    """The run folders at `root`: the folder itself, or its variant subfolders (`eval --ablations`)."""
    root = Path(root)
    if (root / PREDICTIONS).is_file():
        return {".": RunFolder(root)}
    found = {p.parent.name: RunFolder(p.parent) for p in sorted(root.glob(f"*/{PREDICTIONS}"))}
    if not found:
        raise InputError(f"no {PREDICTIONS} in {str(root)!r} or its subfolders; pass an `macsql eval --out` folder")
    return found


def pack(root: str | Path, dest: str | Path) -> dict[str, int]:
    """Write the archive of the run(s) at `root` to `dest`; return the number of answers per run."""
    folders = run_folders(root)
    configs, counts, lines = {}, {}, []
    for name, folder in folders.items():
        config = folder.config()
        if config is None:
            raise InputError(f"{folder.path} has answers but no {CONFIG}, so nothing says which run they are")
        configs[name] = config
        records = folder.predictions()
        counts[name] = len(records)
        for rec in records.values():
            lines.append({"run": name, **{k: v for k, v in rec.items() if k not in BENCHMARK_FIELDS}})
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    # mtime=0: the same answers give the same bytes, so a committed archive changes only when a run does
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as fh:
        head = {"archive": KIND, "version": VERSION, "runs": configs}
        for obj in [head, *lines]:
            fh.write((json.dumps(obj, sort_keys=True, default=str) + "\n").encode("utf-8"))
    tmp.replace(dest)
    return counts


def read_archive(path: str | Path) -> tuple[dict, list[dict]]:
    """(the run configs by subfolder, the records) of an archive; a clear error for any other file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        raise InputError(f"archive {str(path)!r} does not exist") from None
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{str(path)!r} is not a run archive from `macsql runs pack` ({exc})") from None
    head = lines[0] if lines else {}
    if not isinstance(head, dict) or head.get("archive") != KIND:
        raise InputError(f"{str(path)!r} is not a run archive from `macsql runs pack`")
    if head.get("version") != VERSION:
        raise InputError(f"{str(path)!r} is a version {head.get('version')} archive; this macsql reads version "
                         f"{VERSION}")
    return head["runs"], lines[1:]


def unpack(path: str | Path, dest: str | Path, data: str | Path, db_root: str | Path | None = None, *,
           overwrite: bool = False) -> dict[str, int]:
    """Rebuild the run folder(s) of archive `path` under `dest`, taking the benchmark text from `data` (the
    file the runs answered: its sha256 must be the one they recorded). Return the answers per run."""
    from macsql.evaluate.datasets import load_examples
    from macsql.evaluate.plan import file_sha256

    configs, records = read_archive(path)
    digest = file_sha256(data)
    for name, config in configs.items():
        if config.get("data_sha256") != digest:
            raise InputError(f"run {name!r} answered a different data file (sha256 {config.get('data_sha256')}) "
                             f"than {str(data)!r} ({digest}); pass the file it was made from")
    fmt = next(iter(configs.values()), {}).get("format", "auto")
    examples = {e.question_id: e for e in load_examples(data, db_root, fmt=fmt or "auto")}
    folders = {name: RunFolder(Path(dest) if name == "." else Path(dest) / name) for name in configs}
    for folder in folders.values():
        if folder.has_predictions() and not overwrite:
            raise InputError(f"{folder.predictions_file} exists; unpack into a new folder or pass --overwrite")
    by_run: dict[str, list[str]] = {name: [] for name in configs}
    for rec in records:
        name = rec.pop("run", None)
        if name not in by_run:
            raise InputError(f"{str(path)!r}: a record of an unknown run {name!r}; the archive is damaged")
        ex = examples.get(str(rec.get("question_id")))
        if ex is None:
            raise InputError(f"question {rec.get('question_id')!r} of run {name!r} is not in {str(data)!r}")
        full = {"question_id": ex.question_id, "db_id": ex.db_id, "question": ex.question,
                "difficulty": ex.difficulty, "gold_sql": ex.gold_sql, **rec}
        by_run[name].append(json.dumps(full, default=str))
    for name, config in configs.items():
        folder = folders[name]
        folder.path.mkdir(parents=True, exist_ok=True)
        local = {**config, "data": str(Path(data).resolve()),
                 "db_root": str(Path(db_root).resolve()) if db_root else config.get("db_root")}
        write_atomic(folder.path / CONFIG, json.dumps(local, indent=2, default=str))
        write_atomic(folder.predictions_file, "".join(line + "\n" for line in by_run[name]))
    return {name: len(lines) for name, lines in by_run.items()}

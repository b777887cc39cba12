"""A run's answers in one gzip file without the benchmark's own text, and back into a run folder.

Why: a `macsql eval` run of hours outlives neither a machine that is replaced nor a colleague's laptop, and
its folder cannot be shared or committed as it is, because every record carries the benchmark's question
and gold SQL (data whose licence is not ours to pass on). An archive keeps what the run produced (each
answer, its candidates, trace summary, tokens and seconds, and each folder's run.json) and drops what
the data file already holds; `unpack` puts that text back from the same data file (its sha256 must match
the one the run recorded) so that `macsql eval --out DIR` resumes the run, and `score`/`compare` read it.
An archive is a file from elsewhere, so `unpack` trusts none of it: run names must be plain folder names
that stay inside --out, the uncompressed size is bounded, and the whole archive is checked before
anything is written.

    gzip JSONL: {"archive": "macsql-run", "version": 1, "runs": {"<subfolder>": <run.json>, ...}}
                {"run": "<subfolder>", ...one prediction record without its benchmark text...}
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path

from macsql.errors import InputError
from macsql.evaluate.run import CONFIG, PREDICTIONS, RunFolder, write_atomic

KIND = "macsql-run"
VERSION = 1
# The record fields that come from the benchmark file, restored from it on unpack.
BENCHMARK_FIELDS = ("question", "gold_sql", "db_id", "difficulty")
# An archive comes from elsewhere, so reading one is bounded: the benchmark runs' archives are a few MB
# uncompressed (a few KB per answer), and gzip can inflate a small file a thousandfold.
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024  # uncompressed, all lines
MAX_LINE_BYTES = 16 * 1024 * 1024  # uncompressed, one line: the head or one answer
MAX_RECORDS = 2_000_000
# A run name becomes a folder under --out: no separators, no control characters (NUL included).
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


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


def _lines(path: str | Path):
    """The archive's decompressed lines, read in bounded pieces: a line over MAX_LINE_BYTES or a total over
    MAX_ARCHIVE_BYTES is refused when it is reached, so a small file that inflates without end (a
    decompression bomb) costs at most one line's worth of memory, never the whole of it."""
    total = 0
    with gzip.open(path, "rb") as fh:
        while line := fh.readline(MAX_LINE_BYTES + 1):
            total += len(line)
            if len(line) > MAX_LINE_BYTES:
                raise InputError(f"{str(path)!r} holds a line longer than {MAX_LINE_BYTES >> 20} MiB "
                                 "uncompressed; it is not a run archive from `macsql runs pack`")
            if total > MAX_ARCHIVE_BYTES:
                raise InputError(f"{str(path)!r} is over {MAX_ARCHIVE_BYTES >> 20} MiB uncompressed; it is not "
                                 "a run archive from `macsql runs pack`")
            if line.strip():
                yield line


def _objects(path: str | Path):
    """Each JSON line of the archive as a Python value; every way a file can fail to be one (missing, not
    gzip, truncated, not UTF-8, not JSON, nested past the parser's depth) is one InputError."""
    try:
        for line in _lines(path):
            yield json.loads(line)
    except FileNotFoundError:
        raise InputError(f"archive {str(path)!r} does not exist") from None
    except (OSError, EOFError, ValueError, RecursionError, zlib.error) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"{str(path)!r} is not a run archive from `macsql runs pack` ({reason})") from None


def _check_head(path: str | Path, head) -> dict[str, dict]:
    """The runs of a well-formed archive head, {subfolder: run config}; one line for any other head."""
    if not isinstance(head, dict) or head.get("archive") != KIND:
        raise InputError(f"{str(path)!r} is not a run archive from `macsql runs pack`")
    if head.get("version") != VERSION:
        raise InputError(f"{str(path)!r} is a version {str(head.get('version'))[:20]} archive; this macsql reads "
                         f"version {VERSION}")
    runs = head.get("runs")
    if not isinstance(runs, dict) or not all(isinstance(c, dict) for c in runs.values()):
        raise InputError(f"{str(path)!r}: its head has no {{run name: run.json}} map; the archive is damaged")
    for name, config in runs.items():
        check_run_name(path, name)
        for key in ("data_sha256", "format"):
            if not isinstance(config.get(key), (str, type(None))):
                raise InputError(f"{str(path)!r}: run {name!r} has a {key} that is not text; the archive is damaged")
    return runs


def check_run_name(path: str | Path, name) -> str:
    """`name` if it can be a run's subfolder: "." (the run is --out itself) or one plain path component. An
    archive is a file from elsewhere; a name like `../x` or `/etc` would write outside --out."""
    bad = (not isinstance(name, str) or name in ("", "..") or len(name.encode("utf-8", "replace")) > 255
           or (name != "." and (_UNSAFE_NAME.search(name) or Path(name).is_absolute())))
    if bad:
        raise InputError(f"{str(path)!r} names a run {str(name)[:80]!r}, which is not a plain folder name; "
                         "the archive is damaged or hostile, and nothing was written")
    return name


def _inside(dest: Path, name: str) -> Path:
    """The folder for run `name` under `dest`, refused unless it resolves inside `dest` (a symlink there
    pointing elsewhere counts as elsewhere)."""
    root = dest.resolve()
    folder = root if name == "." else root / name
    if not folder.resolve().is_relative_to(root):
        raise InputError(f"run {name!r} would be written to {str(folder.resolve())!r}, outside {str(dest)!r}; "
                         "nothing was written")
    return folder


def read_archive(path: str | Path) -> tuple[dict, list[dict]]:
    """(the run configs by subfolder, the records) of an archive; a clear error for any other file."""
    objects = _objects(path)
    runs = _check_head(path, next(objects, {}))
    return runs, [_check_record(path, rec, runs) for rec in objects]


def _check_record(path: str | Path, rec, runs: dict) -> dict:
    if not isinstance(rec, dict):
        raise InputError(f"{str(path)!r}: a record is {type(rec).__name__}, not an object; the archive is damaged")
    if not isinstance(rec.get("run"), str) or rec["run"] not in runs:
        raise InputError(f"{str(path)!r}: a record of an unknown run {str(rec.get('run'))[:80]!r}; the archive "
                         "is damaged")
    return rec


def unpack(path: str | Path, dest: str | Path, data: str | Path, db_root: str | Path | None = None, *,
           overwrite: bool = False) -> dict[str, int]:
    """Rebuild the run folder(s) of archive `path` under `dest`, taking the benchmark text from `data` (the
    file the runs answered: its sha256 must be the one they recorded). Return the answers per run.

    The archive is read and checked to its end before anything is written: a refused archive leaves --out
    as it was."""
    from macsql.evaluate.datasets import load_examples
    from macsql.evaluate.plan import file_sha256

    objects = _objects(path)
    configs = _check_head(path, next(objects, {}))
    folders = {name: RunFolder(_inside(Path(dest), name)) for name in configs}
    digest = file_sha256(data)
    for name, config in configs.items():
        if config.get("data_sha256") != digest:
            raise InputError(f"run {name!r} answered a different data file (sha256 {str(config.get('data_sha256'))[:64]}) "
                             f"than {str(data)!r} ({digest}); pass the file it was made from")
    fmt = next(iter(configs.values()), {}).get("format", "auto")
    examples = {e.question_id: e for e in load_examples(data, db_root, fmt=fmt or "auto")}
    for folder in folders.values():
        if folder.has_predictions() and not overwrite:
            raise InputError(f"{folder.predictions_file} exists; unpack into a new folder or pass --overwrite")
    by_run: dict[str, list[str]] = {name: [] for name in configs}
    for n, rec in enumerate(objects, 1):
        if n > MAX_RECORDS:
            raise InputError(f"{str(path)!r} holds more than {MAX_RECORDS} answers; it is not a run archive "
                             "from `macsql runs pack`")
        name = _check_record(path, rec, configs).pop("run")
        ex = examples.get(str(rec.get("question_id")))
        if ex is None:
            raise InputError(f"question {str(rec.get('question_id'))[:80]!r} of run {name!r} is not in "
                             f"{str(data)!r}")
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

"""Benchmark loaders: BIRD, Spider and text2sql-data (GeoQuery) files into one `Example` type.

Used by `macsql eval` and by `macsql data build` (training data is built from the same formats).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from macsql.errors import InputError

FORMATS = ("auto", "bird", "spider", "geoquery")


@dataclass(frozen=True)
class Example:
    question_id: str
    db_id: str
    question: str
    gold_sql: str
    db_path: Path
    evidence: str = ""
    difficulty: str = ""
    # where the pipeline answers when not db_path: the database's copy in another engine (copies.py)
    ask_db: str | None = None


def detect_format(records: list) -> str:
    if not records or not isinstance(records, list) or not isinstance(records[0], dict):
        raise InputError("the data file must hold a JSON list of question objects")
    first = records[0]
    if "sentences" in first and "sql" in first:
        return "geoquery"
    if "SQL" in first:
        return "bird"
    if "query" in first and "db_id" in first:
        return "spider"
    raise InputError(f"unrecognised data format (keys: {sorted(first)[:8]}); expected BIRD (SQL, db_id), "
                     "Spider (query, db_id) or text2sql-data (sql, sentences); name it with --data-format")


def _default_db_root(data: Path, fmt: str) -> Path:
    for name in (("dev_databases", "databases") if fmt == "bird" else ("database", "databases")):
        if (data.parent / name).is_dir():
            return data.parent / name
    return data.parent


def db_file(db_root: Path, db_id: str) -> Path:
    return db_root / db_id / f"{db_id}.sqlite"


def read_records(path: Path) -> list:
    """A benchmark file's JSON records (one line of error, not a traceback, for a missing or broken file)."""
    if not path.is_file():
        raise InputError(f"data file {str(path)!r} does not exist; pass --data PATH to dev.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{str(path)!r} is not valid JSON: {exc}") from exc


def load_examples(data: str | Path, db_root: str | Path | None = None, *, fmt: str = "auto",
                  split: str | None = None) -> list[Example]:
    """All examples of a data file, in file order. `split` filters GeoQuery's question-split."""
    path = Path(data)
    records = read_records(path)
    fmt = detect_format(records) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    root = Path(db_root) if db_root else _default_db_root(path, fmt)
    if fmt == "geoquery":
        return _geoquery(records, path, root, split)
    out = []
    for i, r in enumerate(records):
        db_id = r["db_id"]
        out.append(Example(
            question_id=str(r.get("question_id", i)), db_id=db_id, question=r["question"],
            gold_sql=r["SQL"] if fmt == "bird" else r["query"], db_path=db_file(root, db_id),
            evidence=r.get("evidence", "") or "", difficulty=r.get("difficulty", "") or "",
        ))
    return out


def _geoquery(records: list, path: Path, root: Path, split: str | None) -> list[Example]:
    """text2sql-data: substitute each sentence's variables into its text and the first gold SQL."""
    dbs = sorted(root.glob("*.sqlite")) if root.is_dir() else []
    db_path = root if root.suffix == ".sqlite" else (dbs[0] if len(dbs) == 1 else None)
    if db_path is None:
        raise InputError(f"expected one .sqlite file beside {str(path)!r} or as --db-root")
    out = []
    for qi, r in enumerate(records):
        sql = r["sql"][0]
        for si, s in enumerate(r["sentences"]):
            if split and s.get("question-split") != split:
                continue
            text, gold = s["text"], sql
            # longest names first so that e.g. city_name10 is not clobbered by city_name1
            for name in sorted(s.get("variables", {}), key=len, reverse=True):
                text = text.replace(name, s["variables"][name])
                gold = gold.replace(name, s["variables"][name])
            out.append(Example(question_id=f"{qi}-{si}", db_id=db_path.stem, question=text,
                               gold_sql=gold.strip().rstrip(";").strip(), db_path=db_path,
                               difficulty=s.get("question-split", "")))
    return out


def select(examples: list[Example], *, limit: int | None = None, dbs: list[str] | None = None,
           seed: int | None = None, nested: bool = False) -> list[Example]:
    """Filter by database, then take `limit` examples: a seeded sample if `seed` is given, else the first.

    `nested=True` draws the sample as the first `limit` of one seeded shuffle, so a smaller sample is a
    prefix of a larger one with the same seed (an eval extended from 30 to 150 questions keeps its first
    30 answers). `random.sample` does not promise that, which is why it is a separate mode.
    """
    chosen = [e for e in examples if not dbs or e.db_id in dbs]
    if limit is not None and limit < len(chosen):
        if seed is None:
            chosen = chosen[:limit]
        elif nested:
            order = list(range(len(chosen)))
            random.Random(seed).shuffle(order)
            chosen = [chosen[i] for i in order[:limit]]
        else:
            chosen = random.Random(seed).sample(chosen, limit)
    return chosen

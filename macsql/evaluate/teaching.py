"""What an eval run is taught besides the stored knowledge, and the record that says so in run.json.

    --examples FILE              question/SQL pairs (JSON or CSV; a BIRD or Spider data file gives each
                                 database the pairs with its db_id), as `macsql ask --examples` takes them
    --examples-from-split SPLIT  GeoQuery: the question/gold SQL pairs of another question-split (train)
                                 while `--split` (test, dev) is evaluated
    --half first|second          each database's questions in two halves (a seeded hash of question_id):
                                 this half is evaluated and the other half's pairs are the examples; the
                                 two runs together answer every question once
    --descriptions FILE          descriptions for the run (a BIRD description folder, a tables.json with
                                 column_descriptions, a knowledge file)
    --no-descriptions            no descriptions at all: BIRD's database_description texts are left out too

The pairs of a split or a half are written into the run folder as `examples-<sha256, 12>.json` and given to
the pipeline as its `examples_file`: the folder shows exactly which pairs the model could see, and another
set of pairs is another file name, so one run never mixes two. run.json records the source
(`examples_source`, `descriptions_source`: kind, file, sha256, split or half, pairs per database); resuming
with another source is refused like any other change of config.

No question is shown its own answer: eval leaves out of the prompt every example whose question is the one
being answered, in any case, spacing or punctuation (runner.EVAL_OPTIONS). A half never holds the evaluated
question; GeoQuery's question split does share queries between splits (the same SQL under other wordings,
the split's design), so the report counts the questions shown an example with their own gold SQL
(`examples_same_sql`), for a reader to weigh.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from macsql.errors import InputError
from macsql.evaluate.datasets import Example

HALVES = ("first", "second")
# The halves are drawn with this seed (recorded in run.json): a fixed one, so that "first" names the same
# questions in every run, whatever --seed samples.
HALF_SEED = 0


# ------------------------------------------------------------------------------------------- halves
def _half_key(e: Example, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{e.db_id}:{e.question_id}".encode()).hexdigest()


def split_halves(examples: Sequence[Example], seed: int = HALF_SEED) -> dict[str, list[Example]]:
    """{"first": [...], "second": [...]}: each database's questions ordered by a seeded hash of their
    question_id, the first ceil(n/2) in the first half. A question's half depends only on the ids of its
    database's questions, not on their order in the file; each half keeps the file's order."""
    by_db: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        by_db[e.db_id].append(e)
    first = set()
    for questions in by_db.values():
        ordered = sorted(questions, key=lambda e: (_half_key(e, seed), e.question_id))
        first.update((e.db_id, e.question_id) for e in ordered[:(len(ordered) + 1) // 2])
    return {"first": [e for e in examples if (e.db_id, e.question_id) in first],
            "second": [e for e in examples if (e.db_id, e.question_id) not in first]}


def other_half(half: str) -> str:
    return HALVES[1 - HALVES.index(half)]


# --------------------------------------------------------------------------------------------- pairs
def pairs_of(examples: Sequence[Example]) -> tuple[list[dict], int]:
    """The question/gold SQL pairs of benchmark questions, as knowledge.read_source reads a pairs file (with
    db_id, so each database gets its own), and how many were left out because their SQL is not one
    read-only statement that parses (one such pair would refuse the whole file)."""
    from macsql.knowledge import sql_problem

    pairs, dropped = [], 0
    for e in examples:
        if not e.question.strip() or sql_problem(e.gold_sql):
            dropped += 1
            continue
        pairs.append({"id": e.question_id, "db_id": e.db_id, "question": e.question, "sql": e.gold_sql,
                      "evidence": e.evidence})
    return pairs, dropped


def source_sha256(path: str | Path) -> str:
    """A file's sha256, or a folder's: the sha256 of its files' names and hashes (a BIRD description folder)."""
    p = Path(path)
    if not p.is_dir():
        return hashlib.sha256(p.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file():
            h.update(f"{f.name}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _folded_sql(sql: str) -> str:
    return " ".join(sql.strip().rstrip(";").split()).lower()


# ------------------------------------------------------------------------------------------ the plan
@dataclass
class Teaching:
    """The pipeline options a run is taught with, where they came from, and the pairs to write (for a split
    or a half) before any question is asked."""

    options: dict = field(default_factory=dict)  # examples_file, descriptions_file, use_descriptions=False
    examples_source: dict | None = None
    descriptions_source: dict | None = None
    per_database: dict = field(default_factory=dict)  # db_id -> the pairs it may be shown
    pairs: list[dict] = field(default_factory=list)
    pairs_text: str = ""

    def config(self) -> dict:
        """The keys run.json records: the sources (a resumed run must match them) and the pairs per
        database (which, for a user's file, depend on the databases the sample holds, which may grow)."""
        return {"examples_source": self.examples_source, "descriptions_source": self.descriptions_source,
                "examples_per_database": self.per_database or None}

    def write(self) -> None:
        """Write the pairs file of a split or a half (named by its content: never another run's)."""
        if not self.pairs_text:
            return
        from macsql.evaluate.run import write_atomic

        path = Path(self.options["examples_file"])
        if not path.is_file() or path.read_text(encoding="utf-8") != self.pairs_text:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, self.pairs_text)

    def same_sql_ids(self, records: dict[str, dict]) -> set[str] | None:
        """The answered questions that were shown an example whose SQL is their own gold SQL (None when the
        pairs are a user's file, whose ids do not say which pair was shown)."""
        if not self.pairs:
            return None
        sql = {(p["db_id"], p["id"]): p["sql"] for p in self.pairs}
        same = set()
        for qid, rec in records.items():
            shown = [i for t in rec.get("trace") or [] if t.get("agent") == "knowledge" for i in t.get("examples") or []]
            gold = _folded_sql(rec.get("gold_sql") or "")
            if any(_folded_sql(sql.get((rec.get("db_id"), i), "")) == gold for i in shown):
                same.add(qid)
        return same


def plan_teaching(*, data, db_root, fmt: str, split, dbs: Sequence[str], out, examples_file=None,
                  from_split=None, half=None, descriptions_file=None, no_descriptions: bool = False) -> Teaching:
    """The run's examples and descriptions from the eval options (InputError, before any model loads, for a
    combination that cannot work)."""
    from macsql.evaluate.datasets import load_examples

    given = [name for name, value in (("--examples", examples_file), ("--examples-from-split", from_split),
                                      ("--half", half)) if value]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} are two sources of examples; pass one of --examples FILE, "
                         "--examples-from-split SPLIT or --half first|second")
    if descriptions_file and no_descriptions:
        raise InputError("--descriptions and --no-descriptions contradict each other; pass one of them")
    if half is not None and half not in HALVES:
        raise InputError(f"--half must be one of {', '.join(HALVES)}, got {half!r}")
    out_dir = Path(out)
    taught = Teaching()
    if descriptions_file:
        path = Path(descriptions_file).resolve()
        taught.options["descriptions_file"] = str(path)
        taught.descriptions_source = {"kind": "file", "path": str(path), "sha256": source_sha256(path)}
    elif no_descriptions:
        taught.options["use_descriptions"] = False
        taught.descriptions_source = {"kind": "none"}
    if examples_file:
        path = Path(examples_file).resolve()
        taught.options["examples_file"] = str(path)
        taught.examples_source = {"kind": "file", "path": str(path), "sha256": source_sha256(path)}
        return taught
    if not (from_split or half):
        return taught
    if from_split:
        if fmt != "geoquery":
            raise InputError(f"--examples-from-split takes a question-split of a GeoQuery (text2sql-data) file; "
                             f"{data} is {fmt}: pass --examples FILE or --half first|second")
        if from_split == split:
            raise InputError(f"--examples-from-split {from_split} is the split being evaluated (--split "
                             f"{split}); take the examples from another split, e.g. --examples-from-split train "
                             "--split test")
        pool = load_examples(data, db_root, fmt=fmt, split=from_split)
        if not pool:
            found = sorted({e.difficulty for e in load_examples(data, db_root, fmt=fmt)} - {""})
            raise InputError(f"no questions in split {from_split!r} of {data}; its splits: {', '.join(found)}")
        source = {"kind": "split", "split": from_split}
    else:
        everything = load_examples(data, db_root, fmt=fmt, split=split)
        pool = split_halves(everything)[other_half(half)]
        source = {"kind": "half", "half": half, "examples_half": other_half(half), "seed": HALF_SEED}
    pool = [e for e in pool if not dbs or e.db_id in dbs]
    pairs, dropped = pairs_of(pool)
    if not pairs:
        raise InputError(f"no question/SQL pairs to show as examples ({source['kind']} "
                         f"{source.get('split') or source.get('examples_half')} of {data}"
                         f"{', databases ' + ', '.join(dbs) if dbs else ''})")
    text = json.dumps(pairs, indent=1, ensure_ascii=False) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = (out_dir / f"examples-{digest[:12]}.json").resolve()
    taught.options["examples_file"] = str(path)
    taught.pairs, taught.pairs_text = pairs, text
    taught.examples_source = {**source, "path": str(path), "sha256": digest, "pairs": len(pairs),
                              "dropped": dropped}
    taught.per_database = dict(sorted(Counter(p["db_id"] for p in pairs).items()))
    return taught


def check_teaching(taught: Teaching, examples: Sequence[Example]) -> None:
    """Read the run's files for every database of the sample, before any model loads: a file that is
    malformed, or holds nothing for any of these databases, is one InputError now rather than an error on
    every question. Records the pairs each database got from a user's file."""
    from macsql.knowledge import read_one_off
    from macsql.schema import introspect

    # pairs written here need no check: they were checked as they were made (and are not written yet)
    opts = {k: taught.options[k] for k in ("examples_file", "descriptions_file")
            if k in taught.options and not (k == "examples_file" and taught.pairs_text)}
    if not opts:
        return
    got_examples, got_descriptions = {}, set()
    for db_id, db_path in sorted({(e.db_id, str(e.db_path)) for e in examples}):
        found = read_one_off(introspect(db_path), strict=False, **opts)
        if found.examples:
            got_examples[db_id] = len(found.examples)
        if found.descriptions:
            got_descriptions.add(db_id)
    ids = ", ".join(sorted({e.db_id for e in examples})[:8])
    if "examples_file" in opts and not got_examples:
        raise InputError(f"--examples {opts['examples_file']} holds no question/SQL pairs for the databases "
                         f"evaluated ({ids}); pairs with a db_id go to the database of that name")
    if "descriptions_file" in opts and not got_descriptions:
        raise InputError(f"--descriptions {opts['descriptions_file']} holds no descriptions for the databases "
                         f"evaluated ({ids})")
    if "examples_file" in opts:
        taught.per_database = got_examples

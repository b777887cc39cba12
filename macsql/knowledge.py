"""What a person taught macsql about one database: descriptions, a glossary and approved question/SQL examples.

Real databases have abbreviated columns (`pop`, `st_cd`) and business terms that are nowhere in the schema
("a major city has over 150,000 people"), and their users know questions with the right SQL. That knowledge
is kept per database in a JSON file a person can read and edit, under the cache folder:

    $MACSQL_CACHE/knowledge/<db stem>-<sha256 of the resolved path, 12>-<schema hash, 12>.json

The key holds the database's resolved path AND a hash of its schema (tables and views, their columns and
types, keys; not the data, not descriptions): a different file put at the same path, or a migration that
renames a column, starts from no knowledge instead of stale knowledge (an example's SQL may no longer run).
The knowledge of the earlier schema stays on disk; `macsql teach list` names it, and `macsql teach import
--db PATH OLD.json --by NAME` carries it over, checking every example again on the new database. Data
changes keep the knowledge: its descriptions and terms still hold.

The file (JSON, `indent=2`; every entry carries who approved it and when, UTC):

    {"format": "macsql-knowledge", "version": 1,
     "database": {"path": "/data/geo.sqlite", "schema_sha256": "..."},
     "descriptions": {"city": {"description": "US cities", ...},
                      "city.pop": {"description": "population", "value_description": "people", ...}},
     "terms": [{"id": "t1", "term": "major city", "meaning": "city.pop > 150000",
                "approved_by": "ana", "approved_at": "2026-12-07T12:00:00Z"}],
     "examples": [{"id": "e1", "question": "How many major cities are there?",
                   "sql": "SELECT COUNT(*) FROM city WHERE pop > 150000", "evidence": "",
                   "approved_by": "ana", "approved_at": "2026-12-07T12:00:00Z"}]}

Only a person adds knowledge: `add_example(..., approved_by=NAME)` refuses an empty approver, and nothing in
macsql stores the model's own answers (an assistant that learns from its unreviewed output poisons its own
memory). An example is checked before it is stored: its SQL must parse as one read-only statement, run on
the database through the one executor and return rows that are not all NULL.

How the agents use it (macsql.graph, agents/decomposer.py): descriptions are merged into the schema's
column descriptions, so they show in the rendered schema as BIRD's do; the glossary terms whose words all
occur in the question, and the `Settings.examples` approved examples most like the question, are shown in
the Decomposer's prompts after the schema text, so that the schema prefix stays the same for every question
on a database. Examples are ranked by Okapi BM25 over the questions' words (written here, a few lines of
the standard library): unlike a plain word-overlap (Jaccard) score it weighs a rare word ("horsepower",
"capital") above the words every question shares ("how", "many", "the"), which on short questions
otherwise decide the ranking. `use_descriptions=False` shows no descriptions at all, BIRD's own included
(eval's descriptions-off runs).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from macsql.cache import cache_root
from macsql.errors import InputError, did_you_mean
from macsql.schema import Schema, introspect
from macsql.sqlexec import DEFAULT_TIMEOUT_S

FORMAT = "macsql-knowledge"
VERSION = 1
MAX_QUESTION_CHARS = 1000
MAX_TEXT_CHARS = 2000  # a description or a term's meaning
MAX_NAME_CHARS = 100  # an approver's name
ONE_OFF = "(command line)"  # the approver of examples and descriptions given for one run, never stored

# BM25's usual constants: term-frequency saturation and length normalisation.
BM25_K1 = 1.5
BM25_B = 0.75
# Words too common in questions to say which example is alike (BM25's IDF weighs the rest).
_STOPWORDS = frozenset("""
a an the of in on at to for by with from and or is are was were be been do does did what which who whom
whose me my our your it its this that these those there their please
""".split())


class NotForThisDatabase(InputError):
    """A file that holds knowledge, none of it for this database (pairs or a tables.json entry with other
    db_ids, another database's description folder): one run over many databases passes over it."""


# --------------------------------------------------------------------------------------------- the data
@dataclass
class Knowledge:
    """One database's descriptions ("table" or "table.column" -> entry), terms and examples."""

    descriptions: dict[str, dict] = field(default_factory=dict)
    terms: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    database: dict = field(default_factory=dict)  # {"path", "schema_sha256"}: whose knowledge this is

    @property
    def empty(self) -> bool:
        return not (self.descriptions or self.terms or self.examples)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "database": self.database,
                "descriptions": self.descriptions, "terms": self.terms, "examples": self.examples}

    @classmethod
    def from_dict(cls, data, *, where: str = "the knowledge file") -> Knowledge:
        """A knowledge file's object, its shape checked (InputError naming `where` and the first problem)."""
        def bad(what: str) -> InputError:
            return InputError(f"{where}: {what}; fix the file or remove it (`macsql teach list --db PATH` "
                              "names it)")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f'not a macsql knowledge file (expected an object with "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise bad(f"version {data.get('version')!r} is not {VERSION}")
        descriptions = data.get("descriptions") or {}
        terms, examples = data.get("terms") or [], data.get("examples") or []
        if not isinstance(descriptions, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("description", ""), str)
                and isinstance(v.get("value_description", ""), str) for k, v in descriptions.items()):
            raise bad('"descriptions" must map "table" or "table.column" to {"description": text, ...}')
        if not isinstance(terms, list) or not all(
                isinstance(t, dict) and _texts(t, "id", "term", "meaning") for t in terms):
            raise bad('"terms" must be a list of {"id", "term", "meaning", "approved_by", "approved_at"}')
        if not isinstance(examples, list) or not all(
                isinstance(e, dict) and _texts(e, "id", "question", "sql") for e in examples):
            raise bad('"examples" must be a list of {"id", "question", "sql", "approved_by", "approved_at"}')
        return cls(descriptions=dict(descriptions), terms=list(terms), examples=list(examples),
                   database=dict(data.get("database") or {}))

    def merged(self, other: Knowledge) -> Knowledge:
        """This knowledge with `other`'s added: its descriptions win, its terms and examples come after."""
        return Knowledge(descriptions={**self.descriptions, **other.descriptions},
                         terms=self.terms + other.terms, examples=self.examples + other.examples,
                         database=self.database)


def _texts(entry: dict, *keys: str) -> bool:
    return all(isinstance(entry.get(k), str) and entry[k].strip() for k in keys)


def now() -> str:
    """An approval's time: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ where it is kept
def schema_sha256(schema: Schema) -> str:
    """The hash of a schema's shape (tables, views, columns, types, keys), which knowledge is keyed by."""
    shape = [[t.name, t.kind, [[c.name, c.type] for c in t.columns], t.primary_key,
              [[fk.column, fk.ref_table, fk.ref_column] for fk in t.foreign_keys]]
             for t in sorted(schema.tables, key=lambda t: t.name.lower())]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()


def knowledge_dir() -> Path:
    return cache_root() / "knowledge"


def _path_key(db_path: str | Path) -> tuple[Path | str, str]:
    """(where the database lives, the stem of its knowledge files): a SQLite file's resolved path; another
    engine's `Database.location` (a file's or folder's resolved path, a URL without its password)."""
    from macsql.engines import engine_of, open_database

    if engine_of(db_path) == "sqlite":
        path = Path(db_path).resolve()
        return path, f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    database = open_database(db_path)
    return database.location, f"{database.name}-{hashlib.sha256(database.location.encode()).hexdigest()[:12]}"


def _schema_of(db_path: str | Path) -> Schema:
    from macsql.engines import open_database

    return introspect(open_database(db_path))


def knowledge_file(db_path: str | Path, schema: Schema) -> Path:
    """Where the knowledge of this database (its resolved path and its schema's shape) is kept."""
    _, key = _path_key(db_path)
    return knowledge_dir() / f"{key}-{schema_sha256(schema)[:12]}.json"


def earlier_files(db_path: str | Path, schema: Schema) -> list[Path]:
    """Knowledge kept for the same path under another schema (before a migration, or another file)."""
    _, key = _path_key(db_path)
    current = knowledge_file(db_path, schema)
    return sorted(p for p in knowledge_dir().glob(f"{key}-*.json") if p != current)


def read_knowledge(path: str | Path) -> Knowledge:
    """A knowledge file (InputError, one line, for one that is unreadable or malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{str(path)!r} is not a readable knowledge file ({exc}); fix or remove it") from None
    return Knowledge.from_dict(data, where=repr(str(path)))


def load(db_path: str | Path, schema: Schema | None = None) -> Knowledge:
    """The stored knowledge of a database (empty when nothing was taught for this path and schema)."""
    schema = schema if schema is not None else _schema_of(db_path)
    path = knowledge_file(db_path, schema)
    return read_knowledge(path) if path.is_file() else Knowledge()


def save(knowledge: Knowledge, db_path: str | Path, schema: Schema) -> Path:
    """Write the database's knowledge file (replaced atomically: a reader never sees half a file)."""
    resolved, _ = _path_key(db_path)
    knowledge.database = {"path": str(resolved), "schema_sha256": schema_sha256(schema)}
    path = knowledge_file(db_path, schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(knowledge.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# -------------------------------------------------------------------------------------------- checks
def check_approver(approved_by: str | None) -> str:
    """The approver's name, or InputError: nothing is stored without the person who approved it."""
    name = " ".join(str(approved_by or "").split())
    if not name:
        raise InputError("refused: no approver; knowledge is stored only with the name of the person who "
                         "approved it (approved_by, `--by NAME`)")
    if len(name) > MAX_NAME_CHARS:
        raise InputError(f"refused: the approver's name is {len(name)} characters; at most {MAX_NAME_CHARS}")
    return name


def sql_problem(sql: str, dialect: str = "sqlite") -> str | None:
    """Why `sql` is not one read-only statement that parses (the executor's statement check, then sqlglot's
    parse, both in the engine's `dialect`), or None."""
    from macsql.sql import parse_error, statement_error

    problem = statement_error(sql or "", dialect)
    if problem:
        return f"the SQL is not one read-only query: {problem}"
    problem = parse_error(sql, dialect)
    return f"the SQL does not parse: {problem}" if problem else None


def example_problem(db_path: str | Path, question: str, sql: str, *,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Why an example may not be stored, or None: its question must be there, its SQL must parse as one
    read-only statement, run on the database (the one executor) and return rows that are not all NULL."""
    from macsql.engines import engine_of, open_database

    if not (question or "").strip():
        return "the question is empty"
    if len(question) > MAX_QUESTION_CHARS:
        return f"the question is {len(question)} characters; at most {MAX_QUESTION_CHARS}"
    problem = sql_problem(sql, engine_of(db_path))
    if problem:
        return problem
    result = open_database(db_path).execute(sql, timeout_s=timeout_s, max_rows=1000)
    if result.error:
        return f"the SQL fails on the database: {result.error}"
    if not result.rows:
        return "the SQL returns no rows"
    if all(v is None for row in result.rows for v in row):
        return "the SQL returns only NULL"
    return None


def _text(value: str, what: str) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise InputError(f"refused: the {what} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"refused: the {what} is {len(text)} characters; at most {MAX_TEXT_CHARS}")
    return text


def _next_id(entries: list[dict], prefix: str) -> str:
    numbers = [int(e["id"][1:]) for e in entries if re.fullmatch(rf"{prefix}\d+", str(e.get("id", "")))]
    return f"{prefix}{max(numbers, default=0) + 1}"


def _target(schema: Schema, target: str) -> str:
    """"table" or "table.column" as the schema spells it; InputError naming the closest for an unknown one."""
    name, _, column = target.strip().partition(".")
    table = schema.table(name)
    if table is None:
        raise InputError(f"no table {name!r} in the database{did_you_mean(name, [t.name for t in schema.tables])}")
    if not column:
        return table.name
    col = table.column(column)
    if col is None:
        raise InputError(f"no column {column!r} in table {table.name!r}"
                         f"{did_you_mean(column, [c.name for c in table.columns])}")
    return f"{table.name}.{col.name}"


def _same_question(a: str, b: str) -> bool:
    from macsql.values import normalize

    return normalize(a) == normalize(b)


# ------------------------------------------------------------------------------------ teaching (writes)
def _open(db_path: str | Path) -> tuple[Path | str, Schema, Knowledge]:
    from macsql.engines import check_db

    path = check_db(db_path)
    schema = _schema_of(path)
    return path, schema, load(path, schema)


def add_example(db_path: str | Path, question: str, sql: str, *, approved_by: str, evidence: str = "",
                approved_at: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Store an approved question/SQL example (checked first: see `example_problem`); the stored entry.
    InputError, one line, when it is refused: no approver, a question stored already, or bad SQL."""
    name = check_approver(approved_by)
    path, schema, known = _open(db_path)
    problem = example_problem(path, question, sql, timeout_s=timeout_s)
    if problem:
        raise InputError(f"refused: {problem}")
    for old in known.examples:
        if _same_question(old["question"], question):
            raise InputError(f"refused: example {old['id']} has this question already; remove it first "
                             f"(macsql teach remove --db PATH {old['id']})")
    entry = {"id": _next_id(known.examples, "e"), "question": " ".join(question.split()), "sql": sql.strip(),
             "evidence": " ".join((evidence or "").split()), "approved_by": name,
             "approved_at": approved_at or now()}
    known.examples.append(entry)
    save(known, path, schema)
    return entry


def add_term(db_path: str | Path, term: str, meaning: str, *, approved_by: str,
             approved_at: str | None = None) -> dict:
    """Store a glossary term ("major city" -> "city.pop > 150000"); the stored entry."""
    name = check_approver(approved_by)
    term, meaning = _text(term, "term"), _text(meaning, "meaning")
    path, schema, known = _open(db_path)
    for old in known.terms:
        if _same_question(old["term"], term):
            raise InputError(f"refused: term {old['id']} is {term!r} already; remove it first "
                             f"(macsql teach remove --db PATH {old['id']})")
    entry = {"id": _next_id(known.terms, "t"), "term": term, "meaning": meaning, "approved_by": name,
             "approved_at": approved_at or now()}
    known.terms.append(entry)
    save(known, path, schema)
    return entry


def describe(db_path: str | Path, target: str, text: str, *, approved_by: str, values: str = "",
             approved_at: str | None = None) -> tuple[str, dict]:
    """Store (or replace) the description of a table or of a `table.column`; (target, entry). `values`:
    what the column's values mean (BIRD's value_description: "1 = yes, 0 = no")."""
    name = check_approver(approved_by)
    text = _text(text, "description")
    path, schema, known = _open(db_path)
    key = _target(schema, target)
    entry = {"description": text, "approved_by": name, "approved_at": approved_at or now()}
    if values and values.strip():
        entry["value_description"] = _text(values, "value description")
    known.descriptions[key] = entry
    save(known, path, schema)
    return key, entry


def remove(db_path: str | Path, entry_id: str) -> str:
    """Remove an example (e3), a term (t1) or a description (its table or table.column); what was removed."""
    from macsql.engines import open_database

    path, schema, known = _open(db_path)
    wanted = entry_id.strip()
    for kind, entries in (("example", known.examples), ("term", known.terms)):
        for entry in entries:
            if entry["id"] == wanted:
                entries.remove(entry)
                save(known, path, schema)
                return f"{kind} {wanted}"
    for key in known.descriptions:
        if key.lower() == wanted.lower():
            del known.descriptions[key]
            save(known, path, schema)
            return f"the description of {key}"
    ids = [e["id"] for e in known.examples + known.terms] + list(known.descriptions)
    shown = open_database(path).label  # a URL without its password
    raise InputError(f"nothing with id {wanted!r} in the knowledge of {shown!r}{did_you_mean(wanted, ids)}; "
                     "`macsql teach list --db PATH` shows the ids")


@dataclass
class Imported:
    descriptions: int = 0
    terms: int = 0
    examples: int = 0
    skipped: list[str] = field(default_factory=list)  # already stored: one line each
    refused: list[str] = field(default_factory=list)  # failed a check: one line each

    def summary(self) -> str:
        return (f"{self.descriptions} description(s), {self.terms} term(s), {self.examples} example(s)"
                + (f"; {len(self.skipped)} already stored" if self.skipped else "")
                + (f"; {len(self.refused)} refused" if self.refused else ""))


def import_file(db_path: str | Path, source: str | Path, *, approved_by: str,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> Imported:
    """Store what `source` holds (see `read_source`), each entry checked as if added alone: an example that
    fails a check is refused (listed in `Imported.refused`) and the rest are stored. `approved_by` is the
    person who vouches for the import; an entry that names its own approver (a knowledge file, a pairs file
    with an approved_by column) keeps it."""
    name = check_approver(approved_by)
    path, schema, known = _open(db_path)
    found = read_source(source, schema)
    out = Imported()
    stamp = now()
    for key, entry in found.descriptions.items():
        try:
            target = _target(schema, key)
        except InputError as exc:
            out.refused.append(f"description {key}: {exc}")
            continue
        known.descriptions[target] = {**entry, "approved_by": entry.get("approved_by") or name,
                                      "approved_at": entry.get("approved_at") or stamp}
        out.descriptions += 1
    for term in found.terms:
        if any(_same_question(old["term"], term["term"]) for old in known.terms):
            out.skipped.append(f"term {term['term']!r}")
            continue
        known.terms.append({"id": _next_id(known.terms, "t"), "term": term["term"], "meaning": term["meaning"],
                            "approved_by": term.get("approved_by") or name,
                            "approved_at": term.get("approved_at") or stamp})
        out.terms += 1
    for ex in found.examples:
        where = ex.get("id") or "?"
        if any(_same_question(old["question"], ex["question"]) for old in known.examples):
            out.skipped.append(f"{where}: {ex['question'][:80]!r}")
            continue
        problem = example_problem(path, ex["question"], ex["sql"], timeout_s=timeout_s)
        if problem:
            out.refused.append(f"{where}: {problem}")
            continue
        known.examples.append({"id": _next_id(known.examples, "e"), "question": " ".join(ex["question"].split()),
                               "sql": ex["sql"].strip(), "evidence": ex.get("evidence", ""),
                               "approved_by": ex.get("approved_by") or name,
                               "approved_at": ex.get("approved_at") or stamp})
        out.examples += 1
    if out.descriptions or out.terms or out.examples:
        save(known, path, schema)
    return out


# -------------------------------------------------------------------------------------------- importers
def read_source(source: str | Path, schema: Schema) -> Knowledge:
    """The entries a file holds, unchecked and without approvers of their own unless it names them:
    - a BIRD `database_description/` folder (one `<table>.csv` per table), read by schema.py's reader;
    - a Spider-style `tables.json` (a list, or one entry) whose entry for this database (its `db_id` is the
      database file's stem, or the file has one entry) has `column_descriptions` (KaggleDBQA): a text, or a
      [table index, text] pair, per entry of `column_names`; `table_descriptions` likewise per table;
    - question/SQL pairs: a JSON list of objects with `question` and `sql` (or Spider's `query`, BIRD's
      `SQL`; `evidence`, `approved_by`, `approved_at` optional; with `db_id`, only this database's), or a
      CSV file with those columns;
    - a knowledge file (the format above), e.g. one kept for an earlier schema.
    """
    path = Path(source)
    if path.is_dir():
        return _from_bird_folder(path, schema)
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist; pass a description folder, a tables.json, a JSON or "
                         "CSV file of question/SQL pairs, or a knowledge file")
    if path.suffix.lower() == ".csv":
        return _pairs(_csv_rows(path), schema, str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{str(path)!r} is neither JSON nor CSV ({exc}); pass a description folder, a "
                         "tables.json, question/SQL pairs (.json or .csv) or a knowledge file") from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return Knowledge.from_dict(data, where=repr(str(path)))
    entries = [data] if isinstance(data, dict) else data
    if isinstance(entries, list) and entries and all(isinstance(e, dict) for e in entries):
        if "column_names" in entries[0] or "column_names_original" in entries[0]:
            return _from_tables_json(entries, schema, str(path))
        return _pairs(entries, schema, str(path))
    raise InputError(f"{str(path)!r} holds no question/SQL pairs, tables.json entries or knowledge")


def _csv_rows(path: Path) -> list[dict]:
    from macsql.schema import _read_csv_rows  # the one CSV reader (encodings BIRD's files come in)

    return [{(k or "").strip(): (v or "") for k, v in row.items()} for row in _read_csv_rows(path)]


def _from_bird_folder(folder: Path, schema: Schema) -> Knowledge:
    """Column descriptions from BIRD's CSV files, read by schema.py's own reader onto a blank copy."""
    from macsql.schema import _add_descriptions

    blank = Schema.from_dict(schema.to_dict())
    for table in blank.tables:
        for col in table.columns:
            col.description = col.value_description = ""
    _add_descriptions(blank, folder)
    out = Knowledge()
    for table in blank.tables:
        for col in table.columns:
            if col.description or col.value_description:
                entry = {"description": col.description or col.name}
                if col.value_description:
                    entry["value_description"] = col.value_description
                out.descriptions[f"{table.name}.{col.name}"] = entry
    if not out.descriptions:
        raise NotForThisDatabase(f"no descriptions in {str(folder)!r} for this database's tables: expected BIRD's "
                         "<table>.csv files with original_column_name and column_description columns")
    return out


def _from_tables_json(entries: list[dict], schema: Schema, where: str) -> Knowledge:
    ids = [str(e.get("db_id")) for e in entries]
    mine = [e for e in entries if e.get("db_id") == schema.db_id] or (entries if len(entries) == 1 else [])
    if not mine:
        raise NotForThisDatabase(f"no entry with db_id {schema.db_id!r} in {where}"
                                 f"{did_you_mean(schema.db_id, ids)}")
    entry = mine[0]
    tables = entry.get("table_names_original") or entry.get("table_names") or []
    columns = entry.get("column_names_original") or entry.get("column_names") or []
    out = Knowledge()

    def text_of(item) -> str:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            item = item[1]
        return " ".join(str(item or "").split())

    for i, item in enumerate(entry.get("column_descriptions") or []):
        if i >= len(columns) or columns[i][0] < 0 or columns[i][0] >= len(tables):
            continue
        table = schema.table(tables[columns[i][0]])
        col = table.column(columns[i][1]) if table is not None else None
        text = text_of(item)
        if col is not None and text and text.lower() != col.name.lower():
            out.descriptions[f"{table.name}.{col.name}"] = {"description": text}
    for i, item in enumerate(entry.get("table_descriptions") or []):
        table = schema.table(tables[i]) if i < len(tables) else None
        if table is not None and text_of(item):
            out.descriptions[table.name] = {"description": text_of(item)}
    if not out.descriptions:
        raise InputError(f"the entry for {entry.get('db_id')!r} in {where} has no column_descriptions for this "
                         "database's columns")
    return out


def _pairs(rows: list[dict], schema: Schema, where: str) -> Knowledge:
    if rows and any("db_id" in r for r in rows):
        ids = sorted({str(r.get("db_id")) for r in rows})
        rows = [r for r in rows if r.get("db_id") == schema.db_id]
        if not rows:
            raise NotForThisDatabase(f"no pairs for database {schema.db_id!r} in {where} (db_id: "
                             f"{', '.join(ids[:8])}{', ...' if len(ids) > 8 else ''})")
    out = Knowledge()
    for i, row in enumerate(rows, 1):
        sql = next((row[k] for k in ("sql", "SQL", "query") if isinstance(row.get(k), str)), None)
        question = row.get("question")
        if not isinstance(question, str) or sql is None:
            raise InputError(f"{where}: pair {i} has no question and sql (or query, SQL); expected a JSON list "
                             "or CSV of question/SQL pairs")
        entry = {"id": str(row.get("id") or f"pair {i}"), "question": question, "sql": sql,
                 "evidence": " ".join(str(row.get("evidence") or "").split())}
        for key in ("approved_by", "approved_at"):
            if isinstance(row.get(key), str) and row[key].strip():
                entry[key] = row[key].strip()
        out.examples.append(entry)
    if not out.examples:
        raise InputError(f"{where} holds no question/SQL pairs")
    return out


# The one-off files read so far, by what they hold (files' paths, sizes and times, the schema): every question
# of an eval run reads the same files, and parsing hundreds of examples' SQL per question would cost more
# than some model calls. Bounded: a long-lived server asked with many files keeps only the latest.
_ONE_OFF_CACHE: dict[tuple, Knowledge] = {}
_ONE_OFF_CACHE_SIZE = 32


def _stamp(path: str) -> tuple:
    """What says a file (or a description folder) changed: its path, and each file's size and time."""
    if not path:
        return ()
    p = Path(path)
    try:
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        return (str(p.resolve()), *((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    except OSError:
        return (str(p), None)  # read_source says what is wrong with it


def read_one_off(schema: Schema, *, examples_file: str = "", descriptions_file: str = "",
                 strict: bool = True, dialect: str = "sqlite") -> Knowledge:
    """The examples and descriptions given for one run (`ask/eval --examples/--descriptions`), never stored:
    the person who passes them approves them, and each example's SQL must still parse as one read-only query
    (not run: that would cost every question a query per example). `strict=False`: a file with nothing for
    this database (pairs of other db_ids, another database's description folder) gives it nothing, as it
    must in a run over many databases; `strict` (`ask`, and eval's check before the model loads) refuses it.
    `dialect`: the engine's (`engine_of(db)`), which the SQL is read in. The result is shared between calls:
    never change it."""
    key = (_stamp(examples_file), _stamp(descriptions_file), schema.db_id, schema_sha256(schema), strict, dialect)
    if key in _ONE_OFF_CACHE:
        return _ONE_OFF_CACHE[key]
    out = Knowledge()
    if descriptions_file:
        out.descriptions = _read_for(descriptions_file, schema, strict).descriptions
    if examples_file:
        for i, ex in enumerate(_read_for(examples_file, schema, strict).examples, 1):
            problem = sql_problem(ex["sql"], dialect) or (None if ex["question"].strip() else "the question is empty")
            if problem:
                raise InputError(f"{examples_file}: example {ex.get('id') or i} refused: {problem}")
            out.examples.append({**ex, "id": ex.get("id") or f"pair {i}",
                                 "approved_by": ex.get("approved_by") or ONE_OFF})
    if len(_ONE_OFF_CACHE) >= _ONE_OFF_CACHE_SIZE:
        _ONE_OFF_CACHE.clear()
    _ONE_OFF_CACHE[key] = out
    return out


def _read_for(source: str, schema: Schema, strict: bool) -> Knowledge:
    try:
        return read_source(source, schema)
    except NotForThisDatabase:
        if strict:
            raise
        return Knowledge()


# --------------------------------------------------------------------------------------------- retrieval
def _stem(word: str) -> str:
    """A plural's singular, roughly ("cities" -> "city", "classes" -> "class"): enough for "major cities"
    to use the term "major city", and for examples to match across number."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """A question's words for matching: folded (values.normalize), common words left out, plurals singular."""
    from macsql.values import normalize

    return [_stem(w) for w in normalize(text).split() if w not in _STOPWORDS]


def similar_examples(examples: list[dict], question: str, k: int, *, exclude: Iterable[str] = ()) -> list[dict]:
    """The (at most) k examples whose questions are most like `question`, by Okapi BM25 over their words,
    the most similar first; an example that shares no word with the question is never chosen. `exclude`:
    questions whose examples must not be chosen (eval: the question being answered, compared with case,
    spacing and punctuation folded), so that no example is ever shown the answer to itself."""
    from macsql.values import normalize

    banned = {normalize(q) for q in exclude}
    pool = [e for e in examples if normalize(e["question"]) not in banned]
    if k <= 0 or not pool:
        return []
    docs = [words(e["question"]) for e in pool]
    wanted = set(words(question))
    avg = sum(len(d) for d in docs) / len(docs) or 1.0
    df = Counter(w for d in docs for w in set(d))
    n = len(docs)
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for w in wanted & tf.keys():
            idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))  # Lucene's, never negative
            score += idf * tf[w] * (BM25_K1 + 1) / (tf[w] + BM25_K1 * (1 - BM25_B + BM25_B * len(doc) / avg))
        scores.append(score)
    order = sorted(range(n), key=lambda i: -scores[i])  # stable: a tie keeps the stored order
    return [pool[i] for i in order if scores[i] > 0][:k]


def matching_terms(terms: list[dict], question: str) -> list[dict]:
    """The glossary terms whose every word occurs in the question ("major city" in "How many major cities
    are in Texas?")."""
    have = set(words(question))
    out = []
    for term in terms:
        need = set(words(term["term"]))
        if need and need <= have:
            out.append(term)
    return out


def apply_descriptions(schema: Schema, knowledge: Knowledge) -> Schema:
    """A copy of `schema` with the knowledge's column descriptions on its columns (replacing BIRD's), or
    `schema` itself when there are none (introspect's schema is cached and shared: never changed here)."""
    columns = {k.lower(): v for k, v in knowledge.descriptions.items() if "." in k}
    if not columns:
        return schema
    out = Schema.from_dict(schema.to_dict())
    for table in out.tables:
        for col in table.columns:
            entry = columns.get(f"{table.name}.{col.name}".lower())
            if entry is None:
                continue
            if entry.get("description"):
                col.description = " ".join(entry["description"].split())
            if entry.get("value_description"):
                col.value_description = " ".join(entry["value_description"].split())
    return out


def without_descriptions(schema: Schema) -> Schema:
    """A copy of `schema` with no column descriptions (BIRD's database_description texts included), or
    `schema` itself when it has none: what `use_descriptions=False` shows the agents."""
    if not any(c.description or c.value_description for t in schema.tables for c in t.columns):
        return schema
    out = Schema.from_dict(schema.to_dict())
    for table in out.tables:
        for col in table.columns:
            col.description = col.value_description = ""
    return out


def for_question(schema: Schema, db_path: str | Path, question: str, *, examples: int = 3,
                 examples_file: str = "", descriptions_file: str = "", descriptions: bool = True,
                 exclude: Iterable[str] = ()) -> tuple[Schema, dict]:
    """What the agents use for one question: the schema with the descriptions merged, and what the
    Decomposer's prompt shows after the schema ({"examples", "terms", "tables"}: {} when nothing applies).
    `descriptions=False`: no descriptions at all, neither taught ones nor the schema's own (BIRD's)."""
    from macsql.engines import engine_of

    known = load(db_path, schema)
    if examples_file or descriptions_file:
        known = known.merged(read_one_off(schema, examples_file=examples_file, descriptions_file=descriptions_file,
                                          strict=False, dialect=engine_of(db_path)))
    if not descriptions:
        schema = without_descriptions(schema)
        known = Knowledge(terms=known.terms, examples=known.examples, database=known.database)
    if known.empty:
        return schema, {}
    shown = {"examples": [{k: e.get(k, "") for k in ("id", "question", "sql", "evidence")}
                          for e in similar_examples(known.examples, question, examples, exclude=exclude)],
             "terms": [{"term": t["term"], "meaning": t["meaning"]} for t in matching_terms(known.terms, question)],
             "tables": {k: v["description"] for k, v in known.descriptions.items()
                        if "." not in k and v.get("description")}}
    return apply_descriptions(schema, known), {k: v for k, v in shown.items() if v}

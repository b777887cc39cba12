"""Value-aware schema linking: which of the database's real text values a question mentions.

Small models get filters wrong mostly on spelling and placement: 'Spain' vs 'spain', a country name asked of
the wrong table. So every text column's distinct short values are indexed once per database file (bounded
work, cached beside the schema cache), and a question's word n-grams are looked up in that index. The
matches are shown in the prompt on their columns (`-- matches in question: 'Spain'`), the Selector keeps
every matched column, and the Refiner's hints use the same index for "closest real values".

Exact matching on normalised text (case, punctuation and spacing folded) was chosen over fuzzy matching: it
is precise enough to show to a model without misleading it, and a lookup costs microseconds per n-gram
(SQLite FTS5 or rapidfuzz would add a dependency or a second on-disk index for little gain on Spider-style
questions, whose values are quoted as stored).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from macsql.schema import Schema, cache_file, introspect, quote_name
from macsql.sqlexec import DEFAULT_TIMEOUT_S, Deadline, connect_readonly

INDEX_VERSION = 1
SCAN_ROWS = 200_000  # rows read per column: bounded work on multi-million-row tables
MAX_VALUES = 20_000  # distinct values kept per column
MAX_VALUE_CHARS = 60  # longer texts are descriptions, not values a question filters on
MAX_NGRAM = 6
MAX_MATCHES = 12
MAX_COLUMNS_PER_PHRASE = 4  # a phrase found in more columns than this ('yes', 'other') says little
# Words that never make a value match on their own (a column holding 'the' or 'what' links nothing).
_STOPWORDS = frozenset("""
a an the of in on at to for by with from and or not no is are was were be been has have had do does did
what which who whom whose when where why how many much all any each every list show give find tell name
names number count total than more less most least that this these those there their its it as me my our
your per between than into over under about after before
""".split())
_TOKEN = re.compile(r"[0-9A-Za-z\u00C0-\uFFFF]+(?:['’.-][0-9A-Za-z\u00C0-\uFFFF]+)*")


def normalize(text: str) -> str:
    """Case, accents' composition, punctuation and spacing folded: 'New  York!' -> 'new york'."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return " ".join(_TOKEN.findall(text))


@dataclass(frozen=True)
class ValueMatch:
    table: str
    column: str
    value: str  # as stored in the database
    phrase: str  # the question's words it matched


class ValueIndex:
    """normalised value -> the (table, column, stored value) places it occurs."""

    def __init__(self, columns: dict[str, dict[str, list[str]]]):
        self.columns = columns  # table -> column -> distinct stored values
        self._lookup: dict[str, list[tuple[str, str, str]]] = {}
        for table, cols in columns.items():
            for column, values in cols.items():
                for value in values:
                    key = normalize(value)
                    if key and key not in _STOPWORDS and not key.isdigit():
                        self._lookup.setdefault(key, []).append((table, column, value))

    def values_of(self, table: str, column: str) -> list[str]:
        low_t, low_c = table.lower(), column.lower()
        for t, cols in self.columns.items():
            if t.lower() == low_t:
                for c, values in cols.items():
                    if c.lower() == low_c:
                        return values
        return []

    def match(self, question: str, *, limit: int = MAX_MATCHES) -> list[ValueMatch]:
        """Values the question mentions, longest phrases first; a phrase inside a longer match is skipped
        ('York' once 'New York' matched)."""
        words = normalize(question).split()
        taken = [False] * len(words)
        found: list[ValueMatch] = []
        for size in range(min(MAX_NGRAM, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                if any(taken[start:start + size]):
                    continue
                phrase = " ".join(words[start:start + size])
                places = self._lookup.get(phrase)
                if not places or len(places) > MAX_COLUMNS_PER_PHRASE:
                    continue
                if size == 1 and (len(phrase) < 2 or phrase in _STOPWORDS):
                    continue
                for table, column, value in places:
                    found.append(ValueMatch(table, column, value, phrase))
                taken[start:start + size] = [True] * size
        return found[:limit]

    def to_dict(self) -> dict:
        return {"version": INDEX_VERSION, "columns": self.columns}


_MEMORY: dict[str, ValueIndex] = {}


def value_index(db_path: str | Path, schema: Schema | None = None) -> ValueIndex:
    """The database's value index, built once per file version and cached on disk and in memory."""
    path = Path(db_path).resolve()
    disk = cache_file(path, "values")
    key = str(disk)
    if key in _MEMORY:
        return _MEMORY[key]
    index = None
    if disk.exists():
        try:
            data = json.loads(disk.read_text())
            if data.get("version") == INDEX_VERSION:
                index = ValueIndex(data["columns"])
        except (ValueError, KeyError, TypeError, OSError):
            index = None  # stale or corrupt: rebuild
    if index is None:
        index = ValueIndex(_read_values(path, schema or introspect(path)))
        try:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(".tmp")
            tmp.write_text(json.dumps(index.to_dict(), ensure_ascii=False))
            tmp.replace(disk)
        except OSError:
            pass  # a read-only cache folder still works, without the disk copy
    _MEMORY[key] = index
    return index


def _read_values(path: Path, schema: Schema) -> dict[str, dict[str, list[str]]]:
    """Distinct short text values of every column, from at most SCAN_ROWS rows of each table."""
    from macsql.schema import skips_examples

    conn = connect_readonly(path)
    # the executor's deadline: a view that never finishes is skipped (below), not waited for
    Deadline(DEFAULT_TIMEOUT_S).attach(conn)
    out: dict[str, dict[str, list[str]]] = {}
    try:
        for table in schema.tables:
            for col in table.columns:
                if skips_examples(col):
                    continue
                sql = (f"SELECT DISTINCT v FROM (SELECT {quote_name(col.name)} AS v FROM {quote_name(table.name)} "
                       f"LIMIT {SCAN_ROWS}) WHERE typeof(v) = 'text' AND length(v) BETWEEN 1 AND "
                       f"{MAX_VALUE_CHARS} LIMIT {MAX_VALUES}")
                try:
                    values = [v for (v,) in conn.execute(sql) if isinstance(v, str) and v.strip()]
                except Exception:  # noqa: BLE001 - a broken virtual table or odd type must not stop linking
                    continue
                if values:
                    out.setdefault(table.name, {})[col.name] = values
    finally:
        conn.close()
    return out


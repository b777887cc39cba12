"""Value-aware schema linking: which of the database's real text values a question mentions.

Small models get filters wrong mostly on spelling and placement: 'Spain' vs 'spain', a country name asked of
the wrong table. So every text column's distinct short values are indexed once per database file (bounded
work, cached beside the schema cache), and a question's word n-grams are looked up in that index. The
matches are shown in the prompt on their columns (`-- matches in question: 'Spain'`), the Selector keeps
every matched column, and the Refiner's hints use the same index for "closest real values".

Lookups are exact on folded text, not fuzzy scores: precise enough to show to a model without misleading
it, and microseconds per n-gram (SQLite FTS5 or rapidfuzz would add a dependency or a second on-disk index).
Both sides are folded the same way, so the variants real questions write still meet: case and accents;
possessives and plurals ("Apocalypse's", "aliens", "womens" for 'Alien', "Women's"); hyphens, slashes, dots
and underscores as word breaks or not ("blue-haired", "god/eternal", "Spider-Man" for 'Spiderman'); dates
written out ("January 1, 1990" for '1990-01-01'); quoted literals, kept even when short or a number
("tonnage 't'", "element = 'cl'"); a code's meaning in BIRD's value descriptions ("cl: chlorine": "chlorine"
finds 'cl'); and one slip of spelling in a long word ("intellegence"). Words inside a code (`TR001_2_4`)
never match alone, and a question's matches are capped (MAX_MATCHES), so the prompt cost stays bounded.
benchmarks/value_linking.py measures recall and matches per question on BIRD and Spider.
"""

from __future__ import annotations

import calendar
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from macsql.schema import Schema, cache_file, introspect
from macsql.sqlexec import DEFAULT_TIMEOUT_S, Deadline

INDEX_VERSION = 2  # 2: value descriptions kept beside the values (code meanings)
SCAN_ROWS = 200_000  # rows read per column: bounded work on multi-million-row tables
MAX_VALUES = 20_000  # distinct values kept per column
MAX_VALUE_CHARS = 60  # longer texts are descriptions, not values a question filters on
MAX_NGRAM = 6
MAX_MATCHES = 12
MAX_COLUMNS_PER_PHRASE = 4  # a phrase found in more columns than this ('yes', 'other') says little
MAX_MEANING_WORDS = 4  # a code's meaning longer than this is an explanation, not a name a question uses
FUZZY_MIN_CHARS = 5  # one letter more or less: only in words at least this long ('blonde' for 'Blond')
FUZZY_SWAP_MIN_CHARS = 8  # one letter changed or two swapped: only in longer words ('intellegence')
FUZZY_MAX_VALUES = 5_000  # spelling slips are looked for in columns this small (names, categories), not in logs
# Words that never make a value match on their own (a column holding 'the' or 'what' links nothing).
_STOPWORDS = frozenset("""
a an the of in on at to for by with from and or not no is are was were be been has have had do does did
what which who whom whose when where why how many much all any each every list show give find tell name
names number count total than more less most least that this these those there their its it as me my our
your per between than into over under about after before
""".split())
# Letters and digits (any script) joined by the marks that sit inside a word or a code.
_TOKEN = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")
_COMPOUND = re.compile(r"[^\W_]+(?:['’._/-][^\W_]+)*")
_BREAK = re.compile(r"[._/-]")
_POSSESSIVE = re.compile(r"['’]s$")
_CODE_MARK = re.compile(r"[\d_]")
_YEAR = re.compile(r"\d{4}")  # every date form has one
_PLAIN = re.compile(r"[a-z]+(?: +[a-z]+)* *| *[a-z]+(?: +[a-z]+)*")
# A quoted literal, with the column it is compared with when the text says so (BIRD evidence: "element = 'cl'").
_QUOTED = re.compile(r"""(?:(\w+)`?\s*(?:=|!=|<>)\s*)?(?<!\w)['"‘“]([^'"‘’“”\n]{1,60})['"’”](?!\w)""")


def normalize(text: str) -> str:
    """Case, accents' composition, punctuation and spacing folded: 'New  York!' -> 'new york'."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return " ".join(_TOKEN.findall(text))


# ------------------------------------------------------------------------------------------------ folding
_MONTHS = {name.lower(): i for names in (calendar.month_name, calendar.month_abbr)
           for i, name in enumerate(names) if name} | {"sept": 9}
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_DATE_FORMS = [  # (pattern, the groups' order as year, month, day)
    (re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+(\d{{4}})\b", re.I), (3, 1, 2)),  # January 1, 1990
    (re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+(\d{{4}})\b", re.I), (3, 2, 1)),  # 1st of Jan 1990
    (re.compile(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b"), (1, 2, 3)),  # 1990/1/1, 1990-1-1
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"), (3, 1, 2)),  # 1/31/1990 (US order; 31/1/1990 below)
]


def _iso_dates(text: str) -> str:
    """`text` with the dates it writes out in a common form rewritten as ISO dates (how SQLite stores them)."""
    import datetime

    if not _YEAR.search(text):
        return text

    def iso(match: re.Match, order: tuple[int, int, int]) -> str:
        year, month, day = (match.group(i) for i in order)
        month = _MONTHS.get(month.lower().rstrip("."), 0) if not month.isdigit() else int(month)
        day, year = int(day), int(year)
        if month > 12 and day <= 12:  # 31/1/1990: day first
            month, day = day, month
        try:
            return datetime.date(year, month, day).isoformat()
        except ValueError:
            return match.group(0)

    for pattern, order in _DATE_FORMS:
        text = pattern.sub(lambda m, order=order: iso(m, order), text)
    return text


def _stem(word: str) -> str:
    """A plural made singular, crudely but the same way on both sides ('aliens', 'boxes', 'cities')."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@dataclass
class _Folded:
    words: list[str]  # folded words; a compound ('blue-haired', 'TR001_2') gives one word per part
    raw: list[str]  # the same words before plurals were folded (for the stopword test)
    group: list[int]  # which compound each word came from
    code: list[bool]  # per compound: a code or an identifier (a digit, an underscore): its parts never match
    # alone, and it is never closed up ('TR001_1_8' is not 'TR001_18')

    def valid(self, start: int, end: int) -> bool:
        """A phrase may cut a compound of words ('gold' of 'gold-eyed') but not a code ('TR001' of 'TR001_2') or
        a name written as an identifier ('power' of 'power_name')."""
        g = self.group
        cuts_start = start > 0 and g[start - 1] == g[start] and self.code[g[start]]
        cuts_end = end < len(g) and g[end] == g[end - 1] and self.code[g[end]]
        return not (cuts_start or cuts_end)

    def at(self, start: int, end: int) -> _Folded:
        groups = self.group[start:end]
        return _Folded(self.words[start:end], self.raw[start:end], groups, self.code)

    def key(self, start: int, end: int, *, joined: bool = False) -> str:
        out = self.words[start]
        for i in range(start + 1, end):
            glued = joined and self.group[i] == self.group[i - 1] and not self.code[self.group[i]]
            out += ("" if glued else " ") + self.words[i]
        return out


def _fold(text: str) -> _Folded:
    """Words for lookup: case and accents folded, possessives dropped, apostrophes closed up, compounds
    broken at hyphens, dots, slashes and underscores, plurals singular."""
    text = str(text).lower()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    folded = _Folded([], [], [], [])
    for token in _COMPOUND.findall(text):
        if "'" in token or "’" in token:
            token = _POSSESSIVE.sub("", token).replace("'", "").replace("’", "")
        parts = [p for p in _BREAK.split(token) if p] if _BREAK.search(token) else [token]
        if not parts:
            continue
        gid = len(folded.code)
        folded.code.append(len(parts) > 1 and bool(_CODE_MARK.search(token)))
        for part in parts:
            folded.raw.append(part)
            folded.words.append(_stem(part))
            folded.group.append(gid)
    return folded


def _fold_apart(texts: list[str]) -> _Folded:
    """The texts folded one after another, with an empty word between them that no phrase can match across
    (the text before and after a quoted literal are not one phrase)."""
    out = _Folded([], [], [], [])
    for i, text in enumerate(texts):
        if i:
            out.words.append("")
            out.raw.append("")
            out.group.append(len(out.code))
            out.code.append(False)
        part = _fold(text)
        out.words += part.words
        out.raw += part.raw
        out.group += [g + len(out.code) for g in part.group]
        out.code += part.code
    return out


def value_keys(value: str) -> set[str]:
    """The folded forms a stored value is found under: its words, its compounds closed up ('spiderman' for
    'Spider-Man'), and the date alone of a timestamp."""
    low = value.lower()
    if _PLAIN.fullmatch(low):  # most values: words and spaces only, so one key (the fast path of _fold)
        return {" ".join(_stem(w) for w in low.split())}
    keys = set()
    texts = [_iso_dates(value)]
    if re.match(r"\d{4}-\d{2}-\d{2}[ T]\d", value):
        texts.append(value[:10])
    for text in texts:
        folded = _fold(text)
        if folded.words:
            keys.add(folded.key(0, len(folded.words)))
            keys.add(folded.key(0, len(folded.words), joined=True))
    if not keys and value.strip():
        keys.add(value.strip())  # '+', '#': found only when quoted ("label = '+'")
    return keys


# A code and its meaning in a value description: "cl: chlorine", "'=': double bond", "\"VKLAD\": credit in cash".
_MEANING_MARK = re.compile(r"""(?<![^\s;,(/])(?:(['"])([^'"]{1,24})\1|([^\s'":;,=()]{1,24}))\s*(?::|-->)\s*""")
_QUOTE_MARKS = str.maketrans({"\x93": '"', "\x94": '"', "\x91": "'", "\x92": "'", "“": '"', "”": '"', "‘": "'",
                             "’": "'", "•": " "})
_MEANING_FILLER = re.compile(r"^(?:stands for|refers to|means|is|are)\s+", re.I)


def code_meanings(description: str) -> list[tuple[str, str]]:
    """(code, meaning) pairs a value description lists, meanings cut at the first ';', ',', '(' or '.'."""
    # BIRD's CSVs mix encodings: cp1252 quotes and bullets read as latin-1 control characters, curly quotes
    description = "".join(" " if unicodedata.category(ch) == "Cc" else ch
                          for ch in description.translate(_QUOTE_MARKS))
    marks = list(_MEANING_MARK.finditer(description))
    out = []
    for mark, nxt in zip(marks, marks[1:] + [None], strict=True):
        text = description[mark.end():nxt.start() if nxt else len(description)]
        text = _MEANING_FILLER.sub("", re.split(r"[;,(.\n]", text, maxsplit=1)[0].strip())
        if text:
            out.append((mark.group(2) or mark.group(3), text))
    return out


@dataclass(frozen=True)
class ValueMatch:
    table: str
    column: str
    value: str  # as stored in the database
    phrase: str  # the question's words it matched


Place = tuple[str, str, str]  # table, column, stored value


class ValueIndex:
    """Folded value -> the (table, column, stored value) places it occurs; `descriptions` (table -> column ->
    BIRD value description) add the meanings of the codes a column stores as further keys."""

    def __init__(self, columns: dict[str, dict[str, list[str]]],
                 descriptions: dict[str, dict[str, str]] | None = None):
        self.columns = columns  # table -> column -> distinct stored values
        self.descriptions = descriptions or {}
        self._lookup: dict[str, list[Place]] = {}
        self._near: dict[str, set[str]] | None = None  # built on the first spelling lookup
        # The same values without the code meanings, for runs shown no descriptions (built when first asked):
        # the meanings come from description text, so such a run must not link through them either.
        self._plain: ValueIndex | None = None
        self._fuzzy_keys: set[str] = set()
        for table, cols in columns.items():
            for column, values in cols.items():
                small = len(values) <= FUZZY_MAX_VALUES
                for value in values:
                    for key in value_keys(value):
                        self._add(key, (table, column, value))
                        if small and key.isalpha() and len(key) >= FUZZY_MIN_CHARS - 1:
                            self._fuzzy_keys.add(key)
        for table, cols in self.descriptions.items():
            for column, description in cols.items():
                stored = {v.lower(): v for v in columns.get(table, {}).get(column, [])}
                for code, meaning in code_meanings(description):
                    value = stored.get(code.lower())
                    folded = _fold(meaning)
                    if value is not None and 0 < len(folded.words) <= MAX_MEANING_WORDS:
                        key = folded.key(0, len(folded.words))
                        self._add(key, (table, column, value))
                        if key.isalpha() and len(key) >= FUZZY_MIN_CHARS - 1:
                            self._fuzzy_keys.add(key)

    def _add(self, key: str, place: Place) -> None:
        places = self._lookup.setdefault(key, [])
        if place not in places:
            places.append(place)

    def values_of(self, table: str, column: str) -> list[str]:
        low_t, low_c = table.lower(), column.lower()
        for t, cols in self.columns.items():
            if t.lower() == low_t:
                for c, values in cols.items():
                    if c.lower() == low_c:
                        return values
        return []

    def match(self, question: str, *, limit: int = MAX_MATCHES, meanings: bool = True) -> list[ValueMatch]:
        """Values the question mentions: quoted literals first, then phrases longest first (a phrase inside a
        longer match is skipped: 'York' once 'New York' matched), then single long words one spelling slip
        away from a value. At most `limit` matches. `meanings=False`: not through the codes' meanings that
        value descriptions give."""
        if not meanings and self.descriptions:
            if self._plain is None:
                self._plain = ValueIndex(self.columns)  # two threads may both build it: the same index
            return self._plain.match(question, limit=limit)
        text = _iso_dates(question)
        found: dict[Place, str] = {}
        rest = []  # the text outside the quoted literals that matched, for the phrases below
        last = 0
        for quoted in _QUOTED.finditer(text):
            column, literal = quoted.groups()
            places = self._places(_fold(literal), exact=literal, column=column or "")
            for place in places:
                found.setdefault(place, literal)
            if places:
                rest.append(text[last:quoted.start(2) - 1])
                last = quoted.end()
        folded = _fold_apart(rest + [text[last:]])
        words = folded.words
        taken = [False] * len(words)
        for size in range(min(MAX_NGRAM, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                end = start + size
                if any(taken[start:end]) or not folded.valid(start, end) or self._says_nothing(folded, start, end):
                    continue
                places = self._places(folded.at(start, end))
                if places:
                    for place in places:
                        found.setdefault(place, folded.key(start, end))
                    taken[start:end] = [True] * size
        for i, word in enumerate(words):
            if not taken[i] and folded.valid(i, i + 1) and not self._says_nothing(folded, i, i + 1):
                for place in self._misspelt(word):
                    found.setdefault(place, word)
        return [ValueMatch(t, c, v, phrase) for (t, c, v), phrase in list(found.items())[:limit]]

    def _places(self, phrase: _Folded, *, exact: str | None = None, column: str = "") -> list[Place]:
        """The places of a phrase: its words as written, else with its compounds closed up; none when it is
        in too many columns to say which one is meant. A quoted literal (`exact`) keeps its own spelling
        (spaces at the ends aside) and the `column` written beside it, when some place has them."""
        n = len(phrase.words)
        if n:
            places = self._lookup.get(phrase.key(0, n)) or self._lookup.get(phrase.key(0, n, joined=True)) or []
        else:  # a quoted '+' or '#': no words, looked up as written
            places = self._lookup.get(exact.strip(), []) if exact else []
        if exact is not None:
            places = [p for p in places if p[2].strip() == exact.strip()] or places
            places = [p for p in places if p[1].lower() == column.lower()] or places
        return places if len({(t, c) for t, c, _ in places}) <= MAX_COLUMNS_PER_PHRASE else []

    @staticmethod
    def _says_nothing(folded: _Folded, start: int, end: int) -> bool:
        """Stopwords and bare numbers never link on their own ('the', '2'); nor does a single letter. A whole
        code of numbers ('1990-01-01', '12-345') is not a bare number."""
        group = folded.group[start]
        if end - start > 1 and folded.group[end - 1] == group and folded.code[group]:
            return False
        raw = folded.raw[start:end]
        if all(w in _STOPWORDS or w.isdigit() for w in raw):
            return True
        return end - start == 1 and len(raw[0]) < 2

    def _misspelt(self, word: str) -> list[Place]:
        """Values one letter away from a long word: one more or fewer (FUZZY_MIN_CHARS), one changed or two
        swapped (FUZZY_SWAP_MIN_CHARS); the first letter as written, which rules out most unrelated words."""
        if not word.isalpha() or len(word) < FUZZY_MIN_CHARS:
            return []
        if self._near is None:
            near: dict[str, set[str]] = {}
            for key in self._fuzzy_keys:
                for variant in {key, *_deletions(key)}:
                    near.setdefault(variant, set()).add(key)
            self._near = near  # assigned whole: another thread never sees a half-built map
        keys = set()
        for variant in {word, *_deletions(word)}:
            for key in self._near.get(variant, ()):
                if key != word and key[0] == word[0] and _one_slip(word, key):
                    keys.add(key)
        places = [p for key in sorted(keys) for p in self._lookup.get(key, [])]
        return places if len({(t, c) for t, c, _ in places}) <= MAX_COLUMNS_PER_PHRASE else []

    def to_dict(self) -> dict:
        return {"version": INDEX_VERSION, "columns": self.columns, "descriptions": self.descriptions}


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _one_slip(word: str, key: str) -> bool:
    """`word` is `key` with one letter added, dropped, changed or two neighbours swapped, in a word long enough
    for that to be a slip rather than another word."""
    if abs(len(word) - len(key)) == 1:
        short, long_ = sorted((word, key), key=len)
        return len(short) >= FUZZY_MIN_CHARS and short in _deletions(long_)
    if len(word) != len(key) or len(word) < FUZZY_SWAP_MIN_CHARS:
        return False
    diff = [i for i in range(len(word)) if word[i] != key[i]]
    if len(diff) == 1:
        return True
    return len(diff) == 2 and diff[1] == diff[0] + 1 and word[diff[0]] == key[diff[1]] and word[diff[1]] == key[diff[0]]


def described_values(schema: Schema) -> dict[str, dict[str, str]]:
    """table -> column -> value description, for the columns that have one (BIRD's database_description)."""
    out: dict[str, dict[str, str]] = {}
    for table in schema.tables:
        for col in table.columns:
            if col.value_description:
                out.setdefault(table.name, {})[col.name] = col.value_description
    return out


_MEMORY: dict[str, ValueIndex] = {}


def value_index(db_path: str | Path) -> ValueIndex:
    """The database's value index, built once per file version and cached on disk and in memory. `db_path`:
    a SQLite file, or any database `macsql.engines.open_database` takes (cached by its identity). The code meanings come
    from the database's own descriptions (never a taught or stripped copy a caller holds), so the cached index
    is the same whoever builds it first."""
    from macsql.engines import open_database

    database = open_database(db_path)
    path = Path(database).resolve() if database.dialect == "sqlite" else database
    disk = cache_file(path, "values")
    key = str(disk)
    if key in _MEMORY:
        return _MEMORY[key]
    index = None
    if disk.exists():
        try:
            data = json.loads(disk.read_text())
            if data.get("version") == INDEX_VERSION:
                index = ValueIndex(data["columns"], data.get("descriptions"))
        except (ValueError, KeyError, TypeError, OSError):
            index = None  # stale or corrupt: rebuild
    if index is None:
        schema = introspect(path)
        index = ValueIndex(_read_values(path, schema), described_values(schema))
        try:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(".tmp")
            tmp.write_text(json.dumps(index.to_dict(), ensure_ascii=False))
            tmp.replace(disk)
        except OSError:
            pass  # a read-only cache folder still works, without the disk copy
    _MEMORY[key] = index
    return index


def _read_values(db, schema: Schema) -> dict[str, dict[str, list[str]]]:
    """Distinct short text values of every column, from at most SCAN_ROWS rows of each table, read by the
    database's engine (`Database.distinct_values`: a column that fails gives none)."""
    from macsql.engines import open_database
    from macsql.schema import skips_examples

    database = open_database(db)
    # the executor's deadline for the whole index: a view that never finishes is cut off, not waited for,
    # and the columns after it are left out
    deadline = Deadline(DEFAULT_TIMEOUT_S)
    out: dict[str, dict[str, list[str]]] = {}
    for table in schema.tables:
        for col in table.columns:
            if skips_examples(col):
                continue
            if deadline.passed():
                return out
            # at least a millisecond: the deadline may pass between the check above and this call
            values = database.distinct_values(table.name, col.name, limit=MAX_VALUES, scan_rows=SCAN_ROWS,
                                              max_chars=MAX_VALUE_CHARS, timeout_s=max(deadline.remaining(), 1e-3))
            if values:
                out.setdefault(table.name, {})[col.name] = values
    return out


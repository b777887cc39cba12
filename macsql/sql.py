"""The one SQL analyser: every place that reads SQL text as more than text goes through here.

- the text: `sql_spans` (the scanner that tells code from strings and comments), `strip_statement`, and the
  bounds on length and bracket depth that come before sqlglot (its time and recursion grow with both);
- parsing: `parse_query` (a tree or None), `parse_error` (why not), `statement_error` (the executors' check:
  exactly one SELECT/WITH statement) and `keyword_spans` (sqlglot's tokenizer, for edits of the text itself);
- every function that parses takes the engine's sqlglot `dialect` ("sqlite", the default, "duckdb",
  "postgres": `Database.dialect`), so each engine's SQL is read as that engine reads it;
- against a schema: `names_used` (the tables and columns a query uses, resolved by sqlglot's qualifier) and
  `unknown_names` (the ones it names that the schema lacks), with one rule for Spider's double-quoted strings
  (`double_quoted_strings`) and one schema in sqlglot's form (`sqlglot_schema`);
- `normalize_sql` (exact match) and `sql_features` (construct counts, the complexity reward);
- corruptions: SQL broken the ways models break it (`corrupt`), for Refiner rows and DPO's rejected replies.

The executor (`sqlexec.py`) runs SQL; this module only reads and rewrites it. sqlglot is imported inside the
functions (heavy imports are lazy).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

# Bounds on the SQL text. The longest gold query in BIRD/Spider is ~2k characters and ~10 bracket levels;
# past these sqlglot's (recursive) parser gets slow or overflows the Python stack, so refuse instead.
MAX_SQL_CHARS = 20_000
MAX_NESTING = 48

# sqlglot logs "Falling back to parsing as a Command" for statements it does not model (PRAGMA, VACUUM...);
# the executor refuses those anyway, and the warning would land on the user's terminal in the middle of an eval.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------------------------ the text
def sql_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """Split SQL text into (kind, start, end) spans, kind "code", "quoted" ('...', "...", `...`, [...]) or
    "comment" (-- to the end of the line, /* ... */); an unclosed quote or comment runs to the end. The one
    scanner that tells a ';' or '--' in the code from one inside a string or comment."""
    i, n, start = 0, len(text), 0
    while i < n:
        ch = text[i]
        if ch in "'\"`[" or text.startswith(("--", "/*"), i):
            if start < i:
                yield "code", start, i
            if ch in "'\"`[":
                end = text.find("]" if ch == "[" else ch, i + 1)
                kind, end = "quoted", (n if end == -1 else end + 1)
            elif ch == "-":
                end = text.find("\n", i)
                kind, end = "comment", (n if end == -1 else end)
            else:
                end = text.find("*/", i + 2)
                kind, end = "comment", (n if end == -1 else end + 2)
            yield kind, i, end
            i = start = end
        else:
            i += 1
    if start < n:
        yield "code", start, n


def _trailing_comment_start(text: str) -> int | None:
    """Where a comment that ends `text` (only blanks after it) starts, or None."""
    last = None
    for kind, start, end in sql_spans(text):
        if kind != "code" or text[start:end].strip():
            last = (kind, start)
    return last[1] if last and last[0] == "comment" else None


def strip_statement(sql: str) -> str:
    """The text of one statement without trailing `;`, blanks and comments (`SELECT 1; -- note` is one
    statement). Only a trailing comment is cut, outside quotes: a `--` inside a string stays."""
    text = (sql or "").strip()
    if len(text) > MAX_SQL_CHARS:
        return text  # refused by _text_problem; not worth a character-by-character scan
    while True:
        text = text.rstrip().rstrip(";").rstrip()
        cut = _trailing_comment_start(text)
        if cut is None:
            return text
        text = text[:cut]


def _text_problem(text: str) -> str | None:
    """Why `text` is too big to analyse (length, bracket nesting), or None. Linear and cheap: it runs
    before sqlglot, whose time and recursion depth grow with both."""
    if len(text) > MAX_SQL_CHARS:
        return f"the query is {len(text):,} characters long; at most {MAX_SQL_CHARS:,} are allowed"
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    if deepest > MAX_NESTING:
        return f"the query nests {deepest} levels of brackets; at most {MAX_NESTING} are allowed"
    return None


# ------------------------------------------------------------------------------------------------- parsing
def _parse(sql: str, dialect: str = "sqlite"):
    """(the sqlglot tree of `sql` read in `dialect`, None) or (None, why it cannot be parsed)."""
    import sqlglot

    text = strip_statement(sql)
    if not text:
        return None, "empty SQL"
    problem = _text_problem(text)
    if problem:
        return None, problem
    try:
        tree = sqlglot.parse_one(text, read=dialect)
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError) as exc:
        return None, " ".join(str(exc).split()) or type(exc).__name__
    return (tree, None) if tree is not None else (None, "empty SQL")


def parse_query(sql: str, dialect: str = "sqlite"):
    """The sqlglot tree of `sql` read in `dialect` (SQLite by default), or None when it is empty, too long or
    deep to parse safely, or unparseable. The one place that turns model or gold SQL into a tree."""
    return _parse(sql, dialect)[0]


def parse_error(sql: str, dialect: str = "sqlite") -> str | None:
    """Why `parse_query(sql)` is None (sqlglot's message, or the bound the text is over); None when it parses."""
    return _parse(sql, dialect)[1]


def statement_error(sql: str, dialect: str = "sqlite") -> str | None:
    """Why `sql` is not exactly one SELECT/WITH statement read in `dialect`, or None if it is (the
    executors' check)."""
    import sqlglot
    from sqlglot import exp

    text = strip_statement(sql)
    if not text:
        return "empty SQL"
    problem = _text_problem(text)
    if problem:
        return problem
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        # sqlglot is stricter than the engines on some valid queries; each engine's own guard still holds
        # (SQLite's parser and authorizer, DuckDB's statement check, PostgreSQL's cursor), so let the
        # engine report the real error.
        return None
    if len(statements) != 1:
        return f"only one statement is allowed, got {len(statements)}"
    stmt = statements[0]
    if not isinstance(stmt, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)):
        return f"only SELECT/WITH queries are allowed, got {stmt.key.upper()}"
    for node in stmt.walk():
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter)):
            return f"only read queries are allowed, found {node.key.upper()}"
    return None


def keyword_spans(text: str, keyword: str, dialect: str = "sqlite") -> list[tuple[int, int]] | None:
    """(start, end) of each `keyword` token in `text`, end exclusive; `keyword` names a sqlglot TokenType
    ("DISTINCT", "ORDER_BY"). None when the tokenizer rejects the text (an unclosed quote). Tokens, not a
    regex: a quoted name or a string that reads "distinct" is no keyword."""
    import sqlglot
    from sqlglot.tokens import TokenType

    kind = TokenType[keyword]
    try:
        tokens = sqlglot.tokenize(text, read=dialect)
    except sqlglot.errors.SqlglotError:
        return None
    return [(t.start, t.end + 1) for t in tokens if t.token_type == kind]


# ------------------------------------------------------------------------------------- against a schema
def sqlglot_schema(schema) -> dict[str, dict[str, str]]:
    """`schema` in the form sqlglot's qualifier takes: table -> column -> type."""
    return {t.name: {c.name: (c.type or "TEXT") for c in t.columns} for t in schema.tables}


def double_quoted_strings(tree, text: str, columns: Iterable[str] = ()):
    """A copy of `tree` in which each unqualified double-quoted name that is not one of `columns` (lower
    case) is a string literal: SQLite reads "France" as 'France' when no column is called France, and
    Spider's gold SQL writes strings so. sqlglot marks backticked and bracketed names quoted too, so the
    SQL `text` tells which quote it was: `Free Meal Count (K-13)` stays a name."""
    from sqlglot import exp

    names = set(columns)

    def to_string(node):
        if (isinstance(node, exp.Column) and not node.table and isinstance(node.this, exp.Identifier)
                and node.this.args.get("quoted") and node.name.lower() not in names
                and f'"{node.name}"' in text):
            return exp.Literal.string(node.name)
        return node

    return tree.transform(to_string)


@dataclass(frozen=True)
class NamesUsed:
    """The names of a schema that a query uses, spelled as the schema spells them."""

    tables: list[str] = field(default_factory=list)  # in the order the query names them
    aliases: dict[str, str] = field(default_factory=dict)  # table name or alias (lower case) -> table
    # table -> the columns of it the query uses; tables and columns in schema order, [] for a table it reads
    # no column of (`SELECT count(*) FROM t`)
    columns: dict[str, list[str]] = field(default_factory=dict)


def names_used(sql: str, schema, *, columns: bool = True, star: bool = True,
               dialect: str = "sqlite") -> NamesUsed:
    """The tables and columns of `schema` that `sql` uses; empty when it cannot be parsed.

    Tables and aliases come from the query's table references. Columns (not looked for with
    `columns=False`, which never runs the qualifier) are resolved by sqlglot's `qualify`: every column to its
    table alias, unqualified ones and nested queries included, then each scope's sources map the alias back
    to a real table (where the qualifier gives up on an odd but valid query, names are matched instead).
    `SELECT *` counts as every column; `star=False` keeps only the columns the query writes out.
    """
    from sqlglot import exp

    tree = parse_query(sql, dialect)
    if tree is None:
        return NamesUsed()
    tables: list[str] = []
    aliases: dict[str, str] = {}
    for node in tree.find_all(exp.Table):
        table = schema.table(node.name)
        if table is None:
            continue
        if table.name not in tables:
            tables.append(table.name)
        aliases[table.name.lower()] = table.name
        if node.alias:
            aliases[node.alias.lower()] = table.name
    if not columns:
        return NamesUsed(tables, aliases)
    written = {c.name.lower() for c in tree.find_all(exp.Column) if isinstance(c.this, exp.Identifier)}
    used = _columns_used(tree, schema, dialect)  # qualifies `tree` in place
    if not star:
        used = {t: [c for c in cols if c.lower() in written] for t, cols in used.items()}
    return NamesUsed(tables, aliases, used)


def _columns_used(tree, schema, dialect: str = "sqlite") -> dict[str, list[str]]:
    """Table -> the columns of it that `tree` uses, by sqlglot's qualifier (which rewrites `tree` in place)."""
    import sqlglot
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import traverse_scope

    used: dict[str, set[str]] = {}
    try:
        tree = qualify(tree, schema=sqlglot_schema(schema), dialect=dialect, validate_qualify_columns=False)
        for scope in traverse_scope(tree):
            for table in scope.tables:
                if (real := schema.table(table.name)) is not None:
                    used.setdefault(real.name, set())
            for col in scope.columns:
                source = scope.sources.get(col.table)
                real = schema.table(source.name) if isinstance(source, sqlglot.exp.Table) else None
                if real is not None and (c := real.column(col.name)) is not None:
                    used.setdefault(real.name, set()).add(c.name)
    except sqlglot.errors.SqlglotError:
        # The qualifier gives up on some odd but valid queries: fall back to matching names.
        tables = [t for n in tree.find_all(sqlglot.exp.Table) if (t := schema.table(n.name)) is not None]
        for t in tables:
            used.setdefault(t.name, set())
        for col in tree.find_all(sqlglot.exp.Column):
            for t in tables:
                if (c := t.column(col.name)) is not None:
                    used[t.name].add(c.name)
    return {t.name: [c.name for c in t.columns if c.name in used[t.name]] for t in schema.tables
            if t.name in used}


@dataclass(frozen=True)
class UnknownNames:
    """The names a query uses that its schema lacks."""

    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()  # `T2.venue` where the query qualifies it

    @property
    def names(self) -> list[str]:
        return [*self.tables, *self.columns]


def unknown_names(sql: str, schema, dialect: str = "sqlite") -> UnknownNames | None:
    """Which tables and columns in `sql` the schema lacks; None when it cannot be parsed (then nothing is
    claimed about it). Used by the hallucination metric, the grounding reward, DPO and data cleaning.

    Names the query defines itself are not unknown: CTE names and their columns, subquery aliases, SELECT
    aliases, wherever they are used. An unqualified column is known when some table of the schema has it; a
    qualified one when the table its qualifier names has it. An unqualified, double-quoted name that is no
    column is a string (`double_quoted_strings`; SQLite only: other engines read it as a name).
    """
    from sqlglot import exp

    tree = parse_query(sql, dialect)
    if tree is None:
        return None
    known = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
    all_columns = set().union(*known.values()) if known else set()
    defined: set[str] = set()  # names the query itself defines (CTEs, derived tables, aliases)
    for cte in tree.find_all(exp.CTE):
        defined.add(cte.alias_or_name.lower())
        defined.update(c.name.lower() for c in cte.args.get("alias", exp.TableAlias()).columns or [])
        if isinstance(cte.this, exp.Query):
            defined.update(n.lower() for n in cte.this.named_selects)
    for sub in tree.find_all(exp.Subquery):
        if sub.alias:
            defined.add(sub.alias.lower())
        if isinstance(sub.this, exp.Query):
            defined.update(n.lower() for n in sub.this.named_selects)
    for alias in tree.find_all(exp.Alias):
        defined.add(alias.alias.lower())

    aliases: dict[str, str] = {}  # alias or name -> real table (lower)
    tables: list[str] = []
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if not name or isinstance(table.this, exp.Anonymous):  # table-valued functions
            continue
        if name in known:
            aliases[name] = name
            if table.alias:
                aliases[table.alias.lower()] = name
        elif name not in defined:
            tables.append(table.name)
        elif table.alias:
            defined.add(table.alias.lower())

    columns: list[str] = []
    if dialect == "sqlite":
        tree = double_quoted_strings(tree, sql, all_columns | defined)
    for col in tree.find_all(exp.Column):
        name = col.name
        if not name or isinstance(col.this, exp.Star):
            continue
        qualifier = col.table.lower() if col.table else ""
        if qualifier:
            real = aliases.get(qualifier)
            if real is None or qualifier in defined:
                # qualified by a CTE/subquery alias (checked where it is defined) or an unknown table; an alias
                # that names a subquery in one scope and a table in another is not resolved here
                continue
            if name.lower() not in known[real]:
                columns.append(f"{col.table}.{name}")
        elif name.lower() not in all_columns and name.lower() not in defined:
            columns.append(name)
    return UnknownNames(tuple(dict.fromkeys(tables)), tuple(dict.fromkeys(columns)))


# --------------------------------------------------------------------------------- normalise and count
def normalize_sql(sql: str, dialect: str = "sqlite") -> str:
    """A canonical text for `sql` (exact match): sqlglot's output in `dialect` with identifiers case-folded.

    Parsing removes layout, keyword case, redundant parentheses and a trailing ';'. Identifiers are
    case-insensitive in SQLite, so they are folded; string literals keep their case (they are data).
    Double-quoted strings (SQLite accepts "France" as a string) become one form by going through the parser.
    When sqlglot cannot parse the query, whitespace-collapsed lowercase text is the fallback.
    """
    import sqlglot
    from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

    text = (sql or "").strip().rstrip(";").strip()
    if not text:
        return ""
    try:
        tree = parse_query(text, dialect)  # None when too long or deep to parse safely, or unparseable
        if tree is None:
            return " ".join(text.lower().split())
        if dialect == "sqlite":
            tree = double_quoted_strings(tree, text)  # no schema here: every such name is a string
        tree = normalize_identifiers(tree, dialect=dialect)
        return tree.sql(dialect=dialect, normalize=True, comments=False)
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        return " ".join(text.lower().split())


def sql_features(sql: str) -> dict[str, int] | None:
    """Counts of the constructs that make a query complex, or None when sqlglot cannot parse it."""
    from sqlglot import exp

    tree = parse_query(sql)
    if tree is None:
        return None
    return {
        "tables": len(list(tree.find_all(exp.Table))),
        "joins": len(list(tree.find_all(exp.Join))),
        "subqueries": len(list(tree.find_all(exp.Subquery))) + len(list(tree.find_all(exp.Union))),
        "aggregates": len(list(tree.find_all(exp.AggFunc))),
        "conditions": len(list(tree.find_all(exp.Predicate))),
        "group": int(tree.find(exp.Group) is not None),
        "order": int(tree.find(exp.Order) is not None),
        "limit": int(tree.find(exp.Limit) is not None),
        "distinct": int(tree.find(exp.Distinct) is not None),
    }


# ------------------------------------------------------------------------------------------ corruptions
# Each tree corruption takes the parsed SQL, the schema and a Random, changes the tree and returns it, or
# returns None when it does not apply. They mimic what models get wrong: the Refiner sees these errors at
# inference (`finetune/data.py`), and DPO prefers the gold SQL to its invented names (`finetune/dpo.py`).
def _near_miss(name: str, rng: random.Random) -> str:
    """A plausible misspelling: plural/singular, a dropped underscore or letter."""
    options = []
    if name.lower().endswith("s"):
        options.append(name[:-1])
    else:
        options.append(name + "s")
    if "_" in name:
        options.append(name.replace("_", "", 1))
    if len(name) > 3:
        i = rng.randrange(1, len(name) - 1)
        options.append(name[:i] + name[i + 1:])
    return rng.choice(options)


def _misspelled(tree, nodes: list, taken: set[str], rng: random.Random):
    """`tree` with one of `nodes` (its columns or tables) renamed to a near miss that is not in `taken`;
    None when there is no node, or five near misses are all real names."""
    from sqlglot import exp

    if not nodes:
        return None
    node = rng.choice(nodes)
    for _ in range(5):
        wrong = _near_miss(node.name, rng)
        if wrong.lower() not in taken:
            node.set("this", exp.to_identifier(wrong))
            return tree
    return None


def _wrong_column(tree, schema, rng):
    from sqlglot import exp

    cols = [c for c in tree.find_all(exp.Column) if isinstance(c.this, exp.Identifier)]
    return _misspelled(tree, cols, {c.name.lower() for t in schema.tables for c in t.columns}, rng)


def _wrong_table(tree, schema, rng):
    from sqlglot import exp

    return _misspelled(tree, list(tree.find_all(exp.Table)), {t.name.lower() for t in schema.tables}, rng)


def _missing_join_condition(tree, schema, rng):
    from sqlglot import exp

    joins = [j for j in tree.find_all(exp.Join) if j.args.get("on") is not None]
    if not joins:
        return None
    rng.choice(joins).set("on", None)
    return tree


def _bad_alias(tree, schema, rng):
    from sqlglot import exp

    aliases = {t.alias for t in tree.find_all(exp.Table) if t.alias}
    cols = [c for c in tree.find_all(exp.Column) if c.table and c.table in aliases]
    if not cols:
        return None
    col = rng.choice(cols)
    match = re.fullmatch(r"(.*?)(\d+)", col.table)
    wrong = f"{match.group(1)}{int(match.group(2)) + len(aliases)}" if match else col.table + "1"
    if wrong in aliases:
        return None
    col.set("table", exp.to_identifier(wrong))
    return tree


def _literal_case(tree, schema, rng):
    from sqlglot import exp

    strings = [s for s in tree.find_all(exp.Literal) if s.is_string and s.this.lower() != s.this.upper()
               and "%" not in s.this]
    if not strings:
        return None
    lit = rng.choice(strings)
    text = lit.this
    changed = text.upper() if text != text.upper() else text.lower()
    lit.set("this", changed)
    return tree


# Names models invent when a schema lacks what the question mentions.
_COMMON = ("name", "title", "year", "date", "price", "amount", "total", "count", "type", "status", "country",
           "city", "age", "salary", "rating", "category", "description", "id")


def _invented_name(tree, schema, rng):
    """One real column or table replaced by a plausible name the schema lacks (not a near miss: a name
    that reads right, as a model writes it when the schema has no such thing)."""
    from sqlglot import exp

    columns = {c.name.lower() for t in schema.tables for c in t.columns}
    tables = {t.name.lower() for t in schema.tables}
    cols = [c for c in tree.find_all(exp.Column) if isinstance(c.this, exp.Identifier)
            and c.name.lower() in columns]
    tabs = list(tree.find_all(exp.Table))
    if cols and (not tabs or rng.random() < 0.7):
        col = rng.choice(cols)
        base = col.name
        options = [f"{base}_name", f"total_{base}", f"{base}_value", *(n for n in _COMMON if n not in columns)]
        options = [o for o in options if o.lower() not in columns]
        col.set("this", exp.to_identifier(rng.choice(options)))
    elif tabs:
        table = rng.choice(tabs)
        options = [f"{table.name}_info", f"{table.name}_details", f"all_{table.name}", f"{table.name}_records"]
        table.set("this", exp.to_identifier(rng.choice([o for o in options if o.lower() not in tables])))
    else:
        return None
    return tree


def _syntax_slip(sql: str, rng: random.Random) -> str | None:
    """Text-level slips a parser-based rewrite cannot make: a missing keyword, comma or parenthesis."""
    slips = []
    if re.search(r"(?i)\bFROM\b", sql):
        slips.append(lambda s: re.sub(r"(?i)\bFROM\b", "FORM", s, count=1))
    if "," in sql:
        slips.append(lambda s: s.replace(",", "", 1))
    if ")" in sql:
        slips.append(lambda s: s[:s.rfind(")")] + s[s.rfind(")") + 1:])
    if re.search(r"(?i)\bGROUP BY\b", sql):
        slips.append(lambda s: re.sub(r"(?i)\bGROUP BY\b", "GROUP", s, count=1))
    return rng.choice(slips)(sql) if slips else None


CORRUPTIONS: dict[str, Callable | None] = {
    "wrong_column": _wrong_column,
    "wrong_table": _wrong_table,
    "missing_join_condition": _missing_join_condition,
    "bad_alias": _bad_alias,
    "literal_case": _literal_case,
    "syntax_slip": None,  # text level, see _syntax_slip
    "invented_name": _invented_name,
}


def corrupt(sql: str, schema, rng: random.Random, kinds: Iterable[str]) -> list[tuple[str, str]]:
    """(kind, broken SQL) for each corruption of `kinds` (names in CORRUPTIONS) that applies to `sql`, in a
    seeded random order."""
    kinds = list(kinds)
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        if kind == "syntax_slip":
            broken = _syntax_slip(sql, rng)
        else:
            tree = parse_query(sql)
            if tree is None:
                continue
            tree = CORRUPTIONS[kind](tree, schema, rng)
            broken = tree.sql(dialect="sqlite") if tree is not None else None
        if broken and broken.strip() != sql.strip():
            out.append((kind, broken))
    return out

"""GRPO reward for the reasoning format (`<reasoning>…</reasoning><sql>…</sql>`): does the reasoning name the
tables and columns its own SQL uses?

A TRL reward function, `(completions, **columns) -> list[float | None]`. Completions are plain strings or
TRL's conversational form (`[{"role": "assistant", "content": ...}]`).

Columns it reads (any one schema source is enough; the first present wins, row by row):

- `schema`: the schema as rendered text (THE renderer's `CREATE TABLE` blocks) or as `Schema.to_dict()`;
- `db_path`: a SQLite file, introspected once per file (the column `macsql data build` rows carry);
- `prompt`: the agent prompt itself (string or chat messages); the `CREATE TABLE` blocks in it are the schema
  the model saw, so rows without a database (imported SQL-Llama data) work too;
- `task` (optional): rows of other tasks than `decomposer`/`refiner` get None (TRL skips a None).

The score is in [0, 1]:

    coverage   = share of the SQL's tables and columns (that exist in the schema) named in the reasoning;
                 names the SQL invents count in the denominator, so hallucinated SQL cannot score fully
    x length   = 0 under MIN_WORDS words (empty or boilerplate), 1 up to LONG_WORDS, then decaying to 0.5
    x pasted   = 0.5 when the reasoning is just the SQL pasted in (names for free, no explanation)
    x grounded = 1 - 0.5 * share of identifier-looking words (`backticked`, snake_case, table.column) in the
                 reasoning that are neither in the schema nor aliases in the SQL

A reasoning that names nothing from the schema ("I will write a query to answer the question") gets 0.
No reasoning, or no SQL to check it against, gets 0.0 (the sample failed the format); None only where the
reward cannot judge: other tasks, no schema, or SQL that names no table at all.
"""

from __future__ import annotations

import functools
import re

from macsql.finetune.data import SQL_TASKS, completion_text

MIN_WORDS = 5  # fewer words cannot say which tables, columns and filters answer a question
LONG_WORDS = 120  # the prompt asks for one or two sentences; longer is rambling
_CREATE_BLOCK = re.compile(r"(?is)CREATE\s+TABLE\b.*?\n\s*\);")
_SQL_IN_TEXT = re.compile(r"(?is)\bselect\b.+?\bfrom\b\s+[`\"\[\w]")
# Words that look like identifiers rather than prose: `quoted`, snake_case, or dotted table.column.
_IDENTIFIER_WORDS = re.compile(r"`([^`]+)`|\b([A-Za-z]\w*_\w+)\b|\b([A-Za-z]\w*\.[A-Za-z]\w*)\b")


def reasoning_reward(completions, schema=None, db_path=None, prompt=None, task=None, **_columns
                     ) -> list[float | None]:
    """Score each completion's <reasoning> by the schema names of its own SQL it mentions (see module doc)."""
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        if task is not None and task[i] not in SQL_TASKS:
            out.append(None)
            continue
        s = _row_schema(_at(schema, i), _at(db_path, i), _at(prompt, i))
        out.append(score_reasoning(completion_text(completion), s) if s is not None else None)
    return out


def _at(column, i):
    return column[i] if column is not None else None


def score_reasoning(reply: str, schema) -> float | None:
    """The reward for one reply against one `macsql.schema.Schema` (see the module docstring)."""
    from macsql.agents.parsing import extract_reasoning, extract_sql
    from macsql.errors import NoSQLError

    reasoning = extract_reasoning(reply)
    words = reasoning.split()
    if len(words) < MIN_WORDS:
        return 0.0
    try:
        sql = extract_sql(reply)
    except NoSQLError:
        return 0.0
    targets = sql_names(sql, schema)
    if targets is None:
        return 0.0  # the SQL does not parse: nothing it "uses" can be explained
    if not targets:
        return None  # SELECT 1: no schema names to explain
    text = reasoning.lower()
    mentioned = sum(1 for name in targets if name is not None and _mentions(text, name))
    coverage = mentioned / len(targets)
    if coverage == 0:
        return 0.0
    length = 1.0 if len(words) <= LONG_WORDS else max(0.5, LONG_WORDS / len(words))
    pasted = 0.5 if _SQL_IN_TEXT.search(reasoning) else 1.0
    grounded = 1.0 - 0.5 * _unknown_share(reasoning, schema, sql)
    return round(coverage * length * pasted * grounded, 4)


def sql_names(sql: str, schema) -> list[str | None] | None:
    """What the reasoning should name: each table the SQL reads and each column it writes out, in schema
    spelling (None for each name the schema lacks, so invented names lower the coverage). None when the SQL
    does not parse.

    Names come from the one analyser (`sql.names_used`, the same that builds the Selector's targets, and
    `sql.unknown_names`); columns that only a `SELECT *` brings in are left out: nobody explains a star
    column by column.
    """
    from macsql.sql import names_used, unknown_names

    unknown = unknown_names(sql, schema)
    if unknown is None:
        return None
    valid: list[str] = []
    for table, columns in names_used(sql, schema, star=False).columns.items():
        valid.append(table)
        valid.extend(columns)
    invented = {n.lower() for n in unknown.names}
    # dedupe by name: `Name` of two tables is one word to mention
    return [*dict.fromkeys(valid), *[None] * len(invented)]


@functools.lru_cache(maxsize=4096)
def _name_pattern(name: str) -> re.Pattern:
    """`Song_release_year` matches `song_release_year`, `song release year`; `singer` matches `singers`;
    `customers` matches `customer`. Word boundaries keep `age` from matching inside `average`."""
    low = name.lower().strip()
    parts = [re.escape(p) for p in re.split(r"[\s_]+", low) if p]
    body = r"[\s_]*".join(parts)
    if low.endswith("s") and len(low) > 3:
        body = body[:-1] + "s?"
    return re.compile(rf"(?<![a-z0-9_]){body}(?:e?s)?(?![a-z0-9_])")


def _mentions(text: str, name: str) -> bool:
    return bool(_name_pattern(name).search(text))


def _unknown_share(reasoning: str, schema, sql: str) -> float:
    """Share of identifier-looking words in the reasoning that name nothing in the schema or the query."""
    from sqlglot import exp

    from macsql.sql import parse_query

    known = {t.name.lower() for t in schema.tables} | {c.name.lower() for t in schema.tables for c in t.columns}
    tree = parse_query(sql)
    if tree is not None:
        known |= {a.alias.lower() for a in tree.find_all(exp.Alias, exp.TableAlias, exp.Table) if a.alias}
        known |= {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    words = []
    for quoted, snake, dotted in _IDENTIFIER_WORDS.findall(reasoning):
        if dotted:
            words.extend(dotted.lower().split("."))
        else:
            words.append((quoted or snake).lower())
    if not words:
        return 0.0
    return sum(w not in known for w in words) / len(words)


# ----------------------------------------------------------------------------------------- schema sources
def _row_schema(schema, db_path, prompt):
    if schema:
        if isinstance(schema, dict):
            from macsql.schema import Schema

            return Schema.from_dict(schema)
        parsed = schema_from_ddl(str(schema))
        if parsed is not None:
            return parsed
    if db_path:
        return _introspect(str(db_path))
    if prompt:
        text = prompt if isinstance(prompt, str) else "\n".join(m.get("content", "") for m in prompt)
        return schema_from_ddl(text)
    return None


@functools.lru_cache(maxsize=256)
def _introspect(db_path: str):
    from macsql.errors import MacSQLError
    from macsql.schema import introspect

    try:
        return introspect(db_path)
    except MacSQLError:
        return None  # a training row whose database has gone: no judgement rather than a crashed step


@functools.lru_cache(maxsize=1024)
def schema_from_ddl(text: str):
    """A `Schema` (names only) from the `CREATE TABLE` blocks in `text` (THE renderer's output, or a prompt
    holding it); None when there are none. Blocks sqlglot cannot read are skipped."""
    from sqlglot import exp

    from macsql.schema import Column, Schema, Table
    from macsql.sql import parse_query

    tables = []
    for block in _CREATE_BLOCK.findall(text):
        stmt = parse_query(block)
        table = stmt.find(exp.Table) if isinstance(stmt, exp.Create) else None
        if table is None:
            continue
        columns = [Column(name=c.name, type=c.args["kind"].sql("sqlite") if c.args.get("kind") else "")
                   for c in stmt.find_all(exp.ColumnDef)]
        tables.append(Table(name=table.name, columns=columns))
    return Schema(db_id="", tables=tables) if tables else None

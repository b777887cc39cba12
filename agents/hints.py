"""Repair hints: deterministic facts from the schema and the data that tell the Refiner what to change.

A small model told only "no such column: Weight" tends to return a query it already tried. Told that
`Weight` lives in `cars_data`, or that 'france' does not occur in `country.name` but 'France' does, it can
act. Every hint here is computed, never guessed by a model:
- no such column X: the tables that have X, else the closest column names;
- no such table X: the closest table names;
- ambiguous column X: the tables in the query that have X, to qualify it with;
- an empty result: each WHERE literal that does not occur in its column, with the closest real values (and
  the columns where it does occur);
- the stricter engines' refusals of what SQLite lets pass (DuckDB, PostgreSQL): a selected column neither
  grouped nor aggregated, a number function given a text column, an alias no table in FROM carries, a
  table or column whose name the engine reserves written bare.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from macsql.schema import Schema, quote_name
from macsql.sql import names_used, parse_query
from macsql.sqlexec import ExecResult

# Each engine's words for the three errors a hint helps with: SQLite's, then DuckDB's, then PostgreSQL's.
_NO_COLUMN = re.compile(r'no such column:\s*(\S+)|Referenced column "?([^"\s]+)"? not found'
                        r'|\bcolumn "?([^"\s]+?)"? does not exist', re.I)
_NO_QUALIFIED = re.compile(r'(?:Values list|Table) "([^"]+)" does not have a column named "([^"]+)"', re.I)  # DuckDB
_NO_TABLE = re.compile(r'no such table:\s*(\S+)|Table with name "?([^"\s!]+)"? does not exist'
                       r'|relation "?([^"\s]+)"? does not exist', re.I)
_AMBIGUOUS = re.compile(r'ambiguous column name:\s*(\S+)|Ambiguous reference to column name "?([^"\s]+)"?'
                        r'|column reference "?([^"\s]+)"? is ambiguous', re.I)
# SQLite lets these pass; DuckDB and PostgreSQL refuse them, and a model trained on SQLite writes them
_NOT_GROUPED = re.compile(r'column "?([^"\s]+?)"? must appear in the GROUP BY clause', re.I)
_TEXT_ARGUMENT = re.compile(r"argument types '(\w+)\((?:VARCHAR|TEXT)\b"
                            r"|function (\w+)\((?:text|character varying)\) does not exist", re.I)
_NO_ALIAS = re.compile(r'Referenced table "?([^"\s]+?)"? not found|missing FROM-clause entry for table "?([^"\s]+)"?',
                       re.I)
# a name the engine reserves, written bare (`FROM show` on DuckDB, `FROM user` on PostgreSQL)
_SYNTAX_NEAR = re.compile(r'syntax error at or near "([^"]+)"', re.I)
_TEXT_TYPES = ("VARCHAR", "TEXT", "CHAR", "STRING", "BPCHAR", "NVARCHAR", "NCHAR", "CLOB")
MAX_LITERALS = 3
MAX_SUGGESTIONS = 3


def _bare(name: str) -> str:
    return name.strip().strip('`"[]').strip()


def _close(word: str, options: list[str]) -> list[str]:
    low = {o.lower(): o for o in options}
    return [low[m] for m in difflib.get_close_matches(word.lower(), list(low), n=MAX_SUGGESTIONS, cutoff=0.6)]


def missing_column_hint(name: str, schema: Schema, sql: str = "", dialect: str = "sqlite") -> str:
    qualifier, _, column = _bare(name).rpartition(".")
    column = _bare(column)
    owners = [t.name for t in schema.tables if t.column(column) is not None]
    used = names_used(sql, schema, columns=False, dialect=dialect)
    in_query, aliases = used.tables, used.aliases
    if owners:
        where = ", ".join(f"{t}.{schema.table(t).column(column).name}" for t in owners)
        hint = f"column {column!r} exists only as {where}"
        if qualifier and aliases.get(_bare(qualifier).lower()) not in owners:
            hint += f" (not in {_bare(qualifier)})"
        missing = [t for t in owners if t not in in_query]
        if missing and len(missing) == len(owners):
            hint += f"; join {' or '.join(missing)} to use it"
        return hint
    every = [f"{t.name}.{c.name}" for t in schema.tables for c in t.columns]
    close = _close(column, [c.split(".", 1)[1] for c in every])
    named = [c for c in every if c.split(".", 1)[1] in close][:MAX_SUGGESTIONS]
    return f"no table has a column {column!r}" + (f"; closest: {', '.join(named)}" if named else "")


def missing_table_hint(name: str, schema: Schema) -> str:
    close = _close(_bare(name), [t.name for t in schema.tables])
    return f"no table {_bare(name)!r}" + (f"; closest: {', '.join(close)}" if close else
                                          f"; tables are: {', '.join(t.name for t in schema.tables)}")


def ambiguous_hint(name: str, schema: Schema, sql: str, dialect: str = "sqlite") -> str:
    column = _bare(name).rpartition(".")[2]
    in_query = names_used(sql, schema, columns=False, dialect=dialect).tables
    owners = [t for t in in_query if schema.table(t).column(column) is not None]
    if not owners:
        owners = [t.name for t in schema.tables if t.column(column) is not None]
    return f"qualify {column!r} with its table: " + " or ".join(f"{t}.{column}" for t in owners)


def not_grouped_hint(name: str, sql: str, dialect: str = "sqlite") -> str:
    """The selected column the engine wants grouped: the GROUP BY to write, or an aggregate."""
    from sqlglot import exp

    tree = parse_query(sql, dialect)
    qualifier, _, bare = _bare(name).lower().rpartition(".")  # PostgreSQL folds it: "t1.name"
    written = next((c.sql(dialect=dialect) for c in (tree.find_all(exp.Column) if tree is not None else ())
                    if c.name.lower() == bare and (not qualifier or c.table.lower() == qualifier)), None)
    column = written or _bare(name)
    group = tree.find(exp.Group) if tree is not None else None
    items = [e.sql(dialect=dialect) for e in group.expressions] if group is not None else []
    return (f"{column} is selected but neither grouped nor aggregated: write GROUP BY "
            f"{', '.join([*items, column])}, or select MIN({column})")


def text_argument_hint(function: str, sql: str, schema: Schema, dialect: str = "sqlite") -> str:
    """The text columns a number function was given, with the cast that makes them numbers."""
    from sqlglot import exp

    tree = parse_query(sql, dialect)
    aliases = names_used(sql, schema, columns=False, dialect=dialect).aliases
    in_query = [schema.table(t) for t in dict.fromkeys(aliases.values())]
    found = []
    for call in tree.find_all(exp.Func) if tree is not None else ():
        name = call.sql_name() if not isinstance(call, exp.Anonymous) else call.name
        if name.lower() != function.lower():
            continue
        for col in call.find_all(exp.Column):
            owners = ([schema.table(aliases[col.table.lower()])] if col.table and col.table.lower() in aliases
                      else [t for t in in_query if t.column(col.name) is not None])
            column = owners[0].column(col.name) if len(owners) == 1 else None
            if column is not None and column.type.upper().startswith(_TEXT_TYPES):
                found.append((owners[0].name, column, col.sql(dialect=dialect)))
    if not found:
        return f"{function}() was given text: CAST the column AS NUMERIC inside it"
    return "; ".join(f"{table}.{column.name} is stored as text ({column.type}): write "
                     f"{function.upper()}(CAST({written} AS NUMERIC))" for table, column, written in found[:MAX_SUGGESTIONS])


def missing_alias_hint(name: str, sql: str, schema: Schema, dialect: str = "sqlite") -> str:
    """What the query's FROM does name, when it uses a qualifier that no table there carries."""
    from sqlglot import exp

    tree = parse_query(sql, dialect)
    named = []
    for node in tree.find_all(exp.Table) if tree is not None else ():
        entry = f"{node.alias} ({node.name})" if node.alias else node.name
        if entry not in named:
            named.append(entry)
    hint = f"{_bare(name)!r} is not a table or alias in the query's FROM"
    table = schema.table(_bare(name))
    if table is not None:
        hint += f"; join {table.name} to use its columns"
    return hint + (f"; FROM has: {', '.join(named)}" if named else "")


def reserved_name_hint(word: str, schema: Schema, dialect: str = "sqlite") -> str | None:
    """When the word a parse stopped at is one of the schema's names: quote it (None for any other word)."""
    from macsql.agents.prompting import engine_name

    low = word.lower()
    names = [t.name for t in schema.tables] + [c.name for t in schema.tables for c in t.columns]
    name = next((n for n in names if n.lower() == low), None)
    if name is None:
        return None
    return f"{name} is a reserved word in {engine_name(dialect)}: write the name in double quotes, {quote_name(name)}"


def _literal_filters(sql: str, schema: Schema, dialect: str = "sqlite") -> list[tuple[str, str, str, bool]]:
    """(table, column, literal, is_like) for each `column = 'text'` / `column LIKE '...'` in the query."""
    from sqlglot import exp

    tree = parse_query(sql, dialect)
    if tree is None:
        return []
    used = names_used(sql, schema, columns=False, dialect=dialect)
    in_query, aliases = used.tables, used.aliases
    out = []
    for node in tree.find_all(exp.EQ, exp.Like, exp.ILike):
        col, lit = node.this, node.expression
        if isinstance(col, exp.Literal):
            col, lit = lit, col
        if not (isinstance(col, exp.Column) and isinstance(lit, exp.Literal) and lit.is_string):
            continue
        if col.table:
            table = aliases.get(col.table.lower())
        else:
            owners = [t for t in in_query if schema.table(t).column(col.name) is not None]
            table = owners[0] if len(owners) == 1 else None
        column = schema.table(table).column(col.name) if table else None
        if column is not None:
            out.append((table, column.name, lit.this, isinstance(node, (exp.Like, exp.ILike))))
    return out[:MAX_LITERALS]


def _quote_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def empty_result_hints(sql: str, schema: Schema, db_path: str | Path, *, timeout_s: float = 5.0) -> list[str]:
    """For each WHERE literal that its column does not hold: the closest values it does hold."""
    from macsql.engines import open_database
    from macsql.values import normalize, value_index

    database = open_database(db_path)
    index = value_index(db_path)
    hints = []
    for table, column, literal, is_like in _literal_filters(sql, schema, database.dialect):
        op = "LIKE" if is_like else "="
        probe = (f"SELECT 1 FROM {quote_name(table)} WHERE {quote_name(column)} {op} {_quote_text(literal)} "
                 "LIMIT 1")
        found: ExecResult = database.execute(probe, timeout_s=timeout_s, max_rows=1)
        if not found.ok or found.rows:
            continue
        values = index.values_of(table, column)
        bare = literal.strip("%")
        close = [v for v in values if bare and normalize(bare) == normalize(v)]
        close = close or [v for v in values if bare and normalize(bare) in normalize(v)][:MAX_SUGGESTIONS]
        close = close or _close(bare, values)
        hint = f"{table}.{column} has no value {literal!r}"
        if close:
            hint += "; closest values: " + ", ".join(_quote_text(v) for v in close[:MAX_SUGGESTIONS])
        elsewhere = [m for m in index.match(bare) if (m.table, m.column) != (table, column)]
        if elsewhere:
            hint += "; it occurs in " + ", ".join(f"{m.table}.{m.column} as {_quote_text(m.value)}"
                                                   for m in elsewhere[:MAX_SUGGESTIONS])
        hints.append(hint)
    return hints


def repair_hint(sql: str, result: ExecResult | None, schema: Schema, db_path: str | Path) -> str | None:
    """One line of facts for the Refiner about what is wrong with `sql`, or None when there is nothing
    to add to the error itself."""
    if result is None or result.timed_out:
        return None
    if result.error:
        from macsql.engines import engine_of

        dialect = engine_of(db_path)
        m = _NO_QUALIFIED.search(result.error)
        if m:
            return missing_column_hint(f"{m.group(1)}.{m.group(2)}", schema, sql, dialect)
        for pattern, make in ((_NO_COLUMN, lambda n: missing_column_hint(n, schema, sql, dialect)),
                              (_NO_TABLE, lambda n: missing_table_hint(n, schema)),
                              (_AMBIGUOUS, lambda n: ambiguous_hint(n, schema, sql, dialect)),
                              (_NOT_GROUPED, lambda n: not_grouped_hint(n, sql, dialect)),
                              (_NO_ALIAS, lambda n: missing_alias_hint(n, sql, schema, dialect)),
                              (_TEXT_ARGUMENT, lambda n: text_argument_hint(n, sql, schema, dialect)),
                              (_SYNTAX_NEAR, lambda n: reserved_name_hint(n, schema, dialect))):
            m = pattern.search(result.error)
            if m:
                return make(next(g for g in m.groups() if g))
        return None
    if not result.rows:
        hints = empty_result_hints(sql, schema, db_path)
        return "; ".join(hints) if hints else None
    return None

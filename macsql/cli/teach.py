"""`macsql teach`: what a person teaches macsql about one database (descriptions, glossary terms, approved
question/SQL examples), a thin layer over macsql/knowledge.py."""

from __future__ import annotations

import json

import click

from macsql.cli.groups import OUTPUT, GroupedCommand

# Every `teach` subcommand's `--help` in these sections (each has some of the options)
SECTIONS = {"Database": ("--db",), "What to store": ("--question", "--sql", "--evidence", "--values"),
            "Approval": ("--by",), OUTPUT: ("--json",)}


def _approver(ctx, param, value):
    """A click callback: `--by` names a person; an empty name is a usage error (exit 2), not an approval."""
    if value is not None and not value.strip():
        raise click.BadParameter("name the person who approves it, e.g. --by ana", ctx, param)
    return value


def db_option(f):
    return click.option("--db", required=True, metavar="PATH|URL|demo",
                        help="A SQLite or DuckDB file, a folder or glob of CSV/Parquet files, a postgresql:// URL, "
                             "or `demo`.")(f)


def by_option(f):
    return click.option("--by", "approved_by", required=True, metavar="NAME", callback=_approver,
                        help="Who approves it; stored with it, with the time.")(f)


def _database(db: str):
    from macsql.demo import resolve_db
    from macsql.engines import check_db

    return check_db(resolve_db(db))


@click.group("teach", no_args_is_help=True)
def teach():
    """Teach macsql a database: descriptions, glossary terms and approved question/SQL examples.

    \b
    What is taught is kept per database (its path and its schema) in a JSON file under the cache folder,
    and the agents use it on every question: descriptions in the schema, the terms the question uses and
    the approved examples most like it in the Decomposer's prompt. Nothing is stored without --by, and an
    example is stored only when its SQL is one read-only query that runs and returns rows.
    \b
      macsql teach add-example --db geo.sqlite --question "How many major cities are there?" \\
          --sql "SELECT COUNT(*) FROM city WHERE pop > 150000" --by ana
      macsql teach add-term --db geo.sqlite "major city" "city.pop > 150000" --by ana
      macsql teach describe --db geo.sqlite city.pop "population, in people" --by ana
      macsql teach import --db bird/dev_databases/card_games/card_games.sqlite \\
          bird/dev_databases/card_games/database_description --by ana
      macsql teach list --db geo.sqlite --json
      macsql teach remove --db geo.sqlite e3
    """


@teach.command("add-example", cls=GroupedCommand, sections=SECTIONS)
@db_option
@click.option("--question", required=True, help="The question, as a user would ask it.")
@click.option("--sql", required=True, help="The approved SQL that answers it (one read-only query).")
@click.option("--evidence", default="", help="Knowledge the question needs, as BIRD's evidence (optional).")
@by_option
def add_example_cmd(db, question, sql, evidence, approved_by):
    """Store an approved question/SQL example, once its SQL runs on the database and returns rows."""
    from macsql import knowledge

    entry = knowledge.add_example(_database(db), question, sql, approved_by=approved_by, evidence=evidence)
    click.echo(f"stored example {entry['id']}")


@teach.command("add-term", cls=GroupedCommand, sections=SECTIONS)
@db_option
@click.argument("term")
@click.argument("meaning")
@by_option
def add_term_cmd(db, term, meaning, approved_by):
    """Store a glossary TERM and its MEANING ("major city" "city.pop > 150000"): shown to the
    Decomposer when every word of TERM is in the question."""
    from macsql import knowledge

    entry = knowledge.add_term(_database(db), term, meaning, approved_by=approved_by)
    click.echo(f"stored term {entry['id']}")


@teach.command("describe", cls=GroupedCommand, sections=SECTIONS)
@db_option
@click.argument("target", metavar="TABLE[.COLUMN]")
@click.argument("text")
@click.option("--values", default="", help="What a column's values mean (\"1 = yes, 0 = no\").")
@by_option
def describe_cmd(db, target, text, values, approved_by):
    """Describe a table or a column (replacing an earlier description): column descriptions show in the
    schema the agents read, as BIRD's do."""
    from macsql import knowledge

    key, _ = knowledge.describe(_database(db), target, text, approved_by=approved_by, values=values)
    click.echo(f"stored the description of {key}")


@teach.command("import", cls=GroupedCommand, sections=SECTIONS)
@db_option
@click.argument("source", metavar="FILE", type=click.Path(exists=True))
@by_option
def import_cmd(db, source, approved_by):
    """Store what FILE holds: a BIRD database_description folder, a tables.json with column_descriptions
    (KaggleDBQA), question/SQL pairs (a JSON list or a CSV with question and sql columns; a Spider or BIRD
    data file gives this database's pairs), or a knowledge file (one kept for an earlier schema). Every
    example is checked as `add-example` checks it; those refused are listed and the rest stored."""
    from macsql import knowledge
    from macsql.display import terminal_safe
    from macsql.errors import InputError

    done = knowledge.import_file(_database(db), source, approved_by=approved_by)
    for line in done.refused:
        click.echo(terminal_safe(f"refused {line}", keep=""), err=True)
    if done.refused and not (done.descriptions or done.terms or done.examples):
        raise InputError(f"nothing imported from {source}: {len(done.refused)} refused ({done.refused[0]})")
    click.echo(f"imported {done.summary()}")


@teach.command("list", cls=GroupedCommand, sections=SECTIONS)
@db_option
@click.option("--json", "as_json", is_flag=True, help="The knowledge file's content as JSON, with its path.")
def list_cmd(db, as_json):
    """Show what was taught about the database: descriptions, terms, examples, each with its id."""
    from macsql import knowledge
    from macsql.display import terminal_safe
    from macsql.engines import open_database
    from macsql.schema import introspect

    path = _database(db)
    database = open_database(path)
    shown = database.label  # a URL without its password
    schema = introspect(database)
    known = knowledge.load(path, schema)
    where = knowledge.knowledge_file(path, schema)
    earlier = knowledge.earlier_files(path, schema)
    if as_json:
        click.echo(json.dumps({"file": str(where), **known.to_dict(), "earlier_files": [str(p) for p in earlier]},
                              indent=2, ensure_ascii=False))
        return
    lines = [f"knowledge of {shown} ({where if where.is_file() else 'nothing taught yet'})"]
    if known.descriptions:
        lines.append(f"descriptions ({len(known.descriptions)}):")
        for key, entry in known.descriptions.items():
            values = f" [values: {entry['value_description']}]" if entry.get("value_description") else ""
            lines.append(f"  {key}: {entry.get('description', '')}{values}{_approval(entry)}")
    if known.terms:
        lines.append(f"terms ({len(known.terms)}):")
        lines += [f"  {t['id']}  {t['term']} = {t['meaning']}{_approval(t)}" for t in known.terms]
    if known.examples:
        lines.append(f"examples ({len(known.examples)}):")
        for e in known.examples:
            lines.append(f"  {e['id']}  {e['question']}{_approval(e)}")
            lines.append(f"      {' '.join(e['sql'].split())}")
    for old in earlier:
        lines.append(f"note: {old} holds knowledge of an earlier schema at this path; carry it over with "
                     f"`macsql teach import --db {shown} {old} --by NAME` (every example is checked again)")
    click.echo("\n".join(terminal_safe(line, keep="") for line in lines))


def _approval(entry: dict) -> str:
    return f"  (by {entry.get('approved_by', '?')}, {entry.get('approved_at', '?')})"


@teach.command("remove", cls=GroupedCommand, sections=SECTIONS)
@db_option
@click.argument("entry_id", metavar="ID")
def remove_cmd(db, entry_id):
    """Remove an example (e3), a term (t1) or a description (TABLE or TABLE.COLUMN)."""
    from macsql import knowledge

    click.echo(f"removed {knowledge.remove(_database(db), entry_id)}")

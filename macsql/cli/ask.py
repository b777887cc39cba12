"""`macsql ask` and `macsql schema`: a question about one database, and the schema the agents see."""

from __future__ import annotations

import json
from pathlib import Path

import click

from macsql.cli import options
from macsql.errors import MacSQLError


@click.command()
@click.argument("question")
@click.option("--db", required=True, metavar="PATH|demo", help="SQLite database file, or `demo`.")
@click.option("--evidence", default="", help="Extra knowledge for the question (BIRD's `evidence`).")
@click.option("--follow-up", "follow_up", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="ANSWER.json", help="Build on an earlier answer, saved from `macsql ask --json`: the "
                                          "agents see its question and SQL (and the turns before it).")
@options.model_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: SQL, rows, columns, trace.")
@click.option("--verbose", "-v", is_flag=True, help="Show the trace: schema kept, sub-questions, refine rounds.")
@click.option("--show", default=20, show_default=True, help="Rows to print in the table.")
def ask(question, db, evidence, follow_up, as_json, verbose, show, **model_opts):
    """Answer QUESTION about a SQLite database with SQL and its result rows.

    \b
    Examples:
      macsql ask "How many customers live in Spain?" --db demo
      macsql ask "Top 3 products by revenue" --db shop.sqlite --verbose
      macsql ask "..." --db my.sqlite --model ./my-checkpoint --adapters runs/lora
      macsql ask "..." --db my.sqlite --backend openai --base-url http://gpu:8000/v1 --model Qwen/Qwen2.5-Coder-7B-Instruct
      macsql ask "How many customers live in Spain?" --db demo --json > a.json
      macsql ask "and only those in Madrid?" --db demo --follow-up a.json
    """
    from macsql.demo import resolve_db
    from macsql.errors import InputError
    from macsql.sqlexec import check_database

    if not question.strip():
        raise InputError('the question is empty; ask something, e.g. macsql ask "How many orders are there?" --db demo')
    db_path = check_database(resolve_db(db))  # fail fast, before loading a model
    history = None
    if follow_up:
        from macsql.pipeline import follow_up_history

        try:
            saved = json.loads(Path(follow_up).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"--follow-up {follow_up}: not the JSON `macsql ask --json` prints ({exc})") from None
        history = follow_up_history(saved)
    pipe = options.build_pipeline(**model_opts)
    answer = pipe.ask(question, db_path, evidence=evidence, history=history)
    if as_json:
        payload = answer.to_dict()
        if history:
            payload["history"] = history  # so that this answer can be followed up in turn
        click.echo(json.dumps(payload, default=str, ensure_ascii=False))
    else:
        from macsql.display import print_answer

        print_answer(answer, verbose=verbose, show=show)
    if answer.error:
        raise MacSQLError(f"no working SQL after {answer.rounds} refine round(s): {answer.error}")


@click.command()
@click.option("--db", required=True, metavar="PATH|demo", help="SQLite database file, or `demo`.")
@click.option("--no-examples", is_flag=True, help="Leave out sampled values.")
@click.option("--json", "as_json", is_flag=True, help="The introspected schema as JSON.")
def schema(db, no_examples, as_json):
    """Print the schema exactly as the agents see it."""
    from macsql.demo import resolve_db
    from macsql.schema import introspect, render_schema

    s = introspect(resolve_db(db))
    click.echo(json.dumps(s.to_dict(), indent=2) if as_json else render_schema(s, examples=not no_examples))

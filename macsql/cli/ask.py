"""`macsql ask` and `macsql schema`: a question about one database, and the schema the agents see."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from macsql.cli import options
from macsql.cli.groups import EVERYDAY, OUTPUT, GroupedCommand
from macsql.display import TABLE_FORMAT  # display.py imports rich and tabulate only when it prints

# Each output flag: its parameter -> (the flag, the format it picks). `--fmt` implies `--table`, as in sqlite-utils.
OUTPUT_FLAGS = {"csv": ("--csv", "csv"), "tsv": ("--tsv", "tsv"), "nl": ("--nl", "nl"), "as_json": ("--json", "json"),
                "json_trace": ("--json-trace", "json-trace"), "table": ("--table", "table"),
                "fmt": ("--fmt", "table"), "sql_only": ("--sql-only", "sql")}


def output_format(ctx: click.Context) -> str:
    """The format the output flags pick ("rich" when none does). A flag on the command line overrides one from
    the environment or a config file; two flags on the same footing are a usage error."""
    from click.core import ParameterSource

    from macsql.errors import UsageError

    given = [name for name in OUTPUT_FLAGS if ctx.params.get(name)]
    typed = [name for name in given if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    given = typed or given
    formats = {OUTPUT_FLAGS[name][1] for name in given}
    if len(formats) > 1:
        flags = " and ".join(OUTPUT_FLAGS[name][0] for name in given)
        raise UsageError(f"{flags} pick different output formats; pass one of "
                         f"{', '.join(flag for flag, _ in OUTPUT_FLAGS.values())}")
    return formats.pop() if formats else "rich"


def check_table_format(fmt: str | None) -> None:
    """An unknown --fmt is a usage error, with the closest of tabulate's formats (read here, not at import, so
    that `macsql --help` does not load tabulate)."""
    if fmt is None:
        return
    from tabulate import tabulate_formats

    from macsql.errors import UsageError, did_you_mean

    if fmt not in tabulate_formats:
        raise UsageError(f"--fmt {fmt!r} is not a table format{did_you_mean(fmt, tabulate_formats)}; "
                         f"choose from {', '.join(sorted(tabulate_formats))}")


def check_spreadsheet_safe(ctx: click.Context, out: str) -> None:
    """--spreadsheet-safe typed with an output other than --csv or --tsv is a usage error (from the
    environment or a config file it is a default that applies where it can)."""
    from click.core import ParameterSource

    from macsql.errors import UsageError

    if (ctx.params.get("spreadsheet_safe") and out not in ("csv", "tsv")
            and ctx.get_parameter_source("spreadsheet_safe") == ParameterSource.COMMANDLINE):
        raise UsageError("--spreadsheet-safe guards --csv and --tsv output; pass one of them with it")


# `ask --help` in sections: these, then the model options' "Model" and "Agents and ablations"
ASK_SECTIONS = {EVERYDAY: ("--db", "--evidence", "--follow-up", "--examples", "--descriptions", "--verbose"),
                OUTPUT: (*(flag for flag, _ in OUTPUT_FLAGS.values()), "--no-headers", "--spreadsheet-safe", "--show")}


@click.command(cls=GroupedCommand, sections=ASK_SECTIONS, renamed=options.RENAMED)
@click.argument("question")
@click.option("--db", required=True, metavar="PATH|URL|demo",
              help="A SQLite or DuckDB file, a folder or glob of CSV/Parquet files, a postgresql:// URL, or `demo`.")
@click.option("--evidence", default="", help="Extra knowledge for the question (BIRD's `evidence`).")
@click.option("--follow-up", "follow_up", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="ANSWER.json", help="Build on an earlier answer, saved from `macsql ask --json`: the "
                                          "agents see its question and SQL (and the turns before it).")
@click.option("--examples", "examples_file", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Question/SQL pairs (JSON or CSV) the agents may learn from for this "
                                   "question, besides those taught with `macsql teach`; nothing is stored.")
@click.option("--descriptions", "descriptions_file", type=click.Path(exists=True), default=None, metavar="FILE",
              help="Column descriptions for this question: a BIRD database_description folder, a tables.json "
                   "with column_descriptions, or a knowledge file; nothing is stored.")
@options.model_options
@click.option("--csv", is_flag=True, help="Output the rows as CSV, with a header row.")
@click.option("--tsv", is_flag=True, help="Output the rows as TSV, with a header row.")
@click.option("--nl", is_flag=True, help="Output the rows as JSON lines, one object per row.")
@click.option("--json", "as_json", is_flag=True, help="Output the answer as one JSON object: question, SQL, "
                                                      "columns, rows, error and counts (no trace).")
@click.option("--json-trace", is_flag=True, help="Output the whole answer as one JSON object, the trace too: "
                                                 "schema kept, candidates and the vote, refine rounds, prompts.")
@click.option("--table", is_flag=True, help="Output the rows as a plain-text table (see --fmt).")
@click.option("--fmt", default=None, metavar="FORMAT",
              help=f"Table format for --table (implies it): one of tabulate's, e.g. github, grid, psql, rst, "
                   f"latex (default: {TABLE_FORMAT}).")
@click.option("--sql-only", is_flag=True, help="Output only the SQL (the pipeline still runs and checks it).")
@click.option("--no-headers", is_flag=True, help="Leave the header row out of --csv, --tsv and --table.")
@click.option("--spreadsheet-safe", is_flag=True,
              help="With --csv or --tsv, for a file a spreadsheet will open: text that would run as a formula "
                   "(starting with = + - @, a tab or CR) gets a leading ' (numbers stay as they are). Without "
                   "it, --csv and --tsv write values as they are, for programs.")
@click.option("--verbose", "-v", is_flag=True, help="Show the trace: schema kept, sub-questions, refine rounds "
                                                     "(on stderr with an output flag).")
@click.option("--show", default=20, show_default=True, help="Rows to print in the default view.")
@click.pass_context
def ask(ctx, question, db, evidence, follow_up, examples_file, descriptions_file, csv, tsv, nl, as_json, json_trace,
        table, fmt, sql_only, no_headers, spreadsheet_safe, verbose, show, **model_opts):
    """Answer QUESTION about a database with SQL and its result rows. QUESTION `-` reads it from stdin.

    \b
    Examples:
      macsql ask "How many customers live in Spain?" --db demo
      macsql ask "Top 3 products by revenue" --db shop.sqlite --verbose
      macsql ask "Orders per status" --db demo --csv > orders.csv
      macsql ask "Orders per status" --db demo --csv --spreadsheet-safe > orders-for-excel.csv
      echo "How many products are there?" | macsql ask - --db demo --sql-only
      macsql ask "..." --db my.sqlite --model ./my-checkpoint --adapters runs/lora
      macsql ask "..." --db my.sqlite --backend openai --base-url http://gpu:8000/v1 --model Qwen/Qwen2.5-Coder-7B-Instruct
      macsql ask "How many customers live in Spain?" --db demo --json > a.json
      macsql ask "and only those in Madrid?" --db demo --follow-up a.json
      macsql ask "How many major cities are there?" --db geo.sqlite --examples pairs.csv
      macsql ask "Revenue per month" --db 'sales/*.parquet'

    Exit status: 0 with working SQL, 1 on an error (database, model, server), 2 on a usage error, 3 when the
    agents found no working SQL.
    """
    from macsql.demo import resolve_db
    from macsql.display import (
        answer_json,
        format_rows,
        make_console,
        print_answer,
        print_trace,
        terminal_safe,
    )
    from macsql.engines import check_db, open_database
    from macsql.errors import InputError, NoWorkingSQLError

    out = output_format(ctx)
    check_table_format(fmt if out == "table" else None)
    check_spreadsheet_safe(ctx, out)
    if question == "-":  # sqlite-utils' convention: the text comes from stdin
        question = sys.stdin.read().strip()
    if not question.strip():
        raise InputError('the question is empty; ask something, e.g. macsql ask "How many orders are there?" --db demo')
    db_path = check_db(resolve_db(db))  # fail fast, before loading a model
    history = None
    if follow_up:
        from macsql.pipeline import follow_up_history

        try:
            saved = json.loads(Path(follow_up).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            # ValueError: malformed JSON, or an integer past Python's digit limit; RecursionError: nesting
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise InputError(f"--follow-up {follow_up}: not the JSON `macsql ask --json` prints ({reason})") from None
        history = follow_up_history(saved)
    one_off = {}
    if examples_file or descriptions_file:
        from macsql import knowledge
        from macsql.schema import introspect

        one_off = {"examples_file": str(Path(examples_file).resolve()) if examples_file else "",
                   "descriptions_file": str(Path(descriptions_file).resolve()) if descriptions_file else ""}
        from macsql.engines import engine_of

        # a bad file fails here, before a model loads
        knowledge.read_one_off(introspect(open_database(db_path)), dialect=engine_of(db_path), **one_off)
    pipe = options.build_pipeline(**model_opts)
    if one_off:
        pipe = pipe.replace(**one_off)
    answer = pipe.ask(question, db_path, evidence=evidence, history=history)
    if out == "rich":
        print_answer(answer, verbose=verbose, show=show)
    else:
        if verbose:  # stdout is for the format
            print_trace(answer, make_console(sys.stderr))
        if out in ("json", "json-trace"):
            click.echo(answer_json(answer, trace=out == "json-trace", history=history))
        elif out == "sql":
            if answer.sql:
                click.echo(terminal_safe(answer.sql))
        elif answer.columns:
            for line in format_rows(answer.columns, answer.rows, out, headers=not no_headers,
                                    table_format=fmt or TABLE_FORMAT, spreadsheet=spreadsheet_safe):
                click.echo(line, nl=False)
    if answer.error:
        raise NoWorkingSQLError(f"no working SQL after {answer.rounds} refine round(s): {answer.error}")


@click.command(cls=GroupedCommand, renamed={"--no-examples": "--no-sample-values"})
@click.option("--db", required=True, metavar="PATH|URL|demo",
              help="A SQLite or DuckDB file, a folder or glob of CSV/Parquet files, a postgresql:// URL, or `demo`.")
@click.option("--no-sample-values", is_flag=True, help="Leave out the sampled values of each column.")
@click.option("--json", "as_json", is_flag=True, help="The introspected schema as JSON.")
def schema(db, no_sample_values, as_json):
    """Print the schema exactly as the agents see it (with the descriptions taught by `macsql teach`)."""
    from macsql import knowledge
    from macsql.demo import resolve_db
    from macsql.display import terminal_safe
    from macsql.engines import open_database
    from macsql.schema import introspect, render_schema

    path = resolve_db(db)
    s = introspect(open_database(path))
    s = knowledge.apply_descriptions(s, knowledge.load(path, s))
    # JSON escapes control characters itself; the rendered text may still hold C1 controls from the data
    click.echo(json.dumps(s.to_dict(), indent=2) if as_json else terminal_safe(render_schema(s, examples=not no_sample_values)))

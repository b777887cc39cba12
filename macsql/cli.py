"""`macsql`: ask questions of a SQLite database, inspect schemas, evaluate and fine-tune the agents.

A thin click layer over the library: heavy imports happen inside commands so `macsql --help` is instant, and
every `MacSQLError` becomes one line `Error: ...` with exit code 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from macsql.agents.decomposer import STYLES as DECOMPOSER_STYLES
from macsql.backends import BACKEND_CHOICES
from macsql.errors import MacSQLError
from macsql.state import Context


class MacSQLGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MacSQLError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `macsql data` alone shows its help
        except click.UsageError as exc:
            # A bad option value is the same class of mistake as a bad file, whichever layer notices it:
            # one line and exit 1 everywhere (click's own usage errors would print usage and exit 2).
            where = exc.ctx.command_path if exc.ctx is not None else "macsql"
            message = " ".join(exc.format_message().split())
            click.echo(f"Error: {message} (see `{where} --help`)", err=True)
            sys.exit(1)
        except OSError as exc:
            # a path the user gave cannot be written or read (--out under a file, a read-only folder)
            target = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
            click.echo(f"Error: cannot use{target}: {exc.strerror or exc}; pass a path you can read and write",
                       err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            from macsql.errors import did_you_mean

            if args and "No such command" in str(exc):
                raise click.UsageError(f"no command {args[0]!r}{did_you_mean(args[0], self.commands)}; "
                                       "see `macsql --help`", ctx) from None
            raise


@click.group(cls=MacSQLGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="macsql")
def main():
    """MAC-SQL: multi-agent text-to-SQL on SQLite.

    \b
    Quick start (the bundled demo database, the default model):
      macsql ask "How many customers live in Spain?" --db demo
      macsql schema --db demo
    """


def check_timeout_option(ctx, param, value):
    """A click callback: seconds must be positive and finite (nan or inf would switch the deadline off)."""
    from macsql.sqlexec import check_timeout

    return check_timeout(value)


def model_options(f):
    """Options shared by every command that runs the agents."""
    opts = [
        click.option("--model", "-m", default=None, metavar="NAME_OR_PATH",
                     help="Hugging Face id, local folder, .gguf file or alias "
                          "(default: Qwen/Qwen2.5-Coder-1.5B-Instruct)."),
        click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
                     help="auto: llama.cpp for GGUF weights when installed, else transformers."),
        click.option("--adapters", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder with a LoRA adapter per agent (from `macsql finetune`)."),
        click.option("--base-url", default=None, help="OpenAI-compatible server URL for --backend openai "
                                                      "(default $OPENAI_BASE_URL or http://localhost:8000/v1)."),
        click.option("--device", default=None, help="torch device for --backend hf (default: cuda if present)."),
        click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto",
                     show_default=True, help="Weights dtype for --backend hf."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for llama.cpp (default: every CPU this process may use). On a busy "
                          "machine 1 can be much faster: llama.cpp's threads wait for each other."),
        click.option("--max-rounds", default=3, show_default=True, type=click.IntRange(0, 10),
                     help="Refiner rounds at most."),
        click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=float,
                     callback=check_timeout_option, help="Seconds a query may run before it is stopped."),
        click.option("--request-timeout", "request_timeout_s", default=120.0, show_default=True, type=float,
                     callback=check_timeout_option,
                     help="--backend openai: seconds to wait for one reply of the model server."),
        click.option("--format", "output_format", type=click.Choice(["sql", "reasoning"]), default="sql",
                     show_default=True, help="Agents' reply format; `reasoning` asks for "
                                             "<reasoning>…</reasoning><sql>…</sql> (shown with --verbose)."),
        click.option("--decompose", type=click.Choice(DECOMPOSER_STYLES), default="steps", show_default=True,
                     help="Decomposer reply style: short sub-question lines then the SQL, or MAC-SQL's "
                          "original layout with SQL for every sub-question (about 1.7x the tokens)."),
        click.option("--candidates", "candidates", default=Context.candidates, show_default=True,
                     type=click.IntRange(1, 32), metavar="K",
                     help="SQL candidates for the execution vote: the direct query, the decomposed one and "
                          "sampled ones; 1 = a single greedy query, no vote."),
        click.option("--temperature", default=Context.temperature, show_default=True,
                     type=click.FloatRange(0.0, 2.0, min_open=True), help="Sampling temperature of the extra candidates."),
        click.option("--all-samples", is_flag=True,
                     help="Draw every sampled candidate, even when the direct and the decomposed query already "
                          "agree (by default the samples are drawn only when they do not)."),
        click.option("--no-values", is_flag=True, help="Ablation: do not link question words to database values."),
        click.option("--no-hints", is_flag=True, help="Ablation: no repair hints for the Refiner."),
        click.option("--no-selector", is_flag=True, help="Ablation: keep the whole schema."),
        click.option("--no-decomposer", is_flag=True, help="Ablation: ask for SQL directly."),
        click.option("--no-refiner", is_flag=True, help="Ablation: do not repair failing SQL."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_pipeline(model, backend, adapters, base_url, device, dtype, max_rounds, timeout_s, no_selector,
                   no_decomposer, no_refiner, output_format="sql", decompose="steps", candidates=Context.candidates,
                   temperature=Context.temperature, no_values=False, no_hints=False, all_samples=False, threads=None,
                   request_timeout_s=120.0, **extra):
    from macsql.pipeline import Pipeline

    backend_options = {}
    if backend == "openai":
        backend_options["timeout_s"] = request_timeout_s
        if base_url:
            backend_options["base_url"] = base_url
    if backend in ("hf", "auto"):
        backend_options.update({k: v for k, v in {"device": device, "dtype": dtype}.items() if v})
        if backend == "auto":
            backend_options = {"device": device, "dtype": dtype} if (device or dtype != "auto") else {}
    if threads and backend != "openai":
        backend_options["n_threads"] = threads
    return Pipeline.from_pretrained(
        model or None, backend=backend, adapters=adapters, backend_options=backend_options,
        max_rounds=max_rounds, timeout_s=timeout_s, use_selector=not no_selector,
        use_decomposer=not no_decomposer, use_refiner=not no_refiner, output_format=output_format,
        decompose=decompose, candidates=candidates, temperature=temperature, use_values=not no_values,
        use_hints=not no_hints, early_stop=not all_samples, **extra)


@main.command()
@click.argument("question")
@click.option("--db", required=True, metavar="PATH|demo", help="SQLite database file, or `demo`.")
@click.option("--evidence", default="", help="Extra knowledge for the question (BIRD's `evidence`).")
@click.option("--follow-up", "follow_up", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="ANSWER.json", help="Build on an earlier answer, saved from `macsql ask --json`: the "
                                          "agents see its question and SQL (and the turns before it).")
@model_options
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
    pipe = build_pipeline(**model_opts)
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


@main.command()
@click.option("--db", "dbs", multiple=True, metavar="[NAME=]PATH|demo",
              help="A database to serve (repeatable; default: demo). Requests name it, never a path.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", default=None, metavar="TOKEN",
              help="Require `Authorization: Bearer TOKEN` on every API call (default $MACSQL_TOKEN).")
@model_options
def serve(dbs, host, port, token, **model_opts):
    """Serve a web page and an HTTP API: ask, stream the agents' steps, edit and re-run SQL, follow up.

    \b
    Examples:
      macsql serve --db demo                                  # then open http://127.0.0.1:8000/
      macsql serve --db shop=data/shop.sqlite --db sales.sqlite
      MACSQL_TOKEN=secret macsql serve --host 0.0.0.0 --db demo --backend openai --base-url http://gpu:8000/v1
    """
    from macsql.serve.server import named_databases, require_server_packages, resolve_token
    from macsql.serve.server import serve as run_server

    require_server_packages()  # all checks before the model loads
    token = resolve_token(host, token)
    databases = named_databases(dbs)
    run_server(build_pipeline(**model_opts), databases, host=host, port=port, token=token)


@main.command()
@click.option("--db", required=True, metavar="PATH|demo", help="SQLite database file, or `demo`.")
@click.option("--no-examples", is_flag=True, help="Leave out sampled values.")
@click.option("--json", "as_json", is_flag=True, help="The introspected schema as JSON.")
def schema(db, no_examples, as_json):
    """Print the schema exactly as the agents see it."""
    from macsql.demo import resolve_db
    from macsql.schema import introspect, render_schema

    s = introspect(resolve_db(db))
    click.echo(json.dumps(s.to_dict(), indent=2) if as_json else render_schema(s, examples=not no_examples))


# Commands that live with their features register here, one line each (keep imports light: click only).
# -- feature commands --
import macsql.evaluate.commands  # noqa: E402,F401  (registers eval, score, compare on `main`)
from macsql.finetune.commands import data_group, finetune  # noqa: E402

main.add_command(data_group)
main.add_command(finetune)
from macsql.evaluate.judge import judge_cmd  # noqa: E402
from macsql.finetune.clean import clean_cmd  # noqa: E402

data_group.add_command(clean_cmd)  # macsql data clean
main.add_command(judge_cmd)  # macsql judge


if __name__ == "__main__":
    main()

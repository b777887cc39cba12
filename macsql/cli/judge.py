"""`macsql judge`: an LLM judge names the error category of each wrong prediction of a run (evaluate/judge.py)."""

from __future__ import annotations

from pathlib import Path

import click

from macsql.backends import BACKEND_CHOICES
from macsql.cli.groups import MODEL, GroupedCommand
from macsql.sqlexec import DEFAULT_TIMEOUT_S

JUDGE_SECTIONS = {"Run": ("--run", "--data", "--db-root", "--out", "--limit", "--timeout", "--quiet"),
                  MODEL: ("--model", "--base-url", "--backend")}


@click.command("judge", cls=GroupedCommand, sections=JUDGE_SECTIONS)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Folder of `macsql eval --out` (predictions.jsonl) or `macsql score --out` (report.csv).")
@click.option("--model", "-m", required=True, metavar="NAME_OR_PATH", help="The judge model.")
@click.option("--base-url", default=None, help="OpenAI-compatible server URL (implies --backend openai).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default=None,
              help="Judge backend (default: openai with --base-url, else auto).")
@click.option("--data", default=None, type=click.Path(dir_okay=False),
              help="The benchmark the run answered (default: the one in run.json).")
@click.option("--db-root", default=None, type=click.Path(), help="Database folder (default: the run's).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Where errors.json/errors.csv go (default: the run folder).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Judge at most N wrong predictions.")
@click.option("--timeout", "timeout_s", default=DEFAULT_TIMEOUT_S, show_default=True, type=float, help="Seconds per query.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def judge_cmd(run_dir, model, base_url, backend, data, db_root, out, limit, timeout_s, quiet):
    """Classify each wrong prediction of a run into an error category with an LLM judge.

    Execution accuracy stays the metric; the judge explains the misses: schema linking, join, aggregation,
    filter value, nesting, ordering/limit, gold error, other.

    \b
    Examples:
      macsql judge --run runs/spider --model Qwen/Qwen2.5-72B-Instruct --base-url http://gpu:8000/v1
      macsql judge --run runs/spider --model qwen2.5-coder-1.5b --backend hf
    """
    from macsql.backends import make_llm
    from macsql.evaluate.judge import category_table, first_wrong, judge_records, load_run

    records = load_run(run_dir, data=data, db_root=db_root)
    if limit is not None:
        records = first_wrong(records, limit, timeout_s)
    backend = backend or ("openai" if base_url else "auto")
    options = {"base_url": base_url} if base_url else {}
    llm = make_llm(model, backend, **options)
    report = judge_records(records, llm, out_dir=out or run_dir, timeout_s=timeout_s, progress=not quiet)
    click.echo(category_table(report))
    click.echo(f"wrote {Path(out or run_dir) / 'errors.json'} and errors.csv", err=True)

"""`macsql data clean`: drop benchmark questions whose gold SQL cannot be trusted (finetune/clean.py checks)."""

from __future__ import annotations

from pathlib import Path

import click

from macsql.cli.groups import GroupedCommand
from macsql.errors import InputError
from macsql.evaluate.datasets import FORMATS
from macsql.finetune.clean import REASONS, clean_data, summary_text, write_outputs
from macsql.sqlexec import DEFAULT_TIMEOUT_S


@click.command("clean", cls=GroupedCommand, renamed={"--format": "--data-format"})
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Benchmark file: BIRD dev.json, Spider dev.json/train_spider.json or GeoQuery geography.json.")
@click.option("--db-root", type=click.Path(), default=None,
              help="Folder with <db_id>/<db_id>.sqlite (default: dev_databases/ or database/ beside --data; for "
                   "GeoQuery the .sqlite file or its folder).")
@click.option("--data-format", "fmt", type=click.Choice(FORMATS),
              default="auto", show_default=True, help="Benchmark format (auto-detected from the file's keys).")
@click.option("--tables", type=click.Path(dir_okay=False), default=None,
              help="Schema context to compare with the databases (default: tables.json / dev_tables.json beside "
                   "--data, when there is one).")
@click.option("--no-tables", is_flag=True, help="Do not look for a tables.json beside --data.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The cleaned file (same format).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="JSON report: counts per reason, examples, skipped checks, schema differences.")
@click.option("--timeout", "timeout_s", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds a gold query may run before it counts as a timeout.")
@click.option("--keep", multiple=True, metavar="REASON",
              help=f"Report but do not drop questions flagged for REASON (repeatable): {', '.join(REASONS)}.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def clean_cmd(data, db_root, fmt, tables, no_tables, out, report_path, timeout_s, keep, quiet):
    """Drop benchmark questions whose gold SQL does not parse, run or match the schema; report why.

    \b
    Examples:
      macsql data clean --data spider/dev.json --out runs/clean/spider-dev.json --report runs/clean/spider.json
      macsql data clean --data bird/dev.json --tables bird/dev_tables.json --out bird-clean.json
      macsql data clean --data geoquery/geography.json --out geo-clean.json --keep timeout
    """
    if tables and no_tables:
        raise InputError("--tables and --no-tables contradict each other; pass one")
    if Path(out).resolve() == Path(data).resolve():
        raise InputError("--out would overwrite --data; write the cleaned file somewhere else")
    kept, report = clean_data(data, db_root, fmt=fmt, tables=tables, use_tables=not no_tables,
                              timeout_s=timeout_s, keep=tuple(keep), progress=not quiet)
    write_outputs(kept, report, out, report_path)
    click.echo(summary_text(report))
    click.echo(f"wrote {out}" + (f" and {report_path}" if report_path else ""), err=True)

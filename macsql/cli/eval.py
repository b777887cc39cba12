"""`macsql eval`, `macsql score` and `macsql compare`: thin click commands over runner/scoring/report.

Only click and light registries are imported at module level (this file is imported by `macsql --help`).
"""

from __future__ import annotations

from pathlib import Path

import click

from macsql.backends.base import AGENTS
from macsql.cli import options
from macsql.cli.groups import AGENTS_AND_ABLATIONS, MODEL, GroupedCommand
from macsql.evaluate.copies import ENGINES
from macsql.evaluate.datasets import FORMATS
from macsql.evaluate.runner import VARIANTS
from macsql.sqlexec import DEFAULT_TIMEOUT_S

# The options that pick a benchmark's questions (eval and score), and their `--help` section
DATA_OPTIONS = ("--data", "--db-root", "--data-format", "--limit", "--db-id", "--seed", "--split")


def data_options(f):
    opts = [
        click.option("--data", type=click.Path(dir_okay=False), default=None,
                     help="Benchmark file: BIRD dev.json, Spider dev.json or text2sql-data geography.json."),
        click.option("--db-root", type=click.Path(), default=None,
                     help="Folder with <db_id>/<db_id>.sqlite (default: dev_databases/ or database/ beside "
                          "--data; for GeoQuery the .sqlite file or its folder)."),
        click.option("--data-format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
                     help="Benchmark format (auto-detected from the file's keys)."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N questions."),
        click.option("--db-id", "dbs", multiple=True, metavar="DB_ID",
                     help="Only the questions on this database (repeatable)."),
        click.option("--seed", type=int, default=None,
                     help="Sample --limit questions at random with this seed (default: the first N)."),
        click.option("--split", default=None, help="GeoQuery question-split to keep (train/dev/test)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _headline(summary: dict) -> str:
    parts = [f"n={summary['n']}", f"EX(Spider) {summary['ex_spider']}", f"EX(BIRD) {summary['ex_bird']}",
             f"exact {summary['exact_match']}", f"ROUGE-L {summary['rouge_l']}",
             f"hallucination {summary['hallucination_rate']}%", f"fails {summary['execution_failure_rate']}%"]
    if "ves" in summary:
        parts += [f"VES {summary['ves']}", f"R-VES {summary['rves']}" + (" (noisy)" if summary["ves_noisy"] else "")]
    return "  ".join(parts)


# ---------------------------------------------------------------------------------------------- eval
EVAL_SECTIONS = {"Benchmark": (*DATA_OPTIONS, "--suite", "--data-root"),
                 "Examples and descriptions": ("--examples", "--examples-from-split", "--half", "--descriptions",
                                               "--no-descriptions"),
                 "Engine": ("--engine", "--engine-root", "--engine-url"),
                 "Run": ("--out", "--workers", "--overwrite", "--quiet"),
                 "Scoring and report": ("--ves", "--ves-repeats", "--score-workers", "--no-plots"),
                 MODEL: (), AGENTS_AND_ABLATIONS: ("--baseline", "--ablations", "--variants")}


@click.command("eval", cls=GroupedCommand, sections=EVAL_SECTIONS, renamed={**options.RENAMED, "--db": "--db-id"})
@data_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder: predictions.jsonl, report.json/.csv, summary.md, plots. Reruns resume.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Questions in flight at once (batched on transformers, parallel on --backend openai).")
@click.option("--baseline", is_flag=True, help="Single-prompt baseline: one model call, whole schema, no refine.")
@click.option("--ablations", is_flag=True,
              help="Run the full pipeline and every ablation on the same sample into subfolders, plus a table.")
@click.option("--variants", default=None, metavar="LIST",
              help=f"With --ablations: a comma list of {','.join(VARIANTS)} (default: all of them).")
@click.option("--ves", is_flag=True, help="Also measure VES and R-VES (re-runs correct queries; slow).")
@click.option("--ves-repeats", default=10, show_default=True, type=click.IntRange(min=2),
              help="Timed runs per query for VES (BIRD uses 100).")
@click.option("--score-workers", default=None, type=click.IntRange(min=1),
              help="Processes executing gold/predicted SQL while scoring (default: up to 4).")
@click.option("--suite", is_flag=False, flag_value="all", default=None, metavar="[NAME]",
              help="Run the category validation suite(s) instead of a benchmark: all, or one name.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="With --suite: the folder with spider/ and geoquery/ (default ../shared/data).")
@click.option("--examples", "examples_file", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Question/SQL pairs (JSON or CSV; a BIRD/Spider data file gives each database "
                                   "its db_id's pairs) shown as examples for this run; nothing is stored.")
@click.option("--examples-from-split", "from_split", default=None, metavar="SPLIT",
              help="GeoQuery: the question/gold SQL pairs of this question-split (e.g. train) are the examples, "
                   "while --split (test, dev) is evaluated.")
@click.option("--half", type=click.Choice(("first", "second")), default=None,
              help="Evaluate this half of each database's questions (split by a seeded hash of question_id); "
                   "the other half's question/gold SQL pairs are the examples. Run both for every question.")
@click.option("--descriptions", "descriptions_file", type=click.Path(exists=True), default=None, metavar="FILE",
              help="Column descriptions for this run: a BIRD database_description folder, a tables.json with "
                   "column_descriptions, or a knowledge file; nothing is stored.")
@click.option("--no-descriptions", is_flag=True,
              help="Show no column descriptions at all (BIRD's database_description texts left out too).")
@click.option("--engine", type=click.Choice(ENGINES), default="sqlite", show_default=True,
              help="Answer on the databases' copies in this engine (made by benchmarks/load_engines.py); the "
                   "gold SQL is scored on SQLite as always.")
@click.option("--engine-root", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="With --engine duckdb: the folder holding <db_id>/<db_id>.duckdb.")
@click.option("--engine-url", default=None, metavar="URL",
              help="With --engine postgres: the database holding one schema per db_id "
                   "(postgresql://USER:PASSWORD@HOST/DB).")
@click.option("--overwrite", is_flag=True, help="Start over when --out holds a run with another config.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@options.model_options
def eval_cmd(data, db_root, fmt, limit, dbs, seed, split, out, workers, baseline, ablations, variants, ves,
             ves_repeats, score_workers, suite, data_root, examples_file, from_split, half, descriptions_file,
             no_descriptions, engine, engine_root, engine_url, overwrite, no_plots, quiet, **model_opts):
    """Evaluate the pipeline on a benchmark (or a validation suite) and write a report.

    \b
    Examples:
      macsql eval --data dev.json --db-root dev_databases --out runs/bird --limit 200 --seed 0
      macsql eval --data spider/dev.json --out runs/spider --limit 30 --seed 1 --ablations --backend hf
      macsql eval --data geography.json --out runs/geo --limit 50 --workers 4 --backend openai
      macsql eval --data geography.json --split test --examples-from-split train --out runs/geo-shots
      macsql eval --data dev.json --db-id superhero --half first --out runs/bird-half1
      macsql eval --data dev.json --engine duckdb --engine-root runs/engines/duckdb --out runs/bird-duckdb
      macsql eval --suite                     # every category suite (demo and shared-data databases)
      macsql eval --suite error_correction --db-id demo
    """
    from macsql.errors import InputError
    from macsql.evaluate import copies, plan, teaching
    from macsql.evaluate.report import write_report

    if suite and (examples_file or from_split or half or descriptions_file or no_descriptions):
        raise InputError("--examples, --examples-from-split, --half and the description options are for a "
                         "benchmark run (--data), not --suite")
    if engine != "sqlite" and (suite or ves):
        raise InputError("--engine is for a benchmark run without --ves (VES times queries on SQLite); leave "
                         f"out {'--suite' if suite else '--ves'}")
    if engine == "postgres" and (examples_file or from_split or half or descriptions_file):
        raise InputError("examples and descriptions given for the run go to each database by its db_id, and a "
                         "PostgreSQL copy is a schema named so in a database of another name; run them on "
                         "--engine sqlite or duckdb")
    if suite:
        from macsql.evaluate.suite import run_suites

        run_suites(suite, lambda: options.build_pipeline(**model_opts), only_dbs=list(dbs), data_root=data_root,
                   out=out, quiet=quiet, echo=click.echo)
        return
    if not out:
        raise InputError("no output folder; pass --out DIR (predictions.jsonl and the report go there)")
    names = plan.variant_names(ablations=ablations, variants=variants, baseline=baseline)
    fmt, examples = plan.choose_examples(data, db_root, fmt, limit, dbs, seed, split, half=half)
    plan.require_databases(examples, db_root)
    examples = copies.on_engine(examples, engine, root=engine_root, url=engine_url)
    taught = teaching.plan_teaching(data=data, db_root=db_root, fmt=fmt, split=split, dbs=dbs, out=out,
                                    examples_file=examples_file, from_split=from_split, half=half,
                                    descriptions_file=descriptions_file, no_descriptions=no_descriptions)
    teaching.check_teaching(taught, examples)  # a file with nothing for these databases fails before a model loads
    base = {**plan.base_config(data, fmt, db_root, limit, dbs, seed, split, examples), **taught.config(),
            **copies.engine_config(engine, root=engine_root, url=engine_url)}
    model_args = {k: model_opts.get(k) for k in ("model", "backend", "max_rounds", "timeout_s", "output_format")}
    switches = {f"use_{agent}": not model_opts[f"no_{agent}"] for agent in AGENTS}
    runs = plan.plan_variants(names, out, ablations=ablations, switches=switches, model_args=model_args,
                              examples=examples, overwrite=overwrite, options=taught.options,
                              sources={k: base.get(k) for k in ("examples_source", "descriptions_source", "engine")})
    # A rerun of finished runs (e.g. to rebuild the reports or the ablation table) needs no model.
    pipe = None if all(r.finished for r in runs) else options.build_pipeline(**model_opts)
    base.update(plan.model_config(pipe, model_args, workers) if pipe is not None else runs[-1].model_keys())
    taught.write()  # the pairs of a split or a half, named by their content, before the first question
    results = {}
    for run in runs:
        config, summary, scores = plan.run_variant(
            run, pipe, examples, base, overwrite=overwrite, workers=workers, progress=not quiet,
            echo=None if quiet else lambda line: click.echo(line, err=True), timeout_s=model_opts["timeout_s"],
            teaching=taught, ves=ves, ves_repeats=ves_repeats, score_workers=score_workers)
        write_report(run.folder.path, summary, scores, config, plots=not no_plots)
        results[run.name] = summary
        click.echo(f"{run.name}: {_headline(summary)}")
    if ablations:
        from macsql.evaluate.report import ablation_table, write_ablations

        write_ablations(Path(out), results, {**base, "variants": names})
        click.echo("\n" + ablation_table(results))
    click.echo(f"report: {Path(out)}")


# --------------------------------------------------------------------------------------------- score
SCORE_SECTIONS = {"Predictions": ("--pred", "--gold-as-pred"), "Benchmark": DATA_OPTIONS,
                  "Scoring and report": ("--timeout", "--score-workers", "--ves", "--ves-repeats", "--keep-distinct",
                                         "--out", "--no-plots", "--quiet")}


@click.command("score", cls=GroupedCommand, sections=SCORE_SECTIONS,
               renamed={"--db": "--db-id", "--workers": "--score-workers"})
@click.option("--pred", type=click.Path(dir_okay=False), default=None,
              help="Predictions: predictions.jsonl from `macsql eval`, or BIRD's predict_dev.json.")
@data_options
@click.option("--gold-as-pred", is_flag=True, help="Score the gold SQL as the prediction (checks the comparator "
                                                    "and the data: should give 100% EX).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write the report files here.")
@click.option("--timeout", "timeout_s", default=DEFAULT_TIMEOUT_S, show_default=True, type=float,
              callback=options.check_timeout_option, help="Seconds a query may run.")
@click.option("--score-workers", type=click.IntRange(min=1), default=None,
              help="Processes executing gold/predicted SQL (default: up to 4).")
@click.option("--ves", is_flag=True, help="Also measure VES and R-VES (re-runs correct queries).")
@click.option("--ves-repeats", default=10, show_default=True, type=click.IntRange(min=2))
@click.option("--keep-distinct", is_flag=True,
              help="EX (Spider) keeps DISTINCT in both queries (the Spider evaluator's flag of that name).")
@click.option("--no-plots", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def score_cmd(pred, data, db_root, fmt, limit, dbs, seed, split, gold_as_pred, out, timeout_s, score_workers, ves,
              ves_repeats, keep_distinct, no_plots, quiet):
    """Score a finished prediction file against a benchmark; no model is loaded.

    \b
    Examples:
      macsql score --pred runs/spider/predictions.jsonl --data spider/dev.json
      macsql score --gold-as-pred --data spider/dev.json          # the comparator on gold: 100% EX
      macsql score --pred predict_dev.json --data dev.json --db-root dev_databases --ves --out runs/score
    """
    import time

    from macsql.errors import InputError
    from macsql.evaluate import plan
    from macsql.evaluate.report import write_report
    from macsql.evaluate.run import read_predictions
    from macsql.evaluate.scoring import score_and_summarize

    if bool(pred) == bool(gold_as_pred):
        raise InputError("pass either --pred PATH or --gold-as-pred")
    fmt, examples = plan.choose_examples(data, db_root, fmt, limit, dbs, seed, split)
    if gold_as_pred:
        predictions = {e.question_id: {"question_id": e.question_id, "pred_sql": e.gold_sql} for e in examples}
    else:
        predictions = read_predictions(pred)
        matched = [e for e in examples if e.question_id in predictions]
        if not matched:
            raise InputError(f"no question_id in {pred} matches a question in {data}; was it made from this file?")
        examples = matched
    plan.require_databases(examples, db_root)
    config = {**plan.base_config(data, fmt, db_root, limit, dbs, seed, split, examples),
              "variant": "gold-as-pred" if gold_as_pred else "predictions", "pred": pred,
              "keep_distinct": keep_distinct}
    start = time.perf_counter()
    summary, scores = score_and_summarize(examples, predictions, score_workers=score_workers, timeout_s=timeout_s, ves=ves,
                                          ves_repeats=ves_repeats, progress=not quiet, keep_distinct=keep_distinct)
    if out:
        write_report(Path(out), summary, scores, config, plots=not no_plots)
    click.echo(_headline(summary))
    for g in summary["gold_errors"][:20]:
        click.echo(f"  gold fails: {g['question_id']} [{g['db_id']}] {g['error']}")
    if len(summary["gold_errors"]) > 20:
        click.echo(f"  ... {len(summary['gold_errors']) - 20} more in report.json")
    click.echo(f"scored {summary['n']} questions in {time.perf_counter() - start:.1f}s"
               + (f"; report: {out}" if out else ""), err=True)


# ------------------------------------------------------------------------------------------- compare
@click.command("compare")
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
def compare_cmd(a, b):
    """Metric deltas between two eval runs (B - A) and the questions whose EX flipped.

    A and B are output folders of `macsql eval`/`macsql score --out` (or their report.json).
    """
    from macsql.evaluate.report import compare_reports

    click.echo(compare_reports(a, b))


"""`macsql eval`, `macsql score` and `macsql compare`: thin click commands over runner/scoring/report.

Only click is imported at module level (this file is imported by `macsql --help`). The commands register
themselves on `main` at the bottom: cli.py imports this module in its feature block, and this module
imports cli.py for the shared model options, so whichever is imported first, both end up complete.
"""

from __future__ import annotations

from pathlib import Path

import click

from macsql.cli import check_timeout_option, main, model_options

FORMAT_CHOICES = ["auto", "bird", "spider", "geoquery"]


def data_options(f):
    opts = [
        click.option("--data", type=click.Path(dir_okay=False), default=None,
                     help="Benchmark file: BIRD dev.json, Spider dev.json or text2sql-data geography.json."),
        click.option("--db-root", type=click.Path(), default=None,
                     help="Folder with <db_id>/<db_id>.sqlite (default: dev_databases/ or database/ beside "
                          "--data; for GeoQuery the .sqlite file or its folder)."),
        click.option("--data-format", "fmt", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True,
                     help="Benchmark format (auto-detected from the file's keys). (--format is the agents' reply format.)"),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N questions."),
        click.option("--db", "dbs", multiple=True, metavar="DB_ID", help="Only these databases (repeatable)."),
        click.option("--seed", type=int, default=None,
                     help="Sample --limit questions at random with this seed (default: the first N)."),
        click.option("--split", default=None, help="GeoQuery question-split to keep (train/dev/test)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _examples(data, db_root, fmt, limit, dbs, seed, split):
    from macsql.errors import InputError
    from macsql.evaluate.datasets import detect_format, load_examples, select

    if not data:
        raise InputError("no benchmark given; pass --data PATH (BIRD or Spider dev.json, or geography.json)")
    if fmt == "auto":
        import json

        try:
            fmt = detect_format(json.loads(Path(data).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass  # load_examples reports a missing or broken file in the user's words
    examples = load_examples(data, db_root, fmt=fmt, split=split)
    known = {e.db_id for e in examples}
    unknown = [d for d in dbs if d not in known]
    if unknown:
        from macsql.errors import did_you_mean

        raise InputError(f"no questions for database {unknown[0]!r}{did_you_mean(unknown[0], known)} in {data}")
    chosen = select(examples, limit=limit, dbs=list(dbs) or None, seed=seed, nested=True)
    if not chosen:
        raise InputError(f"no questions selected from {data}")
    return fmt, chosen


def _require_databases(examples, db_root) -> None:
    from macsql.errors import InputError
    from macsql.evaluate.scoring import missing_databases

    missing = missing_databases(examples)
    if missing:
        where = f"--db-root {db_root}" if db_root else "the default database folder"
        raise InputError(f"{len(missing)} database file(s) missing under {where}, e.g. {missing[0]}; "
                         "pass --db-root DIR holding <db_id>/<db_id>.sqlite (BIRD: dev_databases)")


def _score_and_report(examples, predictions, out_dir, config, *, timeout_s, ves, ves_repeats, workers,
                      plots=True, quiet=False, keep_distinct=False):
    from macsql.evaluate.report import write_report
    from macsql.evaluate.scoring import machine_is_noisy, score_examples, summarize

    noisy = machine_is_noisy() if ves else None
    scores = score_examples(examples, predictions, workers=workers, timeout_s=timeout_s,
                            ves_repeats=ves_repeats if ves else 0, progress=not quiet,
                            keep_distinct=keep_distinct)
    summary = summarize(scores, ves=ves, noisy=noisy)
    if out_dir is not None:
        write_report(out_dir, summary, scores, config, plots=plots)
    return summary, scores


def _headline(summary: dict) -> str:
    parts = [f"n={summary['n']}", f"EX(Spider) {summary['ex_spider']}", f"EX(BIRD) {summary['ex_bird']}",
             f"exact {summary['exact_match']}", f"ROUGE-L {summary['rouge_l']}",
             f"hallucination {summary['hallucination_rate']}%", f"fails {summary['execution_failure_rate']}%"]
    if "ves" in summary:
        parts += [f"VES {summary['ves']}", f"R-VES {summary['rves']}" + (" (noisy)" if summary["ves_noisy"] else "")]
    return "  ".join(parts)


def _base_config(data, fmt, db_root, limit, dbs, seed, split, examples) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from macsql.evaluate.runner import file_sha256

    try:
        macsql_version = version("macsql")
    except PackageNotFoundError:
        macsql_version = "unknown"
    return {"data": str(Path(data).resolve()), "data_sha256": file_sha256(data), "format": fmt,
            "db_root": str(Path(db_root).resolve()) if db_root else None, "limit": limit, "dbs": list(dbs),
            "seed": seed, "split": split, "n_questions": len(examples),
            "question_ids": [e.question_id for e in examples], "macsql_version": macsql_version,
            "python": platform.python_version(), "machine": platform.machine()}


def _model_path(llm) -> str | None:
    """Where the backend's weights came from, as it resolved them (a served model has no local path)."""
    path = getattr(llm, "path", None)
    return str(path) if path else None


_MODEL_KEYS = ("model", "model_arg", "model_path", "backend", "backend_arg", "workers", "max_rounds", "timeout_s")


def _finished_run(run_dir: Path, name: str, flags: dict, examples, model_opts: dict) -> dict | None:
    """The run.json of a run in `run_dir` that already answered every example with these model options,
    or None when the model has work to do."""
    import json

    try:
        old = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    opts = old.get("pipeline_options") or {}
    same = (old.get("variant") == name and old.get("model_arg") == model_opts.get("model")
            and old.get("backend_arg") == model_opts.get("backend")
            and old.get("max_rounds") == model_opts["max_rounds"] and old.get("timeout_s") == model_opts["timeout_s"]
            and opts.get("output_format", "sql") == model_opts.get("output_format", "sql")
            and all(opts.get(k) == v for k, v in flags.items()))
    if not same or not (run_dir / "predictions.jsonl").is_file():
        return None
    done = read_predictions(run_dir / "predictions.jsonl")
    return old if all(e.question_id in done for e in examples) else None


# ---------------------------------------------------------------------------------------------- eval
@click.command("eval")
@data_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder: predictions.jsonl, report.json/.csv, summary.md, plots. Reruns resume.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Questions in flight at once (batched on transformers, parallel on --backend openai).")
@click.option("--baseline", is_flag=True, help="Single-prompt baseline: one model call, whole schema, no refine.")
@click.option("--ablations", is_flag=True,
              help="Run the full pipeline and every ablation on the same sample into subfolders, plus a table.")
@click.option("--variants", default=None, metavar="LIST",
              help="With --ablations: a comma list of full,no-selector,no-decomposer,no-refiner,baseline.")
@click.option("--ves", is_flag=True, help="Also measure VES and R-VES (re-runs correct queries; slow).")
@click.option("--ves-repeats", default=10, show_default=True, type=click.IntRange(min=2),
              help="Timed runs per query for VES (BIRD uses 100).")
@click.option("--score-workers", default=None, type=click.IntRange(min=1),
              help="Processes executing gold/predicted SQL while scoring (default: up to 4).")
@click.option("--suite", is_flag=False, flag_value="all", default=None, metavar="[NAME]",
              help="Run the category validation suite(s) instead of a benchmark: all, or one name.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="With --suite: the folder with spider/ and geoquery/ (default ../shared/data).")
@click.option("--overwrite", is_flag=True, help="Start over when --out holds a run with another config.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@model_options
def eval_cmd(data, db_root, fmt, limit, dbs, seed, split, out, workers, baseline, ablations, variants, ves,
             ves_repeats, score_workers, suite, data_root, overwrite, no_plots, quiet, **model_opts):
    """Evaluate the pipeline on a benchmark (or a validation suite) and write a report.

    \b
    Examples:
      macsql eval --data dev.json --db-root dev_databases --out runs/bird --limit 200 --seed 0
      macsql eval --data spider/dev.json --out runs/spider --limit 30 --seed 1 --ablations --backend hf
      macsql eval --data geography.json --out runs/geo --limit 50 --workers 4 --backend openai
      macsql eval --suite                     # every category suite (demo and shared-data databases)
      macsql eval --suite error_correction --db demo
    """
    from macsql.cli import build_pipeline
    from macsql.errors import InputError
    from macsql.evaluate.runner import VARIANTS, check_run_config, run_predictions

    if suite:
        from macsql.evaluate.suite import run_suites

        run_suites(suite, lambda: build_pipeline(**model_opts), only_dbs=list(dbs), data_root=data_root,
                   out=out, quiet=quiet)
        return
    if not out:
        raise InputError("no output folder; pass --out DIR (predictions.jsonl and the report go there)")
    if ablations:
        names = [v.strip() for v in (variants or ",".join(VARIANTS)).split(",") if v.strip()]
        bad = [v for v in names if v not in VARIANTS]
        if bad:
            from macsql.errors import did_you_mean

            raise InputError(f"unknown variant {bad[0]!r}{did_you_mean(bad[0], VARIANTS)}; "
                             f"choose from {', '.join(VARIANTS)}")
    elif variants:
        raise InputError("--variants needs --ablations")
    else:
        names = ["baseline" if baseline else "custom"]
    fmt, examples = _examples(data, db_root, fmt, limit, dbs, seed, split)
    _require_databases(examples, db_root)
    base = _base_config(data, fmt, db_root, limit, dbs, seed, split, examples)

    out_dir = Path(out)
    plans = []  # (variant name, agent switches, folder)
    for name in names:
        if name in VARIANTS:
            flags = {"use_selector": True, "use_decomposer": True, "use_refiner": True, **VARIANTS[name]}
        else:
            flags = {"use_selector": not model_opts["no_selector"], "use_decomposer": not model_opts["no_decomposer"],
                     "use_refiner": not model_opts["no_refiner"]}
            name = "full" if all(flags.values()) else "+".join(k[4:] + "=off" for k, on in flags.items() if not on)
        plans.append((name, flags, out_dir / name if ablations else out_dir))
    # A rerun of finished runs (e.g. to rebuild the reports or the ablation table) needs no model.
    finished = {} if overwrite else {n: _finished_run(d, n, f, examples, model_opts) for n, f, d in plans}
    pipe = None if finished and all(finished.values()) else build_pipeline(**model_opts)
    if pipe is not None:
        base.update({"model": pipe.llm.name, "model_arg": model_opts.get("model"),
                     "model_path": _model_path(pipe.llm), "backend": type(pipe.llm).__name__,
                     "backend_arg": model_opts.get("backend"), "workers": workers,
                     "max_rounds": model_opts["max_rounds"], "timeout_s": model_opts["timeout_s"]})
    results = {}
    for name, flags, run_dir in plans:
        if pipe is None:
            old = finished[name]
            base.update({k: old.get(k) for k in _MODEL_KEYS})
            config = {**base, "variant": name, "pipeline_options": old["pipeline_options"]}
            records = read_predictions(run_dir / "predictions.jsonl")
        else:
            options = {**pipe.options, **flags}
            config = {**base, "variant": name, "pipeline_options": options}
            if overwrite and (run_dir / "predictions.jsonl").exists():
                (run_dir / "predictions.jsonl").unlink()
                (run_dir / "run.json").unlink(missing_ok=True)
            # The sample may grow (--limit 30, then 150: nested seeds keep the first 30); answers may not mix.
            check_run_config(run_dir, config, keys=("model", "backend", "variant", "pipeline_options",
                                                    "data_sha256"))
            if not quiet:
                click.echo(f"{name}: {len(examples)} questions -> {run_dir}", err=True)
            records = run_predictions(pipe.with_options(**options), examples, run_dir / "predictions.jsonl",
                                      variant=name, workers=workers, progress=not quiet)
        summary, _ = _score_and_report(examples, records, run_dir, config, timeout_s=model_opts["timeout_s"],
                                       ves=ves, ves_repeats=ves_repeats, workers=score_workers,
                                       plots=not no_plots, quiet=quiet)
        results[name] = summary
        click.echo(f"{name}: {_headline(summary)}")
    if ablations:
        from macsql.evaluate.report import ablation_table, write_ablations

        write_ablations(out_dir, results, {**base, "variants": names})
        click.echo("\n" + ablation_table(results))
    click.echo(f"report: {out_dir}")


# --------------------------------------------------------------------------------------------- score
def read_predictions(path: str | Path) -> dict[str, dict]:
    """Predictions by question_id from our JSONL (a torn last line is skipped), a JSON list of
    {question_id, pred_sql | sql}, or BIRD's `predict_dev.json` ({"0": "SQL\\t----- bird -----\\tdb_id"})."""
    import json

    from macsql.errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"prediction file {str(p)!r} does not exist; pass --pred PATH (predictions.jsonl)")
    text = p.read_text(encoding="utf-8").strip()
    try:
        whole = json.loads(text) if text[:1] in "[{" else None
    except ValueError:
        whole = None  # JSONL: many objects, not one document
    if isinstance(whole, dict) and "question_id" not in whole:
        return {str(k): {"question_id": str(k), "pred_sql": str(v).split("\t----- bird -----\t")[0]}
                for k, v in whole.items()}
    if isinstance(whole, list):
        rows = whole
    elif isinstance(whole, dict):
        rows = [whole]
    else:
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # the torn last line of an interrupted run
    out = {}
    for r in rows:
        if not isinstance(r, dict) or "question_id" not in r:
            raise InputError(f"{str(p)!r}: each prediction needs question_id and pred_sql (or sql)")
        out[str(r["question_id"])] = {**r, "pred_sql": r.get("pred_sql", r.get("sql", r.get("predicted_sql", "")))}
    return out


@click.command("score")
@click.option("--pred", type=click.Path(dir_okay=False), default=None,
              help="Predictions: predictions.jsonl from `macsql eval`, or BIRD's predict_dev.json.")
@data_options
@click.option("--gold-as-pred", is_flag=True, help="Score the gold SQL as the prediction (checks the comparator "
                                                    "and the data: should give 100% EX).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write the report files here.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=float,
              callback=check_timeout_option, help="Seconds a query may run.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Scoring processes (default: up to 4).")
@click.option("--ves", is_flag=True, help="Also measure VES and R-VES (re-runs correct queries).")
@click.option("--ves-repeats", default=10, show_default=True, type=click.IntRange(min=2))
@click.option("--keep-distinct", is_flag=True,
              help="EX (Spider) keeps DISTINCT in both queries (the Spider evaluator's flag of that name).")
@click.option("--no-plots", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def score_cmd(pred, data, db_root, fmt, limit, dbs, seed, split, gold_as_pred, out, timeout_s, workers, ves,
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

    if bool(pred) == bool(gold_as_pred):
        raise InputError("pass either --pred PATH or --gold-as-pred")
    fmt, examples = _examples(data, db_root, fmt, limit, dbs, seed, split)
    if gold_as_pred:
        predictions = {e.question_id: {"question_id": e.question_id, "pred_sql": e.gold_sql} for e in examples}
    else:
        predictions = read_predictions(pred)
        matched = [e for e in examples if e.question_id in predictions]
        if not matched:
            raise InputError(f"no question_id in {pred} matches a question in {data}; was it made from this file?")
        examples = matched
    _require_databases(examples, db_root)
    config = {**_base_config(data, fmt, db_root, limit, dbs, seed, split, examples),
              "variant": "gold-as-pred" if gold_as_pred else "predictions", "pred": pred,
              "keep_distinct": keep_distinct}
    start = time.perf_counter()
    summary, _ = _score_and_report(examples, predictions, Path(out) if out else None, config,
                                   timeout_s=timeout_s, ves=ves, ves_repeats=ves_repeats, workers=workers,
                                   plots=not no_plots, quiet=quiet, keep_distinct=keep_distinct)
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


for _command in (eval_cmd, score_cmd, compare_cmd):
    main.add_command(_command)

__all__ = ["compare_cmd", "eval_cmd", "score_cmd"]

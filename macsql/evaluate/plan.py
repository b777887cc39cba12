"""What `macsql eval` does before and around the model: the sample, the run's config, one `VariantRun` per
variant (its folder, its agent switches, whether its answers are all in already) and running one of them.

A rerun of finished runs (to rebuild the reports or the ablation table) needs no model: `plan_variants`
says which are finished, and the command loads a model only when one is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from macsql.errors import InputError
from macsql.evaluate.datasets import Example
from macsql.evaluate.run import RunFolder
from macsql.evaluate.runner import EVAL_OPTIONS, VARIANTS
from macsql.state import ablation_name, make_settings

# The config keys that say which model answered: a finished run's are reused when no model is loaded.
MODEL_KEYS = ("model", "model_arg", "model_path", "backend", "backend_arg", "workers", "max_rounds", "timeout_s")
# Answers may not mix across these (the sample may grow: --limit 30, then 150, with nested seeds).
SAME_RUN_KEYS = ("model", "backend", "variant", "pipeline_options", "data_sha256", "examples_source",
                 "descriptions_source", "engine")
# Options added to Settings after runs were recorded, at the value those runs had: a run started before
# one existed can still be resumed.
_OPTIONS_SINCE = {"use_descriptions": True}
AGENT_SWITCHES = ("use_selector", "use_decomposer", "use_refiner")


def choose_examples(data, db_root, fmt: str, limit, dbs: Sequence[str], seed, split, *,
                    half: str | None = None) -> tuple[str, list[Example]]:
    """(format, the sample): the benchmark's questions filtered by database and cut to `limit` (seeded and
    nested, so a bigger sample keeps a smaller one's questions). `half` ("first", "second"): only that half
    of each database's questions (teaching.split_halves), before the cut."""
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
    if half:
        from macsql.evaluate.teaching import split_halves

        examples = split_halves(examples)[half]
    chosen = select(examples, limit=limit, dbs=list(dbs) or None, seed=seed, nested=True)
    if not chosen:
        raise InputError(f"no questions selected from {data}")
    return fmt, chosen


def require_databases(examples: Sequence[Example], db_root) -> None:
    from macsql.evaluate.scoring import missing_databases

    missing = missing_databases(examples)
    if missing:
        where = f"--db-root {db_root}" if db_root else "the default database folder"
        raise InputError(f"{len(missing)} database file(s) missing under {where}, e.g. {missing[0]}; "
                         "pass --db-root DIR holding <db_id>/<db_id>.sqlite (BIRD: dev_databases)")


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_config(data, fmt: str, db_root, limit, dbs: Sequence[str], seed, split, examples) -> dict:
    """The config every run and report records: the data (and its hash), the sample, the software."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        macsql_version = version("macsql")
    except PackageNotFoundError:
        macsql_version = "unknown"
    return {"data": str(Path(data).resolve()), "data_sha256": file_sha256(data), "format": fmt,
            "db_root": str(Path(db_root).resolve()) if db_root else None, "limit": limit, "dbs": list(dbs),
            "seed": seed, "split": split, "n_questions": len(examples),
            "question_ids": [e.question_id for e in examples], "macsql_version": macsql_version,
            "python": platform.python_version(), "machine": platform.machine()}


def variant_names(*, ablations: bool, variants: str | None, baseline: bool) -> list[str]:
    """The variants to run: every ablation (or the --variants list), else the one the options describe."""
    if ablations:
        names = [v.strip() for v in (variants or ",".join(VARIANTS)).split(",") if v.strip()]
        bad = [v for v in names if v not in VARIANTS]
        if bad:
            from macsql.errors import did_you_mean

            raise InputError(f"unknown variant {bad[0]!r}{did_you_mean(bad[0], VARIANTS)}; "
                             f"choose from {', '.join(VARIANTS)}")
        return names
    if variants:
        raise InputError("--variants needs --ablations")
    return ["baseline" if baseline else "custom"]


@dataclass
class VariantRun:
    name: str
    flags: dict  # the agent switches (and other pipeline options) of this variant
    folder: RunFolder
    finished: dict | None = None  # run.json of a run that already answered every question this way

    def model_keys(self) -> dict:
        """Which model answered, from the finished run's config."""
        return {k: (self.finished or {}).get(k) for k in MODEL_KEYS}


def plan_variants(names: Sequence[str], out: str | Path, *, ablations: bool, switches: dict, model_args: dict,
                  examples: Sequence[Example], overwrite: bool, options: dict | None = None,
                  sources: dict | None = None) -> list[VariantRun]:
    """One VariantRun per name: a subfolder each with `ablations`, else `out` itself. `custom` is the run the
    agent `switches` describe (named `full` when all are on). `model_args` are the model options as given
    (model, backend, max_rounds, timeout_s, output_format): a folder is finished only when they match.
    `options`: pipeline options every variant runs with (teaching.Teaching's: examples and descriptions
    files, descriptions off, which also names the variant); `sources`: the config keys that say where
    they came from (a finished run must have the same)."""
    options = dict(options or {})
    switched_off = [ablation_name(k) for k, v in options.items() if v is False]
    runs = []
    for name in names:
        if name in VARIANTS:
            flags = {k: True for k in AGENT_SWITCHES} | VARIANTS[name] | options
            name = "+".join([name, *(off for off in switched_off if off != name)])
        else:
            flags = {k: switches[k] for k in AGENT_SWITCHES} | options
            name = "+".join([ablation_name(k) for k in AGENT_SWITCHES if not flags[k]] + switched_off) or "full"
        make_settings(**flags)  # a variant that names no real option fails here, before any model loads
        run = VariantRun(name, flags, RunFolder(Path(out) / name if ablations else out))
        if not overwrite:
            run.finished = finished_config(run, examples, model_args, sources)
        runs.append(run)
    return runs


def _as_recorded_now(config: dict) -> dict:
    """An earlier run's config as this version writes it: options added since at the value that run had,
    and `exclude_asked`, which eval always set but once recorded as False, as it was (True)."""
    opts = config.get("pipeline_options")
    if not isinstance(opts, dict) or "variant" not in config:
        return config
    return {**config, "pipeline_options": {**_OPTIONS_SINCE, **opts, **EVAL_OPTIONS}}


def finished_config(run: VariantRun, examples: Sequence[Example], model_args: dict,
                    sources: dict | None = None) -> dict | None:
    """The run.json of a run in the folder that already answered every example with these model options
    (and examples and descriptions from the same `sources`), or None when the model has work to do."""
    try:
        old = run.folder.config()
    except InputError:
        return None  # an unreadable run.json: the run is checked (and refused) when it starts
    if old is None:
        return None
    old = _as_recorded_now(old)
    if any(old.get(k) != v for k, v in (sources or {}).items()):
        return None
    opts = old.get("pipeline_options") or {}
    same = (old.get("variant") == run.name and old.get("model_arg") == model_args.get("model")
            and old.get("backend_arg") == model_args.get("backend")
            and old.get("max_rounds") == model_args["max_rounds"] and old.get("timeout_s") == model_args["timeout_s"]
            and opts.get("output_format", "sql") == model_args.get("output_format", "sql")
            and all(opts.get(k) == v for k, v in run.flags.items()))
    if not same or not run.folder.has_predictions():
        return None
    done = run.folder.predictions()
    return old if all(e.question_id in done for e in examples) else None


def model_config(pipe, model_args: dict, workers: int) -> dict:
    """The config keys that say which model answers (MODEL_KEYS) for a loaded pipeline."""
    return {"model": pipe.llm.name, "model_arg": model_args.get("model"), "model_path": model_path(pipe.llm),
            "backend": type(pipe.llm).__name__, "backend_arg": model_args.get("backend"), "workers": workers,
            "max_rounds": model_args["max_rounds"], "timeout_s": model_args["timeout_s"]}


def model_path(llm) -> str | None:
    """Where the backend's weights came from, as it resolved them (a served model has no local path)."""
    path = getattr(llm, "path", None)
    return str(path) if path else None


def run_variant(run: VariantRun, pipe, examples: Sequence[Example], base: dict, *, overwrite: bool = False,
                workers: int = 1, progress: bool = True, echo: Callable[[str], None] | None = None,
                teaching=None, **scoring) -> tuple[dict, dict, list]:
    """Answer (the questions not yet in the folder) and score one variant; (config, summary, scores).
    `pipe=None`: the run is finished, and its own config says which model answered. `echo` hears where
    the answers go before the first question is asked. `teaching` (teaching.Teaching): the examples the
    run was given, for the count of questions shown an example with their own gold SQL."""
    from macsql.evaluate.runner import evaluate

    if pipe is None:
        config = {**base, **run.model_keys(), "variant": run.name,
                  "pipeline_options": run.finished["pipeline_options"]}
    else:
        # recorded as the questions run: with EVAL_OPTIONS, which runner.run_predictions sets
        options = {**pipe.options, **run.flags, **EVAL_OPTIONS}
        config = {**base, "variant": run.name, "pipeline_options": options}
        if overwrite:
            run.folder.clear()
        run.folder.claim(config, keys=SAME_RUN_KEYS, recorded=_as_recorded_now)
        if echo:
            echo(f"{run.name}: {len(examples)} questions -> {run.folder.path}")
        pipe = pipe.with_options(**options)
    records, summary, scores = evaluate(pipe, examples, run.folder.predictions_file, variant=run.name,
                                        workers=workers, progress=progress, **scoring)
    if teaching is not None:
        same = teaching.same_sql_ids({e.question_id: records[e.question_id] for e in examples
                                      if e.question_id in records})
        if same is not None:
            summary["examples_same_sql"] = len(same)
            # the split's own leak set aside: what the examples are worth on questions they do not answer
            rest = [s for s in scores if s.question_id not in same]
            if rest:
                summary["ex_without_own_sql"] = {
                    "n": len(rest), "ex_spider": round(100 * sum(s.ex_spider for s in rest) / len(rest), 2),
                    "ex_bird": round(100 * sum(s.ex_bird for s in rest) / len(rest), 2)}
    return config, summary, scores

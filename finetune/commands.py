"""`macsql data build` and `macsql finetune`: thin click commands over `data`, `sft`, `grpo`, `dpo`.

Only click is imported at module import time (the CLI registers these on every start).

Multi-GPU and DeepSpeed: the trainers are plain TRL/transformers trainers, so the same command runs under
`accelerate launch` unchanged, e.g.
    accelerate launch --num_processes 4 -m macsql.cli finetune all --method lora --model ... --data ... --out ...
    accelerate launch --config_file deepspeed_zero2.yaml -m macsql.cli finetune decomposer --method grpo ...
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from macsql.cli.sweep import sweep_options
from macsql.errors import InputError


@click.group("data")
def data_group():
    """Build training data for the agents."""


@data_group.command("build")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="BIRD/Spider/GeoQuery JSON file (question, evidence, gold SQL, db_id).")
@click.option("--db-root", type=click.Path(exists=True), default=None,
              help="Folder with <db_id>/<db_id>.sqlite (default: beside the data file).")
@click.option("--format", "fmt", type=click.Choice(["auto", "bird", "spider", "geoquery"]), default="auto",
              show_default=True)
@click.option("--sql-llama", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="MAC-SQL's released SQL-Llama instruction JSONL (source/target); repeatable.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--exclude-db", default="", help="Comma-separated db_ids to leave out (held out for evaluation).")
@click.option("--only-db", default="", help="Comma-separated db_ids to keep (default: all).")
@click.option("--max-per-db", type=click.IntRange(min=1), default=None, help="At most N questions per database (seeded sample).")
@click.option("--tasks", default="selector,decomposer,refiner", show_default=True)
@click.option("--refiner-per-question", default=1, show_default=True, type=click.IntRange(min=0),
              help="Broken variants per question.")
@click.option("--balance", type=click.Choice(["undersample", "oversample", "none"]), default="undersample",
              show_default=True, help="Equalise the number of rows per task.")
@click.option("--val-frac", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Validation share of the rows.")
@click.option("--split", "split_by", type=click.Choice(["db", "row"]), default="db", show_default=True,
              help="db: whole databases go to validation, never seen in training (by row when there is "
                   "one database); row: a sample of rows stratified by task.")
@click.option("--seed", default=0, show_default=True)
@click.option("--append", is_flag=True, help="Add to the rows already in OUT (e.g. a second benchmark), "
                                             "then balance and split again.")
def build(data_file, db_root, fmt, sql_llama, out, exclude_db, only_db, max_per_db, tasks, refiner_per_question,
          balance, val_frac, split_by, seed, append):
    """Build Selector/Decomposer/Refiner examples from gold SQL, balanced and split.

    \b
    Examples:
      macsql data build --data spider/dev.json --exclude-db concert_singer,pets_1 --out runs/data
      macsql data build --data geoquery/geography.json --out runs/data --append --max-per-db 300
      macsql data build --sql-llama sql-llama-instruct.jsonl --out runs/sqlllama
    """
    from macsql.finetune import data

    if not data_file and not sql_llama:
        raise InputError("nothing to build from; pass --data FILE (BIRD/Spider/GeoQuery) or --sql-llama FILE")
    task_list = _split_list(tasks)
    unknown = [t for t in task_list if t not in data.TASKS]
    if unknown:
        raise InputError(f"unknown task {unknown[0]!r}; choose from {', '.join(data.TASKS)}")
    start = time.perf_counter()
    rows = []
    meta = {"sources": [], "seed": seed, "balance": balance, "val_frac": val_frac, "split": split_by}
    skipped: dict[str, str] = {}
    if data_file:
        missing: set[str] = set()
        sources = data.load_sources(data_file, db_root, fmt=fmt, exclude_db=_split_list(exclude_db),
                                    only_db=_split_list(only_db), max_per_db=max_per_db, seed=seed, missing=missing)
        for db_id in sorted(missing):
            skipped[db_id] = "no database file"
        rows += data.build_rows(sources, seed=seed, tasks=task_list, refiner_per_question=refiner_per_question,
                                skipped=skipped)
        for db_id, reason in skipped.items():
            click.echo(f"Warning: skipped database {db_id!r}: {reason}", err=True)
        meta["sources"].append({"data": str(data_file), "questions": len(sources), "excluded": exclude_db,
                                "dbs": sorted({s.db_id for s in sources} - set(skipped)),
                                "questions_used": sum(s.db_id not in skipped for s in sources),
                                "skipped_dbs": skipped})
    for path in sql_llama:
        rows += [r for r in data.import_sql_llama(path) if r["task"] in task_list]
        meta["sources"].append({"sql_llama": str(path)})
    out_dir = Path(out)
    all_rows = out_dir / "all.jsonl"
    if append and all_rows.exists():
        rows = data.read_jsonl(all_rows) + rows
        old = json.loads((out_dir / "stats.json").read_text()) if (out_dir / "stats.json").exists() else {}
        meta["sources"] = old.get("sources", []) + meta["sources"]
    unique = data.dedupe(rows)
    meta["duplicates_dropped"] = len(rows) - len(unique)
    rows = unique
    data.write_jsonl(rows, all_rows)  # unbalanced, unsplit, deduplicated: what --append builds on
    train, val = data.balance_and_split(rows, mode=balance, val_frac=val_frac, seed=seed, by=split_by)
    meta["built"] = {t: len(g) for t, g in sorted(data.by_task(rows).items())}
    meta["validation_dbs"] = sorted({r.get("db_id") or "" for r in val})
    meta["seconds"] = round(time.perf_counter() - start, 1)
    stats = data.save_dataset(out_dir, train, val, meta)
    click.echo(f"built {stats['built']} ({meta['duplicates_dropped']} duplicates dropped, {len(skipped)} databases "
               f"skipped) → train {stats['train']}, validation {stats['validation']} "
               f"({len(meta['validation_dbs'])} databases) in {out_dir} [{meta['seconds']} s]")


def _split_list(text: str) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def recipes_dir():
    """The recipes shipped inside the package (`finetune/recipes/*.yaml`, installed as package data)."""
    from importlib.resources import files

    return files("macsql.finetune").joinpath("recipes")


def recipe_names() -> list[str]:
    return sorted(p.name.rsplit(".", 1)[0] for p in recipes_dir().iterdir() if p.name.endswith((".yaml", ".yml")))


def config_text(path: str) -> tuple[str, bool]:
    """(text, is_yaml) of a config file, or of the shipped recipe of that name (`smollm2-135m-cpu-sft`)."""
    p = Path(path)
    if p.is_file():
        return p.read_text(encoding="utf-8"), p.suffix.lower() in (".yaml", ".yml")
    name = p.name.rsplit(".", 1)[0] if p.suffix.lower() in (".yaml", ".yml") else p.name
    recipe = recipes_dir().joinpath(f"{name}.yaml")
    if str(p) == p.name and recipe.is_file():
        return recipe.read_text(encoding="utf-8"), True
    from macsql.errors import did_you_mean

    names = recipe_names()
    raise InputError(f"--config {path!r} is neither a file nor a recipe{did_you_mean(name, names)}; "
                     f"recipes: {', '.join(names)}")


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    text, yaml_file = config_text(path)
    if yaml_file:
        try:
            import yaml
        except ImportError as exc:
            raise InputError("YAML configs need pyyaml: pip install pyyaml (or write the config as JSON)") from exc
    try:
        cfg = (yaml.safe_load(text) if yaml_file else json.loads(text)) or {}
    except Exception as exc:  # noqa: BLE001 - a JSON or YAML syntax error, said in one line
        raise InputError(f"config {path!r} is not valid: {str(exc).splitlines()[0]}") from exc
    if not isinstance(cfg, dict):
        raise InputError(f"config {path!r} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in cfg.items()}


def _typed(name: str, value):
    """A config value as its option's type: YAML reads `lr: 1e-3` (no dot) as a string, not a number."""
    from dataclasses import fields

    from macsql.finetune.sft import Options

    kind = next(str(f.type) for f in fields(Options) if f.name == name)
    if not isinstance(value, str) or kind.split(" |")[0] not in ("float", "int"):
        return value
    try:
        return float(value) if kind.startswith("float") else int(value)
    except ValueError as exc:
        raise InputError(f"option {name!r} must be a number, got {value!r}") from exc


@click.command("finetune", context_settings={"allow_extra_args": True})  # --sweep lr=.. batch=.. (sweep.py)
@click.argument("agent", type=click.Choice(["selector", "decomposer", "refiner", "all"]), required=False)
@click.option("--method", type=click.Choice(["sft", "lora", "grpo", "dpo"]), default="lora", show_default=True,
              help="sft: full fine-tuning; lora: LoRA SFT; grpo: RL on execution rewards; dpo: against "
                   "hallucinated schema.")
@click.option("--model", "-m", default="smollm2-135m", show_default=True, metavar="NAME_OR_PATH",
              help="Base model: alias, Hugging Face id, local folder or .gguf (as for `macsql ask`).")
@click.option("--data", default=None, type=click.Path(exists=True), help="Folder from `macsql data build`.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder (adapters per agent).")
@click.option("--config", "config_file", default=None, metavar="FILE_OR_RECIPE",
              help="YAML/JSON file of options (names as below, with _ or -, and `agent`), or a shipped recipe "
                   "such as smollm2-135m-cpu-sft (finetune/README.md lists them); command-line options win.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT/checkpoints/.")
@click.option("--init-adapters", type=click.Path(exists=True, file_okay=False), default=None,
              help="Start from these adapters (e.g. the LoRA SFT output before GRPO or DPO).")
@click.option("--max-steps", type=int, default=-1, show_default=True, help="-1: train --epochs epochs.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--max-length", type=int, default=1024, show_default=True, help="Tokens per training row.")
@click.option("--eval-steps", type=int, default=50, show_default=True, help="Validate and checkpoint every N.")
@click.option("--max-eval-rows", type=int, default=64, show_default=True, help="Validation rows per task.")
@click.option("--patience", type=int, default=3, show_default=True, help="Early stopping (evaluations).")
@click.option("--logging-steps", type=int, default=5, show_default=True, help="Log the loss every N steps.")
@click.option("--lora-preset", type=click.Choice(["r8", "r16", "r32"]), default=None,
              help="r8: r=8/alpha=32/dropout 0.05 on q,k,v,o; r16: r=16/alpha=64/dropout 0.1; r32 (GRPO "
                   "default): r=32/alpha=64. Default r8, r32 for grpo.")
@click.option("--lora-r", type=int, default=None)
@click.option("--lora-alpha", type=int, default=None)
@click.option("--lora-dropout", type=float, default=None)
@click.option("--lora-targets", default=None, help="Comma-separated layer names, e.g. q,k,v,o,gate,up,down.")
@click.option("--limit", type=int, default=None, help="Training rows at most (seeded sample).")
@click.option("--max-minutes", type=float, default=None,
              help="Stop (and save) after this many minutes of training; --max-steps still caps the run.")
@click.option("--num-generations", type=int, default=4, show_default=True, help="GRPO: samples per prompt.")
@click.option("--max-completion-length", type=int, default=160, show_default=True, help="GRPO: tokens.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="GRPO sampling temperature.")
@click.option("--reward-weights", default=None,
              help="GRPO: e.g. execution=1,format=0.2,executes=0.2,complexity=0.1,grounding=0.2 (0 drops one).")
@click.option("--beta", type=float, default=0.0, show_default=True, help="GRPO KL coefficient.")
@click.option("--dpo-beta", type=float, default=0.1, show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute activations in the backward pass (default: on for models of 1B parameters or more).")
@click.option("--padding-free/--no-padding-free", default=None,
              help="Flatten each batch into one unpadded sequence (default: on with flash attention only).")
@click.option("--packing", is_flag=True,
              help="Pack rows into --max-length blocks (a step then holds more rows).")
@click.option("--group-by-length/--no-group-by-length", default=None,
              help="Batches of rows of similar length (default: on for padded SFT batches).")
@click.option("--threads", type=int, default=None, help="torch threads (default: one per core).")
@click.option("--prompts-per-step", type=int, default=None,
              help="GRPO: prompts per optimizer step, each sampled --num-generations times (default 1).")
@click.option("--no-save", "no_save", is_flag=True, help="No checkpoints (no --resume, no best-model reload).")
@click.option("--seed", type=int, default=0, show_default=True)
@sweep_options
@click.pass_context
def finetune(ctx, agent, config_file, no_save, sweep, sweep_eval, **cli):
    """Train AGENT (selector, decomposer, refiner, or all: one shared multitask adapter) on agent data.

    AGENT may come from the --config file or recipe instead.

    \b
    Examples:
      macsql finetune --config smollm2-135m-cpu-sft            # a shipped recipe, SFT then GRPO
      macsql finetune --config smollm2-135m-cpu-grpo
      macsql finetune all --method lora --model smollm2-135m --data runs/data --out runs/sft --max-steps 300
      macsql finetune decomposer --method grpo --init-adapters runs/sft --data runs/data --out runs/grpo
      macsql ask "How many singers are there?" --db concert_singer.sqlite --model smollm2-135m --adapters runs/grpo
    Multi-GPU / DeepSpeed: prefix the command with `accelerate launch [--config_file ...] -m macsql.cli`.
    """
    from macsql.finetune.sft import Options

    config = _load_config(config_file)
    unknown = sorted(set(config) - Options.names() - {"agent"})
    if unknown:
        from macsql.errors import did_you_mean

        raise InputError(f"unknown option {unknown[0]!r} in {config_file}{did_you_mean(unknown[0], Options.names())}")
    agent = agent or config.pop("agent", None)
    config.pop("agent", None)  # the command line's AGENT wins
    if agent not in ("selector", "decomposer", "refiner", "all"):
        raise InputError("AGENT is required: selector, decomposer, refiner or all (on the command line or as "
                         f"`agent:` in --config){'' if agent is None else f'; got {agent!r}'}")
    values = dict(config)
    for name, value in cli.items():
        # command-line values win over the config file; click defaults do not
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT or name not in values:
            values[name] = value
    values["save"] = not no_save if ctx.get_parameter_source("no_save") != click.core.ParameterSource.DEFAULT \
        else bool(config.get("save", True))
    if values.get("lora_preset") is None:
        values["lora_preset"] = "r32" if values["method"] == "grpo" else "r8"
    for required in ("data", "out"):
        if not values.get(required):
            raise InputError(f"--{required} is required (on the command line or in --config)")
    if not Path(values["data"]).exists():
        raise InputError(f"--data {values['data']!r} does not exist; build it with `macsql data build`")
    opts = Options(**{k: _typed(k, v) for k, v in values.items() if k in Options.names()})
    from macsql.cli.sweep import sweep_from_cli

    if sweep_from_cli(agent, opts, sweep, ctx.args, sweep_eval):
        return  # one run per setting under OUT/<setting>/, and the table
    summary = run(agent, opts)
    click.echo(json.dumps(summary, indent=2, default=str))


def run(agent: str, opts) -> dict:
    """Dispatch to the trainer for `opts.method`; also the Python entry point."""
    from macsql.finetune.sft import set_threads

    set_threads(opts)
    start = time.perf_counter()
    if opts.method in ("sft", "lora"):
        from macsql.finetune.sft import train_sft

        summary = train_sft(agent, opts)
    elif opts.method == "grpo":
        from macsql.finetune.grpo import train_grpo

        summary = train_grpo(agent, opts)
    elif opts.method == "dpo":
        from macsql.finetune.dpo import train_dpo

        summary = train_dpo(agent, opts)
    else:
        raise InputError(f"unknown method {opts.method!r}; choose sft, lora, grpo or dpo")
    summary["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{agent}-{opts.method}-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary

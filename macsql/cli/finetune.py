"""`macsql data build` and `macsql finetune`: thin click commands over `finetune/data.py` and `training`.

`finetune`'s options are generated from the fields of `config.Options` (names, types, defaults, choices,
ranges and help live there once; a number out of its range fails while click parses the options, before
anything loads). Only click and light library modules (no torch, no trainer) are imported at module import
time; training loads inside the command.

Multi-GPU and DeepSpeed: the trainers are plain TRL/transformers trainers, so the same command runs under
`accelerate launch` unchanged, e.g.
    accelerate launch --num_processes 4 -m macsql.cli finetune all --method lora --model ... --data ... --out ...
    accelerate launch --config_file deepspeed_zero2.yaml -m macsql.cli finetune decomposer --method grpo ...
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path

import click

from macsql.cli.groups import EVERYDAY, GroupedCommand
from macsql.cli.sweep import sweep_from_cli, sweep_options
from macsql.errors import InputError
from macsql.evaluate.datasets import FORMATS
from macsql.finetune.config import AGENTS, Options, load_config, number_kind, value_problem
from macsql.finetune.data import BALANCE, SPLITS, TASKS, build_dataset


@click.group("data")
def data_group():
    """Build training data for the agents."""


@data_group.command("build", cls=GroupedCommand, renamed={"--format": "--data-format", "--split": "--split-by"})
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="BIRD/Spider/GeoQuery JSON file (question, evidence, gold SQL, db_id).")
@click.option("--db-root", type=click.Path(exists=True), default=None,
              help="Folder with <db_id>/<db_id>.sqlite (default: beside the data file).")
@click.option("--data-format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Benchmark format (auto-detected from the file's keys).")
@click.option("--sql-llama", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="MAC-SQL's released SQL-Llama instruction JSONL (source/target); repeatable.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--exclude-db", default="", help="Comma-separated db_ids to leave out (held out for evaluation).")
@click.option("--only-db", default="", help="Comma-separated db_ids to keep (default: all).")
@click.option("--max-per-db", type=click.IntRange(min=1), default=None, help="At most N questions per database (seeded sample).")
@click.option("--tasks", default=",".join(TASKS), show_default=True)
@click.option("--refiner-per-question", default=1, show_default=True, type=click.IntRange(min=0),
              help="Broken variants per question.")
@click.option("--balance", type=click.Choice(BALANCE), default=BALANCE[0],
              show_default=True, help="Equalise the number of rows per task.")
@click.option("--val-frac", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Validation share of the rows.")
@click.option("--split-by", "split_by", type=click.Choice(SPLITS), default=SPLITS[0], show_default=True,
              help="db: whole databases go to validation, never seen in training (by row when there is "
                   "one database); row: a sample of rows stratified by task.")
@click.option("--seed", default=0, show_default=True)
@click.option("--append", is_flag=True, help="Add to the rows already in OUT (e.g. a second benchmark), "
                                             "then balance and split again.")
def build(data_file, db_root, fmt, sql_llama, out, exclude_db, only_db, max_per_db, tasks,
          refiner_per_question, balance, val_frac, split_by, seed, append):
    """Build Selector/Decomposer/Refiner examples from gold SQL, balanced and split.

    \b
    Examples:
      macsql data build --data spider/dev.json --exclude-db concert_singer,pets_1 --out runs/data
      macsql data build --data geoquery/geography.json --out runs/data --append --max-per-db 300
      macsql data build --sql-llama sql-llama-instruct.jsonl --out runs/sqlllama
    """
    stats, skipped = build_dataset(
        out, data=data_file, db_root=db_root, fmt=fmt, sql_llama=sql_llama, exclude_db=_split_list(exclude_db),
        only_db=_split_list(only_db), max_per_db=max_per_db, tasks=_split_list(tasks),
        refiner_per_question=refiner_per_question, balance_mode=balance, val_frac=val_frac, split_by=split_by,
        seed=seed, append=append)
    for db_id, reason in skipped.items():
        click.echo(f"Warning: skipped database {db_id!r}: {reason}", err=True)
    click.echo(f"built {stats['built']} ({stats['duplicates_dropped']} duplicates dropped, {len(skipped)} databases "
               f"skipped) → train {stats['train']}, validation {stats['validation']} "
               f"({len(stats['validation_dbs'])} databases) in {out} [{stats['seconds']} s]")


def _split_list(text: str) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def option_from_field(f):
    """The click option of one `Options` field: `--max-steps` for `max_steps`, typed by its annotation,
    `--x/--no-x` for a bool that may be on by default or left to a policy (None), a flag for the others."""
    meta = f.metadata
    flag = "--" + f.name.replace("_", "-")
    written = str(f.type)  # e.g. "int | None" (the annotations are strings)
    base = written.split(" |")[0]
    names = [flag, *([meta["short"]] if meta.get("short") else [])]
    default = None if meta.get("required") or f.default is MISSING else f.default
    kw = {"help": meta.get("help") or None, "default": default, "show_default": default is not None}
    if base == "bool":
        if default is None or default is True:
            names[0] = f"{flag}/--no-{flag[2:]}"
        else:
            kw["is_flag"] = True
        kw["show_default"] = False
    elif meta.get("choices"):
        kw["type"] = click.Choice(meta["choices"])
    elif meta.get("path"):
        kw["type"] = click.Path(**meta["path"])
    elif number_kind(f):
        kw["type"] = number_type(f)
    else:
        kw["type"] = str
    if meta.get("metavar"):
        kw["metavar"] = meta["metavar"]
    return click.option(*names, f.name, **kw)


def number_type(f) -> click.ParamType:
    """click's IntRange/FloatRange with the field's bounds (so `--help` shows them), converting through the
    config's `value_problem`, the check `--config` files get too: in range, finite (click's FloatRange lets
    nan through, and inf wherever there is no upper bound)."""
    kind, meta = number_kind(f), f.metadata
    bounds = {k: meta[k] for k in ("min", "max", "min_open", "max_open") if k in meta}
    if "min" in bounds or "max" in bounds:
        base = click.IntRange if kind == "int" else click.FloatRange
    else:
        base = click.types.IntParamType if kind == "int" else click.types.FloatParamType
        bounds = {}
    parse = click.INT if kind == "int" else click.FLOAT

    class Checked(base):
        def convert(self, value, param, ctx):
            number = parse.convert(value, param, ctx)
            problem = value_problem(f.name, number)
            if problem:
                self.fail(problem, param, ctx)
            return number

    return Checked(**bounds)


def options_from(cls):
    """Every command-line field of `cls` as a click option, in field order."""
    def decorate(command):
        for f in reversed(fields(cls)):
            if f.metadata.get("cli", True):
                command = option_from_field(f)(command)
        return command

    return decorate


# `finetune --help` in sections; an option named in none of them (a new field of `Options`) goes last
FINETUNE_SECTIONS = {
    EVERYDAY: ("--config", "--model", "--data", "--out", "--method", "--resume", "--init-adapters"),
    "Steps and validation": ("--max-steps", "--epochs", "--lr", "--batch-size", "--grad-accum", "--max-length",
                             "--eval-steps", "--eval-batch-size", "--max-eval-rows", "--patience", "--logging-steps",
                             "--limit", "--max-minutes", "--save", "--seed"),
    "Memory and speed": ("--dtype", "--gradient-checkpointing", "--group-by-length", "--threads", "--padding-free",
                         "--packing", "--shared-prefix"),
    "LoRA": ("--lora-preset", "--lora-r", "--lora-alpha", "--lora-dropout", "--lora-targets"),
    "GRPO and DPO": ("--prompts-per-step", "--num-generations", "--max-completion-length", "--temperature",
                     "--reward-weights", "--beta", "--dpo-beta"),
    "Sweep": ("--sweep", "--sweep-eval"),
}


@click.command("finetune", cls=GroupedCommand, sections=FINETUNE_SECTIONS,
               context_settings={"allow_extra_args": True})  # --sweep lr=.. batch=.. (sweep.py)
@click.argument("agent", type=click.Choice(AGENTS), required=False)
@click.option("--config", "config_file", default=None, metavar="FILE_OR_RECIPE",
              help="YAML/JSON file of options (names as below, with _ or -, and `agent`), or a shipped recipe "
                   "such as smollm2-135m-cpu-sft (finetune/README.md lists them); command-line options win.")
@options_from(Options)
@sweep_options
@click.pass_context
def finetune(ctx, agent, config_file, sweep, sweep_eval, **cli):
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
    config = load_config(config_file)
    Options.check_names(set(config) - {"agent"}, config_file)
    agent = agent or config.pop("agent", None)
    config.pop("agent", None)  # the command line's AGENT wins
    values = dict(config)
    for name, value in cli.items():
        # command-line values win over the config file; click defaults (the dataclass's) do not
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT or name not in values:
            values[name] = value
    if agent not in AGENTS:
        raise InputError(f"AGENT is required: {', '.join(AGENTS[:-1])} or {AGENTS[-1]} (on the command line or "
                         f"as `agent:` in --config){'' if agent is None else f'; got {agent!r}'}")
    for f in fields(Options):
        if f.metadata.get("required") and not values.get(f.name):
            raise InputError(f"--{f.name} is required (on the command line or in --config)")
    if not Path(values["data"]).exists():
        raise InputError(f"--data {values['data']!r} does not exist; build it with `macsql data build`")
    opts = Options.from_config(values, source=config_file or "the command line")
    if sweep_from_cli(agent, opts, sweep, ctx.args, sweep_eval):
        return  # one run per setting under OUT/<setting>/, and the table
    from macsql.finetune.training import run

    summary = run(agent, opts)
    click.echo(json.dumps(summary, indent=2, default=str))

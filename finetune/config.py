"""Training configuration in TRL's style: the arguments every method shares, LoRA's, and one dataclass per
method beside the TRL config it feeds (`trl.SFTConfig`, `trl.GRPOConfig`, `trl.DPOConfig`).

Each default and help text lives here once: `macsql finetune`'s options are generated from these fields
(their metadata holds the help, the choices, the click path settings and each number's range) and
`--config` YAML/JSON files and shipped recipes are read into the same fields, typed by them and checked by
the same `value_problem` as the command line: a number out of range (a negative learning rate, a dropout
of 2, nan) is one line before any model loads. `Options` combines them all, because one
command line (and one recipe) may name any of them; a method reads its own part.

Only the standard library is imported here: the CLI builds its options from this module on every start.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from macsql.backends.loading import DTYPE_CHOICES
from macsql.errors import InputError, UsageError, did_you_mean
from macsql.finetune.data import TASKS

# The training methods, name -> (the module in macsql.finetune that trains it, what it is for `--help`).
METHODS: dict[str, tuple[str, str]] = {
    "sft": ("sft", "full fine-tuning"),
    "lora": ("sft", "LoRA SFT"),
    "grpo": ("grpo", "RL on execution rewards"),
    "dpo": ("dpo", "against hallucinated schema"),
}
AGENTS = (*TASKS, "all")  # `all`: one shared multitask adapter, saved under each agent's name
# LoRA presets reproducing the seed configurations (q, k, v, o map to each architecture's projection names).
LORA_PRESETS: dict[str, dict] = {
    "r8": {"r": 8, "alpha": 32, "dropout": 0.05, "targets": "q,k,v,o"},
    "r16": {"r": 16, "alpha": 64, "dropout": 0.1, "targets": "q,k,v,o"},
    "r32": {"r": 32, "alpha": 64, "dropout": 0.05, "targets": "q,k,v,o"},  # the GRPO seed
}
# The preset a method starts from when none is named (the GRPO seed trained r32; the rest r8).
METHOD_PRESETS = {"grpo": "r32"}
DEFAULT_PRESET = "r8"


def option(default: Any = None, help: str = "", **cli) -> Any:
    """A config field with its command-line settings: `help`, and optionally `choices`, `path` (click.Path
    keywords), `metavar`, `short` (e.g. "-m"), `required` (the command line or the config must set it),
    `cli=False` (config files only) and, for a number, its range: `min`, `max`, `min_open`, `max_open`
    (click.IntRange/FloatRange's meaning; a float must be finite too)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help, **cli})
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class SharedArguments:
    """What every method shares; `training.common_args` maps it onto transformers' TrainingArguments."""

    model: str = option("smollm2-135m", "Base model: alias, Hugging Face id, local folder or .gguf (as for "
                        "`macsql ask`).", metavar="NAME_OR_PATH", short="-m")
    data: str = option("", "Folder from `macsql data build`.", path={"exists": True}, required=True)
    out: str = option("runs/finetune", "Output folder (adapters per agent).", path={"file_okay": False},
                      required=True)
    method: str = option("lora", "; ".join(f"{name}: {what}" for name, (_, what) in METHODS.items()) + ".",
                         choices=tuple(METHODS))
    resume: bool = option(False, "Continue from the last checkpoint in OUT/checkpoints/.")
    init_adapters: str | None = option(None, "Start from these adapters (e.g. the LoRA SFT output before GRPO "
                                       "or DPO).", path={"exists": True, "file_okay": False})
    max_steps: int = option(-1, "-1: train --epochs epochs.", min=-1)
    epochs: float = option(1.0, min=0, min_open=True)
    lr: float = option(2e-4, min=0, min_open=True)
    batch_size: int = option(4, min=1)
    grad_accum: int = option(1, min=1)
    max_length: int = option(1024, "Tokens per training row.", min=1)
    eval_steps: int = option(50, "Validate and checkpoint every N.", min=1)
    eval_batch_size: int = option(8, "Validation batch size.", min=1)
    # per task: validation costs forward passes on a 2-core CPU too
    max_eval_rows: int | None = option(64, "Validation rows per task.", min=1)
    patience: int = option(3, "Early stopping (evaluations; 0: off).", min=0)
    logging_steps: int = option(5, "Log the loss every N steps.", min=1)
    limit: int | None = option(None, "Training rows at most (seeded sample).", min=1)
    # a CPU-hour budget; the steps cap it too
    max_minutes: float | None = option(None, "Stop (and save) after this many minutes of training; "
                                       "--max-steps still caps the run.", min=0, min_open=True)
    # auto: bf16 where the device computes it natively (GPU, or a CPU with AMX/AVX512-BF16)
    dtype: str = option("auto", choices=DTYPE_CHOICES)
    # None: on for models of 1B parameters or more (memory), else off
    gradient_checkpointing: bool | None = option(None, "Recompute activations in the backward pass (default: "
                                                 "on for models of 1B parameters or more).")
    # None: on when batches are padded (42% padding -> 1% on Spider train)
    group_by_length: bool | None = option(None, "Batches of rows of similar length (default: on for padded "
                                          "SFT batches).")
    threads: int | None = option(None, "torch threads (default: one per core).", min=1)
    # False: no checkpoints, no best-model reload (tests, quick tries)
    save: bool = option(True, "Save checkpoints (--no-save: no --resume, no best-model reload).")
    seed: int = option(0, min=0, max=2**32 - 1)  # numpy's seeds (transformers.set_seed seeds it too)
    extra: dict = option({}, cli=False)  # passed to the TRL/transformers config as is


@dataclass
class LoraArguments:
    """The LoRA adapter (every method but full SFT): a preset, and any of its values overridden."""

    lora_preset: str | None = option(None, "r8: r=8/alpha=32/dropout 0.05 on q,k,v,o; r16: r=16/alpha=64/"
                                     "dropout 0.1; r32 (GRPO default): r=32/alpha=64. Default r8, r32 for grpo.",
                                     choices=tuple(LORA_PRESETS))
    lora_r: int | None = option(None, min=1)
    lora_alpha: int | None = option(None, min=1)
    lora_dropout: float | None = option(None, min=0, max=1, max_open=True)
    lora_targets: str | None = option(None, "Comma-separated layer names, e.g. q,k,v,o,gate,up,down.")

    def lora_settings(self, method: str) -> dict:
        """r, alpha, dropout and targets: the named preset (or the method's), then the explicit values."""
        preset = self.lora_preset or METHOD_PRESETS.get(method, DEFAULT_PRESET)
        if preset not in LORA_PRESETS:
            raise InputError(f"unknown LoRA preset {preset!r}{did_you_mean(preset, LORA_PRESETS)}"
                             f"; choose one of {', '.join(LORA_PRESETS)}")
        settings = dict(LORA_PRESETS[preset])
        for key in ("r", "alpha", "dropout", "targets"):
            value = getattr(self, f"lora_{key}")
            if value is not None:
                settings[key] = value
        return settings


@dataclass
class SFTArguments:
    """SFT's own batching; feeds `trl.SFTConfig` (sft.py)."""

    # None: on with flash attention's varlen kernels, else off (see sft.uses_padding_free)
    padding_free: bool | None = option(None, "Flatten each batch into one unpadded sequence (default: on "
                                       "with flash attention only).")
    # BFD packing of rows into --max-length blocks (then a step holds more rows)
    packing: bool = option(False, "Pack rows into --max-length blocks (a step then holds more rows).")
    # one trie-packed sequence per batch: the prompts' shared prefixes (a database's schema) computed once
    # None (off) rather than False, so that --no-shared-prefix can override a recipe that turns it on
    shared_prefix: bool | None = option(None, "Compute the prompt tokens a batch's rows share once (rows sorted "
                                        "by tokens; exact: each row's loss as if alone; default off). Causal LMs "
                                        "with sdpa/eager attention.")


@dataclass
class GRPOArguments:
    """GRPO's sampling and rewards; feeds `trl.GRPOConfig` (grpo.py)."""

    # prompts per optimizer step (x num_generations completions); None: one batch of completions
    prompts_per_step: int | None = option(None, "GRPO: prompts per optimizer step, each sampled "
                                          "--num-generations times (default 1).", min=1)
    # advantages are rewards relative to the prompt's group: one sample has nothing to be compared with
    num_generations: int = option(4, "GRPO: samples per prompt.", min=2)
    max_completion_length: int = option(160, "GRPO: tokens.", min=1)
    temperature: float = option(1.0, "GRPO sampling temperature.", min=0, min_open=True)
    reward_weights: str | dict | None = option(None, "GRPO: e.g. execution=1,format=0.2,executes=0.2,"
                                               "complexity=0.1,grounding=0.2 (0 drops one).")
    # KL coefficient; 0: no reference model, as in recent GRPO recipes (DPO's beta is dpo_beta)
    beta: float = option(0.0, "GRPO KL coefficient.", min=0)

    def grpo_config_args(self) -> dict:
        """The `trl.GRPOConfig` fields these set one to one (batch size and reward weights are derived)."""
        return {"num_generations": self.num_generations, "max_completion_length": self.max_completion_length,
                "temperature": self.temperature, "beta": self.beta}


@dataclass
class DPOArguments:
    """DPO's preference strength; feeds `trl.DPOConfig` (dpo.py)."""

    dpo_beta: float = option(0.1, "DPO: the preference strength (trl.DPOConfig's beta).", min=0, min_open=True)

    def dpo_config_args(self) -> dict:
        return {"beta": self.dpo_beta}


# Bases listed last-first: a dataclass's fields come in reverse method-resolution order, so the shared
# arguments lead (and lead `--help`).
@dataclass
class Options(DPOArguments, GRPOArguments, SFTArguments, LoraArguments, SharedArguments):
    """Every `macsql finetune` option; a `--config` file or recipe holds a subset of these names."""

    def __post_init__(self):
        # every way of making options (the command line, a config, a sweep's replace(), Python) is checked
        check_values({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def lora(self) -> dict:
        return self.lora_settings(self.method)

    @classmethod
    def check_names(cls, names, source: str) -> None:
        unknown = sorted(set(names) - cls.names())
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r} in {source}{did_you_mean(unknown[0], cls.names())}")

    @classmethod
    def from_config(cls, values: dict, source: str = "the config") -> Options:
        """Options from a mapping of option names (a config file, merged with the command line), typed."""
        cls.check_names(values, source)
        values = {k: typed(k, v) for k, v in values.items()}
        check_values(values, source)
        return cls(**values)


def number_kind(f) -> str | None:
    """"int" or "float" for a numeric option (its annotation, e.g. "float | None"), else None."""
    base = str(f.type).split(" |")[0]
    return base if base in ("int", "float") else None


def describe_range(meta) -> str:
    """A field's range as click writes it in --help: `x>0`, `x>=1`, `0<=x<1`."""
    lo, hi = meta.get("min"), meta.get("max")
    if lo is None and hi is None:
        return ""
    if lo is None:
        return f"x{'<' if meta.get('max_open') else '<='}{hi}"
    if hi is None:
        return f"x{'>' if meta.get('min_open') else '>='}{lo}"
    return f"{lo}{'<' if meta.get('min_open') else '<='}x{'<' if meta.get('max_open') else '<='}{hi}"


def value_problem(name: str, value) -> str | None:
    """Why option `name` cannot take `value` (a phrase for one line), or None: a number must be of its
    field's kind, finite, and within its range. The command line's types and config files both ask this."""
    f = _FIELDS.get(name)
    kind = number_kind(f) if f is not None else None
    if kind is None or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and isinstance(value, float)):
        return f"{value!r} is not {'a whole number' if kind == 'int' else 'a number'}"
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    meta = f.metadata
    lo, hi = meta.get("min"), meta.get("max")
    below = lo is not None and (value <= lo if meta.get("min_open") else value < lo)
    above = hi is not None and (value >= hi if meta.get("max_open") else value > hi)
    if below or above:
        return f"{value} is not in the range {describe_range(meta)}"
    return None


def check_values(values: dict, source: str = "") -> None:
    """UsageError (exit 2, one line) for the first value its option cannot take."""
    for name, value in values.items():
        problem = value_problem(name, value)
        if problem:
            where = f" in {source}" if source else ""
            raise UsageError(f"option {name!r}{where}: {problem}")


def typed(name: str, value):
    """A config value as its option's type: YAML reads `lr: 1e-3` (no dot) as a string, not a number."""
    written = next(str(f.type) for f in fields(Options) if f.name == name)  # e.g. "int | None"
    if not isinstance(value, str) or written.split(" |")[0] not in ("float", "int"):
        return value
    try:
        return float(value) if written.startswith("float") else int(value)
    except ValueError as exc:
        raise UsageError(f"option {name!r} must be a number, got {value!r}") from exc


_FIELDS = {f.name: f for f in fields(Options)}


# ------------------------------------------------------------------------------ config files and recipes
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
    names = recipe_names()
    raise InputError(f"--config {path!r} is neither a file nor a recipe{did_you_mean(name, names)}; "
                     f"recipes: {', '.join(names)}")


def load_config(path: str | None) -> dict:
    """The mapping in a YAML/JSON config file or recipe, names with `_` (`agent` included), or {}."""
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

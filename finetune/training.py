"""The one training setup every method shares: model and tokenizer, the LoRA adapter (new, or continued from
`--init-adapters`), transformers' arguments (device, precision and memory policy), callbacks (early stopping,
the time budget), resuming, and the outputs (adapters per agent, log, loss plot, summary).

A method (sft.py, grpo.py, dpo.py) supplies a `Method`: the agents it trains, its rows and its trainer.
`run` is the entry point of `macsql finetune`, of the sweep and of Python callers.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from macsql.errors import InputError, ModelError
from macsql.finetune.config import METHODS, Options


@dataclass(frozen=True)
class Method:
    """What a training method supplies to the shared setup."""

    tasks: Callable[[str], tuple[str, ...]]  # the agents it trains for AGENT (`all`: several)
    rows: Callable[[Options, tuple[str, ...]], tuple[list, list]]  # (train, validation), before the model loads
    trainer: Callable[[Setup, list, list], Any]  # the TRL/transformers trainer, ready to `train()`
    summary: Callable[[Setup, Any, list], dict]  # the method's own figures, from the trained trainer and rows
    causal_only: str = ""  # the error for a seq2seq model, for methods that sample with `generate`


@dataclass
class Setup:
    """A run's loaded model, its adapter settings and where it writes; what a method's trainer starts from."""

    agent: str
    opts: Options
    tasks: tuple[str, ...]
    model: Any
    tokenizer: Any
    seq2seq: bool
    full: bool  # full fine-tuning (a whole model saved), else a LoRA adapter per agent
    peft_config: Any  # a new LoRA adapter to add, or None (full SFT, or a continued adapter already on model)

    @property
    def name(self) -> str:
        return f"{self.agent}-{self.opts.method}"

    @property
    def run_dir(self) -> Path:
        return Path(self.opts.out) / "checkpoints" / self.name

    def args(self, has_eval: bool, **method_args) -> dict:
        """The trainer config's fields: the shared ones, then the method's own, then `opts.extra` (once)."""
        return common_args(self.opts, self.run_dir, has_eval, self.model, method_args)

    def callbacks(self, has_eval: bool) -> list:
        return callbacks(self.opts, has_eval)


def load_model(name: str, dtype: str = "auto"):
    """(model, tokenizer, is_seq2seq) for training, for any name `macsql ask --model` accepts, loaded as the
    `hf` backend loads it (`backends.loading`: GGUF converted once, the same dtype policy)."""
    from macsql.backends.loading import load_transformers
    from macsql.weights import resolve

    model, tokenizer, seq2seq = load_transformers(resolve(name), dtype=dtype, for_training=True)
    if not seq2seq and not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{name!r} has no chat template; the agents' prompts are chat messages, so train a "
                         "chat/instruct model (or add a chat_template to its tokenizer_config.json)")
    return model, tokenizer, seq2seq


def prepare(agent: str, opts: Options, method: Method) -> tuple[Any, Setup, list]:
    """(trainer, setup, training rows) ready to `train()` (benchmarks time this)."""
    full = opts.method == "sft"
    if full and opts.init_adapters:
        raise InputError("--init-adapters continues a LoRA run; use --method lora with it")
    tasks = method.tasks(agent)
    train_rows, val_rows = method.rows(opts, tasks)  # its errors come before the model loads
    model, tokenizer, seq2seq = load_model(opts.model, opts.dtype)
    if seq2seq and method.causal_only:
        raise ModelError(method.causal_only)
    if not full:
        model = with_init_adapter(model, opts, agent)
    peft_config = None if full or opts.init_adapters else lora_config(model, opts, seq2seq)
    setup = Setup(agent, opts, tasks, model, tokenizer, seq2seq, full, peft_config)
    return method.trainer(setup, train_rows, val_rows), setup, train_rows


def train(agent: str, opts: Options, method: Method) -> dict:
    """Set up, train (or resume), save; the summary of the run."""
    trainer, setup, rows = prepare(agent, opts, method)
    trainer.train(resume_from_checkpoint=resume_arg(opts, setup.run_dir))
    out = Path(opts.out)
    summary = save_outputs(trainer, setup.tokenizer, opts, out, setup.tasks, setup.name, setup.full)
    if not setup.full:
        copy_other_adapters(opts, out, setup.tasks)
    return {"agent": agent, "method": opts.method, **method.summary(setup, trainer, rows), **summary}


def run(agent: str, opts: Options) -> dict:
    """Train AGENT with `opts.method` and write OUT/<agent>-<method>-summary.json; the Python entry point."""
    if opts.method not in METHODS:
        names = list(METHODS)
        raise InputError(f"unknown method {opts.method!r}; choose {', '.join(names[:-1])} or {names[-1]}")
    set_threads(opts)
    start = time.perf_counter()
    module = importlib.import_module(f"macsql.finetune.{METHODS[opts.method][0]}")
    summary = train(agent, opts, module.METHOD)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{agent}-{opts.method}-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


# ------------------------------------------------------------------------------------------------ LoRA
def target_modules(model, short: str) -> list[str]:
    """Map short names (`q,k,v,o`) onto the model's linear layers: `q_proj` (LLaMA, Qwen) or `q` (T5)."""
    import torch

    leaves = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    found = []
    for s in (x.strip() for x in short.split(",") if x.strip()):
        match = next((c for c in (f"{s}_proj", s, f"{s}_lin") if c in leaves), None)
        if match is None:
            raise InputError(f"no linear layer named {s!r} or {s + '_proj'!r} in this model; pass "
                             f"--lora-targets from: {', '.join(sorted(leaves))}")
        found.append(match)
    return found


def lora_config(model, opts: Options, seq2seq: bool):
    from peft import LoraConfig, TaskType

    s = opts.lora()
    return LoraConfig(r=int(s["r"]), lora_alpha=int(s["alpha"]), lora_dropout=float(s["dropout"]),
                      target_modules=target_modules(model, s["targets"]), bias="none",
                      task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM)


def adapter_dir(folder: str | Path, agent: str) -> Path:
    """The adapter for `agent` in a `macsql finetune` output (or a single shared adapter folder)."""
    root = Path(folder)
    for candidate in (root / agent, root / "decomposer", root):
        if (candidate / "adapter_config.json").exists():
            return candidate
    raise InputError(f"no adapter for {agent!r} in {str(root)!r}: expected {root}/{agent}/adapter_config.json")


def with_init_adapter(model, opts: Options, agent: str):
    """The model with the starting adapter loaded trainable, or the bare model (`all` starts from the
    Decomposer's adapter when there is no shared one)."""
    if not opts.init_adapters:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir(opts.init_adapters, agent)), is_trainable=True)


# -------------------------------------------------------------------------- arguments and callbacks
BIG_MODEL_PARAMS = 1_000_000_000  # from here on activations, not compute, limit a run: checkpoint by default


def wants_checkpointing(opts: Options, model) -> bool:
    """Gradient checkpointing recomputes every layer's activations in the backward pass (about a third more
    compute): worth it when memory is short (1.5B and 7B models), not for a 135M model. TRL's configs turn it
    on by default, so it is always decided here."""
    if opts.gradient_checkpointing is not None:
        return bool(opts.gradient_checkpointing)
    return sum(p.numel() for p in model.parameters()) >= BIG_MODEL_PARAMS


def _checkpointing_field() -> str:
    """transformers 5.2x renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns);
    setting the new one also overrides TRL's `gradient_checkpointing=True` default."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def set_threads(opts: Options) -> None:
    if opts.threads:
        import torch

        torch.set_num_threads(int(opts.threads))


def common_args(opts: Options, run_dir: Path, has_eval: bool, model=None, method_args: dict | None = None) -> dict:
    """TrainingArguments fields shared by every method (device, precision and memory policy included), then
    `method_args` (a method's own config fields), then `opts.extra`, applied here only, so the user's word
    wins over both."""
    import torch

    from macsql.backends import loading  # the one device/dtype policy, shared with inference

    device = loading.default_device()
    save = opts.save
    args = {
        "output_dir": str(run_dir), "max_steps": opts.max_steps, "num_train_epochs": opts.epochs,
        "learning_rate": opts.lr, "per_device_train_batch_size": opts.batch_size,
        "per_device_eval_batch_size": opts.eval_batch_size, "gradient_accumulation_steps": opts.grad_accum,
        "logging_steps": opts.logging_steps, "seed": opts.seed, "report_to": "none",
        "use_cpu": device == "cpu",
        "bf16": loading.torch_dtype(opts.dtype, device, for_training=True) is torch.bfloat16,
        "save_strategy": "steps" if save else "no", "save_steps": opts.eval_steps, "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no", "eval_steps": opts.eval_steps,
        "load_best_model_at_end": bool(save and has_eval), "metric_for_best_model": "eval_loss",
        "greater_is_better": False, "disable_tqdm": False, "dataloader_num_workers": 0,
    }
    checkpointing = wants_checkpointing(opts, model) if model is not None else bool(opts.gradient_checkpointing)
    args[_checkpointing_field()] = checkpointing  # trades compute for memory on long schemas
    if opts.group_by_length:
        args["train_sampling_strategy"] = "group_by_length"
    args.update(method_args or {})
    args.update(opts.extra)
    return args


def mean_eval_loss(trainer_cls):
    """`trainer_cls` that also reports the mean of the per-task validation losses as `eval_loss`.

    With a dict of eval datasets, transformers logs one loss per task and nothing overall; early stopping
    and best-checkpoint selection need one number, so it is added (and the callbacks told) here.
    """

    class MeanEvalLoss(trainer_cls):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if eval_dataset is None and isinstance(self.eval_dataset, dict):
                losses = [metrics[k] for n in self.eval_dataset if (k := f"{metric_key_prefix}_{n}_loss") in metrics]
                if losses:
                    metrics[f"{metric_key_prefix}_loss"] = sum(losses) / len(losses)
                    self.log({f"{metric_key_prefix}_loss": metrics[f"{metric_key_prefix}_loss"]})
                    self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    MeanEvalLoss.__name__ = f"MeanEvalLoss{trainer_cls.__name__}"
    return MeanEvalLoss


def callbacks(opts: Options, has_eval: bool) -> list:
    from transformers import EarlyStoppingCallback

    class OnMeanLoss(EarlyStoppingCallback):
        """Early stopping on the mean validation loss only: the per-task evaluations that precede it carry
        no `eval_loss`, and the stock callback would warn (wrongly) that early stopping is disabled."""

        def on_evaluate(self, args, state, control, metrics, **kwargs):
            if "eval_loss" in metrics:
                super().on_evaluate(args, state, control, metrics, **kwargs)

    out = [time_budget(opts.max_minutes)] if opts.max_minutes else []
    if opts.save and has_eval and opts.patience > 0:
        out.append(OnMeanLoss(early_stopping_patience=opts.patience))
    return out


def time_budget(minutes: float):
    """Stop (and save) once `minutes` of training have passed: a recipe sized in CPU hours then fits its
    budget on busy or idle cores alike, with --max-steps as the upper bound."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() - self.start >= minutes * 60:
                control.should_training_stop = True
                control.should_save = args.save_strategy != "no"

    return TimeBudget()


def resume_arg(opts: Options, run_dir: Path):
    if not opts.resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if last is None:
        raise InputError(f"--resume: no checkpoint in {str(run_dir)!r}; run once without --resume (checkpoints "
                         "are saved every --eval-steps)")
    return last


# ------------------------------------------------------------------------------------------------ rows
def sample_rows(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    import random

    if limit is None or len(rows) <= limit:
        return rows
    return random.Random(seed).sample(rows, limit)


def dataset(rows: list[dict], columns: tuple[str, ...]):
    """A `datasets.Dataset` of these columns of the rows."""
    from datasets import Dataset

    return Dataset.from_list([{c: r[c] for c in columns} for r in rows])


def capped_per_task(val: list[dict], opts: Options) -> list[dict]:
    """At most `max_eval_rows` validation rows per task (the seeded sample `eval_sets` keeps)."""
    from macsql.finetune.data import by_task

    return [r for _task, rows in sorted(by_task(val).items()) for r in sample_rows(rows, opts.max_eval_rows, opts.seed)]


def eval_sets(val: list[dict], opts: Options, columns: tuple[str, ...], *, sort_key=None) -> dict:
    """One validation dataset per task (so the log holds each task's loss), at most `max_eval_rows` each;
    `sort_key` orders each sample (shared-prefix batches: neighbours share their schema)."""
    from macsql.finetune.data import by_task

    def rows_of(rows):
        kept = sample_rows(rows, opts.max_eval_rows, opts.seed)
        return sorted(kept, key=sort_key) if sort_key else kept

    return {task: dataset(rows_of(rows), columns) for task, rows in sorted(by_task(val).items())}


# --------------------------------------------------------------------------------------------- outputs
def save_outputs(trainer, tokenizer, opts: Options, out: Path, agents: tuple[str, ...], run_name: str,
                 full: bool) -> dict:
    """Adapters (or the full model), the log and the loss plot; returns a summary."""
    from macsql.finetune.plots import plot_losses

    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    if full:
        trainer.save_model(str(out))
        tokenizer.save_pretrained(str(out))
        saved = [str(out)]
    else:
        first = out / agents[0]
        model.save_pretrained(str(first))
        for agent in agents[1:]:  # the shared multitask adapter, once per agent name
            shutil.copytree(first, out / agent, dirs_exist_ok=True)
        saved = [str(out / a) for a in agents]
    history = trainer.state.log_history
    (out / f"{run_name}-log.json").write_text(json.dumps(history, indent=1))
    plot = plot_losses(history, out / f"{run_name}-loss.png", title=f"{run_name}: {opts.model}")
    return {"saved": saved, "plot": str(plot) if plot else None, "steps": trainer.state.global_step,
            "best_metric": trainer.state.best_metric, "best_checkpoint": trainer.state.best_model_checkpoint}


def copy_other_adapters(opts: Options, out: Path, trained: tuple[str, ...]) -> None:
    """Agents not trained in this run keep their starting adapter, so OUT is a complete `--adapters` set."""
    if not opts.init_adapters:
        return
    from macsql.backends.base import AGENTS

    for agent in AGENTS:
        if agent in trained or (out / agent / "adapter_config.json").exists():
            continue
        try:
            src = adapter_dir(opts.init_adapters, agent)
        except InputError:
            continue
        shutil.copytree(src, out / agent, dirs_exist_ok=True)

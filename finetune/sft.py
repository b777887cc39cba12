"""Supervised fine-tuning of the agents: full or LoRA, TRL's SFTTrainer for causal LMs, transformers'
Seq2SeqTrainer for T5-style models (TRL's SFTTrainer handles decoder-only models only).

Loss is on the completion only. Validation loss is computed per task (a dict of eval datasets, so the log
holds `eval_selector_loss`, `eval_decomposer_loss`, ...); their mean is `eval_loss`, which early stopping and
"keep the best checkpoint" watch. Outputs:

    OUT/<agent>/adapter_config.json   LoRA: one adapter per agent (`macsql ask --adapters OUT`)
    OUT/config.json                    full fine-tuning: a whole model (`macsql ask --model OUT`)
    OUT/loss.png, OUT/<run>-log.json  the training and per-task validation loss
    OUT/checkpoints/<run>/            trainer checkpoints (`--resume` continues from the last one)

`finetune all` trains ONE shared multitask adapter on the balanced mix of the three tasks and saves a copy
under each agent's name, so every agent loads it and any one agent can later be tuned further on its own
(e.g. GRPO on the Decomposer) without touching the others.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

from macsql.errors import InputError, ModelError
from macsql.finetune.data import TASKS

METHODS = ("sft", "lora", "grpo", "dpo")
AGENTS = (*TASKS, "all")
# LoRA presets reproducing the seed configurations (q, k, v, o map to each architecture's projection names).
LORA_PRESETS: dict[str, dict] = {
    "r8": {"r": 8, "alpha": 32, "dropout": 0.05, "targets": "q,k,v,o"},
    "r16": {"r": 16, "alpha": 64, "dropout": 0.1, "targets": "q,k,v,o"},
    "r32": {"r": 32, "alpha": 64, "dropout": 0.05, "targets": "q,k,v,o"},  # the GRPO seed
}


@dataclass
class Options:
    """Every `macsql finetune` option; a `--config` file holds a subset of these names."""

    model: str = "smollm2-135m"
    data: str = ""
    out: str = "runs/finetune"
    method: str = "lora"
    max_steps: int = -1
    epochs: float = 1.0
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    eval_steps: int = 50
    eval_batch_size: int = 8
    max_eval_rows: int | None = 64  # per task: validation costs forward passes on a 2-core CPU too
    patience: int = 3
    save: bool = True  # False: no checkpoints, no best-model reload (tests, quick tries)
    lora_preset: str = "r8"
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    lora_targets: str | None = None
    init_adapters: str | None = None  # continue from these adapters (e.g. SFT before GRPO)
    seed: int = 0
    resume: bool = False
    dtype: str = "auto"  # auto: bf16 where the device computes it natively (GPU, or a CPU with AMX/AVX512-BF16)
    gradient_checkpointing: bool | None = None  # None: on for models of 1B parameters or more (memory), else off
    padding_free: bool | None = None  # None: on with flash attention's varlen kernels, else off (see padding_free)
    packing: bool = False  # BFD packing of rows into --max-length blocks (then a step holds more rows)
    group_by_length: bool | None = None  # None: on when batches are padded (42% padding -> 1% on Spider train)
    threads: int | None = None  # torch intra-op threads (None: torch's default, one per core)
    limit: int | None = None  # training rows at most (seeded sample)
    max_minutes: float | None = None  # stop after this much training time (a CPU-hour budget); steps cap it too
    logging_steps: int = 5
    # GRPO
    prompts_per_step: int | None = None  # prompts per optimizer step (x num_generations completions); None: 1
    num_generations: int = 4
    max_completion_length: int = 160
    temperature: float = 1.0
    reward_weights: str | dict | None = None
    beta: float = 0.0  # GRPO KL coefficient (0: no reference model, as in recent GRPO recipes); DPO uses dpo_beta
    dpo_beta: float = 0.1
    extra: dict = field(default_factory=dict)  # passed to the TRL/transformers config as is

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


# ------------------------------------------------------------------------------------------ loading
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


def lora_settings(opts: Options) -> dict:
    if opts.lora_preset not in LORA_PRESETS:
        from macsql.errors import did_you_mean

        raise InputError(f"unknown LoRA preset {opts.lora_preset!r}{did_you_mean(opts.lora_preset, LORA_PRESETS)}"
                         f"; choose one of {', '.join(LORA_PRESETS)}")
    s = dict(LORA_PRESETS[opts.lora_preset])
    for key in ("r", "alpha", "dropout", "targets"):
        value = getattr(opts, f"lora_{key}")
        if value is not None:
            s[key] = value
    return s


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

    s = lora_settings(opts)
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
    """The model with the starting adapter loaded trainable, or the bare model."""
    if not opts.init_adapters:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir(opts.init_adapters, agent)), is_trainable=True)


# ---------------------------------------------------------------------------------------- trainer bits
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


def uses_padding_free(opts: Options, model) -> bool:
    """Padding-free batches (one flattened sequence per batch) by default only where the attention runs
    varlen kernels (flash attention): with sdpa or eager attention transformers builds a dense block-diagonal
    mask over the whole flattened batch, whose attention costs ~3.6x the rows' own on Spider train rows
    (padded batches: ~1.9x; grouped by length: ~1.03x), and measured slower than padded batches in
    benchmarks/bench_train.py. Padded batches grouped by length waste ~1% of tokens instead."""
    if opts.padding_free is not None:
        return bool(opts.padding_free)
    if opts.packing:
        return True  # TRL's BFD packing is padding-free
    attn = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    return attn.startswith("flash")


def set_threads(opts: Options) -> None:
    if opts.threads:
        import torch

        torch.set_num_threads(int(opts.threads))


def common_args(opts: Options, run_dir: Path, has_eval: bool, model=None) -> dict:
    """TrainingArguments fields shared by every method (device, precision and memory policy included)."""
    import torch

    from macsql.backends import loading

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
    args.update(opts.extra)
    return args


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
    import time

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


def sample_rows(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    import random

    if limit is None or len(rows) <= limit:
        return rows
    return random.Random(seed).sample(rows, limit)


def capped_per_task(val: list[dict], opts: Options) -> list[dict]:
    """At most `max_eval_rows` validation rows per task (the seeded sample `eval_sets` keeps)."""
    from macsql.finetune.data import by_task

    return [r for _task, rows in sorted(by_task(val).items()) for r in sample_rows(rows, opts.max_eval_rows, opts.seed)]


def eval_sets(val: list[dict], opts: Options, columns: tuple[str, ...]) -> dict:
    from datasets import Dataset

    from macsql.finetune.data import by_task

    out = {}
    for task, rows in sorted(by_task(val).items()):
        rows = sample_rows(rows, opts.max_eval_rows, opts.seed)
        out[task] = Dataset.from_list([{c: r[c] for c in columns} for r in rows])
    return out


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


# ---------------------------------------------------------------------------------------------- SFT
def make_sft_trainer(agent: str, opts: Options):
    """(trainer, tokenizer, training rows) for an SFT/LoRA run, ready to `train()` (benchmarks time this)."""
    from macsql.finetune.data import load_split

    tasks = TASKS if agent == "all" else (agent,)
    train_rows, val_rows = load_split(opts.data, tasks)
    train_rows = sample_rows(train_rows, opts.limit, opts.seed)
    model, tokenizer, seq2seq = load_model(opts.model, opts.dtype)
    full = opts.method == "sft"
    if full and opts.init_adapters:
        raise InputError("--init-adapters continues a LoRA run; use --method lora with it")
    run_dir = Path(opts.out) / "checkpoints" / f"{agent}-{opts.method}"
    if seq2seq:
        trainer = _seq2seq_trainer(model, tokenizer, train_rows, val_rows, opts, run_dir, full, agent)
    else:
        trainer = _causal_trainer(model, tokenizer, train_rows, val_rows, opts, run_dir, full, agent)
    return trainer, tokenizer, train_rows


def train_sft(agent: str, opts: Options) -> dict:
    """SFT (full) or LoRA on the agent's rows (`all`: the balanced mix of the three tasks)."""
    trainer, tokenizer, train_rows = make_sft_trainer(agent, opts)
    full = opts.method == "sft"
    out = Path(opts.out)
    run_name = f"{agent}-{opts.method}"
    run_dir = out / "checkpoints" / run_name
    trainer.train(resume_from_checkpoint=resume_arg(opts, run_dir))
    agents = TASKS if agent == "all" else (agent,)
    summary = save_outputs(trainer, tokenizer, opts, out, agents, run_name, full)
    if not full:
        copy_other_adapters(opts, out, agents)
    return {"agent": agent, "method": opts.method, "train_rows": len(train_rows), **summary}


def fitting(rows: list[dict], tokenizer, max_length: int) -> list[dict]:
    """Rows whose whole conversation fits in `max_length` tokens. Longer ones are dropped, not truncated:
    truncation keeps the start, so it would cut the completion, the only part that carries loss."""
    def length(r):
        text = tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    kept = [r for r in rows if length(r) <= max_length]
    if rows and not kept:
        raise InputError(f"every training row is longer than --max-length {max_length} tokens; raise it")
    return kept


def _causal_trainer(model, tokenizer, train_rows, val_rows, opts, run_dir, full, agent):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    train_rows = fitting(train_rows, tokenizer, opts.max_length)
    val_rows = fitting(capped_per_task(val_rows, opts), tokenizer, opts.max_length)  # tokenise what is used
    cols = ("prompt", "completion")
    train = Dataset.from_list([{c: r[c] for c in cols} for r in train_rows])
    evals = eval_sets(val_rows, opts, cols)
    # padding-free: the batch's rows flattened into one sequence with per-row position ids, from which
    # transformers builds a block-diagonal attention mask (sdpa/eager) or varlen kernels (flash attention), so
    # no row attends to another and no compute goes to padding. Rows/step stay as without it.
    # TRL enforces max_length only by truncation or packing; `fitting` already dropped the longer rows.
    padding_free = uses_padding_free(opts, model)
    max_length = None if padding_free and not opts.packing else opts.max_length
    args = common_args(opts, run_dir, bool(evals), model)
    if opts.group_by_length is None and not padding_free and "train_sampling_strategy" not in opts.extra:
        args["train_sampling_strategy"] = "group_by_length"  # padded batches: rows of similar length together
    config = SFTConfig(**args, max_length=max_length, completion_only_loss=True, padding_free=padding_free,
                       packing=bool(opts.packing))
    peft_config = None
    if not full:
        model = with_init_adapter(model, opts, agent)
        if not opts.init_adapters:
            peft_config = lora_config(model, opts, seq2seq=False)
    trainer_cls = mean_eval_loss(SFTTrainer)
    return trainer_cls(model=model, args=config, train_dataset=train, eval_dataset=evals or None,
                       processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks(opts, bool(evals)))


def _seq2seq_trainer(model, tokenizer, train_rows, val_rows, opts, run_dir, full, agent):
    """T5: the flattened prompt in (exactly what HFSeq2SeqLM feeds at inference), the reply as labels."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from macsql.backends.base import flatten
    from macsql.finetune.rewards import completion_text

    def encode(rows):
        enc = tokenizer([flatten(p) for p in rows["prompt"]], truncation=True, max_length=opts.max_length)
        enc["labels"] = tokenizer(text_target=[completion_text(c) for c in rows["completion"]], truncation=True,
                                  max_length=opts.max_completion_length * 4)["input_ids"]
        return enc

    def dataset(rows):
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
        return ds.map(encode, batched=True, remove_columns=["prompt", "completion"])

    train = dataset(train_rows)
    evals = {task: ds.map(encode, batched=True, remove_columns=["prompt", "completion"])
             for task, ds in eval_sets(val_rows, opts, ("prompt", "completion")).items()}
    if not full:
        from peft import get_peft_model

        model = with_init_adapter(model, opts, agent)
        if not opts.init_adapters:
            model = get_peft_model(model, lora_config(model, opts, seq2seq=True))
    args = Seq2SeqTrainingArguments(**common_args(opts, run_dir, bool(evals), model))
    trainer_cls = mean_eval_loss(Seq2SeqTrainer)
    return trainer_cls(model=model, args=args, train_dataset=train, eval_dataset=evals or None,
                       data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer,
                       callbacks=callbacks(opts, bool(evals)))

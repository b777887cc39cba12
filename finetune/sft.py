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

from macsql.errors import InputError
from macsql.finetune import training
from macsql.finetune.config import Options
from macsql.finetune.data import TASKS, completion_text


# ---------------------------------------------------------------------------------------------- SFT
def sft_tasks(agent: str) -> tuple[str, ...]:
    return TASKS if agent == "all" else (agent,)


def sft_rows(opts: Options, tasks: tuple[str, ...]) -> tuple[list, list]:
    from macsql.finetune.data import load_split

    train_rows, val_rows = load_split(opts.data, tasks)
    return training.sample_rows(train_rows, opts.limit, opts.seed), val_rows


def sft_trainer(setup: training.Setup, train_rows: list, val_rows: list):
    """SFTTrainer for causal LMs, Seq2SeqTrainer for T5-style models."""
    make = _seq2seq_trainer if setup.seq2seq else _causal_trainer
    return make(setup, train_rows, val_rows)


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


def _causal_trainer(setup: training.Setup, train_rows, val_rows):
    from trl import SFTConfig, SFTTrainer

    opts, model, tokenizer = setup.opts, setup.model, setup.tokenizer
    train_rows = fitting(train_rows, tokenizer, opts.max_length)
    val_rows = fitting(training.capped_per_task(val_rows, opts), tokenizer, opts.max_length)  # tokenise what is used
    cols = ("prompt", "completion")
    train = training.dataset(train_rows, cols)
    shared = uses_shared_prefix(opts, model)
    # shared-prefix batches: validation rows in prompt order too, so each batch's neighbours share a schema
    evals = training.eval_sets(val_rows, opts, cols, sort_key=_prompt_text if shared else None)
    # padding-free: the batch's rows flattened into one sequence with per-row position ids, from which
    # transformers builds a block-diagonal attention mask (sdpa/eager) or varlen kernels (flash attention), so
    # no row attends to another and no compute goes to padding. Rows/step stay as without it.
    # TRL enforces max_length only by truncation or packing; `fitting` already dropped the longer rows.
    args = setup.args(bool(evals))
    trainer_cls = training.mean_eval_loss(SFTTrainer)
    extra = {}
    if shared:
        # each batch one trie-packed sequence (shared_prefix.py): rows sorted by tokens, prompts' common
        # prefixes computed once; the sampler replaces length grouping
        from macsql.finetune import shared_prefix

        padding_free, max_length = False, opts.max_length
        args.pop("train_sampling_strategy", None)
        extra["data_collator"] = shared_prefix.SharedPrefixCollator(shared_prefix.mask_dtype_for(model))
        trainer_cls = shared_prefix.trainer_class(trainer_cls)
    else:
        padding_free = uses_padding_free(opts, model)
        max_length = None if padding_free and not opts.packing else opts.max_length
        if opts.group_by_length is None and not padding_free and "train_sampling_strategy" not in opts.extra:
            args["train_sampling_strategy"] = "group_by_length"  # padded batches: rows of similar length together
    config = SFTConfig(**args, max_length=max_length, completion_only_loss=True, padding_free=padding_free,
                       packing=bool(opts.packing))
    return trainer_cls(model=model, args=config, train_dataset=train, eval_dataset=evals or None,
                       processing_class=tokenizer, peft_config=setup.peft_config,
                       callbacks=setup.callbacks(bool(evals)), **extra)


def _prompt_text(row: dict) -> str:
    return "\n".join(m["content"] for m in row["prompt"])


def uses_shared_prefix(opts: Options, model) -> bool:
    """Shared-prefix batches (shared_prefix.py) when asked for; never with packing or padding-free batches,
    which lay a batch out their own way."""
    if not opts.shared_prefix:
        return False
    if opts.packing or opts.padding_free:
        raise InputError("--shared-prefix lays each batch out as one trie-packed sequence; it cannot be combined "
                         "with --packing or --padding-free")
    return True


def _seq2seq_trainer(setup: training.Setup, train_rows, val_rows):
    """T5: the flattened prompt in (exactly what HFSeq2SeqLM feeds at inference), the reply as labels."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from macsql.backends.base import flatten

    opts, model, tokenizer = setup.opts, setup.model, setup.tokenizer

    def encode(rows):
        enc = tokenizer([flatten(p) for p in rows["prompt"]], truncation=True, max_length=opts.max_length)
        enc["labels"] = tokenizer(text_target=[completion_text(c) for c in rows["completion"]], truncation=True,
                                  max_length=opts.max_completion_length * 4)["input_ids"]
        return enc

    cols = ("prompt", "completion")
    train = training.dataset(train_rows, cols).map(encode, batched=True, remove_columns=list(cols))
    evals = {task: ds.map(encode, batched=True, remove_columns=list(cols))
             for task, ds in training.eval_sets(val_rows, opts, cols).items()}
    if setup.peft_config is not None:  # Seq2SeqTrainer takes no peft_config: the adapter goes on here
        from peft import get_peft_model

        model = get_peft_model(model, setup.peft_config)
    args = Seq2SeqTrainingArguments(**setup.args(bool(evals)))
    trainer_cls = training.mean_eval_loss(Seq2SeqTrainer)
    return trainer_cls(model=model, args=args, train_dataset=train, eval_dataset=evals or None,
                       data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer,
                       callbacks=setup.callbacks(bool(evals)))


METHOD = training.Method(tasks=sft_tasks, rows=sft_rows, trainer=sft_trainer,
                         summary=lambda _setup, _trainer, rows: {"train_rows": len(rows)})

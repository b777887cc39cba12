"""DPO (TRL's DPOTrainer) against hallucinated schema: the grounded gold SQL is preferred to the same query
with a table or column that does not exist in the database (the most common failure of small models).

Pairs are made from the agent dataset's Decomposer/Refiner rows: same prompt, `chosen` = the gold reply,
`rejected` = the reply the agent would give with an invented name (`sql.corrupt`'s `invented_name`, checked
to be ungrounded with `rewards.invented_names`). Trains a LoRA adapter (from scratch or `--init-adapters`)
saved as OUT/<agent>/.
"""

from __future__ import annotations

import random
from pathlib import Path

from macsql.errors import InputError, ModelError
from macsql.finetune.rewards import SQL_TASKS
from macsql.finetune.sft import (
    Options,
    callbacks,
    common_args,
    copy_other_adapters,
    load_model,
    lora_config,
    mean_eval_loss,
    resume_arg,
    sample_rows,
    save_outputs,
    with_init_adapter,
)


def hallucination_pairs(rows: list[dict], seed: int = 0) -> list[dict]:
    """DPO rows (prompt, chosen, rejected, task) from agent rows with a database."""
    from macsql.agents import decomposer, refiner
    from macsql.finetune.rewards import _schema, invented_names
    from macsql.sql import corrupt

    rng = random.Random(seed)
    pairs = []
    for r in rows:
        if r["task"] not in SQL_TASKS or not r.get("gold_sql") or not r.get("db_path"):
            continue
        schema = _schema(r["db_path"])
        broken = corrupt(r["gold_sql"], schema, rng, ["invented_name"])
        bad = broken[0][1] if broken else None
        if not bad or not invented_names(bad, schema):
            continue
        reply = decomposer.format_target(bad) if r["task"] == "decomposer" else refiner.format_target(bad)
        pairs.append({"prompt": r["prompt"], "chosen": r["completion"],
                      "rejected": [{"role": "assistant", "content": reply}], "task": r["task"]})
    return pairs


def train_dpo(agent: str, opts: Options) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from macsql.finetune.data import by_task, load_split
    from macsql.finetune.grpo import grpo_tasks

    tasks = grpo_tasks(agent)
    train_rows, val_rows = load_split(opts.data, tasks)
    train = hallucination_pairs(sample_rows(train_rows, opts.limit, opts.seed), opts.seed)
    if not train:
        raise InputError(f"no preference pairs could be made from {opts.data!r}: DPO needs Decomposer/Refiner rows "
                         "with gold_sql and db_path (from `macsql data build`)")
    val = hallucination_pairs(val_rows, opts.seed)
    model, tokenizer, seq2seq = load_model(opts.model, opts.dtype)
    if seq2seq:
        raise ModelError("DPO here needs a causal (decoder-only) model; train T5 models with --method lora or sft")
    model = with_init_adapter(model, opts, agent if agent != "all" else "decomposer")
    peft_config = None if opts.init_adapters else lora_config(model, opts, seq2seq=False)
    cols = ("prompt", "chosen", "rejected")
    evals = {t: Dataset.from_list([{c: r[c] for c in cols} for r in sample_rows(g, opts.max_eval_rows, opts.seed)])
             for t, g in sorted(by_task(val).items())}
    out = Path(opts.out)
    run_name = f"{agent}-dpo"
    run_dir = out / "checkpoints" / run_name
    config = DPOConfig(**common_args(opts, run_dir, bool(evals), model), beta=opts.dpo_beta, max_length=opts.max_length)
    trainer = mean_eval_loss(DPOTrainer)(
        model=model, args=config, train_dataset=Dataset.from_list([{c: r[c] for c in cols} for r in train]),
        eval_dataset=evals or None, processing_class=tokenizer, peft_config=peft_config,
        callbacks=callbacks(opts, bool(evals)))
    trainer.train(resume_from_checkpoint=resume_arg(opts, run_dir))
    agents = tasks if agent == "all" else (agent,)
    summary = save_outputs(trainer, tokenizer, opts, out, agents, run_name, full=False)
    copy_other_adapters(opts, out, agents)
    return {"agent": agent, "method": "dpo", "pairs": len(train), **summary}

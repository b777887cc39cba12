"""DPO (TRL's DPOTrainer) against hallucinated schema: the grounded gold SQL is preferred to the same query
with a table or column that does not exist in the database (the most common failure of small models).

Pairs are made from the agent dataset's Decomposer/Refiner rows: same prompt, `chosen` = the gold reply,
`rejected` = the reply the agent would give with an invented name (`sql.corrupt`'s `invented_name`, checked
to be ungrounded with `rewards.invented_names`). Trains a LoRA adapter (from scratch or `--init-adapters`)
saved as OUT/<agent>/.
"""

from __future__ import annotations

import random

from macsql.errors import InputError
from macsql.finetune import training
from macsql.finetune.config import Options
from macsql.finetune.data import SQL_TASKS
from macsql.finetune.grpo import grpo_tasks


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
        reply = (decomposer.format_target(bad, direct=r.get("reply") == "direct") if r["task"] == "decomposer"
                 else refiner.format_target(bad))
        pairs.append({"prompt": r["prompt"], "chosen": r["completion"],
                      "rejected": [{"role": "assistant", "content": reply}], "task": r["task"]})
    return pairs


def dpo_rows(opts: Options, tasks: tuple[str, ...]) -> tuple[list, list]:
    """Preference pairs from the (sampled) training rows, and from the validation rows."""
    from macsql.finetune.data import load_split

    train_rows, val_rows = load_split(opts.data, tasks)
    train = hallucination_pairs(training.sample_rows(train_rows, opts.limit, opts.seed), opts.seed)
    if not train:
        raise InputError(f"no preference pairs could be made from {opts.data!r}: DPO needs Decomposer/Refiner rows "
                         "with gold_sql and db_path (from `macsql data build`)")
    return train, hallucination_pairs(val_rows, opts.seed)


def dpo_trainer(setup: training.Setup, train: list, val: list):
    from trl import DPOConfig, DPOTrainer

    opts = setup.opts
    cols = ("prompt", "chosen", "rejected")
    evals = training.eval_sets(val, opts, cols)
    config = DPOConfig(**setup.args(bool(evals), **opts.dpo_config_args(), max_length=opts.max_length))
    return training.mean_eval_loss(DPOTrainer)(
        model=setup.model, args=config, train_dataset=training.dataset(train, cols), eval_dataset=evals or None,
        processing_class=setup.tokenizer, peft_config=setup.peft_config, callbacks=setup.callbacks(bool(evals)))


# GRPO's agents: the pairs are SQL replies with an invented name
METHOD = training.Method(tasks=grpo_tasks, rows=dpo_rows, trainer=dpo_trainer,
                         summary=lambda _setup, _trainer, pairs: {"pairs": len(pairs)},
                         causal_only="DPO here needs a causal (decoder-only) model; train T5 models with "
                                     "--method lora or sft")

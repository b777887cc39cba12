"""GRPO (TRL's GRPOTrainer) on the SQL-writing agents, rewarded by execution against the gold result.

Each prompt is sampled `num_generations` times; the rewards in `rewards.py` (format, execution match,
executes-but-wrong, complexity alignment, schema grounding; weights configurable) score the samples and the
group-relative advantage pushes the policy toward the better ones. A reward that gives every sample of a group
the same value contributes no gradient, which is why partial credits exist besides the 0/1 execution match.
Trains a LoRA adapter (preset r32 unless another is named), from scratch or from SFT adapters
(`--init-adapters`), and saves OUT/<agent>/; GRPO needs a causal LM (TRL samples with `generate`).
"""

from __future__ import annotations

from macsql.errors import InputError
from macsql.finetune import training
from macsql.finetune.config import Options
from macsql.finetune.data import SQL_TASKS

# `reply` tells the format reward which layout a Decomposer row's prompt asks for (direct or decomposed)
COLUMNS = ("prompt", "task", "gold_sql", "db_path", "reply")


def grpo_tasks(agent: str) -> tuple[str, ...]:
    if agent == "all":
        return SQL_TASKS
    if agent not in SQL_TASKS:
        raise InputError(f"GRPO rewards executed SQL, so it trains the decomposer or refiner (or all), not {agent!r}; "
                         "train the selector with --method lora")
    return (agent,)


def reward_functions(weights: dict[str, float]) -> tuple[list, list[float]]:
    from macsql.finetune.rewards import REWARDS

    return [REWARDS[name] for name in weights], list(weights.values())


def completions_per_device(opts: Options, world_size: int | None = None) -> int:
    """`per_device_train_batch_size` for GRPO, where TRL counts completions, not prompts: with
    `--prompts-per-step P` every optimizer step sees P prompts x num_generations completions across all
    processes and gradient-accumulation steps (TRL generates them in one batch, then steps through them)."""
    import os

    if not opts.prompts_per_step:
        return opts.batch_size
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))  # set by `accelerate launch`
    total = int(opts.prompts_per_step) * int(opts.num_generations)
    per = total // (world * max(1, int(opts.grad_accum)))
    if per < 1 or per * world * max(1, int(opts.grad_accum)) != total:
        raise InputError(f"--prompts-per-step {opts.prompts_per_step} x --num-generations {opts.num_generations} "
                         f"= {total} completions must split evenly over {world} process(es) x --grad-accum "
                         f"{opts.grad_accum}; change one of them")
    return per


def grpo_rows(opts: Options, tasks: tuple[str, ...]) -> tuple[list, list]:
    """Training rows with a gold query and its database (the execution rewards run both); no validation."""
    from macsql.finetune.data import load_split
    from macsql.finetune.rewards import parse_weights

    train_rows, _ = load_split(opts.data, tasks)
    train_rows = [{**r, "reply": r.get("reply") or ""} for r in train_rows if r.get("gold_sql") and r.get("db_path")]
    if not train_rows:
        raise InputError(f"no rows with gold_sql and db_path in {opts.data!r}; GRPO needs rows built by "
                         "`macsql data build` from a benchmark file (imported SQL-Llama rows have no database)")
    parse_weights(opts.reward_weights)  # the settings fail here, before the model loads
    completions_per_device(opts)
    return training.sample_rows(train_rows, opts.limit, opts.seed), []


def grpo_trainer(setup: training.Setup, train_rows: list, _val_rows: list):
    from trl import GRPOConfig, GRPOTrainer

    from macsql.finetune.rewards import parse_weights

    opts = setup.opts
    funcs, values = reward_functions(parse_weights(opts.reward_weights))
    args = setup.args(False, per_device_train_batch_size=completions_per_device(opts), **opts.grpo_config_args(),
                      reward_weights=values, log_completions=False)
    return GRPOTrainer(model=setup.model, reward_funcs=funcs, args=GRPOConfig(**args),
                       train_dataset=training.dataset(train_rows, COLUMNS), processing_class=setup.tokenizer,
                       peft_config=setup.peft_config, callbacks=setup.callbacks(has_eval=False))


def grpo_summary(setup: training.Setup, trainer, train_rows: list) -> dict:
    from macsql.finetune.rewards import parse_weights

    opts = setup.opts
    rewards = [e for e in trainer.state.log_history if "reward" in e]
    return {"train_rows": len(train_rows), "reward_weights": parse_weights(opts.reward_weights),
            "prompts_per_step": trainer.args.generation_batch_size // opts.num_generations,
            "rewards": [(e.get("step"), round(e["reward"], 4)) for e in rewards]}


METHOD = training.Method(tasks=grpo_tasks, rows=grpo_rows, trainer=grpo_trainer, summary=grpo_summary,
                         causal_only="GRPO needs a causal (decoder-only) model; train T5 models with --method "
                                     "lora or sft")

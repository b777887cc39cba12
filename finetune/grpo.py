"""GRPO (TRL's GRPOTrainer) on the SQL-writing agents, rewarded by execution against the gold result.

Each prompt is sampled `num_generations` times; the rewards in `rewards.py` (format, execution match,
executes-but-wrong, complexity alignment, schema grounding; weights configurable) score the samples and the
group-relative advantage pushes the policy toward the better ones. A reward that gives every sample of a group
the same value contributes no gradient, which is why partial credits exist besides the 0/1 execution match.
Trains a LoRA adapter (preset r32 unless another is named), from scratch or from SFT adapters
(`--init-adapters`), and saves OUT/<agent>/; GRPO needs a causal LM (TRL samples with `generate`).
"""

from __future__ import annotations

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
    resume_arg,
    sample_rows,
    save_outputs,
    with_init_adapter,
)

COLUMNS = ("prompt", "task", "gold_sql", "db_path")


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


def train_grpo(agent: str, opts: Options) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from macsql.finetune.data import load_split
    from macsql.finetune.rewards import parse_weights

    tasks = grpo_tasks(agent)
    train_rows, _ = load_split(opts.data, tasks)
    train_rows = [r for r in train_rows if r.get("gold_sql") and r.get("db_path")]
    if not train_rows:
        raise InputError(f"no rows with gold_sql and db_path in {opts.data!r}; GRPO needs rows built by "
                         "`macsql data build` from a benchmark file (imported SQL-Llama rows have no database)")
    train_rows = sample_rows(train_rows, opts.limit, opts.seed)
    weights = parse_weights(opts.reward_weights)
    funcs, values = reward_functions(weights)
    per_device = completions_per_device(opts)
    model, tokenizer, seq2seq = load_model(opts.model, opts.dtype)
    if seq2seq:
        raise ModelError("GRPO needs a causal (decoder-only) model; train T5 models with --method lora or sft")
    model = with_init_adapter(model, opts, agent if agent != "all" else "decomposer")
    peft_config = None if opts.init_adapters else lora_config(model, opts, seq2seq=False)
    out = Path(opts.out)
    run_name = f"{agent}-grpo"
    run_dir = out / "checkpoints" / run_name
    args = common_args(opts, run_dir, has_eval=False, model=model)
    args.update(per_device_train_batch_size=per_device, num_generations=opts.num_generations,
                max_completion_length=opts.max_completion_length,
                temperature=opts.temperature, beta=opts.beta, reward_weights=values, log_completions=False)
    args.update(opts.extra)
    config = GRPOConfig(**args)
    dataset = Dataset.from_list([{c: r[c] for c in COLUMNS} for r in train_rows])
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config,
                          callbacks=callbacks(opts, has_eval=False))
    trainer.train(resume_from_checkpoint=resume_arg(opts, run_dir))
    agents = tasks if agent == "all" else (agent,)
    summary = save_outputs(trainer, tokenizer, opts, out, agents, run_name, full=False)
    copy_other_adapters(opts, out, agents)
    rewards = [e for e in trainer.state.log_history if "reward" in e]
    return {"agent": agent, "method": "grpo", "train_rows": len(train_rows), "reward_weights": weights,
            "prompts_per_step": config.generation_batch_size // opts.num_generations,
            "rewards": [(e.get("step"), round(e["reward"], 4)) for e in rewards], **summary}

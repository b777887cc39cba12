"""Training throughput (tokens/s) of `macsql finetune` SFT, before and after the CPU policy, in one run.

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_train.py --data runs/spider-train --steps 12

Each setting trains the same seeded rows (`--agent`, default `all`: the balanced three-task mix) of
`--model` (default SmolLM2-135M-Instruct) with LoRA for `--steps` steps of `--batch-size` rows, through the
same `make_sft_trainer` that `macsql finetune` uses; only the options in the table differ:

- before: what `macsql finetune` did until now on a CPU: float32 (`--dtype auto` meant fp32 on CPU),
  gradient checkpointing on (TRL's SFTConfig default, which we did not override) and padded batches;
- then one change at a time: checkpointing off, bf16 (where the CPU has native bf16), padding-free batches
  (each batch one unpadded sequence, rows kept apart by position ids), length-grouped batches, BFD packing;
- after: the new defaults (`--dtype auto`, checkpointing decided by model size, padding-free on).

Tokens are the real (unpadded) tokens of the batches, as TRL counts them (`num_tokens`); the first
`--warmup` steps are not timed. The figures are CPU-time sensitive: run it on idle cores to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

BEFORE = {"dtype": "fp32", "gradient_checkpointing": True, "padding_free": False}
AFTER: dict = {}  # the defaults
SETTINGS = {
    "before": BEFORE,
    "no-checkpointing": {**BEFORE, "gradient_checkpointing": False},
    "+bf16": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16"},
    "+group-by-length": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16", "group_by_length": True},
    "+padding-free": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16", "padding_free": True},
    "+packing": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16", "packing": True},
    "after": AFTER,
}


def timed_run(args, name: str, overrides: dict) -> dict:
    import torch
    from transformers import TrainerCallback

    from macsql.finetune.sft import Options, make_sft_trainer, wants_checkpointing

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begin, self.seconds, self.tokens = {}, {}, {}

        def on_step_begin(self, a, state, control, **kw):
            self.begin[state.global_step + 1] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.seconds[state.global_step] = time.perf_counter() - self.begin[state.global_step]

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs:
                self.tokens[state.global_step] = logs["num_tokens"]

    opts = Options(model=args.model, data=args.data, out=str(Path(args.out_dir) / name), method="lora",
                   max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length, save=False,
                   limit=args.steps * args.batch_size, logging_steps=1, seed=args.seed, threads=args.threads,
                   max_eval_rows=1, extra={"eval_strategy": "no", "disable_tqdm": True}, **overrides)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    trainer, _tok, rows = make_sft_trainer(args.agent, opts)
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    steps = sorted(s for s in clock.seconds if s > args.warmup and s in clock.tokens and s - 1 in clock.tokens)
    tokens = sum(clock.tokens[s] - clock.tokens[s - 1] for s in steps)
    seconds = sum(clock.seconds[s] for s in steps)
    params = trainer.args
    return {"setting": name, "dtype": "bf16" if params.bf16 else "fp32",
            "checkpointing": wants_checkpointing(opts, trainer.model),
            "padding_free": bool(getattr(trainer, "padding_free", False)), "packing": bool(params.packing),
            "grouped": params.train_sampling_strategy == "group_by_length", "timed_steps": len(steps),
            "tokens": int(tokens), "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds if seconds else 0.0,
            "threads": torch.get_num_threads(), "loss": trainer.state.log_history[-2].get("loss")
            if len(trainer.state.log_history) > 1 else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `macsql data build` folder")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--agent", default="all")
    ap.add_argument("--settings", default="before,no-checkpointing,+bf16,+group-by-length,after",
                    help=f"from {', '.join(SETTINGS)} (+padding-free is `after` on a CPU with native bf16)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="runs/bench-train")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        print(f"Error: unknown setting {unknown[0]!r}; choose from {', '.join(SETTINGS)}", file=sys.stderr)
        return 1
    from macsql.llm import cpu_has_native_bf16

    print(f"model {args.model}, agent {args.agent}, {args.steps} steps x {args.batch_size} rows "
          f"(first {args.warmup} untimed), native bf16 on this CPU: {cpu_has_native_bf16()}", flush=True)
    results = []
    for name in names:
        results.append(timed_run(args, name, SETTINGS[name]))
        r = results[-1]
        print(f"  {name}: {r['tokens_per_s']:.1f} tokens/s ({r['tokens']} tokens in {r['seconds']} s)", flush=True)
    base = next((r["tokens_per_s"] for r in results if r["setting"] == "before"), results[0]["tokens_per_s"])
    rows = [(r["setting"], r["dtype"], r["checkpointing"], r["padding_free"], r["grouped"], r["packing"],
             r["timed_steps"], r["tokens"], r["seconds"], round(r["tokens_per_s"], 1),
             f"{r['tokens_per_s'] / base:.2f}x" if base else "-") for r in results]
    table(["setting", "dtype", "ckpt", "pad-free", "grouped", "packed", "steps", "tokens", "s", "tokens/s",
           "vs before"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training throughput (tokens/s) of `macsql finetune` SFT, before and after the CPU policy, in one run.

    flock /tmp/macsql-heavy.lock .venv/bin/python benchmarks/bench_train.py --data runs/spider-train --steps 12
    .venv/bin/python benchmarks/bench_train.py --data runs/spider-train --proxy    # seconds, no real model

Each setting trains the same seeded rows (`--agent`, default `all`: the balanced three-task mix) of
`--model` (default SmolLM2-135M-Instruct) with LoRA for `--steps` steps of `--batch-size` rows, through the
same `training.prepare` that `macsql finetune` uses; only the options in the table differ:

- before: what `macsql finetune` did until now on a CPU: float32 (`--dtype auto` meant fp32 on CPU),
  gradient checkpointing on (TRL's SFTConfig default, which we did not override), padded random batches;
- then one change at a time: checkpointing off, bf16 (where the CPU has native bf16), padding-free batches
  (each batch one unpadded sequence, rows kept apart by position ids), length-grouped batches, BFD packing;
- after: the new defaults (`--dtype auto`, checkpointing by model size, padded batches grouped by length;
  padding-free only with flash attention).

Tokens are the real (unpadded) tokens of the batches, as TRL counts them (`num_tokens`); the first
`--warmup` steps are not timed. `--proxy` estimates the same settings from one decoder layer and the LM head
in CPU seconds (see `layer_proxy`). Wall-clock figures are CPU-time sensitive: compare them in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

BEFORE = {"dtype": "fp32", "gradient_checkpointing": True, "padding_free": False, "group_by_length": False}
AFTER: dict = {}  # the defaults
SETTINGS = {
    "before": BEFORE,
    "no-checkpointing": {**BEFORE, "gradient_checkpointing": False},
    "+bf16": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16"},
    "+group-by-length": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16", "group_by_length": True},
    "+padding-free": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16", "padding_free": True},
    "+packing": {**BEFORE, "gradient_checkpointing": False, "dtype": "bf16", "packing": True},
    "after": AFTER,
    # after + shared-prefix batches (finetune/shared_prefix.py): the prompts' common prefixes computed once
    "shared-prefix": {"shared_prefix": True},
}


def timed_run(args, name: str, overrides: dict) -> dict:
    import torch
    from transformers import TrainerCallback

    from macsql.finetune import sft
    from macsql.finetune.config import Options
    from macsql.finetune.training import prepare, wants_checkpointing

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
                   limit=(args.rows or None) if args.rows is not None else args.steps * args.batch_size,
                   logging_steps=1, seed=args.seed, threads=args.threads,
                   max_eval_rows=1, extra={"eval_strategy": "no", "disable_tqdm": True}, **overrides)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    trainer, _setup, rows = prepare(args.agent, opts, sft.METHOD)
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
            "shared": bool(opts.shared_prefix),
            "tokens": int(tokens), "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds if seconds else 0.0,
            "threads": torch.get_num_threads(), "loss": trainer.state.log_history[-2].get("loss")
            if len(trainer.state.log_history) > 1 else None}


def row_lengths(data: str, agent: str, model: str, n: int, seed: int) -> list[int]:
    """Token lengths (chat template applied) of n seeded training rows."""
    import random

    from transformers import AutoTokenizer

    from macsql import weights
    from macsql.finetune.data import TASKS, load_split

    rows, _ = load_split(data, TASKS if agent == "all" else (agent,))
    tok = AutoTokenizer.from_pretrained(weights.checkpoint_for_transformers(weights.resolve(model)))
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    return [len(tok(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False),
                    add_special_tokens=False)["input_ids"]) for r in rows]


def layer_proxy(args) -> list[dict]:
    """Seconds per training step estimated from ONE decoder layer of the model's shape (random weights,
    frozen as under LoRA: only activation gradients) plus the LM head and loss, on batches of real row
    lengths: 30 x layer + head for SmolLM2-135M, in CPU seconds of this process (so jobs sharing the cores
    count less; tokens/s is then per CPU-second of all torch threads together). Seconds of CPU instead of
    minutes, for when the heavy-job lock is taken; it leaves out the optimizer, LoRA matmuls, data loading
    and the trainer's own costs."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from macsql import weights

    folder = weights.checkpoint_for_transformers(weights.resolve(args.model))
    config = AutoConfig.from_pretrained(folder)
    layers = config.num_hidden_layers
    config.num_hidden_layers = 1
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    layer, head, norm, rotary = model.model.layers[0], model.lm_head, model.model.norm, model.model.rotary_emb
    lengths = [n for n in row_lengths(args.data, args.agent, args.model, args.batch_size * args.proxy_batches * 2,
                                      args.seed) if n <= args.max_length][:args.batch_size * args.proxy_batches]
    batches = [lengths[i:i + args.batch_size] for i in range(0, len(lengths), args.batch_size)]

    def step(batch, dtype, flat, checkpoint):
        # the base weights in the training dtype, as `load_model` loads them for a LoRA run
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        model.to(torch_dtype)
        hidden = config.hidden_size
        if flat:  # one sequence, positions restarting per row, block-diagonal causal mask
            n = sum(batch)
            pos = torch.cat([torch.arange(b) for b in batch])[None]
            seg = torch.cat([torch.full((b,), i) for i, b in enumerate(batch)])
            mask = ((seg[:, None] == seg[None, :]) & (pos[0][:, None] >= pos[0][None, :]))[None, None]
            x = torch.randn(1, n, hidden, dtype=torch_dtype, requires_grad=True)
        else:  # padded to the longest row: causal and padding mask
            n = max(batch)
            pos = torch.arange(n)[None].expand(len(batch), -1)
            valid = torch.stack([torch.arange(n) < b for b in batch])
            mask = (torch.tril(torch.ones(n, n, dtype=torch.bool))[None] & valid[:, None, :])[:, None]
            x = torch.randn(len(batch), n, hidden, dtype=torch_dtype, requires_grad=True)
        labels = torch.randint(0, config.vocab_size, x.shape[:2])
        start = time.process_time()  # CPU seconds of this process: other jobs on the cores do not count
        emb = rotary(x, pos)
        out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=emb)
        out = out[0] if isinstance(out, tuple) else out
        if checkpoint:  # the forward that checkpointing repeats in the backward pass
            with torch.no_grad():
                layer(x, attention_mask=mask, position_ids=pos, position_embeddings=emb)
        out.float().sum().backward()
        layer_s = time.process_time() - start
        h = x.detach().requires_grad_(True)
        t_head = time.process_time()
        logits = head(norm(h)).float()
        torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1)).backward()
        return layer_s, time.process_time() - t_head

    results = []
    for name in [n for n in args.settings.split(",") if n in SETTINGS]:
        o = {**{"dtype": "auto", "gradient_checkpointing": None, "padding_free": None, "group_by_length": None},
             **SETTINGS[name]}
        dtype = o["dtype"] if o["dtype"] != "auto" else ("bf16" if _native_bf16() else "fp32")
        flat = bool(o["padding_free"] or o.get("packing"))  # None: off with sdpa (the policy)
        checkpoint = bool(o["gradient_checkpointing"])  # None: off below 1B parameters
        grouped = o["group_by_length"] if o["group_by_length"] is not None else not flat
        order = sorted(lengths) if grouped else lengths
        bs = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)] if grouped else batches
        step(bs[0], dtype, flat, checkpoint)  # warm-up
        seconds = 0.0
        for b in bs:
            layer_s, head_s = step(b, dtype, flat, checkpoint)
            seconds += layers * layer_s + head_s
        tokens = sum(lengths)
        results.append({"setting": name, "dtype": dtype, "checkpointing": checkpoint, "padding_free": bool(flat),
                        "packing": bool(o.get("packing")), "grouped": bool(grouped), "timed_steps": len(bs),
                        "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds})
        print(f"  {name}: {tokens / seconds:.1f} tokens per CPU-second (estimated)", flush=True)
    return results


def _native_bf16() -> bool:
    from macsql.backends.loading import cpu_has_native_bf16

    return cpu_has_native_bf16()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `macsql data build` folder")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--agent", default="all")
    ap.add_argument("--settings", default="before,no-checkpointing,+bf16,+padding-free,after",
                    help=f"from {', '.join(SETTINGS)} (`after` is +group-by-length on a CPU with native bf16)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=None,
                    help="training rows the batches are drawn from (default steps x batch size; 0: the whole split, "
                         "as a real run sees it: what shared-prefix batches need to find neighbours)")
    ap.add_argument("--out-dir", default="runs/bench-train")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--proxy", action="store_true",
                    help="estimate from one decoder layer + the LM head instead of training the whole model")
    ap.add_argument("--proxy-batches", type=int, default=6, help="--proxy: batches of real row lengths")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        print(f"Error: unknown setting {unknown[0]!r}; choose from {', '.join(SETTINGS)}", file=sys.stderr)
        return 1
    from macsql.backends.loading import cpu_has_native_bf16

    print(f"model {args.model}, agent {args.agent}, {args.steps} steps x {args.batch_size} rows "
          f"(first {args.warmup} untimed), native bf16 on this CPU: {cpu_has_native_bf16()}", flush=True)
    results = []
    if args.proxy:
        print("proxy: one decoder layer x the model's layers + LM head, frozen weights (LoRA-like)", flush=True)
        results = layer_proxy(args)
    for name in names if not args.proxy else []:
        results.append(timed_run(args, name, SETTINGS[name]))
        r = results[-1]
        print(f"  {name}: {r['tokens_per_s']:.1f} tokens/s ({r['tokens']} tokens in {r['seconds']} s)", flush=True)
    base = next((r["tokens_per_s"] for r in results if r["setting"] == "before"), results[0]["tokens_per_s"])
    rows = [(r["setting"], r["dtype"], r["checkpointing"], r["padding_free"], r["grouped"], r["packing"],
             r.get("shared", False), r["timed_steps"], r["tokens"], r["seconds"], round(r["tokens_per_s"], 1),
             f"{r['tokens_per_s'] / base:.2f}x" if base else "-") for r in results]
    table(["setting", "dtype", "ckpt", "pad-free", "grouped", "packed", "shared", "steps", "tokens", "s", "tokens/s",
           "vs before"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared-prefix SFT batches: the prompt tokens that a batch's rows have in common are computed once.

Why: an agent's training row is mostly its prompt (the schema: ~1,100 tokens for a Spider train Decomposer
row, ~40 of target), and the rows of one database repeat that schema up to the first line that differs
(a value matched in this question, another task text). Padded or packed batches compute every row's copy.
Here a batch becomes ONE sequence: the prompts' token trie (each shared prefix once), then each row's own
tail (its last prompt token and its completion). A 4D attention mask lets every token see exactly its own
row's earlier tokens, and position ids restart per row, so each row's logits, loss and gradients are those
of the row trained alone (tests/test_shared_prefix.py checks both); only the repeated compute is gone.

Rows sorted by their tokens and cut into batches (`SortedChunkSampler`) put neighbours in a schema's
trie: on Spider train 8-row batches hold about a third of their rows' tokens (benchmarks/bench_train.py).
The attention of one such sequence is dense (T x T with the mask), which costs about what the rows' own
attention costs at these sizes; the projections and MLPs, most of a small model's compute, shrink with T.

The completion (and the last prompt token, whose logit predicts the first completion token) is never
merged into the trie, so each loss-bearing token directly follows the token that predicts it, and the
model's own shifted next-token loss applies unchanged.
"""

from __future__ import annotations

import random

import numpy as np

IGNORE = -100  # transformers' label for "no loss here"


def first_completion(mask) -> int:
    """Index of the first completion token (the row's length when it has none)."""
    for i, m in enumerate(mask):
        if m:
            return i
    return len(mask)


def loss_mask(row: dict) -> list[bool]:
    """Which tokens carry loss: TRL's tokenised rows hold `labels` (IGNORE off the completion, the token
    itself on it); older ones `completion_mask`."""
    if row.get("labels") is not None:
        return [label != IGNORE for label in row["labels"]]
    return [bool(m) for m in (row.get("completion_mask") or [0] * len(row["input_ids"]))]


def build(rows: list[dict]) -> dict:
    """One trie-packed sequence from rows with `input_ids` and `labels` or `completion_mask` (TRL's tokenised rows).

    Returns numpy arrays: input_ids (T,), position_ids (T,), labels (T,), allowed (T, T) bool (row i may
    attend to column j), and row_tokens, the rows' own token count (what the same rows cost unshared)."""
    tokens: list[int] = []
    depth: list[int] = []
    children: list[dict] = [{}]  # children[node + 1]: token -> node; children[0] is the root's
    paths = []
    for row in rows:
        ids = list(row["input_ids"])
        mask = loss_mask(row)
        shared = max(0, first_completion(mask) - 1)  # the last prompt token stays with its completion
        path, node = [], -1
        for k in range(shared):
            nxt = children[node + 1].get(ids[k])
            if nxt is None:
                nxt = len(tokens)
                tokens.append(ids[k])
                depth.append(k)
                children.append({})
                children[node + 1][ids[k]] = nxt
            path.append(nxt)
            node = nxt
        paths.append((path, ids, mask, shared))
    labels = [IGNORE] * len(tokens)
    full_paths = []
    for path, ids, mask, shared in paths:  # each row's tail, contiguous, after the whole trie
        tail = list(range(len(tokens), len(tokens) + len(ids) - shared))
        for k in range(shared, len(ids)):
            tokens.append(ids[k])
            depth.append(k)
            labels.append(ids[k] if mask[k] else IGNORE)
        full_paths.append(np.asarray(path + tail, dtype=np.int64))
    n = len(tokens)
    allowed = np.zeros((n, n), dtype=bool)
    for path in full_paths:
        m = len(path)
        allowed[np.ix_(path, path)] |= np.tril(np.ones((m, m), dtype=bool))
    return {"input_ids": np.asarray(tokens, dtype=np.int64), "position_ids": np.asarray(depth, dtype=np.int64),
            "labels": np.asarray(labels, dtype=np.int64), "allowed": allowed,
            "row_tokens": sum(len(r["input_ids"]) for r in rows)}


class SharedPrefixCollator:
    """A data collator: a batch of tokenised rows -> one trie-packed sequence (batch size 1) with its 4D mask.

    `mask_dtype` None gives a boolean mask (True: attend), which sdpa takes; a float dtype gives the additive
    mask eager attention adds to its scores. `row_tokens` (popped by the trainer before the forward pass) is
    the rows' own token count, so throughput figures count the data trained on, not the packed length."""

    def __init__(self, mask_dtype=None):
        self.mask_dtype = mask_dtype

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        packed = build(examples)
        allowed = torch.from_numpy(packed["allowed"])[None, None]
        if self.mask_dtype is None:
            mask = allowed
        else:
            mask = torch.zeros(allowed.shape, dtype=self.mask_dtype)
            mask.masked_fill_(~allowed, torch.finfo(self.mask_dtype).min)
        return {"input_ids": torch.from_numpy(packed["input_ids"])[None],
                "position_ids": torch.from_numpy(packed["position_ids"])[None],
                "labels": torch.from_numpy(packed["labels"])[None], "attention_mask": mask,
                "row_tokens": torch.tensor(packed["row_tokens"])}


class SortedChunkSampler:
    """Row indices in batches of neighbours: rows sorted by their tokens (so one database's rows, and within
    it those that share the longest prompt prefix, sit together), cut into `batch_size` chunks whose order
    is shuffled anew each epoch (seeded). Every chunk but the last is exactly one batch, so the loader's
    batches (and a distributed loader's shards of them) are these chunks."""

    def __init__(self, token_rows, batch_size: int, seed: int = 0):
        order = sorted(range(len(token_rows)), key=lambda i: list(token_rows[i]))
        self.chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        chunks = list(self.chunks)
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(chunks)
        self.epoch += 1
        for chunk in chunks:
            yield from chunk

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)


def mask_dtype_for(model):
    """The 4D mask type the model's attention takes, or raise for kernels that take no dense mask."""
    attn = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "sdpa")
    if attn == "sdpa":
        return None
    if attn == "eager":
        return model.dtype
    from macsql.errors import InputError

    raise InputError(f"--shared-prefix needs sdpa or eager attention (a dense 4D mask); this model runs {attn!r}: "
                     "use --no-shared-prefix (with flash attention, padding-free batches are the fast path)")


def trainer_class(base):
    """`base` (an SFTTrainer class) that samples sorted chunks and counts the rows' own tokens."""

    class SharedPrefixTrainer(base):
        def _get_train_sampler(self, train_dataset=None):
            data = train_dataset if train_dataset is not None else self.train_dataset
            return SortedChunkSampler(data["input_ids"], self.args.per_device_train_batch_size, self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            row_tokens = inputs.pop("row_tokens", None)
            before = getattr(self, "_total_train_tokens", None)
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if model.training and before is not None and row_tokens is not None:
                # TRL counts attention_mask.sum(), meaningless for a 4D mask: count the rows' tokens instead
                total = self.accelerator.gather_for_metrics(row_tokens.reshape(1)).sum().item()
                self._total_train_tokens = before + total
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return out

    SharedPrefixTrainer.__name__ = f"SharedPrefix{base.__name__}"
    return SharedPrefixTrainer

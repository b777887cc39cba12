"""Shared-prefix SFT batches (finetune/shared_prefix.py): the trie layout on hand-made rows, exactness against
the rows trained alone on a tiny real model (loss and gradients), the sorted-chunk sampler, and a 2-step run."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from macsql.finetune.shared_prefix import IGNORE, SharedPrefixCollator, SortedChunkSampler, build  # noqa: E402
from tests.test_finetune_train import agent_data, causal_model, lora_b_changed, options  # noqa: E402,F401


def row(prompt, completion):
    return {"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)}


def labels_of(r):
    """TRL's unshifted labels: the token on the completion, IGNORE elsewhere."""
    return [t if m else IGNORE for t, m in zip(r["input_ids"], r["completion_mask"], strict=True)]


def test_trie_layout_on_hand_made_rows():
    rows = [row([5, 6, 7, 8], [20, 21]), row([5, 6, 7, 9], [22]), row([5, 6, 30], [23, 24])]
    p = build(rows)
    # trie: 5 6 7 (shared) + 30 (row 3's own prompt, before its last token); tails: [8 20 21] [9 22] [30? no]
    # row 1 shares 5 6 7 (its last prompt token 8 stays with its completion), row 2 shares 5 6 7 likewise,
    # row 3 shares 5 6 (its last prompt token 30 stays with its completion)
    assert p["input_ids"].tolist() == [5, 6, 7, 8, 20, 21, 9, 22, 30, 23, 24]
    assert p["position_ids"].tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 2, 3, 4]
    assert p["labels"].tolist() == [IGNORE] * 4 + [20, 21, IGNORE, 22, IGNORE, 23, 24]
    assert p["row_tokens"] == 6 + 5 + 5
    allowed = p["allowed"]
    assert allowed[5].tolist() == [True] * 6 + [False] * 5           # row 1's last token: its own row only
    assert allowed[7].tolist() == [True] * 3 + [False] * 3 + [True, True] + [False] * 3  # row 2
    assert allowed[10].tolist() == [True, True] + [False] * 6 + [True] * 3  # row 3 never sees token 7
    # every token sees exactly position+1 tokens: its own row's prefix, itself included
    assert (allowed.sum(1) == p["position_ids"] + 1).all()


def test_trl_labels_mark_the_completion_like_a_completion_mask():
    masked = [row([5, 6, 7], [8, 9]), row([5, 6, 4], [1])]
    labelled = [{"input_ids": r["input_ids"], "labels": labels_of(r)} for r in masked]
    a, b = build(masked), build(labelled)
    assert all((a[k] == b[k]).all() for k in ("input_ids", "position_ids", "labels", "allowed"))


def test_rows_with_nothing_in_common_are_plain_packing():
    p = build([row([1, 2], [3]), row([4, 5], [6])])
    assert p["input_ids"].tolist() == [1, 4, 2, 3, 5, 6]  # first tokens in the trie, tails after it
    assert p["labels"].tolist() == [IGNORE, IGNORE, IGNORE, 3, IGNORE, 6]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_and_gradients_equal_the_rows_trained_alone(causal_model, attn):  # noqa: F811
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(causal_model, attn_implementation=attn, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    schema = torch.randint(3, 200, (40,), generator=g).tolist()
    rows = [row(schema + torch.randint(3, 200, (n,), generator=g).tolist(),
                torch.randint(3, 200, (c,), generator=g).tolist()) for n, c in ((5, 4), (7, 3), (2, 6), (5, 5))]
    rows.append(row(schema[:25] + [7, 8, 9], [10, 11]))  # diverges inside the schema

    def alone():
        model.zero_grad()
        total = 0.0
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            labels = torch.tensor([labels_of(r)])
            logits = model(input_ids=ids).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE, reduction="sum")
            loss.backward()
            total += float(loss)
        return total, {n: p.grad.clone() for n, p in model.named_parameters()}

    def packed():
        model.zero_grad()
        batch = SharedPrefixCollator(None if attn == "sdpa" else torch.float32)(rows)
        assert batch["input_ids"].shape[1] < sum(len(r["input_ids"]) for r in rows)  # the schema once
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"]).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"][0, 1:], ignore_index=IGNORE, reduction="sum")
        loss.backward()
        return float(loss), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_a, grads_a = alone()
    loss_p, grads_p = packed()
    assert loss_p == pytest.approx(loss_a, rel=1e-5)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_p[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_sorted_chunk_sampler_batches_neighbours_and_covers_every_row():
    tokens = [[3, 1], [1, 2, 3], [2, 2], [1, 2, 4], [3, 0], [1, 1], [2, 1]]
    s = SortedChunkSampler(tokens, batch_size=2, seed=0)
    first, second = list(s), list(s)
    assert sorted(first) == list(range(7)) and len(s) == 7
    chunks = [first[i:i + 2] for i in range(0, 7, 2)]
    # each chunk is a run of the sorted order: [1,1] [1,2,3] | [1,2,4] [2,1] | [2,2] [3,0] | [3,1]
    assert sorted(sorted(c) for c in chunks) == sorted([[1, 5], [3, 6], [2, 4], [0]])
    assert first != second or len(s.chunks) < 3  # a new order each epoch, seeded
    again = SortedChunkSampler(tokens, batch_size=2, seed=0)
    assert list(again) == first


def test_two_step_shared_prefix_run_trains_and_counts_row_tokens(causal_model, agent_data, tmp_path):  # noqa: F811
    from macsql.finetune.training import run

    summary = run("all", options(causal_model, agent_data, tmp_path, method="lora", shared_prefix=True,
                                 batch_size=4, eval_steps=1))
    assert summary["steps"] == 2 and lora_b_changed(tmp_path / "decomposer")
    history = json.loads((tmp_path / "all-lora-log.json").read_text())
    losses = [e["loss"] for e in history if "loss" in e]
    assert losses and all(np.isfinite(losses)) and any("eval_loss" in e for e in history)
    rows = [json.loads(x) for x in (agent_data / "train.jsonl").read_text().splitlines()]
    tokens = [e["num_tokens"] for e in history if "num_tokens" in e]
    # 2 steps x 4 rows, counted as the rows' own tokens (each row is hundreds of tokens; the packed batch less)
    assert tokens and tokens[-1] >= 8 * min(len(json.dumps(r["prompt"])) // 8 for r in rows)


def test_shared_prefix_refuses_packing(causal_model, agent_data, tmp_path):  # noqa: F811
    from macsql.errors import InputError
    from macsql.finetune.training import run

    with pytest.raises(InputError, match="cannot be combined with --packing"):
        run("all", options(causal_model, agent_data, tmp_path, method="lora", shared_prefix=True, packing=True))

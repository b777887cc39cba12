"""The one transformers loader and the one device and dtype policy, for inference (the `hf` backends) and
training (`finetune`): a model is trained in the precision it is served in, found the same way.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, NamedTuple

from macsql.errors import InputError, ModelError
from macsql.weights import ResolvedModel, checkpoint_for_transformers

# --dtype names (and torch's own spellings) -> torch attribute names; torch is imported only when loading.
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}
# What `--dtype` offers, in inference and training alike (auto: see torch_dtype).
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")


def default_device() -> str:
    """Where a model runs unless told otherwise: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX-BF16; read from Linux's
    /proc/cpuinfo, so other systems answer False and keep float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def torch_dtype(name: str, device: str, *, for_training: bool = False):
    """The torch dtype for `--dtype NAME` on `device`.

    `auto` is bf16 where the hardware computes it natively, float32 elsewhere. bf16 halves memory (the 1.5B
    default model: ~3.5 GB instead of ~7 GB); on a CPU with bf16 units (AVX512-BF16/AMX) it is also faster,
    for prefill matmuls (~4x float32, benchmarks/README.md) and for training steps (1.37x, `bench_train.py
    --proxy`); without them bf16 is emulated and float32 is the faster choice.

    The one difference, `for_training`: a GPU without bf16 support trains in float32, because training runs
    bf16 mixed precision (`TrainingArguments(bf16=True)`), which the trainer refuses on such a GPU; inference
    only loads the weights in bf16, which any GPU can hold.
    """
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            if for_training and not torch.cuda.is_bf16_supported():
                return torch.float32
            return torch.bfloat16
        return torch.bfloat16 if device == "cpu" and cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return getattr(torch, DTYPES[name])


class Loaded(NamedTuple):
    model: Any
    tokenizer: Any
    seq2seq: bool


def is_seq2seq(model: ResolvedModel) -> bool:
    """Encoder-decoder (T5) or decoder-only, from the checkpoint's config (a GGUF file is always a causal LM)."""
    if model.is_gguf:
        return False
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model.path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model from {model.path}: {exc}") from exc
    return bool(getattr(config, "is_encoder_decoder", False))


def load_transformers(model: ResolvedModel, *, dtype: str = "auto", device: str | None = None,
                      seq2seq: bool | None = None, for_training: bool = False) -> Loaded:
    """Model and tokenizer of a resolved model (a GGUF file is converted to a cached checkpoint once).

    `seq2seq` picks the model class (None: read it from the config). For inference the model is moved to
    `device` (default: `default_device()`) in eval mode; for training it stays where it loaded, since the
    trainer places it and switches it to train mode itself.
    """
    import transformers

    device = device or default_device()
    folder = checkpoint_for_transformers(model)
    if seq2seq is None:
        seq2seq = is_seq2seq(model)
    cls = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        lm = cls.from_pretrained(folder, dtype=torch_dtype(dtype, device, for_training=for_training))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model from {folder}: {exc}") from exc
    if not for_training:
        lm = lm.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(lm, tokenizer, seq2seq)

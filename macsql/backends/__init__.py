"""Model backends behind one small protocol: `generate(prompts, agent=...) -> list[Generation]`.

    base.py      the `LLM` protocol, `Generation`, `Messages`, the agent names, `ScriptedLLM` (tests, dry runs)
    loading.py   the one transformers loader and device/dtype policy (inference and training)
    hf.py        transformers: causal LMs (chat template) and seq2seq (T5), a LoRA adapter per agent
    llamacpp.py  GGUF weights on llama.cpp
    openai.py    any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp server)
    batching.py  sharing one backend between threads (merged batches, or a lock)

A backend is chosen by name from `BACKENDS`; `make_llm()` builds one from user options, resolving the model
name to weights once and handing the result down.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from macsql import weights
from macsql.backends import llamacpp
from macsql.backends.base import LLM
from macsql.backends.hf import load_hf
from macsql.backends.openai import OpenAICompatLLM
from macsql.errors import ModelError, did_you_mean

BACKENDS: dict[str, Callable[..., LLM]] = {
    "hf": load_hf,
    "llamacpp": llamacpp.LlamaCppLLM,
    "openai": OpenAICompatLLM,  # takes the served model's name: nothing to resolve on this machine
}
BACKEND_CHOICES = ("auto", *BACKENDS)  # what --backend accepts


def make_llm(model: str | os.PathLike | None = None, backend: str = "auto", *,
             adapters: dict[str, str | Path] | None = None, **kwargs) -> LLM:
    """Build a backend by name; `model` defaults to `weights.DEFAULT_MODEL`. `auto` runs a GGUF model on
    llama.cpp when it is installed (several times faster on a CPU; LoRA adapters are converted for it once,
    llamacpp_lora.py); otherwise transformers. The one place a model name is resolved to weights on disk."""
    name = weights.DEFAULT_MODEL if model is None else str(model)
    if backend != "auto" and backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}{did_you_mean(backend, BACKENDS)}; "
                         f"choose one of: {', '.join(BACKEND_CHOICES)}")
    if adapters and backend == "openai":
        raise ModelError("LoRA adapters run on the transformers or llama.cpp backend; for --backend openai "
                         "serve them with the server (vLLM: --lora-modules) instead")
    if backend == "openai":
        return OpenAICompatLLM(name, **kwargs)
    resolved = weights.resolve(name)
    if backend == "auto":
        backend = "llamacpp" if resolved.is_gguf and llamacpp.llama_cpp_available() else "hf"
    return BACKENDS[backend](resolved, adapters=adapters, **kwargs)

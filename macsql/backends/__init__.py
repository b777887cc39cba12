"""Model backends behind one small protocol: `generate(prompts, agent=...) -> list[Generation]`.

    base.py      the `LLM` protocol, `Generation`, `Messages`, the agent names, `ScriptedLLM` (tests, dry runs)
    loading.py   the one transformers loader and device/dtype policy (inference and training)
    hf.py        transformers: causal LMs (chat template) and seq2seq (T5), a LoRA adapter per agent
    llamacpp.py  GGUF weights on llama.cpp
    openai.py    any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp server)
    langchain.py any LangChain chat model object (Python only)
    batching.py  sharing one backend between threads (merged batches, or a lock)

A backend is chosen by name from `BACKENDS`; `make_llm()` builds one from user options, resolving the model
name to weights once and handing the result down.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

from macsql import extras, weights
from macsql.backends import hf, langchain, llamacpp
from macsql.backends.base import LLM
from macsql.backends.openai import OpenAICompatLLM
from macsql.errors import InputError, ModelError, did_you_mean

BACKENDS: dict[str, Callable[..., LLM]] = {
    "hf": hf.load_hf,
    "llamacpp": llamacpp.LlamaCppLLM,
    "openai": OpenAICompatLLM,  # takes the served model's name: nothing to resolve on this machine
    "langchain": langchain.langchain_backend,  # takes a chat model object (Python only)
}
BACKEND_CHOICES = ("auto", *BACKENDS)  # what --backend accepts


def _keywords(*constructors) -> frozenset[str]:
    """The keyword options of a backend's constructors, read from their signatures so that they cannot drift."""
    return frozenset(p.name for c in constructors for p in inspect.signature(c).parameters.values()
                     if p.kind is p.KEYWORD_ONLY and p.name != "adapters")


# The options each backend takes (`adapters` is make_llm's own): any other one is an error naming the
# backends that take it, never silently dropped. hf: both transformers classes' options.
OPTIONS: dict[str, frozenset[str]] = {
    "hf": _keywords(hf.HFCausalLM.__init__, hf.HFSeq2SeqLM.__init__, hf._HFBase.__init__),
    "llamacpp": _keywords(llamacpp.LlamaCppLLM.__init__),
    "openai": _keywords(OpenAICompatLLM.__init__),
    # (`name` is make_llm's `model` there)
    "langchain": _keywords(langchain.langchain_backend, langchain.LangChainLLM.__init__) - {"name"},
}
# The command-line flag that sets an option, for the error message (options without one are Python-only).
FLAGS = {"device": "--device", "dtype": "--dtype", "n_threads": "--threads", "base_url": "--base-url",
         "timeout_s": "--request-timeout"}
# What each local backend imports to run: checked before a model is resolved (which may verify 1 GB).
PACKAGES = {"hf": ("torch", "transformers"), "llamacpp": ("llama_cpp",)}


def check_options(backend: str, options: dict, *, chosen_by_auto: bool = False) -> dict:
    """The options the user set (a None value counts as not set) that `backend` takes; InputError naming the
    backends that do take an option it does not."""
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key in OPTIONS[backend]:
            continue
        flag = FLAGS.get(key)
        label = f"{flag}/{key}" if flag else key
        takers = [name for name, names in OPTIONS.items() if key in names]
        where = (f"it is taken by: {', '.join(takers)}" if takers
                 else f"the {backend} backend takes: {', '.join(sorted(OPTIONS[backend]))}")
        auto = " (what --backend auto runs for this model)" if chosen_by_auto else ""
        raise InputError(f"{label} is not an option of the {backend} backend{auto}; {where}")
    return given


def require_backend(backend: str, *, gguf: bool = False) -> None:
    """MissingExtraError naming the extra to install when a local backend's packages are missing."""
    for module in PACKAGES.get(backend, ()):
        extras.check(module, purpose=f"the {backend} backend")
    if backend == "hf" and gguf:
        extras.check("gguf", purpose="a GGUF model on the hf backend")


def make_llm(model: str | os.PathLike | None = None, backend: str = "auto", *,
             adapters: dict[str, str | Path] | None = None, **kwargs) -> LLM:
    """Build a backend by name; `model` defaults to `weights.DEFAULT_MODEL`. `auto` runs a GGUF model on
    llama.cpp when it is installed and takes the options given (several times faster on a CPU; LoRA adapters
    are converted for it once, llamacpp_lora.py); otherwise transformers. The one place a model name is
    resolved to weights on disk, after the options are checked and the backend's packages found: a wrong
    option is an error before any model is read."""
    name = weights.DEFAULT_MODEL if model is None else str(model)
    if backend != "auto" and backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}{did_you_mean(backend, BACKENDS)}; "
                         f"choose one of: {', '.join(BACKEND_CHOICES)}")
    if adapters and backend == "openai":
        raise ModelError("LoRA adapters run on the transformers or llama.cpp backend; for --backend openai "
                         "serve them with the server (vLLM: --lora-modules) instead")
    if backend != "auto":
        options = check_options(backend, kwargs)
        require_backend(backend)
        if backend == "openai":
            return OpenAICompatLLM(name, **options)
        if backend == "langchain":
            return langchain.langchain_backend(None if model is None else str(model), adapters=adapters,
                                               **options)
        resolved = weights.resolve(name)
        require_backend(backend, gguf=resolved.is_gguf)
        return BACKENDS[backend](resolved, adapters=adapters, **options)
    given = {k: v for k, v in kwargs.items() if v is not None}
    fits = {b: set(given) <= OPTIONS[b] for b in ("llamacpp", "hf")}
    local = {b for b, ok in (("llamacpp", llamacpp.llama_cpp_available()),
                             ("hf", all(extras.available(m) for m in PACKAGES["hf"]))) if ok}
    if not local:
        raise extras.MissingExtraError(
            "running a model on this machine needs llama.cpp or transformers: "
            f"{extras.install_command('fast')}, or {extras.install_command('local')}; "
            "or pass --backend openai --base-url URL for a model server")
    if not any(fits.values()):
        check_options("hf", given)  # the error that names the backends taking each option
    resolved = weights.resolve(name)
    # llama.cpp for a GGUF model when it is installed and takes every option given (an option only
    # transformers has, --device or --dtype, asks for transformers)
    chosen = "llamacpp" if resolved.is_gguf and "llamacpp" in local and fits["llamacpp"] else "hf"
    options = check_options(chosen, given, chosen_by_auto=True)
    if chosen == "hf":
        require_backend("hf", gguf=resolved.is_gguf)
    return BACKENDS[chosen](resolved, adapters=adapters, **options)

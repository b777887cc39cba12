"""The llama.cpp backend (`pip install "macsql[fast]"`): GGUF weights run as they are, fast on a CPU."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time
import zlib

from macsql.backends.base import Generation
from macsql.errors import ModelError
from macsql.weights import ResolvedModel


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _cpu_threads() -> int:
    """CPUs this process may run on (a container's quota, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _llama_has_amx(llama_cpp) -> bool:
    try:
        info = llama_cpp.llama_print_system_info().decode(errors="replace")
    except Exception:  # noqa: BLE001 - an old binding without it: assume the common case, no AMX
        return False
    return "AMX_INT8 = 1" in info


class LlamaCppLLM:
    """A GGUF file run by llama.cpp (`pip install llama-cpp-python`): no dequantisation, fast on CPU.

    llama.cpp keeps the KV cache of the last prompt and reuses the longest common prefix, so the shared
    system text and schema are not recomputed between the agents and refine rounds of one question
    (`Generation.cached_tokens` says how many prompt tokens were reused).

    `extra_bufts=None` (the default) turns llama.cpp's extra weight buffers (AMX, CPU repacking) off only
    when the library was built with AMX: its AMX matmul segfaults on Q4_K weights on Sapphire Rapids CPUs
    (ggml-org/llama.cpp#20824), which is where a `pip install` on such a CPU ends up by default.
    """

    thread_safe = False  # one context and one KV cache: one generate() at a time (batching.for_threads locks it)
    batched = False  # prompts run one after another

    def __init__(self, model: ResolvedModel, *, n_ctx: int = 8192, n_threads: int | None = None,
                 n_batch: int = 512, flash_attn: bool = False, extra_bufts: bool | None = None, seed: int = 0,
                 **_ignored):
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError('the llama.cpp backend needs: pip install "macsql[fast]" (llama-cpp-python)') from exc
        if not model.is_gguf:
            raise ModelError(f"the llama.cpp backend needs a .gguf model; {model.name!r} is a "
                             "transformers checkpoint (use --backend hf)")
        self.name = model.name
        self.path = model.path
        self.seed = seed
        self._llama_cpp = llama_cpp
        if extra_bufts is None:
            extra_bufts = not _llama_has_amx(llama_cpp)
        self.extra_bufts = extra_bufts
        threads = n_threads or _cpu_threads()
        try:
            with _model_params(llama_cpp, use_extra_bufts=extra_bufts):
                self.llama = Llama(model_path=str(model.path), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, n_batch=n_batch, n_ubatch=n_batch,
                                   flash_attn=flash_attn, seed=seed, verbose=False)
        except ValueError as exc:  # llama-cpp-python reports a file it cannot load as ValueError
            raise ModelError(f"llama.cpp cannot load {model.path}: {exc}") from exc

    def generate(self, prompts, *, agent="", max_new_tokens=512, n=1, temperature=0.0):
        # n samples of one prompt run one after another: llama.cpp keeps the prompt's KV cache, so each
        # repeat evaluates only its own reply tokens.
        return [self._complete(messages, max_new_tokens, temperature, i) for messages in prompts for i in range(n)]

    def _complete(self, messages, max_new_tokens, temperature, index) -> Generation:
        lc = self._llama_cpp
        ctx = self.llama._ctx.ctx
        # A sample's seed comes from the prompt and the sample's number: reruns give the same candidates, and
        # the n samples of one prompt draw different random streams.
        seed = (self.seed + zlib.crc32(repr(messages).encode()) + 7919 * (index + 1)) % (2 ** 31)
        sampling = ({"temperature": 0.0, "top_k": 1} if temperature <= 0 else
                    {"temperature": temperature, "top_p": 0.95, "top_k": 40, "seed": seed})
        lc.llama_perf_context_reset(ctx)
        start = time.perf_counter()
        try:
            reply = self.llama.create_chat_completion(messages=messages, max_tokens=max_new_tokens, **sampling)
        except ValueError as exc:  # "Requested tokens (N) exceed context window of M"
            raise ModelError(f"llama.cpp: {exc}; pass a larger n_ctx or prune the schema") from exc
        seconds = time.perf_counter() - start
        perf = lc.llama_perf_context(ctx)
        usage = reply.get("usage", {})
        prompt_tokens = usage.get("prompt_tokens", 0)
        # llama.cpp counts batched evaluations as prompt eval and single-token ones as decode; a prompt
        # whose uncached rest is one token shows up as decode, which is fine at this resolution.
        evaluated = perf.n_p_eval if perf.n_p_eval else min(1, prompt_tokens)
        return Generation(reply["choices"][0]["message"]["content"] or "", prompt_tokens,
                          usage.get("completion_tokens", 0), seconds, prefill_seconds=perf.t_p_eval_ms / 1000.0,
                          cached_tokens=max(0, prompt_tokens - evaluated))


_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _model_params(llama_cpp, **fields):
    """Set fields of llama.cpp's model params that `Llama()` does not expose (here `use_extra_bufts`).

    `Llama.__init__` starts from `llama_model_default_params()`, so the defaults are wrapped for the
    duration of the constructor call only, under a lock so that no other model load sees them.
    """
    module = llama_cpp.llama_cpp
    with _PARAMS_LOCK:
        original = module.llama_model_default_params

        def defaults():
            params = original()
            for key, value in fields.items():
                if hasattr(params, key):  # older bindings lack some fields: keep their behaviour
                    setattr(params, key, value)
            return params

        module.llama_model_default_params = defaults
        try:
            yield
        finally:
            module.llama_model_default_params = original

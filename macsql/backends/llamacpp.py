"""The llama.cpp backend (`pip install "macsql[fast]"`): GGUF weights run as they are, fast on a CPU."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import math
import os
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from macsql.backends.base import Generation
from macsql.errors import ModelError
from macsql.extras import require
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

    llama.cpp itself keeps one KV cache, and the agents' prompts alternate in it (the Selector reads the whole
    schema, the Decomposer a pruned one), so on its own it recomputes each agent's schema on every question.
    `prompt_cache_mb` keeps the KV state of recent prompts in RAM (`PromptStates`): a prompt starts from the
    saved state that shares its longest token prefix, so the next question on the same database reuses each
    agent's schema. 0 turns it off.

    `extra_bufts=None` (the default) turns llama.cpp's extra weight buffers (AMX, CPU repacking) off only
    when the library was built with AMX: its AMX matmul segfaults on Q4_K weights on Sapphire Rapids CPUs
    (ggml-org/llama.cpp#20824), which is where a `pip install` on such a CPU ends up by default.
    """

    token_probs = True  # greedy replies report min_prob/mean_prob (the confident stop reads them)
    thread_safe = False  # one context and one KV cache: one generate() at a time (batching.for_threads locks it)
    batched = False  # prompts run one after another

    def __init__(self, model: ResolvedModel, *, n_ctx: int = 8192, n_threads: int | None = None,
                 n_batch: int = 512, flash_attn: bool = False, extra_bufts: bool | None = None, seed: int = 0,
                 prompt_cache_mb: int = 1024, parallel: int = 1, lookup: int = 0,
                 adapters: dict[str, str | os.PathLike] | None = None):
        # (no **kwargs: an option this backend does not take is an error in make_llm, not silently dropped)
        llama_cpp = require("llama_cpp", purpose="the llamacpp backend")
        Llama = llama_cpp.Llama
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
        # parallel > 1: the replies of one generate() call decode together, that many sequences at a time
        # (llamacpp_parallel.py); the context then holds that many sequences in one shared KV cache.
        self.parallel = max(1, int(parallel))
        # lookup > 0: greedy replies check up to that many prompt-lookup drafts per step (lookup.py);
        # drafted/accepted count them, for benchmarks.
        self.lookup = max(0, int(lookup))
        self.drafted = self.accepted = 0
        context = {"n_seq_max": self.parallel, "kv_unified": True} if self.parallel > 1 else {}
        try:
            with _model_params(llama_cpp, use_extra_bufts=extra_bufts), _context_params(llama_cpp, **context):
                self.llama = _lean_state_llama(Llama)(
                    model_path=str(model.path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                    n_batch=n_batch, n_ubatch=n_batch, flash_attn=flash_attn, seed=seed, verbose=False)
        except ValueError as exc:  # llama-cpp-python reports a file it cannot load as ValueError
            raise ModelError(f"llama.cpp cannot load {model.path}: {exc}") from exc
        # A LoRA adapter per agent (llamacpp_lora.py converts `macsql finetune`'s folders once); agents
        # without one run the bare base. One adapter file loaded once serves every agent that names it.
        self._adapter_of: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        for agent, folder in (adapters or {}).items():
            from macsql.backends.llamacpp_lora import gguf_adapter

            path = str(gguf_adapter(folder, model))
            if path not in self._loaded:
                handle = llama_cpp.llama_adapter_lora_init(self.llama._model.model, path.encode())
                if not handle:
                    raise ModelError(f"llama.cpp cannot load the adapter converted from {folder} ({path})")
                self._loaded[path] = handle  # freed with the model
            self._adapter_of[agent] = path
        self.adapters = set(self._adapter_of)
        # A KV state holds what one adapter computed, so each adapter (and the bare base, "") keeps its own
        # saved prompt states, sharing the RAM budget.
        names = ["", *self._loaded]
        budget = prompt_cache_mb * 2 ** 20 // len(names)
        self._states = {name: PromptStates(budget) if prompt_cache_mb > 0 else None for name in names}
        self._active = ""
        self.prompt_states = self._states[""]
        # llama-cpp-python looks a prompt up in `cache` before evaluating it and stores the state after the reply
        self.llama.cache = self.prompt_states

    def _use_adapter(self, agent: str) -> None:
        """Put the agent's adapter (or none) on the context. On a change the KV cache is emptied: it holds
        keys and values another adapter computed, which no prompt may reuse."""
        name = self._adapter_of.get(agent, "")
        if name == self._active:
            return
        lc = self._llama_cpp
        ctx = self.llama._ctx.ctx
        if name:
            handles = (lc.llama_adapter_lora_p_ctypes * 1)(self._loaded[name])
            scales = (ctypes.c_float * 1)(1.0)
            failed = lc.llama_set_adapters_lora(ctx, handles, 1, scales)
        else:
            failed = lc.llama_set_adapters_lora(ctx, None, 0, None)
        if failed:
            raise ModelError(f"llama.cpp could not switch to the {agent or 'base'} adapter")
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        self.llama.n_tokens = 0
        self._active = name
        self.prompt_states = self._states[name]
        self.llama.cache = self.prompt_states

    def generate(self, prompts, *, agent="", max_new_tokens=512, n=1, temperature=0.0):
        # n samples of one prompt run one after another: llama.cpp keeps the prompt's KV cache, so each
        # repeat evaluates only its own reply tokens. With `parallel` they decode together instead; with
        # `lookup` a greedy reply goes through the same decoder, which checks drafts.
        self._use_adapter(agent)
        jobs = [(messages, i) for messages in prompts for i in range(n)]
        if (self.parallel > 1 and len(jobs) > 1) or (self.lookup and temperature <= 0):
            out = []
            for lo in range(0, len(jobs), self.parallel):
                out += self._complete_together(jobs[lo:lo + self.parallel], max_new_tokens, temperature)
            return out
        return [self._complete(messages, max_new_tokens, temperature, i) for messages, i in jobs]

    def _sample_seed(self, messages, index) -> int:
        # A sample's seed comes from the prompt and the sample's number: reruns give the same candidates, and
        # the n samples of one prompt draw different random streams.
        return (self.seed + zlib.crc32(repr(messages).encode()) + 7919 * (index + 1)) % (2 ** 31)

    def _complete_together(self, jobs, max_new_tokens, temperature) -> list[Generation]:
        from macsql.backends.llamacpp_parallel import cells_needed, chat_tokens, decode_together

        start = time.perf_counter()
        prompts, stops = zip(*(chat_tokens(self.llama, messages) for messages, _ in jobs), strict=True)
        if cells_needed(list(prompts), max_new_tokens) > self.llama.n_ctx():
            # Together they may not fit the context: one at a time, each fits or fails on its own.
            return [self._complete(messages, max_new_tokens, temperature, i) for messages, i in jobs]
        try:
            replies = decode_together(self.llama, list(prompts), list(stops), [temperature] * len(jobs),
                                      [self._sample_seed(m, i) for m, i in jobs], max_new_tokens,
                                      states=self.prompt_states, lookup=self.lookup)
        except RuntimeError as exc:
            raise ModelError(f"llama.cpp: {exc}") from exc
        self.drafted += sum(r.drafted for r in replies)
        self.accepted += sum(r.accepted for r in replies)
        tokenizing = (time.perf_counter() - start) - sum(r.prefill_seconds + r.decode_seconds for r in replies)
        return [Generation(r.text, r.prompt_tokens, len(r.tokens),
                           r.prefill_seconds + r.decode_seconds + max(0.0, tokenizing) / len(replies),
                           prefill_seconds=r.prefill_seconds, cached_tokens=r.cached_tokens) for r in replies]

    def _complete(self, messages, max_new_tokens, temperature, index) -> Generation:
        lc = self._llama_cpp
        ctx = self.llama._ctx.ctx
        seed = self._sample_seed(messages, index)
        sampling = ({"temperature": 0.0, "top_k": 1} if temperature <= 0 else
                    {"temperature": temperature, "top_p": 0.95, "top_k": 40, "seed": seed})
        probs: list[float] = []
        if temperature <= 0:
            # The probability of each greedy choice, read from the logits llama.cpp hands to a processor
            # (returned unchanged): its smallest is the Generation's `min_prob`. Costs one pass over the
            # vocabulary per token, well under a millisecond; `logprobs` would need logits for every position.
            sampling["logits_processor"] = [_NoteTopProb(probs)]
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
                          cached_tokens=max(0, prompt_tokens - evaluated),
                          min_prob=round(min(probs), 4) if probs else None,
                          mean_prob=round(math.exp(sum(map(math.log, probs)) / len(probs)), 4) if probs else None)


class _NoteTopProb:
    """A llama.cpp logits processor that records the softmax probability of the most likely next token."""

    def __init__(self, out: list[float]):
        self.out = out

    def __call__(self, input_ids, scores):
        import numpy as np

        top = float(scores.max())
        self.out.append(1.0 / float(np.exp(scores - top, dtype=np.float64).sum()))
        return scores


@dataclass(frozen=True)
class SavedState:
    """A llama.cpp context's KV cache after `input_ids` (prompt and reply), as llama.cpp serialises it."""

    input_ids: Any  # a numpy int array (numpy comes with llama-cpp-python)
    data: bytes
    seed: int

    @property
    def llama_state_size(self) -> int:
        return len(self.data)


class PromptStates:
    """Saved states of recent prompts, found by the longest token prefix they share with a new prompt; the
    least recently used go first once their bytes pass `capacity_bytes`.

    It has the shape llama-cpp-python's `Llama.cache` expects (`cache[tokens]` raises KeyError on a miss;
    `cache[tokens] = state` after each reply). Its own `LlamaRAMCache` is not used because its saved state
    copies the logits buffer (n_batch x vocabulary floats: 311 MB for Qwen2.5) on every reply.
    """

    def __init__(self, capacity_bytes: int, max_entries: int = 32):
        self.capacity_bytes = capacity_bytes
        self.max_entries = max_entries
        self._states: OrderedDict[tuple[int, ...], SavedState] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __bool__(self) -> bool:  # llama-cpp-python tests `if self.cache:`; an empty one is still on
        return True

    @property
    def size_bytes(self) -> int:
        return sum(s.llama_state_size for s in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, tokens) -> SavedState:
        tokens = tuple(tokens)
        best, best_len = None, 0
        for key in self._states:
            n = _common_prefix(key, tokens)
            if n > best_len:
                best, best_len = key, n
        if best is None:
            self.misses += 1
            raise KeyError("no saved state shares a prefix with this prompt")
        self.hits += 1
        self._states.move_to_end(best)
        return self._states[best]

    def __contains__(self, tokens) -> bool:
        try:
            self[tokens]
        except KeyError:
            return False
        return True

    def __setitem__(self, tokens, state: SavedState) -> None:
        key = tuple(tokens)
        # A state whose tokens extend a saved one supersedes it (n samples of one prompt, a longer reply).
        for old in [k for k in self._states if len(k) <= len(key) and key[:len(k)] == k]:
            del self._states[old]
        self._states[key] = state
        while len(self._states) > 1 and (self.size_bytes > self.capacity_bytes
                                         or len(self._states) > self.max_entries):
            self._states.popitem(last=False)


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # stops at the shorter
        if x != y:
            break
        n += 1
    return n


def _lean_state_llama(Llama):
    """`Llama` whose save/load_state carry only the KV cache and the tokens, not the logits buffer: sampling
    reads the logits from the context, and the buffer matters only with logits_all (log-probabilities),
    which this backend never turns on."""

    import llama_cpp

    class LeanStateLlama(Llama):
        def save_state(self) -> SavedState:
            ctx = self._ctx.ctx
            size = llama_cpp.llama_state_get_size(ctx)
            buffer = (ctypes.c_uint8 * size)()
            written = llama_cpp.llama_state_get_data(ctx, buffer, size)
            return SavedState(self.input_ids[: self.n_tokens].copy(), ctypes.string_at(buffer, written),
                              self._seed)

        def load_state(self, state: SavedState) -> None:
            n = len(state.input_ids)
            buffer = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
            if llama_cpp.llama_state_set_data(self._ctx.ctx, buffer, len(state.data)) != len(state.data):
                raise ModelError("llama.cpp could not restore a saved prompt state")
            self.input_ids[:n] = state.input_ids
            self.n_tokens = n
            self._requires_eval = True  # the restored logits are stale: re-evaluate the prompt's last token
            self._seed = state.seed

    return LeanStateLlama


_PARAMS_LOCK = threading.RLock()  # re-entrant: the model and the context params are set together


@contextlib.contextmanager
def _context_params(llama_cpp, **fields):
    """Set fields of llama.cpp's context params that `Llama()` does not expose (n_seq_max, kv_unified), the
    way `_model_params` does for the model's."""
    module = llama_cpp.llama_cpp
    if not fields:
        yield
        return
    with _PARAMS_LOCK:
        original = module.llama_context_default_params

        def defaults():
            params = original()
            for key, value in fields.items():
                if hasattr(params, key):
                    setattr(params, key, value)
            return params

        module.llama_context_default_params = defaults
        try:
            yield
        finally:
            module.llama_context_default_params = original


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

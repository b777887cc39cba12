"""Model backends behind one small protocol: `generate(prompts, agent=...) -> list[Generation]`.

A prompt is a list of chat messages (`{"role": ..., "content": ...}`); each backend turns it into what its
model reads (a chat template, flat text for T5, an HTTP request). Backends are chosen by name from
`BACKENDS`; `make_llm()` builds one from user options.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from macsql.errors import ModelError, did_you_mean

Messages = list[dict[str, str]]
AGENTS = ("selector", "decomposer", "refiner")


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    # Where the seconds went, when the backend can tell: reading the prompt (prefill) vs writing the reply
    # (decode = seconds - prefill_seconds), and how many prompt tokens came from a KV cache instead.
    prefill_seconds: float = 0.0
    cached_tokens: int = 0


class LLM(Protocol):
    """`generate` returns `n` generations per prompt, prompt by prompt (n=1: one each, greedy).

    With `temperature` > 0 the replies are sampled: the vote's extra candidates. Each backend makes the
    n samples of one prompt cheap: one batched `generate` (transformers), repeats that reuse the prompt's
    KV cache (llama.cpp), the `n` field of the request (OpenAI-compatible servers)."""

    name: str

    def generate(self, prompts: Sequence[Messages], *, agent: str = "", max_new_tokens: int = 512,
                 n: int = 1, temperature: float = 0.0) -> list[Generation]: ...


def flatten(messages: Messages) -> str:
    """Plain-text form of a chat, for models without a chat template (T5, base LMs)."""
    return "\n\n".join(m["content"] for m in messages)


# --------------------------------------------------------------------------------------------- scripted
class ScriptedLLM:
    """Replies from a list or a function, for tests and dry runs. Records every prompt it sees."""

    name = "scripted"

    def __init__(self, replies: Sequence[str] | Callable[[Messages, str], str]):
        self._replies = replies if callable(replies) else list(replies)
        self.calls: list[tuple[str, Messages]] = []

    def generate(self, prompts, *, agent="", max_new_tokens=512, n=1, temperature=0.0):
        out = []
        for messages in prompts:
            for _ in range(n):
                self.calls.append((agent, messages))
                if callable(self._replies):
                    text = self._replies(messages, agent)
                elif self._replies:
                    text = self._replies.pop(0)
                else:
                    raise ModelError("scripted backend ran out of replies")
                out.append(Generation(text, len(flatten(messages).split()), len(text.split()), 0.0))
        return out


# ------------------------------------------------------------------------------------- transformers
def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # bf16 halves memory (the 1.5B default model: ~3.5 GB instead of ~7 GB). On CPU it is also faster
        # when the CPU has bf16 units (AVX512-BF16/AMX: prefill matmuls ~4x float32 here, see
        # benchmarks/README.md); without them bf16 is emulated and float32 is the faster choice.
        if device.startswith("cuda") or (device == "cpu" and cpu_has_native_bf16()):
            return torch.bfloat16
        return torch.float32
    return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
            "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX-BF16; read from Linux's
    /proc/cpuinfo, so other systems answer False and keep float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# Draft length of prompt-lookup decoding on the transformers path (HFCausalLM); 0 = plain greedy.
PROMPT_LOOKUP_TOKENS = 10


class _HFBase:
    """Shared loading for the transformers backends: one base model, an optional LoRA adapter per agent."""

    auto_class = "AutoModelForCausalLM"

    def __init__(self, model: str | os.PathLike, *, adapters: dict[str, str | Path] | None = None,
                 device: str | None = None, dtype: str = "auto", batch_size: int = 4, n_threads: int | None = None):
        import torch
        import transformers
        from transformers import AutoTokenizer

        from macsql import weights

        if n_threads:
            torch.set_num_threads(n_threads)
        resolved = weights.resolve(model)
        folder = weights.checkpoint_for_transformers(resolved)
        self.name = resolved.name
        self.device = device or _default_device()
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            cls = getattr(transformers, self.auto_class)
            self.model = cls.from_pretrained(folder, dtype=_torch_dtype(dtype, self.device)).to(self.device)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load model from {folder}: {exc}") from exc
        self.model.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.adapters: set[str] = set()
        if adapters:
            self._load_adapters(adapters)
        self._torch = torch

    def _load_adapters(self, adapters: dict[str, str | Path]) -> None:
        from peft import PeftModel

        for agent, path in adapters.items():
            if not (Path(path) / "adapter_config.json").exists():
                raise ModelError(f"adapter for {agent!r} at {path} has no adapter_config.json")
            if not isinstance(self.model, PeftModel):
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=agent)
            else:
                self.model.load_adapter(str(path), adapter_name=agent)
            self.adapters.add(agent)
        self.model.eval()

    def _adapter_context(self, agent: str):
        """Switch to the agent's adapter (cheap), or run the bare base model for agents without one."""
        import contextlib

        if not self.adapters:
            return contextlib.nullcontext()
        if agent in self.adapters:
            self.model.set_adapter(agent)
            return contextlib.nullcontext()
        return self.model.disable_adapter()


class HFCausalLM(_HFBase):
    """Decoder-only models (Qwen, LLaMA, SmolLM) through their chat template; batched greedy decoding.

    `prompt_lookup` > 0 decodes a single prompt with prompt-lookup decoding: the next tokens are guessed by
    copying what followed the last few tokens' earlier occurrence in the prompt, and one forward pass checks
    them all. SQL copies table, column and value names from the schema, so many guesses hold (measured:
    benchmarks/README.md). Greedy output stays greedy. transformers runs it for one prompt at a time only, so
    batches of several prompts keep plain batched decoding. 0 turns it off.
    """

    def __init__(self, model, *, prompt_lookup: int = PROMPT_LOOKUP_TOKENS, **kwargs):
        super().__init__(model, **kwargs)
        self.tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
        self.prompt_lookup = prompt_lookup

    def render(self, messages: Messages) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return flatten(messages) + "\n"

    def generate(self, prompts, *, agent="", max_new_tokens=512, n=1, temperature=0.0):
        out: list[Generation] = []
        # n samples of a prompt are one batch row each: a batch holds batch_size rows in all
        step = max(1, self.batch_size // max(1, n))
        for i in range(0, len(prompts), step):
            out.extend(self._generate_batch([self.render(m) for m in prompts[i:i + step]],
                                            agent, max_new_tokens, n, temperature))
        return out

    def _generate_batch(self, texts, agent, max_new_tokens, n=1, temperature=0.0):
        torch = self._torch
        start = time.perf_counter()
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        clock = _FirstStepClock()
        with torch.inference_mode(), self._adapter_context(agent):
            ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, logits_processor=[clock],
                                      **self._decode_kwargs(len(texts), n, temperature))
        new = ids[:, enc["input_ids"].shape[1]:]
        end = time.perf_counter()
        seconds = (end - start) / len(new)
        prefill = ((clock.first or end) - start) / len(new)
        masks = enc["attention_mask"].repeat_interleave(n, dim=0)  # generate() returns n rows per prompt
        gens = []
        for row, mask in zip(new, masks, strict=True):
            n_out = _count_until_eos(row.tolist(), self._stop_ids())
            text = self.tokenizer.decode(row[:n_out], skip_special_tokens=True)
            gens.append(Generation(text, int(mask.sum()), n_out, seconds, prefill_seconds=prefill))
        return gens

    def _decode_kwargs(self, n_prompts: int, n: int, temperature: float) -> dict:
        """generate() options: greedy (prompt-lookup decoding for a single prompt, where it is measured to
        win), or n sampled replies per prompt."""
        kwargs = {**_sampling_kwargs(n, temperature), "pad_token_id": self.tokenizer.pad_token_id}
        if self.prompt_lookup and n_prompts == 1 and not kwargs["do_sample"]:
            kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup
        return kwargs

    def _stop_ids(self) -> set[int]:
        stop = set()
        for v in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id,
                  self.tokenizer.pad_token_id):
            if isinstance(v, int):
                stop.add(v)
            elif v:
                stop.update(v)
        return stop


def _sampling_kwargs(n: int, temperature: float) -> dict:
    """generate() arguments: greedy for one reply at temperature 0, else n sampled replies per prompt."""
    if temperature <= 0:
        if n > 1:
            raise ValueError("n > 1 greedy replies would all be the same; pass a temperature > 0")
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_p": 0.95, "num_return_sequences": n}


class HFSeq2SeqLM(_HFBase):
    """Encoder-decoder models (T5 family): the flattened prompt in, the answer out."""

    auto_class = "AutoModelForSeq2SeqLM"

    def generate(self, prompts, *, agent="", max_new_tokens=512, n=1, temperature=0.0):
        torch = self._torch
        out: list[Generation] = []
        step = max(1, self.batch_size // max(1, n))
        for i in range(0, len(prompts), step):
            texts = [flatten(m) for m in prompts[i:i + step]]
            start = time.perf_counter()
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
            with torch.inference_mode(), self._adapter_context(agent):
                ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, **_sampling_kwargs(n, temperature))
            seconds = (time.perf_counter() - start) / len(ids)
            stop = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
            for row, mask in zip(ids, enc["attention_mask"].repeat_interleave(n, dim=0), strict=True):
                produced = row.tolist()[1:]  # position 0 is the decoder start token
                n_out = _count_until_eos(produced, stop)
                text = self.tokenizer.decode(produced[:n_out], skip_special_tokens=True)
                out.append(Generation(text, int(mask.sum()), n_out, seconds))
        return out


class _FirstStepClock:
    """A no-op logits processor that notes when it is first called: generate() calls it right after the
    forward pass over the whole prompt, so that moment splits prefill from decode at no cost."""

    def __init__(self):
        self.first: float | None = None

    def __call__(self, input_ids, scores):
        if self.first is None:
            self.first = time.perf_counter()
        return scores


def _count_until_eos(tokens: list[int], stop: set[int]) -> int:
    for i, t in enumerate(tokens):
        if t in stop:
            return i
    return len(tokens)


def load_hf(model, **kwargs) -> _HFBase:
    """Pick the causal or seq2seq class from the checkpoint's config."""
    from transformers import AutoConfig

    from macsql import weights

    resolved = weights.resolve(model)
    if resolved.is_gguf:
        return HFCausalLM(model, **kwargs)
    config = AutoConfig.from_pretrained(resolved.path)
    cls = HFSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else HFCausalLM
    return cls(model, **kwargs)


# ------------------------------------------------------------------------------------------ llama.cpp
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

    def __init__(self, model, *, n_ctx: int = 8192, n_threads: int | None = None, n_batch: int = 512,
                 flash_attn: bool = False, extra_bufts: bool | None = None, seed: int = 0, **_ignored):
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError('the llama.cpp backend needs: pip install "macsql[fast]" (llama-cpp-python)') from exc
        from macsql import weights

        resolved = weights.resolve(model)
        if not resolved.is_gguf:
            raise ModelError(f"the llama.cpp backend needs a .gguf model; {resolved.name!r} is a "
                             "transformers checkpoint (use --backend hf)")
        self.name = resolved.name
        self.seed = seed
        self._llama_cpp = llama_cpp
        if extra_bufts is None:
            extra_bufts = not _llama_has_amx(llama_cpp)
        self.extra_bufts = extra_bufts
        threads = n_threads or _cpu_threads()
        try:
            with _model_params(llama_cpp, use_extra_bufts=extra_bufts):
                self.llama = Llama(model_path=str(resolved.path), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, n_batch=n_batch, n_ubatch=n_batch,
                                   flash_attn=flash_attn, seed=seed, verbose=False)
        except ValueError as exc:  # llama-cpp-python reports a file it cannot load as ValueError
            raise ModelError(f"llama.cpp cannot load {resolved.path}: {exc}") from exc

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


# ------------------------------------------------------------------------------------ OpenAI-compatible
class OpenAICompatLLM:
    """Any server speaking the OpenAI chat API: vLLM, SGLang, Ollama, llama.cpp server.

    `models` maps an agent to the served model name, so one vLLM server with a LoRA adapter per agent
    (`--lora-modules selector=... decomposer=...`) serves all three agents.

    Why httpx and not the official `openai` client: we call one endpoint of servers that only mimic OpenAI
    (their bodies differ in the details), and the client's typed responses, retries and errors are what
    its ~0.8 s import and a fast-moving major version would buy. httpx is already installed, imports fast,
    and the retry policy below (a dozen lines) does what that client does: exponential backoff with jitter
    on connect errors, timeouts, 429 and 5xx, honouring Retry-After.
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 models: dict[str, str] | None = None, timeout_s: float = 120.0, workers: int = 8,
                 retries: int = 4, backoff_s: float = 0.5, max_backoff_s: float = 8.0, **_ignored):
        import httpx

        self.name = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "http://localhost:8000/v1").rstrip("/")
        try:
            url = httpx.URL(self.base_url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ModelError(f"invalid --base-url {self.base_url!r}: {exc}; pass e.g. http://localhost:8000/v1") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ModelError(f"invalid --base-url {self.base_url!r}: expected http(s)://HOST[:PORT]/v1")
        if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):
            raise ModelError(f"the request timeout must be a positive number of seconds, got {timeout_s!r}")
        self.models = models or {}
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.retried = 0  # requests sent again after a transient failure (reported by eval)
        key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.client = httpx.Client(timeout=self.timeout_s, headers={"Authorization": f"Bearer {key}"})

    def _post(self, body: dict) -> dict:
        """POST one chat request; retry transient failures; the parsed JSON body, or ModelError."""
        import random

        import httpx

        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                resp = self.client.post(url, json=body)
            except httpx.TimeoutException as exc:
                problem = (f"the model server at {self.base_url} did not answer within {self.timeout_s:g}s "
                           f"({type(exc).__name__}); pass a larger --request-timeout or check the server")
            except httpx.HTTPError as exc:
                problem = (f"cannot reach the model server at {self.base_url}: {exc}; start it or pass "
                           "--base-url")
            else:
                if resp.status_code == 200:
                    return self._json(resp)
                problem = f"model server at {self.base_url} answered {resp.status_code}: {resp.text[:200]}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise ModelError(problem)  # a bad request or model name: asking again will not help
                retry_after = _seconds(resp.headers.get("retry-after"))
            if attempt == self.retries:
                raise ModelError(f"{problem} (after {self.retries + 1} attempts)")
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
            delay = retry_after if retry_after is not None else random.uniform(delay / 2, delay)
            self.retried += 1
            time.sleep(min(delay, self.max_backoff_s))
        raise AssertionError("unreachable")

    def _json(self, resp) -> dict:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ModelError(f"model server at {self.base_url} sent a reply that is not a JSON object: "
                             f"{resp.text[:120]!r}; is --base-url an OpenAI-compatible /v1 endpoint?")
        return data

    def _one(self, messages: Messages, agent: str, max_new_tokens: int, n: int = 1,
             temperature: float = 0.0) -> list[Generation]:
        start = time.perf_counter()
        body = {"model": self.models.get(agent, self.name), "messages": messages,
                "max_tokens": max_new_tokens, "temperature": temperature}
        if n > 1:
            body["n"] = n  # vLLM and most servers sample n replies sharing one prompt prefill
        data = self._post(body)
        try:
            choices = data["choices"][:n]
            texts = [c["message"].get("content") or "" for c in choices]
            if not texts or not all(isinstance(t, str) for t in texts):
                raise TypeError("no text content")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelError(f"model server at {self.base_url} sent a chat reply without "
                             f"choices[0].message.content ({type(exc).__name__}: {exc}); "
                             f"got {str(data)[:120]}") from exc
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        seconds, per = time.perf_counter() - start, len(texts)
        return [Generation(t, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0) // per,
                           seconds / per) for t in texts]

    def generate(self, prompts, *, agent="", max_new_tokens=512, n=1, temperature=0.0):
        from concurrent.futures import ThreadPoolExecutor

        def one(m):
            return self._one(m, agent, max_new_tokens, n, temperature)

        if len(prompts) == 1:
            return one(prompts[0])
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return [g for gens in pool.map(one, prompts) for g in gens]


def _seconds(header: str | None) -> float | None:
    """A Retry-After header given in seconds (the HTTP-date form is rare from model servers)."""
    try:
        value = float(header) if header else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < 3600 else None


# ----------------------------------------------------------------------------------------- choosing
BACKENDS: dict[str, Callable[..., LLM]] = {
    "hf": load_hf,
    "llamacpp": LlamaCppLLM,
    "openai": OpenAICompatLLM,
}


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def make_llm(model: str, backend: str = "auto", *, adapters: dict[str, str | Path] | None = None,
             **kwargs) -> LLM:
    """Build a backend by name. `auto` runs a GGUF model on llama.cpp when it is installed and no LoRA
    adapters are asked for (llama.cpp is several times faster on CPU); otherwise transformers."""
    if backend == "auto":
        backend = "hf"
        if not adapters and llama_cpp_available():
            from macsql import weights

            if weights.resolve(model).is_gguf:
                backend = "llamacpp"
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}{did_you_mean(backend, BACKENDS)}; "
                         f"choose one of: auto, {', '.join(BACKENDS)}")
    if adapters and backend != "hf":
        raise ModelError("LoRA adapters run on the transformers backend; use --backend hf "
                         "(or serve them with vLLM --lora-modules and --backend openai)")
    if backend == "hf":
        return load_hf(model, adapters=adapters, **kwargs)
    return BACKENDS[backend](model, **kwargs)

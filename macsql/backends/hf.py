"""The transformers backends: decoder-only models through their chat template (`HFCausalLM`), T5-style
encoder-decoders on flattened prompts (`HFSeq2SeqLM`), each optionally with a LoRA adapter per agent on one
shared base model. Loading (device, dtype, GGUF conversion) is `loading.load_transformers`, shared with training.
"""

from __future__ import annotations

import time
from pathlib import Path

from macsql.backends.base import Generation, Messages, flatten
from macsql.backends.loading import default_device, is_seq2seq, load_transformers
from macsql.errors import InputError, ModelError
from macsql.extras import require
from macsql.weights import ResolvedModel

# Draft length of prompt-lookup decoding on the transformers path (HFCausalLM); 0 = plain greedy.
PROMPT_LOOKUP_TOKENS = 10


class _HFBase:
    """Shared loading for the transformers backends: one base model, an optional LoRA adapter per agent."""

    seq2seq = False
    thread_safe = False  # one model and one generate() at a time ...
    batched = True  # ... but a list of prompts decodes together: concurrent calls are merged (batching.py)

    def __init__(self, model: ResolvedModel, *, adapters: dict[str, str | Path] | None = None,
                 device: str | None = None, dtype: str = "auto", batch_size: int = 4, n_threads: int | None = None):
        torch = require("torch", purpose="the hf backend")

        if n_threads:
            torch.set_num_threads(n_threads)
        self.name = model.name
        self.path = model.path
        self.device = device or default_device()
        self.batch_size = batch_size
        self.model, self.tokenizer, _ = load_transformers(model, dtype=dtype, device=self.device,
                                                          seq2seq=self.seq2seq)
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

    seq2seq = True

    def __init__(self, model, *, prompt_lookup: int = 0, **kwargs):
        # an option of the hf backend that only decoder-only models have: refused, not silently dropped
        if prompt_lookup:
            raise InputError(f"prompt_lookup runs on decoder-only models; {model.name!r} is an encoder-decoder "
                             "(T5): pass prompt_lookup=0")
        super().__init__(model, **kwargs)

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


def load_hf(model: ResolvedModel, **kwargs) -> _HFBase:
    """The causal or the seq2seq class, whichever the checkpoint's config asks for."""
    return (HFSeq2SeqLM if is_seq2seq(model) else HFCausalLM)(model, **kwargs)

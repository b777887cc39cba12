"""What every backend shares: the `LLM` protocol, its `Generation` result, the agents a backend serves, and
the scripted fake that tests and dry runs use.

A prompt is a list of chat messages (`{"role": ..., "content": ...}`); each backend turns it into what its
model reads (a chat template, flat text for T5, an HTTP request).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from macsql.errors import ModelError

Messages = list[dict[str, str]]
# The agents that call a model, in pipeline order: each may get its own LoRA adapter (`adapters_in`), its own
# served model name (OpenAI-compatible `models`), and its own line in an answer's token counts.
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
    # Greedy replies, where the backend can tell: the smallest probability the model gave a token it chose.
    # A low one marks a choice the model was unsure of (the graph's confident stop reads it).
    min_prob: float | None = None
    mean_prob: float | None = None  # the geometric mean of those probabilities


class LLM(Protocol):
    """`generate` returns `n` generations per prompt, prompt by prompt (n=1: one each, greedy).

    With `temperature` > 0 the replies are sampled: the vote's extra candidates. Each backend makes the
    n samples of one prompt cheap: one batched `generate` (transformers), repeats that reuse the prompt's
    KV cache (llama.cpp), the `n` field of the request (OpenAI-compatible servers).

    Each backend also says how threads may share it, so that `batching.for_threads` needs no list of classes:
    `thread_safe` (any number of threads may call `generate` at once) and `batched` (a list of prompts decodes
    together, so concurrent calls are worth merging into one). A backend that declares neither is given a lock.
    `path`: the weights on disk it runs (None for a served or scripted model), recorded in a run's config.
    """

    name: str
    thread_safe: ClassVar[bool]
    batched: ClassVar[bool]
    path: Path | None

    def generate(self, prompts: Sequence[Messages], *, agent: str = "", max_new_tokens: int = 512,
                 n: int = 1, temperature: float = 0.0) -> list[Generation]: ...


def flatten(messages: Messages) -> str:
    """Plain-text form of a chat, for models without a chat template (T5, base LMs)."""
    return "\n\n".join(m["content"] for m in messages)


class ScriptedLLM:
    """Replies from a list or a function, for tests and dry runs. Records every prompt it sees. A reply may
    be a `Generation` (to script what a backend reports besides the text, such as `min_prob`)."""

    name = "scripted"
    token_probs = True  # a scripted `Generation` may carry min_prob/mean_prob
    thread_safe = True  # list appends and pops under the GIL: tests share one across eval and serve threads
    batched = False
    path = None

    def __init__(self, replies: Sequence[str | Generation] | Callable[[Messages, str], str | Generation]):
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
                if isinstance(text, Generation):
                    out.append(text)
                    continue
                out.append(Generation(text, len(flatten(messages).split()), len(text.split()), 0.0))
        return out

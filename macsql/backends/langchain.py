"""Any LangChain chat model as a backend: `Pipeline(LangChainLLM(ChatOpenAI(...)))`, or
`make_llm(backend="langchain", chat_model=...)`.

macsql's prompts are role/content dicts and a LangChain chat model reads message objects, so each prompt is
converted; token counts come from the reply's `usage_metadata` when the provider reports them. langchain-core
is imported on the first call, not at import time, so `macsql --help` stays instant.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from macsql.backends.base import Generation, Messages
from macsql.errors import ModelError


class LangChainLLM:
    """A LangChain chat model (or any runnable from messages to a message or a string) behind the `LLM`
    protocol. The n replies of a prompt and the prompts of a batch go through the model's own `batch`, at
    most `workers` at a time.

    `call_options`: pass `temperature` and `max_tokens` with every call, so the greedy queries are greedy and
    the vote's samples are sampled (ChatOpenAI and most providers take them per call). Turn it off for a
    model that refuses them; it then writes with its own settings, and its samples may all be the same.
    """

    thread_safe = True  # a chat model's client is shared by LangChain's own batch threads
    batched = False
    path = None  # the weights are the provider's

    def __init__(self, chat_model, *, name: str | None = None, workers: int = 8, call_options: bool = True):
        if not (hasattr(chat_model, "batch") and hasattr(chat_model, "invoke")):
            raise ModelError(f"LangChainLLM takes a LangChain chat model (e.g. ChatOpenAI(...)), got "
                             f"{type(chat_model).__name__}")
        self.chat = chat_model
        self.name = name or getattr(chat_model, "model_name", None) or type(chat_model).__name__
        self.workers = max(1, int(workers))
        self.call_options = call_options

    def generate(self, prompts: Sequence[Messages], *, agent: str = "", max_new_tokens: int = 512, n: int = 1,
                 temperature: float = 0.0) -> list[Generation]:
        inputs = [to_messages(messages) for messages in prompts for _ in range(n)]
        options = {"temperature": temperature, "max_tokens": max_new_tokens} if self.call_options else {}
        start = time.perf_counter()
        try:
            replies = self.chat.batch(inputs, config={"max_concurrency": self.workers}, **options)
        except Exception as exc:  # a provider's own error: say whose it is, in one line
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            fix = " (if it refuses temperature or max_tokens per call, pass LangChainLLM(chat, call_options=False))"
            raise ModelError(f"the LangChain chat model {self.name!r} failed: {text}"
                             f"{fix if self.call_options else ''}") from exc
        seconds = (time.perf_counter() - start) / max(1, len(replies))
        return [to_generation(reply, seconds) for reply in replies]


def to_messages(messages: Messages) -> list:
    """macsql's {"role", "content"} dicts as LangChain message objects."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    out = []
    for message in messages:
        if message.get("role") not in kinds:
            raise ModelError(f"a prompt message has role {message.get('role')!r}; expected system, user or assistant")
        out.append(kinds[message["role"]](content=message["content"]))
    return out


def to_generation(reply, seconds: float) -> Generation:
    """A reply (an AIMessage, or the string of a chain ending in a parser) with its token counts."""
    if isinstance(reply, str):
        return Generation(reply, seconds=seconds)
    text = reply.text if isinstance(getattr(reply, "text", None), str) else str(getattr(reply, "content", reply))
    usage = getattr(reply, "usage_metadata", None) or {}
    cached = (usage.get("input_token_details") or {}).get("cache_read") or 0
    return Generation(text, int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0), seconds,
                      cached_tokens=int(cached))


def langchain_backend(model: str | None = None, *, chat_model=None, adapters=None, **options) -> LangChainLLM:
    """The registry's entry: `make_llm(backend="langchain", chat_model=ChatOpenAI(...))`; `model`, when
    given, is the name the backend reports (e.g. in a run's config)."""
    if chat_model is None:
        raise ModelError("the langchain backend takes a chat model object: make_llm(backend='langchain', "
                         "chat_model=ChatOpenAI(...)) or Pipeline(LangChainLLM(chat)); on the command line use "
                         "--backend openai --base-url URL")
    if adapters:
        raise ModelError("LoRA adapters run on the transformers or llama.cpp backend; a LangChain chat model's "
                         "weights are its provider's")
    return LangChainLLM(chat_model, name=model, **options)

"""Wrappers that make one `LLM` usable from several threads (several questions answered at once).

`BatchingLLM` gathers the generate() calls that concurrent graph runs make and sends them to the wrapped
backend as one batched call: the transformers backends decode a list of prompts together, so N questions in
flight cost about one forward pass per token instead of N. `SerializedLLM` is for backends that must not be
entered by two threads (llama.cpp keeps one context and one KV cache).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

from macsql.backends.base import LLM, Generation, Messages


def sampling_args(n: int, temperature: float) -> dict:
    """`n`/`temperature` only when sampling is asked for, so a backend written before the vote (greedy
    `generate(prompts, agent=, max_new_tokens=)` only) still serves single-candidate pipelines."""
    return {} if n == 1 and temperature <= 0 else {"n": n, "temperature": temperature}


class SerializedLLM:
    """One generate() at a time, whatever the number of calling threads."""

    thread_safe = True
    batched = False

    def __init__(self, llm: LLM):
        self.llm = llm
        self.name = llm.name
        self.token_probs = getattr(llm, "token_probs", False)
        self._lock = threading.Lock()

    def generate(self, prompts: Sequence[Messages], *, agent: str = "", max_new_tokens: int = 512,
                 n: int = 1, temperature: float = 0.0) -> list[Generation]:
        with self._lock:
            return self.llm.generate(prompts, agent=agent, max_new_tokens=max_new_tokens, **sampling_args(n, temperature))


class BatchingLLM:
    """Merge concurrent generate() calls into batched calls of the wrapped backend.

    One daemon thread owns the backend. Callers enqueue their prompts and wait on a Future. The thread takes
    what is queued once `max_batch` prompts are waiting or `max_wait_s` has passed since the oldest arrived
    (a short wait: the other questions are usually a few milliseconds behind, executing SQL), groups the
    requests by (agent, max_new_tokens, n, temperature) because a batch runs one adapter with one length limit
    and one sampling setting, and answers
    each caller with its own slice of the results.
    """

    thread_safe = True
    batched = False  # it merges calls itself; wrapping it again would add a second wait

    def __init__(self, llm: LLM, *, max_batch: int = 4, max_wait_s: float = 0.05):
        self.llm = llm
        self.token_probs = getattr(llm, "token_probs", False)
        self.name = llm.name
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_s
        self.batches: list[int] = []  # size of every batched call, for tests and the report
        self._cond = threading.Condition()
        self._queue: list[tuple[list[Messages], tuple, Future, float]] = []  # prompts, group key, ...
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="macsql-batching", daemon=True)
        self._thread.start()

    def generate(self, prompts: Sequence[Messages], *, agent: str = "", max_new_tokens: int = 512,
                 n: int = 1, temperature: float = 0.0) -> list[Generation]:
        if not prompts:
            return []
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("BatchingLLM is closed")
            self._queue.append((list(prompts), (agent, max_new_tokens, n, temperature), fut, time.monotonic()))
            self._cond.notify_all()
        return fut.result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _take(self) -> list | None:
        """Wait for work; return the requests of one group (same agent and length limit)."""
        with self._cond:
            while True:
                if self._closed and not self._queue:
                    return None
                if self._queue:
                    waited = time.monotonic() - self._queue[0][3]
                    queued = sum(len(r[0]) for r in self._queue)
                    if queued >= self.max_batch or waited >= self.max_wait_s or self._closed:
                        break
                    self._cond.wait(self.max_wait_s - waited)
                else:
                    self._cond.wait()
            key = self._queue[0][1]
            group, rest, size = [], [], 0
            for req in self._queue:
                if req[1] == key and (size == 0 or size + len(req[0]) <= self.max_batch):
                    group.append(req)
                    size += len(req[0])
                else:
                    rest.append(req)
            self._queue = rest
            return group

    def _loop(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            prompts = [p for req in group for p in req[0]]
            agent, max_new_tokens, n, temperature = group[0][1]
            self.batches.append(len(prompts))
            try:
                gens = self.llm.generate(prompts, agent=agent, max_new_tokens=max_new_tokens,
                                         **sampling_args(n, temperature))
            except BaseException as exc:  # every waiting caller gets the backend's error, not a hang
                for req in group:
                    req[2].set_exception(exc)
                continue
            at = 0
            for req in group:
                req[2].set_result(gens[at:at + n * len(req[0])])
                at += n * len(req[0])


def for_threads(llm: LLM, workers: int) -> LLM:
    """The wrapper a backend needs to serve `workers` threads, from what the backend declares: none for one
    worker or a thread-safe backend (an HTTP client: the server batches), merged batches for a backend that
    decodes a list of prompts together (transformers), a lock for anything else (llama.cpp, and a backend
    that declares nothing)."""
    if workers <= 1 or getattr(llm, "thread_safe", False):
        return llm
    if getattr(llm, "batched", False):
        return BatchingLLM(llm, max_batch=max(workers, getattr(llm, "batch_size", 1)))
    return SerializedLLM(llm)

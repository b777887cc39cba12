"""The OpenAI-compatible HTTP backend: vLLM, SGLang, Ollama, llama.cpp server (the way to scale out)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

from macsql.backends.base import Generation, Messages
from macsql.errors import ModelError


class OpenAICompatLLM:
    """Any server speaking the OpenAI chat API: vLLM, SGLang, Ollama, llama.cpp server.

    `models` maps an agent to the served model name, so one vLLM server with a LoRA adapter per agent
    (`--lora-modules selector=... decomposer=...`) serves all three agents.

    Why httpx and not the official `openai` client: we call one endpoint of servers that only mimic OpenAI
    (their bodies differ in the details), and the client's typed responses, retries and errors are what
    its ~0.8 s import and a fast-moving major version would buy. httpx imports fast, and the retry policy
    below (a dozen lines) does what that client does: exponential backoff with jitter on connect errors,
    timeouts, 429, 5xx and malformed replies, honouring Retry-After, with one line on stderr per retry.

    `timeout_s` bounds each request as a whole (`_send`): httpx's timeouts bound each network operation,
    so a server that sends a byte a second would otherwise hold a request for as long as it likes.
    """

    thread_safe = True  # an HTTP client: requests may overlap, and the server batches them
    batched = False
    path = None  # the weights are the server's

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 models: dict[str, str] | None = None, timeout_s: float = 120.0, workers: int = 8,
                 retries: int = 4, backoff_s: float = 0.5, max_backoff_s: float = 8.0):
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
        key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        # A fresh connection per request (no keep-alive): `_send` ends a request at its deadline by shutting
        # its socket, which it learns when the connection is made. A model reply takes seconds; a connect
        # takes a round trip.
        self.client = httpx.Client(timeout=self.timeout_s, headers={"Authorization": f"Bearer {key}"},
                                   limits=httpx.Limits(max_keepalive_connections=0))

    def _send(self, url: str, body: dict):
        """POST once, within `timeout_s` in all: at the deadline a timer shuts the request's socket, which
        ends a read that is still trickling in (a `_Deadline` then, like httpx's own timeouts)."""
        import httpx

        streams: list = []
        expired = threading.Event()

        def trace(event: str, info: dict) -> None:  # httpcore reports each connection it makes (and TLS)
            stream = info.get("return_value") if event.endswith(".complete") else None
            if stream is not None and hasattr(stream, "get_extra_info"):
                streams.append(stream)
                if expired.is_set():
                    _shutdown(stream)

        def expire() -> None:
            expired.set()
            for stream in streams:
                _shutdown(stream)

        timer = threading.Timer(self.timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            return self.client.post(url, json=body, extensions={"trace": trace})
        except httpx.HTTPError as exc:
            if expired.is_set():
                raise _Deadline(f"the whole reply took longer ({type(exc).__name__} after the deadline)") from exc
            raise
        finally:
            timer.cancel()

    def _post(self, body: dict, n: int) -> tuple[list[str], dict]:
        """POST one chat request; retry transient failures (a malformed reply too: a proxy's error page, a
        server restarting); the reply texts and the parsed body, or ModelError."""
        import random

        import httpx

        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.retries + 1):
            retry_after = None
            try:
                resp = self._send(url, body)
            except (httpx.TimeoutException, _Deadline) as exc:
                problem = (f"the model server at {self.base_url} did not answer within {self.timeout_s:g}s "
                           f"({type(exc).__name__}); pass a larger --request-timeout or check the server")
                reason = f"no reply within {self.timeout_s:g}s"
            except httpx.HTTPError as exc:
                problem = (f"cannot reach the model server at {self.base_url}: {exc}; start it or pass "
                           "--base-url")
                reason = _reason(exc)
            else:
                if resp.status_code == 200:
                    try:
                        return _texts(resp, n)
                    except _Malformed as exc:
                        problem = f"model server at {self.base_url} sent {exc}"
                        reason = f"malformed reply ({exc.short})"
                else:
                    problem = f"model server at {self.base_url} answered {resp.status_code}: {resp.text[:200]}"
                    if resp.status_code != 429 and resp.status_code < 500:
                        raise ModelError(problem)  # a bad request or model name: asking again will not help
                    retry_after = _seconds(resp.headers.get("retry-after"))
                    reason = f"HTTP {resp.status_code}"
            if attempt == self.retries:
                raise ModelError(f"{problem} (after {self.retries + 1} attempts)")
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
            delay = min(retry_after if retry_after is not None else random.uniform(delay / 2, delay),
                        self.max_backoff_s)
            # one line per retry, so that a slow answer is seen to be a server that is failing
            print(f"model server {self.base_url}: retrying in {delay:.1f} s: {reason}", file=sys.stderr,
                  flush=True)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _one(self, messages: Messages, agent: str, max_new_tokens: int, n: int = 1,
             temperature: float = 0.0) -> list[Generation]:
        start = time.perf_counter()
        body = {"model": self.models.get(agent, self.name), "messages": messages,
                "max_tokens": max_new_tokens, "temperature": temperature}
        replies: list[tuple[str, int, int]] = []  # (text, prompt tokens, completion tokens)
        # Some servers ignore `n` and send one choice (Ollama): ask again for the rest, so that k candidates
        # are k candidates on every server.
        while len(replies) < n:
            wanted = n - len(replies)
            body.pop("n", None)
            if wanted > 1:
                body["n"] = wanted  # vLLM and most servers sample n replies sharing one prompt prefill
            texts, data = self._post(body, wanted)
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            prompt_tokens, completion_tokens = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
            replies += [(t, prompt_tokens, completion_tokens // len(texts)) for t in texts]
        seconds = (time.perf_counter() - start) / max(1, len(replies))
        return [Generation(t, p, c, seconds) for t, p, c in replies]

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


class _Deadline(Exception):
    """A request ended at its deadline (`OpenAICompatLLM._send`)."""


class _Malformed(Exception):
    """A 200 reply that is not a chat completion; `short` names the problem in a few words."""

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short


def _texts(resp, n: int) -> tuple[list[str], dict]:
    """The first `n` reply texts of a chat completion and its parsed body, or `_Malformed`."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _Malformed(f"a reply that is not a JSON object: {resp.text[:120]!r}; is --base-url an "
                         "OpenAI-compatible /v1 endpoint?", "not JSON")
    try:
        texts = [c["message"].get("content") or "" for c in data["choices"][:n]]
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("no text content")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise _Malformed(f"a chat reply without choices[0].message.content ({type(exc).__name__}: {exc}); "
                         f"got {str(data)[:120]}", "no choices") from exc
    return texts, data


def _shutdown(stream) -> None:
    """Shut a connection's socket: a read blocked on it returns at once (closing it would not wake it)."""
    sock = stream.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _reason(exc: Exception) -> str:
    """A few words for a retry line: "connection refused", not httpx's whole message."""
    text = str(exc).strip()
    if text.startswith("[Errno") and "] " in text:  # "[Errno 111] Connection refused"
        text = text.split("] ", 1)[1]
    text = text or type(exc).__name__
    return text[:1].lower() + text[1:80]


def _count(usage, key: str) -> int:
    """A token count from a reply's `usage`; 0 when a server sends none or something that is not a count."""
    value = usage.get(key) if isinstance(usage, dict) else None
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0

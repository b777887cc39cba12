"""The OpenAI-compatible HTTP backend: vLLM, SGLang, Ollama, llama.cpp server (the way to scale out)."""

from __future__ import annotations

import os
import time

from macsql.backends.base import Generation, Messages
from macsql.errors import ModelError


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

    thread_safe = True  # an HTTP client: requests may overlap, and the server batches them
    batched = False
    path = None  # the weights are the server's

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

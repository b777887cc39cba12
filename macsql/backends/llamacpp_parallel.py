"""Several replies decoded together in one llama.cpp context, one sequence each (`LlamaCppLLM(parallel=K)`).

Decoding on a CPU costs less per token when several sequences share a step: `benchmarks/decode_batch.py`
measured a step with 2 sequences at 1.52x one with a single sequence, 4 at 2.21x. The pipeline asks for the
direct and the decomposed query in one `generate` call and for its samples in another, so those replies
can decode together.

Each prompt is tokenized exactly as llama-cpp-python's chat completion does, by running its chat handler
against a stand-in that keeps the prompt tokens instead of generating. The sampling chain is the one
`Llama` builds (greedy, or top-k 40, typical 1, top-p 0.95, min-p 0.05, temperature, seeded draw), so only
the arithmetic of a batch differs from one prompt at a time: greedy replies may differ in rare near-ties.

Sequence 0 ends as the first prompt plus its reply, what `Llama` itself would hold after that prompt, and
that state is saved in the prompt states; the other sequences are dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from macsql.backends.lookup import NgramIndex


class _PromptTaker:
    """A stand-in `Llama` for a chat handler: tokenizes with the real model, and keeps the prompt tokens and
    stop strings the handler would pass to `create_completion` instead of generating."""

    def __init__(self, llama):
        self._llama = llama
        self.tokens: list[int] | None = None
        self.stop: list[str] = []

    def __getattr__(self, name):
        return getattr(self._llama, name)

    def create_completion(self, prompt, stop=None, **_):
        self.tokens = list(prompt)
        self.stop = [stop] if isinstance(stop, str) else list(stop or [])
        return {"id": "prompt", "object": "text_completion", "created": 0, "model": "",
                "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(self.tokens), "completion_tokens": 0,
                          "total_tokens": len(self.tokens)}}


def chat_tokens(llama, messages) -> tuple[list[int], list[str]]:
    """The prompt tokens (and stop strings) `llama.create_chat_completion(messages)` would decode from."""
    from llama_cpp import llama_chat_format

    handler = (llama.chat_handler or llama._chat_handlers.get(llama.chat_format)
               or llama_chat_format.get_chat_completion_handler(llama.chat_format))
    taker = _PromptTaker(llama)
    handler(llama=taker, messages=messages, max_tokens=1)
    if taker.tokens is None:
        raise RuntimeError("the chat handler produced no prompt")
    return taker.tokens, taker.stop


@dataclass
class Reply:
    tokens: list[int]
    text: str
    prompt_tokens: int
    cached_tokens: int
    prefill_seconds: float
    decode_seconds: float  # this sequence's share of the steps it took part in
    drafted: int = 0  # prompt-lookup tokens checked, and those the model agreed with
    accepted: int = 0


def _take(llama, vocab, reply: Reply, tokens: list[int], stops: list[str], max_new_tokens: int) -> bool:
    """Append the model's chosen tokens to the reply, one by one, until an end: end of generation, a stop
    string, or max_new_tokens. True while the reply goes on."""
    import llama_cpp as lc

    for tok in tokens:
        if lc.llama_vocab_is_eog(vocab, tok):
            return False
        reply.tokens.append(tok)
        text = llama.detokenize(reply.tokens).decode("utf-8", errors="ignore")
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            reply.text = text[:cut]
            return False
        if len(reply.tokens) >= max_new_tokens:
            return False
    return True


def _sampler(temperature: float, seed: int):
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()
    if temperature <= 0:
        sampler.add_greedy()
    else:  # the chain `Llama._init_sampler` builds for create_chat_completion's defaults
        sampler.add_top_k(40)
        sampler.add_typical(1.0, 1)
        sampler.add_top_p(0.95, 1)
        sampler.add_min_p(0.05, 1)
        sampler.add_temp(temperature)
        sampler.add_dist(seed)
    return sampler


def _common(a, b) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def cells_needed(prompts: list[list[int]], max_new_tokens: int) -> int:
    """KV cells the prompts and their replies can take at most in a unified cache, where a prefix that a
    prompt shares with an earlier one is held once."""
    distinct = sum(len(p) - max((_common(q, p) for q in prompts[:i]), default=0) for i, p in enumerate(prompts))
    return distinct + len(prompts) * max_new_tokens


def decode_together(llama, prompts: list[list[int]], stops: list[list[str]], temperatures: list[float],
                    seeds: list[int], max_new_tokens: int, states=None, lookup: int = 0) -> list[Reply]:
    """Decode each prompt's reply in its own sequence of `llama`'s context, all sequences in one batch per
    step. The context must allow len(prompts) sequences (n_seq_max) in a unified KV cache.

    `lookup` > 0: each step of a greedy sequence also checks up to that many drafted tokens (lookup.py)."""
    import llama_cpp as lc

    ctx = llama._ctx.ctx
    memory = lc.llama_get_memory(ctx)
    vocab = lc.llama_model_get_vocab(llama._model.model)
    k = len(prompts)
    held = list(llama.input_ids[: llama.n_tokens])
    if states is not None:  # as `Llama.generate` does: start from a saved state if it shares more
        try:
            best = states[prompts[0]]
        except KeyError:
            best = None
        if best is not None and _common(best.input_ids, prompts[0]) > _common(held, prompts[0]):
            llama.load_state(best)
            held = list(best.input_ids)
    # A prompt keeps at least its last token to evaluate: its logits pick the reply's first token.
    prefix = [min(_common(held, p), len(p) - 1) for p in prompts]
    for seq in range(1, k):
        lc.llama_memory_seq_rm(memory, seq, -1, -1)
        if prefix[seq]:
            lc.llama_memory_seq_cp(memory, 0, seq, 0, prefix[seq])
    lc.llama_memory_seq_rm(memory, 0, prefix[0], -1)
    n_batch = llama.n_batch
    batch = lc.llama_batch_init(max(n_batch, k), 0, 1)

    def put(i, token, pos, seq, logits):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
        batch.seq_id[i][0] = seq

    def decode(n):
        batch.n_tokens = n
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed (the context is full: pass a larger n_ctx)")

    samplers = [_sampler(t, s) for t, s in zip(temperatures, seeds, strict=True)]
    replies = [Reply([], "", len(p), prefix[i], 0.0, 0.0) for i, p in enumerate(prompts)]
    evaluated = [list(p[: prefix[i]]) for i, p in enumerate(prompts)]
    # pending[seq]: tokens the model chose that the reply has not taken yet. All but the last are in the KV
    # cache already (accepted drafts); the last is fed in the next step.
    pending: list[list[int]] = [[] for _ in range(k)]
    # Drafts only for greedy sequences: there, keeping the drafted tokens the model would have picked anyway
    # leaves the reply as it was. A sampled reply would need the rejection rule of speculative sampling.
    drafting = [lookup > 0 and t <= 0 for t in temperatures]
    index = [NgramIndex(p) if drafting[i] else None for i, p in enumerate(prompts)]
    try:
        for seq, prompt in enumerate(prompts):  # prefill, one prompt at a time (a chunk is batched already)
            start = time.perf_counter()
            rest = prompt[prefix[seq]:]
            for lo in range(0, len(rest), n_batch):
                chunk = rest[lo:lo + n_batch]
                for j, tok in enumerate(chunk):
                    put(j, tok, prefix[seq] + lo + j, seq, lo + j == len(rest) - 1)
                decode(len(chunk))
            evaluated[seq] += rest
            pending[seq] = [samplers[seq].sample(llama._ctx, -1)]
            replies[seq].prefill_seconds = time.perf_counter() - start
            for later in range(seq + 1, k):  # a later prompt that shares more with this one starts from it
                shared = min(_common(prompt, prompts[later]), len(prompts[later]) - 1)
                if shared > prefix[later]:
                    lc.llama_memory_seq_rm(memory, later, -1, -1)
                    lc.llama_memory_seq_cp(memory, seq, later, 0, shared)
                    prefix[later] = replies[later].cached_tokens = shared
                    evaluated[later] = list(prompts[later][:shared])
        active = [seq for seq in range(k)]
        while active:
            still = []
            for seq in active:
                if _take(llama, vocab, replies[seq], pending[seq], stops[seq], max_new_tokens):
                    still.append(seq)
                    if index[seq] is not None:
                        index[seq].extend(pending[seq])
            for seq in set(active) - set(still):
                if not replies[seq].text:
                    replies[seq].text = llama.detokenize(replies[seq].tokens).decode("utf-8", errors="ignore")
            active = still
            if not active:
                break
            start = time.perf_counter()
            fed, n = {}, 0
            for place, seq in enumerate(active):
                # room in the reply, and in the batch after a token for each sequence still to come
                room = min(lookup, max_new_tokens - len(replies[seq].tokens) - 1, n_batch - n - (len(active) - place))
                drafts = index[seq].draft(room) if index[seq] is not None else []
                fed[seq] = (n, [pending[seq][-1], *drafts])
                for j, tok in enumerate(fed[seq][1]):
                    put(n + j, tok, len(evaluated[seq]) + j, seq, True)
                n += len(fed[seq][1])
            decode(n)
            for seq in active:
                at, tokens = fed[seq]
                chosen = [samplers[seq].sample(llama._ctx, at)]
                for j, draft in enumerate(tokens[1:], start=1):  # keep drafts while the model agrees
                    if chosen[-1] != draft:
                        break
                    chosen.append(samplers[seq].sample(llama._ctx, at + j))
                evaluated[seq] += tokens[:len(chosen)]
                if len(chosen) < len(tokens):  # the rejected drafts leave the KV cache
                    lc.llama_memory_seq_rm(memory, seq, len(evaluated[seq]), -1)
                replies[seq].drafted += len(tokens) - 1
                replies[seq].accepted += len(chosen) - 1
                pending[seq] = chosen
            share = (time.perf_counter() - start) / len(active)
            for seq in active:
                replies[seq].decode_seconds += share
    finally:
        lc.llama_batch_free(batch)
        for sampler in samplers:
            sampler.close()
        for seq in range(1, k):
            lc.llama_memory_seq_rm(memory, seq, -1, -1)
    # Sequence 0 is what `Llama` holds from now on: the first prompt and its reply, as after one completion.
    n = len(evaluated[0])
    llama.input_ids[:n] = evaluated[0]
    llama.n_tokens = n
    if states is not None:
        states[evaluated[0]] = llama.save_state()
    return replies

"""Prompt lookup: draft tokens for a greedy reply from the text it is likely to copy.

A query copies table and column names, values and whole join clauses from its prompt (the schema and the
question), and a decomposed reply copies its own sub-questions. When the last few tokens of a reply occurred
before, in the prompt or earlier in the reply, the tokens that followed them then are a cheap guess at what
comes next. The decoder checks such a guess in one batch (one llama.cpp step with several tokens costs far
less than as many steps: `benchmarks/decode_batch.py`) and keeps the part the model itself would have
chosen, so a greedy reply is the same as without drafts, up to the arithmetic of a batch.
"""

from __future__ import annotations


class NgramIndex:
    """Where each short n-gram of a token sequence last ended, kept up to date as tokens are appended."""

    def __init__(self, tokens, sizes=(3, 2)):
        self.sizes = tuple(sorted(sizes, reverse=True))
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens) -> None:
        for tok in tokens:
            # The n-grams that end just before this token are indexed first: a lookup of the sequence's
            # own last n-gram must find an earlier occurrence, never the one that ends the sequence.
            self._index_end()
            self.tokens.append(int(tok))

    def _index_end(self) -> None:
        t, end = self.tokens, len(self.tokens)
        for n in self.sizes:
            if end >= n:
                self._ends[tuple(t[end - n:end])] = end

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the sequence's last n-gram,
        for the longest n that has one; [] when none occurred."""
        t = self.tokens
        if limit <= 0:
            return []
        for n in self.sizes:
            if len(t) < n:
                continue
            end = self._ends.get(tuple(t[-n:]))
            if end is not None and end < len(t):
                return t[end:end + limit]
        return []

"""Prompt-lookup drafts (macsql/backends/lookup.py): what a greedy reply is guessed to copy next."""

from __future__ import annotations

from macsql.backends.lookup import NgramIndex


def test_draft_continues_the_latest_earlier_occurrence_of_the_last_ngram():
    # prompt: "... T1 . id = T2 . id ..." ; the reply so far ends in "T1 ."
    idx = NgramIndex([7, 1, 2, 3, 4, 5, 9, 1, 2, 6, 8])
    idx.extend([1, 2])
    assert idx.draft(3) == [6, 8, 1]  # the later "1 2" (then 6 8, then the reply) wins over the first (3 4 5)
    assert idx.draft(1) == [6]


def test_longer_ngrams_win_over_shorter_ones():
    idx = NgramIndex([5, 2, 3, 40, 41, 9, 3, 50, 51])
    idx.extend([2, 3])  # "2 3" occurred once (then 40 41); "3" alone most recently before 50 51
    assert idx.draft(2) == [40, 41]


def test_no_draft_without_an_earlier_occurrence():
    idx = NgramIndex([1, 2, 3])
    assert idx.draft(4) == []  # the last n-gram only ends the sequence itself
    idx.extend([99])
    assert idx.draft(4) == []
    assert NgramIndex([]).draft(4) == [] and NgramIndex([1, 2, 1, 2]).draft(0) == []


def test_the_reply_itself_is_looked_up_as_it_grows():
    idx = NgramIndex([10, 11])
    idx.extend([20, 21, 22, 23, 20, 21])
    assert idx.draft(5) == [22, 23, 20, 21]  # its own earlier text, up to where it is now

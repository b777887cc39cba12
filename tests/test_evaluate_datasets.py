"""Sampling for eval: nested seeded samples (a run can grow), the original sampler unchanged."""

import random
from pathlib import Path

from macsql.evaluate.datasets import Example, select


def _examples(n=100):
    return [Example(str(i), f"db{i % 3}", f"q{i}", "SELECT 1", Path("x.sqlite")) for i in range(n)]


def test_nested_samples_are_prefixes():
    ex = _examples()
    small = select(ex, limit=10, seed=7, nested=True)
    big = select(ex, limit=60, seed=7, nested=True)
    assert big[:10] == small and len({e.question_id for e in big}) == 60
    assert select(ex, limit=10, seed=8, nested=True) != small


def test_default_sampler_is_random_sample():
    ex = _examples()
    assert select(ex, limit=10, seed=3) == random.Random(3).sample(ex, 10)
    assert select(ex, limit=5) == ex[:5]
    assert {e.db_id for e in select(ex, dbs=["db1"])} == {"db1"}

import os
import sqlite3
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Caches (schemas, demo database, assembled weights) go to a per-test folder, never ~/.cache."""
    monkeypatch.setenv("MACSQL_CACHE", str(tmp_path / "macsql-cache"))


def make_db(path: Path, sql: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.commit()
    conn.close()
    return path


SHOP_SQL = """
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(customer_id),
                     amount REAL, status TEXT);
INSERT INTO customers VALUES (1, 'Ana', 'Spain'), (2, 'Bo', 'Sweden'), (3, 'Cy', 'Spain');
INSERT INTO orders VALUES (10, 1, 12.5, 'shipped'), (11, 1, 3.0, 'pending'), (12, 2, 99.0, 'shipped');
"""


@pytest.fixture
def shop_db(tmp_path) -> Path:
    return make_db(tmp_path / "shop.sqlite", SHOP_SQL)


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory) -> Path:
    from tests.tiny import tiny_causal

    return tiny_causal(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    from tests.tiny import tiny_t5

    return tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


def needs_shared_data():
    return pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"benchmark data not found at {SHARED_DATA} "
                              "(it sits beside the repo as ../shared/data on project machines)")

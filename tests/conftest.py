import json
import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Caches (schemas, demo database, assembled weights) go to a per-test folder, never ~/.cache; a
    developer's own MACSQL_* variables and config file do not reach the tests."""
    for name in [n for n in os.environ if n.startswith("MACSQL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MACSQL_CACHE", str(tmp_path / "macsql-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))


def make_db(path: Path, sql: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.commit()
    conn.close()
    return path


def make_duckdb(path: Path, sql: str) -> Path:
    """A DuckDB file built from SQL text (callers skip first when duckdb is not installed)."""
    import duckdb

    conn = duckdb.connect(str(path))
    conn.execute(sql)
    conn.close()
    return path


SHOP_SQL = """
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(customer_id),
                     amount REAL, status TEXT);
INSERT INTO customers VALUES (1, 'Ana', 'Spain'), (2, 'Bo', 'Sweden'), (3, 'Cy', 'Spain');
INSERT INTO orders VALUES (10, 1, 12.5, 'shipped'), (11, 1, 3.0, 'pending'), (12, 2, 99.0, 'shipped');
"""


def spain_count(db: Path) -> int:
    """How many demo customers live in Spain, read straight from the file (the right answer to check)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM customers WHERE country = 'Spain'").fetchone()[0]
    finally:
        conn.close()


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


class _ChatHandler(BaseHTTPRequestHandler):
    """Just enough of the OpenAI chat API: POST /v1/chat/completions, answered by `reply(body)`."""

    reply = None  # set per server: request body -> assistant text
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": i, "message": {"role": "assistant", "content": type(self).reply(body)},
                                        "finish_reason": "stop"} for i in range(body.get("n", 1))],
                           "usage": {"prompt_tokens": 42, "completion_tokens": 7}}).encode()
        self.send(200, data)

    def send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def openai_server():
    """Start a real HTTP server on loopback speaking the OpenAI chat API: `url, requests = openai_server(reply)`,
    where `reply(body)` gives the assistant's text and `requests` collects (path, body) of every call."""
    servers = []

    def start(reply):
        handler = type("Handler", (_ChatHandler,), {"reply": staticmethod(reply), "requests": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", handler.requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def demo_reply(messages, agent):
    """A scripted model for the demo shop database (macsql serve tests, its browser test): customers per
    country, customers in Spain, and a follow-up that narrows the previous question to Madrid, which it
    answers only when the earlier turn is in its prompt."""
    prompt = messages[-1]["content"]
    question = prompt.rsplit("Question:", 1)[-1].lower()
    if "madrid" in question:
        sql = ("SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain' AND city = 'Madrid'"
               if "SQL: SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain'" in prompt
               else "SELECT 'no context' AS answer")
    elif "each country" in question:
        sql = "SELECT country, COUNT(*) AS customers FROM customers GROUP BY country ORDER BY country"
    else:
        sql = "SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain'"
    return f"Steps:\n1. filter the customers\nFinal SQL:\n```sql\n{sql}\n```"

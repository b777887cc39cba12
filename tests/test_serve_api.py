"""`macsql serve`'s HTTP API with a scripted model: every endpoint, streaming, follow-ups, the token, limits,
hostile SQL, markup in values, and load (a slow question, a client that leaves, one model call at a time)."""

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from macsql.backends.base import Generation, ScriptedLLM
from macsql.cli import main
from macsql.demo import DEMO_QUESTIONS, DEMO_SQL, build
from macsql.pipeline import Pipeline
from macsql.serve.app import STATIC, create_app
from macsql.serve.server import serving_in_thread
from tests.conftest import demo_reply, make_db

LOCAL = "http://127.0.0.1"  # the server answers only requests that name it (TestClient's default is testserver)


def count(db, sql):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    """The bundled demo database, built once for this module (the per-test cache would rebuild it)."""
    return build(DEMO_SQL, tmp_path_factory.mktemp("demo") / "shop.sqlite")


@pytest.fixture
def demo_llm():
    return ScriptedLLM(demo_reply)


@pytest.fixture
def client(demo_llm, demo_db):
    app = create_app(Pipeline(demo_llm, candidates=1), {"demo": demo_db}, examples={"demo": list(DEMO_QUESTIONS)})
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def sse_events(text):
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_health_databases_and_schema(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "scripted" and health["questions_running"] == 0
    dbs = client.get("/api/databases").json()["databases"]
    assert [d["name"] for d in dbs] == ["demo"] and "How many customers live in Spain?" in dbs[0]["examples"]
    schema = client.get("/api/schema", params={"db": "demo"}).json()
    assert "CREATE TABLE customers" in schema["text"]
    assert {"customers", "orders", "products"} <= {t["name"] for t in schema["tables"]}
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/ask", "/api/run", "/api/schema"}


def test_ask_returns_sql_rows_trace_and_a_conversation(client, demo_db):
    r = client.post("/api/ask", json={"question": "How many customers live in Spain?", "db": "demo"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sql"] == "SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain'"
    assert body["columns"] == ["customers"]
    assert body["rows"] == [[count(demo_db, "SELECT COUNT(*) FROM customers WHERE country = 'Spain'")]]
    assert body["error"] is None and body["seconds"] > 0 and len(body["conversation"]) == 32
    assert "decomposer" in [t["agent"] for t in body["trace"]]
    assert all("prompt" not in t for t in body["trace"])  # prompts stay on the server
    assert body["turns"] == [{"question": "How many customers live in Spain?", "sql": body["sql"]}]


def test_follow_up_sees_the_previous_question_and_sql(client, demo_llm, demo_db):
    first = client.post("/api/ask", json={"question": "How many customers live in Spain?", "db": "demo"}).json()
    r = client.post("/api/ask", json={"question": "and only those in Madrid?", "db": "demo",
                                      "conversation": first["conversation"]})
    body = r.json()
    assert "city = 'Madrid'" in body["sql"]
    assert body["rows"] == [[count(demo_db, "SELECT COUNT(*) FROM customers WHERE city = 'Madrid'")]]
    assert [t["question"] for t in body["turns"]] == ["How many customers live in Spain?", "and only those in Madrid?"]
    prompt = demo_llm.calls[-1][1][-1]["content"]
    assert "- Question: How many customers live in Spain?" in prompt and f"SQL: {first['sql']}" in prompt
    # without the conversation the same words have no context
    alone = client.post("/api/ask", json={"question": "and only those in Madrid?", "db": "demo"}).json()
    assert alone["rows"] == [["no context"]]
    r = client.post("/api/ask", json={"question": "x?", "db": "demo", "conversation": "f" * 32})
    assert r.status_code == 404 and "unknown conversation" in r.json()["detail"]


def test_stream_sends_each_step_then_the_answer(client):
    with client.stream("POST", "/api/ask/stream", json={"question": "How many customers live in Spain?",
                                                        "db": "demo"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "answer" and set(kinds[1:-1]) == {"step"}
    steps = [d for k, d in events if k == "step"]
    nodes = [s["node"] for s in steps]
    assert {"schema", "decomposer", "execute"} <= set(nodes) and nodes.index("schema") < nodes.index("execute")
    decomposer = next(s for s in steps if s["node"] == "decomposer")
    assert decomposer["changed"]["drafts"][0]["sql"].startswith("SELECT COUNT(*)")
    assert decomposer["trace"][0]["prompt_tokens"] > 0 and "prompt" not in decomposer["trace"][0]
    assert "schema" in next(s for s in steps if s["node"] == "schema")["omitted"]  # big values stay out
    answer = events[-1][1]
    assert answer["conversation"] == events[0][1]["conversation"] and answer["rows"][0][0] > 0


def test_run_an_edited_query_and_follow_up_on_it(client, demo_llm, demo_db):
    first = client.post("/api/ask", json={"question": "How many customers live in Spain?", "db": "demo"}).json()
    edited = "SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain' AND signup_date >= '2025-06-01'"
    r = client.post("/api/run", json={"db": "demo", "sql": edited, "conversation": first["conversation"]})
    assert r.status_code == 200, r.text
    expected = count(demo_db, "SELECT COUNT(*) FROM customers WHERE country = 'Spain' "
                                     "AND signup_date >= '2025-06-01'")
    assert r.json()["columns"] == ["customers"] and r.json()["rows"] == [[expected]]
    client.post("/api/ask", json={"question": "and only those in Madrid?", "db": "demo",
                                  "conversation": first["conversation"]})
    assert f"SQL: {edited}" in demo_llm.calls[-1][1][-1]["content"]  # the follow-up builds on the edit


@pytest.mark.parametrize("sql", [
    "DROP TABLE customers",
    "DELETE FROM customers",
    "UPDATE products SET price = 0",
    "SELECT 1; DROP TABLE customers",
    "INSERT INTO categories VALUES (9, 'x', 'y')",
    "ATTACH DATABASE '/tmp/evil.sqlite' AS evil",
    "PRAGMA writable_schema = 1",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "SELECT load_extension('/tmp/evil.so')",
])
def test_hostile_sql_is_refused_and_the_database_is_unchanged(client, sql, demo_db):
    db = demo_db
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = client.post("/api/run", json={"db": "demo", "sql": sql})
    assert r.status_code == 400 and r.json()["detail"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not Path("/tmp/evil.sqlite").exists() or sql.startswith("SELECT")


def test_unknown_database_names_and_paths_are_refused(client, shop_db):
    r = client.post("/api/ask", json={"question": "How many?", "db": "demoo"})
    assert r.status_code == 404 and r.json()["detail"].startswith("unknown database 'demoo' (did you mean 'demo'?)")
    for path in (str(shop_db), "/etc/passwd", "../shop.sqlite"):  # a request never opens a path
        assert client.get("/api/schema", params={"db": path}).status_code == 404
        assert client.post("/api/run", json={"db": path, "sql": "SELECT 1"}).status_code == 404


def test_oversized_and_malformed_requests(client):
    r = client.post("/api/ask", content=json.dumps({"question": "x" * 70_000, "db": "demo"}),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "the limit is 65536" in r.json()["detail"]
    r = client.post("/api/ask", json={"question": "x" * 2001, "db": "demo"})
    assert r.status_code == 422 and r.json()["detail"] == "question: String should have at most 2000 characters"
    r = client.post("/api/ask", json={"question": "   ", "db": "demo"})
    assert r.status_code == 400 and "question is empty" in r.json()["detail"]
    r = client.post("/api/run", json={"db": "demo", "sql": "SELECT 1", "path": "/etc/passwd"})
    assert r.status_code == 422 and "path" in r.json()["detail"]


def test_token_is_checked_on_every_api_call(demo_llm, demo_db):
    app = create_app(Pipeline(demo_llm, candidates=1), {"demo": demo_db}, token="s3cret")
    with TestClient(app, base_url=LOCAL) as c:
        calls = [("GET", "/api/databases", None), ("GET", "/api/schema?db=demo", None),
                 ("POST", "/api/ask", {"question": "How many customers live in Spain?", "db": "demo"}),
                 ("POST", "/api/ask/stream", {"question": "How many customers live in Spain?", "db": "demo"}),
                 ("POST", "/api/run", {"db": "demo", "sql": "SELECT 1"}),
                 ("POST", "/api/run", {"db": "demo", "sql": "SELECT 1", "page": 0}),
                 ("POST", "/api/download", {"db": "demo", "sql": "SELECT 1"}),
                 ("POST", "/api/cancel", {"question_id": "0" * 32}),
                 ("GET", "/api/conversations", None)]
        for method, path, body in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"], (path, headers)
            r = c.request(method, path, json=body, headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == 200, (path, r.text)
        assert c.get("/health").status_code == 200  # liveness carries no data
        assert len(demo_llm.calls) == 2  # only the two authorised questions reached the model


def test_markup_in_values_and_replies_is_data(tmp_path):
    db = make_db(tmp_path / "xss.sqlite", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
                 "INSERT INTO notes VALUES (1, '<script>window.pwned = 1</script>'), (2, '<img src=x onerror=alert(1)>');")
    llm = ScriptedLLM(lambda m, a: "<script>alert(2)</script>\nFinal SQL:\n```sql\nSELECT body FROM notes\n```")
    with TestClient(create_app(Pipeline(llm, candidates=1), {"notes": db}), base_url=LOCAL) as c:
        body = c.post("/api/ask", json={"question": "All notes?", "db": "notes"}).json()
        assert body["rows"] == [["<script>window.pwned = 1</script>"], ["<img src=x onerror=alert(1)>"]]
        page = c.get("/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
    js = (STATIC / "app.js").read_text()
    # the page builds its DOM with textContent only (the browser test checks the rendering itself)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js


class Overlap:
    """Counts how many threads are inside `with overlap:` at once (`most`) and how often it was entered."""

    def __init__(self):
        self.inside = self.most = self.entered = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            self.inside += 1
            self.entered += 1
            self.most = max(self.most, self.inside)

    def __exit__(self, *exc):
        with self._lock:
            self.inside -= 1


class SlowLLM:
    """A local-model stand-in: not thread-safe by contract, so the server must call it one at a time."""

    name = "slow"

    def __init__(self, seconds=0.05, gate=None):
        self.seconds, self.gate = seconds, gate
        self.overlap = Overlap()

    def generate(self, prompts, *, agent="", max_new_tokens=512):
        with self.overlap:
            if self.gate is not None:
                self.gate.wait(10)
            time.sleep(self.seconds)
            return [Generation(demo_reply(p, agent), 10, 10, self.seconds) for p in prompts]


def test_model_calls_are_serialised_but_health_stays_responsive(demo_db):
    gate = threading.Event()
    llm = SlowLLM(seconds=0.02, gate=gate)
    app = create_app(Pipeline(llm, candidates=1), {"demo": demo_db}, workers=4)
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        results = []

        def ask():
            results.append(http.post("/api/ask", json={"question": "How many customers live in Spain?",
                                                        "db": "demo"}))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while http.get("/health").json()["questions_running"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        start = time.perf_counter()
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["questions_running"] == 4
        assert time.perf_counter() - start < 2  # the model is busy; the event loop is not
        assert http.get("/").status_code == 200
        gate.set()
        for t in threads:
            t.join(30)
    assert [r.status_code for r in results] == [200] * 4
    assert llm.overlap.entered == 4 and llm.overlap.most == 1  # one model call at a time


def test_a_client_that_leaves_cancels_nothing(demo_db):
    gate = threading.Event()
    app = create_app(Pipeline(SlowLLM(seconds=0.0, gate=gate), candidates=1), {"demo": demo_db})
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/api/ask/stream", json={"question": "How many customers live in Spain?",
                                                          "db": "demo"}) as r:
            lines = r.iter_lines()
            assert next(lines) == "event: start"
            conversation = json.loads(next(lines).removeprefix("data: "))["conversation"]
        # the first client has gone while its question waits for the model; a second one asks
        other = threading.Thread(target=lambda: results.append(
            http.post("/api/ask", json={"question": "How many customers live in each country?", "db": "demo"})))
        results = []
        other.start()
        gate.set()
        other.join(30)
        assert results[0].status_code == 200 and results[0].json()["columns"] == ["country", "customers"]
        deadline = time.monotonic() + 10
        while not app.state.server.store.turns(conversation) and time.monotonic() < deadline:
            time.sleep(0.02)
        # the abandoned question still ran to the end and its turn was kept for a later follow-up
        assert app.state.server.store.turns(conversation)[0]["sql"].startswith("SELECT COUNT(*)")
        assert http.get("/health").json()["questions_running"] == 0


def test_serve_refuses_a_public_bind_without_a_token(monkeypatch):
    monkeypatch.delenv("MACSQL_TOKEN", raising=False)
    r = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--db", "demo"])
    assert r.exit_code == 1
    assert r.output.strip() == (
        "Error: --host 0.0.0.0 is reachable from other machines, so a token is required: pass --token TOKEN "
        "or set $MACSQL_TOKEN (clients send `Authorization: Bearer TOKEN`), or bind --host 127.0.0.1")


def test_serve_start_up_checks(monkeypatch, shop_db, tmp_path):
    from macsql.demo import demo_db_path, named_databases
    from macsql.serve.server import resolve_token

    monkeypatch.delenv("MACSQL_TOKEN", raising=False)
    assert resolve_token("127.0.0.1", None) is None and resolve_token("::1", None) is None
    assert resolve_token("localhost", "") is None
    assert resolve_token("0.0.0.0", "t") == "t"
    monkeypatch.setenv("MACSQL_TOKEN", "from-env")
    assert resolve_token("192.168.1.5", None) == "from-env"
    assert named_databases(["demo", f"sales={shop_db}", str(shop_db)]) == {
        "demo": demo_db_path(), "sales": shop_db, "shop": shop_db}
    runner = CliRunner()
    r = runner.invoke(main, ["serve", "--db", str(tmp_path / "missing.sqlite")])
    assert r.exit_code == 1 and r.output.startswith("Error: database") and "does not exist" in r.output
    r = runner.invoke(main, ["serve", "--db", str(shop_db), "--db", f"shop={shop_db}"])
    assert r.exit_code == 1 and "two databases are named 'shop'" in r.output


def test_the_cli_and_the_serve_package_import_no_web_stack():
    code = ("import sys; import macsql.cli, macsql.serve, macsql.serve.server; "
            "assert not {'fastapi', 'uvicorn', 'starlette'} & set(sys.modules); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_an_openai_compatible_backend_gets_questions_in_parallel(openai_server, demo_db):
    from macsql.backends.openai import OpenAICompatLLM

    overlap = Overlap()

    def reply(body):
        with overlap:
            time.sleep(0.3)
            return demo_reply(body["messages"], "decomposer")

    url, requests = openai_server(reply)
    app = create_app(Pipeline(OpenAICompatLLM("m", base_url=url), candidates=1), {"demo": demo_db}, workers=4)
    with serving_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        results = []
        threads = [threading.Thread(target=lambda: results.append(http.post(
            "/api/ask", json={"question": "How many customers live in Spain?", "db": "demo"})))
            for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert [r.status_code for r in results] == [200] * 4 and len(requests) == 4
    assert overlap.most > 1  # the server took several questions at once: no lock in front of it

"""What the page of `macsql serve` relies on, through the HTTP API with a scripted model: server-side pages
and sorting, CSV and JSON downloads (all equal to the executor's rows), stopping a question, the SSE
keep-alive, the conversation store across a restart, the one-line summary and the self-hosted API docs."""

import csv
import io
import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from macsql.backends.base import ScriptedLLM
from macsql.demo import DEMO_SQL, build
from macsql.pipeline import Pipeline
from macsql.serve.app import STATIC, create_app
from macsql.serve.server import serving_in_thread
from macsql.serve.state import page_query, restore_names, summary_line
from macsql.sqlexec import execute
from tests.conftest import demo_reply, make_db

LOCAL = "http://127.0.0.1"
ORDERS = "SELECT order_id, customer_id, status FROM orders"
SPAIN = "How many customers live in Spain?"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    return build(DEMO_SQL, tmp_path_factory.mktemp("demo") / "shop.sqlite")


def make_app(db, llm=None, **kwargs):
    return create_app(Pipeline(llm or ScriptedLLM(demo_reply), candidates=1), {"demo": db}, **kwargs)


@pytest.fixture
def client(demo_db, tmp_path):
    with TestClient(make_app(demo_db, store=tmp_path / "store.sqlite"), base_url=LOCAL) as c:
        yield c


def rows_of(db, sql):
    result = execute(db, sql)
    assert result.error is None, result.error
    return [list(r) for r in result.rows]


def sse_blocks(text):
    out = []
    for block in text.strip().split("\n\n"):
        if block.startswith(":"):
            out.append(("comment", block))
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# ------------------------------------------------------------------------------ pages and sorting
def test_pages_and_sorting_equal_the_executors_rows(client, demo_db):
    whole = rows_of(demo_db, ORDERS)
    got = []
    for page in range(3):
        r = client.post("/api/run", json={"db": "demo", "sql": ORDERS, "page": page, "page_size": 15})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["columns"] == ["order_id", "customer_id", "status"] and body["total_rows"] == len(whole)
        got += body["rows"]
    assert got == whole
    for column, descending in [(0, True), (2, False), (1, True)]:
        direction = "DESC" if descending else "ASC"
        expected = rows_of(demo_db, f"SELECT * FROM ({ORDERS}) ORDER BY {column + 1} {direction} LIMIT 10 OFFSET 10")
        r = client.post("/api/run", json={"db": "demo", "sql": ORDERS, "page": 1, "page_size": 10,
                                          "order_by": column, "descending": descending})
        assert r.json()["rows"] == expected and r.json()["order_by"] == column
    # a trailing semicolon and a trailing comment do not break the wrapper; repeated names stay as written
    r = client.post("/api/run", json={"db": "demo", "sql": "SELECT order_id, order_id FROM orders; -- two",
                                      "page": 0, "page_size": 5, "order_by": 0, "descending": True})
    assert r.status_code == 200, r.text
    assert r.json()["columns"] == ["order_id", "order_id"]
    assert r.json()["rows"] == rows_of(demo_db, "SELECT order_id, order_id FROM orders ORDER BY 1 DESC LIMIT 5")
    assert r.json()["summary"].startswith(f"{len(whole)} rows; the first: order_id = ")


def test_paged_queries_keep_the_executors_rules(client, demo_db):
    r = client.post("/api/run", json={"db": "demo", "sql": "DROP TABLE customers", "page": 0})
    assert r.status_code == 400 and r.json()["detail"] == "only SELECT/WITH queries are allowed, got DROP"
    r = client.post("/api/run", json={"db": "demo", "sql": ORDERS, "page": 0, "order_by": 7})
    assert r.status_code == 400 and r.json()["detail"] == "order_by 7 is not a column of the result (0-based)"
    r = client.post("/api/run", json={"db": "demo", "sql": ORDERS, "order_by": "1; DROP TABLE orders"})
    assert r.status_code == 422  # only a column position goes into the wrapper
    r = client.post("/api/run", json={"db": "demo", "sql": ORDERS, "page_size": 100_000})
    assert r.status_code == 422
    r = client.post("/api/run", json={"db": "demo", "sql": "SELECT file FROM pragma_database_list", "page": 0})
    assert r.status_code == 400 and "pragma_database_list is not served" in r.json()["detail"]
    assert page_query("SELECT 1 -- note", order_by=2, descending=True) == \
        "SELECT * FROM (\nSELECT 1\n) AS q ORDER BY 3 DESC"
    assert restore_names(["id", "id:1", "n:2", "a:b"]) == ["id", "id", "n:2", "a:b"]


def test_downloads_equal_the_executors_rows(client, demo_db):
    sql = "SELECT customer_id, first_name, country, city FROM customers"
    r = client.post("/api/download", json={"db": "demo", "sql": sql, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="demo-result.csv"'
    assert r.headers["x-macsql-truncated"] == "" and r.headers["x-macsql-rows"] == str(len(rows_of(demo_db, sql)))
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["customer_id", "first_name", "country", "city"]
    assert table[1:] == [["" if v is None else str(v) for v in row] for row in rows_of(demo_db, sql)]
    r = client.post("/api/download", json={"db": "demo", "sql": sql, "format": "json", "order_by": 1,
                                           "descending": True})
    assert r.json() == {"columns": ["customer_id", "first_name", "country", "city"],
                        "rows": rows_of(demo_db, sql + " ORDER BY 2 DESC")}
    r = client.post("/api/download", json={"db": "demo", "sql": "DELETE FROM customers", "format": "csv"})
    assert r.status_code == 400 and "only SELECT/WITH" in r.json()["detail"]


def test_a_download_says_when_a_cap_cut_it(demo_db, tmp_path):
    app = create_app(Pipeline(ScriptedLLM(demo_reply), candidates=1, max_rows=5), {"demo": demo_db},
                     store=tmp_path / "s.sqlite")
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/download", json={"db": "demo", "sql": ORDERS, "format": "csv"})
        assert r.headers["x-macsql-truncated"] == "rows" and len(r.text.strip().splitlines()) == 6
        r = c.post("/api/run", json={"db": "demo", "sql": ORDERS, "page": 0, "page_size": 3})
        # the count and the pages cover the whole result; only a whole-result reply stops at the row cap
        assert r.json()["total_rows"] == len(rows_of(demo_db, ORDERS)) and len(r.json()["rows"]) == 3


def test_a_csv_download_is_safe_to_open_in_a_spreadsheet(tmp_path):
    # a cell starting with = + - @ (or a tab or CR) runs as a formula in Excel and LibreOffice: the page's
    # CSV is for spreadsheets, so such text gets a leading '; numbers stay numbers; JSON keeps everything
    db = make_db(tmp_path / "f.sqlite", """CREATE TABLE f ("=c" TEXT, v TEXT, n INTEGER, x REAL);
        INSERT INTO f VALUES ('=HYPERLINK("http://x")', '@SUM(A1)', -5, -1.5), ('	x', '-5', 3, NULL),
                             ('plain', '+1+cmd|x', 0, 2.5);""")
    sql = "SELECT * FROM f"
    with TestClient(make_app(db, store=tmp_path / "s.sqlite"), base_url=LOCAL) as c:
        r = c.post("/api/download", json={"db": "demo", "sql": sql, "format": "csv"})
        assert r.status_code == 200, r.text
        assert list(csv.reader(io.StringIO(r.text))) == [
            ["'=c", "v", "n", "x"], ['\'=HYPERLINK("http://x")', "'@SUM(A1)", "-5", "-1.5"],
            ["'\tx", "-5", "3", ""], ["plain", "'+1+cmd|x", "0", "2.5"]]
        r = c.post("/api/download", json={"db": "demo", "sql": sql, "format": "csv", "spreadsheet_safe": False})
        assert list(csv.reader(io.StringIO(r.text)))[1:] == [["" if v is None else str(v) for v in row]
                                                             for row in rows_of(db, sql)]
        r = c.post("/api/download", json={"db": "demo", "sql": sql, "format": "json"})
        assert r.json() == {"columns": ["=c", "v", "n", "x"], "rows": rows_of(db, sql)}
        assert r.json()["rows"][0][:3] == ['=HYPERLINK("http://x")', "@SUM(A1)", -5]


# ---------------------------------------------------------------------------------- the summary
def test_the_summary_line_comes_from_the_result():
    assert summary_line(["customers"], [[3]]) == "customers: 3"
    assert summary_line(["country", "n"], [["Spain", 3], ["France", 2]]) == \
        "2 rows; the first: country = Spain, n = 3"
    assert summary_line(["a", "b"], [[None, "x" * 100]]) == f"1 row: a = NULL, b = {'x' * 59}…"
    assert summary_line(["a"], []) == "No rows: nothing in the database matches."
    assert summary_line(["a"], [[1]] * 3, truncated=True).startswith("3 rows or more (the row cap was reached)")
    assert summary_line([], [], error="no such column: total", hint="`total` is in orders") == \
        "Cannot answer: no such column: total — `total` is in orders"


def test_an_unanswerable_question_says_why_with_the_refiners_hint(demo_db, tmp_path):
    def reply(messages, agent):
        return "Final SQL:\n```sql\nSELECT total FROM customers\n```"

    app = create_app(Pipeline(ScriptedLLM(reply), candidates=1), {"demo": demo_db}, store=tmp_path / "s.sqlite")
    with TestClient(app, base_url=LOCAL) as c:
        body = c.post("/api/ask", json={"question": "What is the total?", "db": "demo"}).json()
    assert body["error"] and body["summary"].startswith("Cannot answer: no such column: total")
    refiner = [t for t in body["trace"] if t["agent"] == "refiner"]
    if refiner and "Hint:" in refiner[-1]["problem"]:
        assert " — " in body["summary"]


# ------------------------------------------------------------------------------ stop, keep-alive
def gated_llm(gate: threading.Event) -> ScriptedLLM:
    def reply(messages, agent):
        gate.wait(20)
        return demo_reply(messages, agent)
    return ScriptedLLM(reply)


def test_stop_ends_one_question_at_its_next_step_and_leaves_the_others(demo_db, tmp_path):
    gate = threading.Event()
    llm = gated_llm(gate)
    app = make_app(demo_db, llm, store=tmp_path / "s.sqlite")
    body = {"question": SPAIN, "db": "demo"}
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        other = []
        worker = threading.Thread(target=lambda: other.append(http.post("/api/ask", json=body)))
        worker.start()
        with http.stream("POST", "/api/ask/stream", json=body) as r:
            lines = r.iter_lines()
            assert next(lines) == "event: start"
            start = json.loads(next(lines).removeprefix("data: "))
            deadline = time.monotonic() + 10
            while len(llm.calls) < 2 and time.monotonic() < deadline:  # both questions wait for the model
                time.sleep(0.02)
            cancel = http.post("/api/cancel", json={"question_id": start["question_id"]})
            assert cancel.json() == {"question_id": start["question_id"], "cancelled": True}
            gate.set()
            events = sse_blocks("\n".join(lines))
        assert events[-1] == ("cancelled", {"detail": "the question was stopped",
                                            "question_id": start["question_id"]})
        assert "execute" not in [d["node"] for k, d in events if k == "step"]  # stopped at the next step
        worker.join(30)
        assert other[0].status_code == 200 and other[0].json()["rows"]  # the other question went on
        assert app.state.server.store.turns(start["conversation"]) == []  # a stopped question leaves no turn
        assert http.post("/api/cancel", json={"question_id": start["question_id"]}).json()["cancelled"] is False
        again = http.post("/api/ask", json={**body, "conversation": start["conversation"]})
        assert again.status_code == 200 and again.json()["turns"] == [{"question": SPAIN, "sql": again.json()["sql"]}]
        assert http.get("/health").json()["questions_running"] == 0


def test_an_idle_stream_gets_keep_alive_comments(demo_db, tmp_path):
    gate = threading.Event()
    app = make_app(demo_db, gated_llm(gate), store=tmp_path / "s.sqlite", keepalive_s=0.05)
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/api/ask/stream", json={"question": SPAIN, "db": "demo"}) as r:
            seen = []
            for line in r.iter_lines():
                seen.append(line)
                if line == ": keep-alive":
                    gate.set()
            events = sse_blocks("\n".join(seen))
    assert ("comment", ": keep-alive") in events and events[-1][0] == "answer"


# --------------------------------------------------------------------------------- conversations
def test_conversations_survive_a_restart(demo_db, tmp_path):
    store = tmp_path / "conversations.sqlite"
    with TestClient(make_app(demo_db, store=store), base_url=LOCAL) as c:
        first = c.post("/api/ask", json={"question": SPAIN, "db": "demo"}).json()
        assert first["turn"] == 0 and first["summary"].startswith("customers: ")
    llm = ScriptedLLM(demo_reply)
    with TestClient(make_app(demo_db, llm, store=store), base_url=LOCAL) as c:  # a new server, the same file
        listed = c.get("/api/conversations", params={"db": "demo"}).json()["conversations"]
        assert [(x["id"], x["title"], x["turns"]) for x in listed] == [(first["conversation"], SPAIN, 1)]
        saved = c.get(f"/api/conversations/{first['conversation']}").json()
        assert saved["db"] == "demo" and [t["n"] for t in saved["turns"]] == [0]
        assert saved["turns"][0]["sql"] == first["sql"] and saved["turns"][0]["summary"] == first["summary"]
        follow = c.post("/api/ask", json={"question": "and only those in Madrid?", "db": "demo",
                                          "conversation": first["conversation"]}).json()
        assert "city = 'Madrid'" in follow["sql"] and follow["turn"] == 1  # the model saw the saved turn
        assert c.get("/api/conversations/" + "0" * 32).status_code == 404
        assert c.get("/api/conversations", params={"db": "nope"}).status_code == 404


# ------------------------------------------------------------------------------------ API docs
def test_the_api_docs_are_served_from_this_server(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    assert 'src="/static/docs.js"' in r.text
    for text in (r.text, (STATIC / "docs.js").read_text()):
        assert "http://" not in text and "https://" not in text  # nothing from a CDN
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/run", "/api/download", "/api/cancel", "/api/conversations"} <= paths.keys()
    for name in ("docs.js", "app.js"):
        js = (STATIC / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in js

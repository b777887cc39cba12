"""`macsql serve` against hostile clients: foreign Host headers (DNS rebinding) on every endpoint, replies
bigger than their values, a burst of slow queries, file paths in results, the token on the API's
description, a busy port, clients that send a request a byte at a time, and a model server's malformed
reply. Real HTTP (TestClient, or uvicorn on loopback), tiny databases built from SQL text."""

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from macsql.backends.base import ScriptedLLM
from macsql.cli import main
from macsql.errors import InputError
from macsql.pipeline import Pipeline
from macsql.serve.app import create_app
from macsql.serve.server import allowed_hosts, bind_port, host_name, serving_in_thread
from macsql.serve.state import redact
from tests.conftest import make_db

LOCAL = "http://127.0.0.1"
PETS_SQL = """
CREATE TABLE pets (pet_id INTEGER PRIMARY KEY, name TEXT, kind TEXT);
INSERT INTO pets VALUES (1, 'Rex', 'dog'), (2, 'Tom', 'cat'), (3, 'Kit', 'cat');
"""
PETS_SELECT = "SELECT name FROM pets WHERE kind = 'cat' ORDER BY name"


def reply_with(sql):
    return lambda messages, agent: f"Final SQL:\n```sql\n{sql}\n```"


@pytest.fixture
def pets_db(tmp_path):
    return make_db(tmp_path / "pets.sqlite", PETS_SQL)


def pets_app(db, sql=PETS_SELECT, **kwargs):
    llm = ScriptedLLM(reply_with(sql))
    return create_app(Pipeline(llm, candidates=1), {"pets": db}, **kwargs), llm


def one_line_json(r):
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text[:200])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


# Every route the app serves, with a body where it takes one.
ENDPOINTS = [
    ("GET", "/", None), ("GET", "/static/app.js", None), ("GET", "/static/style.css", None),
    ("GET", "/favicon.ico", None), ("GET", "/health", None), ("GET", "/docs", None),
    ("GET", "/openapi.json", None), ("GET", "/api/databases", None), ("GET", "/api/schema?db=pets", None),
    ("POST", "/api/ask", {"question": "Which pets are cats?", "db": "pets"}),
    ("POST", "/api/ask/stream", {"question": "Which pets are cats?", "db": "pets"}),
    ("POST", "/api/run", {"db": "pets", "sql": "SELECT name FROM pets"}),
    ("POST", "/api/run", {"db": "pets", "sql": "SELECT name FROM pets", "page": 0, "order_by": 0}),
    ("POST", "/api/download", {"db": "pets", "sql": "SELECT name FROM pets", "format": "csv"}),
    ("POST", "/api/cancel", {"question_id": "0" * 32}), ("GET", "/api/conversations", None),
]


# ------------------------------------------------------------------------------------ Host header
@pytest.mark.parametrize("token", [None, "s3cret"])
def test_a_foreign_host_gets_400_on_every_endpoint(pets_db, token):
    app, llm = pets_app(pets_db, token=token)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(app, base_url=LOCAL) as c:
        for method, path, body in ENDPOINTS:
            for host in ("evil.example:8000", "evil.example", "127.0.0.1.evil.example", "localhost.evil:80",
                         "[::2]:8000", ""):
                r = c.request(method, path, json=body, headers={**auth, "Host": host})
                assert r.status_code == 400, (method, path, host, r.status_code)
                assert "does not answer to the Host" in one_line_json(r)
            for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"):
                r = c.request(method, path, json=body, headers={**auth, "Host": host})
                assert r.status_code in (200, 204), (method, path, host, r.text[:200])
    assert len(llm.calls) == 2 * 5  # only the allowed hosts' questions reached the model


def test_dns_rebinding_reads_nothing_from_a_real_server(pets_db):
    """The attack: a page on evil.example rebinds its name to 127.0.0.1 and posts to /api/run."""
    app, _ = pets_app(pets_db)
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        port = url.rsplit(":", 1)[1]
        r = http.post("/api/run", json={"db": "pets", "sql": "SELECT * FROM pets"},
                      headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 400 and "Rex" not in r.text
        assert one_line_json(r).startswith("this server does not answer to the Host 'evil.example:")
        r = http.post("/api/run", json={"db": "pets", "sql": "SELECT name FROM pets ORDER BY pet_id"})
        assert r.status_code == 200 and r.json()["rows"] == [["Rex"], ["Tom"], ["Kit"]]


def test_configured_and_wildcard_hosts(pets_db):
    app, _ = pets_app(pets_db, allowed_hosts=allowed_hosts("127.0.0.1", ["sql.example.org"]))
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/health", headers={"Host": "sql.example.org:8000"}).status_code == 200
        assert c.get("/health", headers={"Host": "other.example.org"}).status_code == 400
    # any Host only with a token: the token is then what keeps a foreign page out
    app, _ = pets_app(pets_db, token="t", allowed_hosts=allowed_hosts("0.0.0.0", [], "t"))
    with TestClient(app, base_url=LOCAL) as c:
        r = c.get("/api/databases", headers={"Host": "anything.example", "Authorization": "Bearer t"})
        assert r.status_code == 200
        assert c.get("/api/databases", headers={"Host": "anything.example"}).status_code == 401
    with pytest.raises(InputError, match="answering any Host header needs a token"):
        create_app(Pipeline(ScriptedLLM(reply_with("SELECT 1"))), {"pets": pets_db}, allowed_hosts=("*",))


def test_allowed_hosts_for_each_bind():
    loop = ("127.0.0.1", "localhost", "::1")
    assert allowed_hosts("127.0.0.1") == loop and allowed_hosts("::1") == loop
    assert allowed_hosts("localhost", ["SQL.example.org:8443"]) == (*loop, "sql.example.org")
    assert allowed_hosts("192.168.1.5", [], "t") == (*loop, "192.168.1.5")
    assert allowed_hosts("0.0.0.0", [], "t") == ("*",) and allowed_hosts("::", [], "t") == ("*",)
    assert allowed_hosts("0.0.0.0", ["gpu-box"], "t") == (*loop, "gpu-box")  # named: only those
    assert allowed_hosts("127.0.0.1", ["*"], "t") == ("*",)
    with pytest.raises(InputError, match="answering any Host header needs a token"):
        allowed_hosts("127.0.0.1", ["*"], None)
    with pytest.raises(InputError, match="is not a host name"):
        allowed_hosts("127.0.0.1", ["http://sql.example.org/"])
    assert [host_name(h) for h in ("[::1]:80", "Example.ORG:8000", "::1", "a.b")] == ["::1", "example.org", "::1", "a.b"]


def test_the_cli_checks_allowed_hosts_and_documents_them(monkeypatch):
    monkeypatch.delenv("MACSQL_TOKEN", raising=False)
    monkeypatch.setattr("macsql.cli.options.build_pipeline", lambda **kw: pytest.fail("no model should load"))
    r = CliRunner().invoke(main, ["serve", "--db", "demo", "--allowed-host", "http://x.example/"])
    assert r.exit_code == 1 and r.output.startswith("Error: --allowed-host 'http://x.example/' is not a host name")
    r = CliRunner().invoke(main, ["serve", "--db", "demo", "--allowed-host", "*"])
    assert r.exit_code == 1 and "answering any Host header needs a token" in r.output
    text = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    assert "--allowed-host NAME" in text and "DNS rebinding" in text and "the required token makes safe" in text


# ------------------------------------------------------------------------- token on /health, docs
def test_docs_and_health_details_need_the_token(pets_db):
    app, _ = pets_app(pets_db, token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/health").json() == {"status": "ok"}  # liveness only: no model name
        assert c.get("/health", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
        assert c.get("/health", headers=auth).json()["model"] == "scripted"
        for path in ("/docs", "/openapi.json"):
            assert c.get(path).status_code == 401 and "Authorization: Bearer" in one_line_json(c.get(path))
            assert c.get(path, headers=auth).status_code == 200
        assert "/api/run" in c.get("/openapi.json", headers=auth).json()["paths"]
        assert c.get("/redoc").status_code == 404
    app, _ = pets_app(pets_db)  # no token: nothing to hide behind
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/docs").status_code == 200 and c.get("/health").json()["model"] == "scripted"


# ---------------------------------------------------------------------------- reply size, paths
CONTROL_SQL = """
CREATE TABLE blobs (id INTEGER PRIMARY KEY, body TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
INSERT INTO blobs SELECT i, replace(hex(zeroblob(50000)), '0', char(1)) FROM n;
"""


def test_replies_are_capped_by_their_encoded_size(tmp_path):
    # 100,000 control characters a row are 600,000 bytes of JSON: the raw result is far under the
    # executor's 64 MB cap, the JSON reply would be six times the values
    db = make_db(tmp_path / "ctl.sqlite", CONTROL_SQL)
    llm = ScriptedLLM(reply_with("SELECT id, body FROM blobs ORDER BY id"))
    app = create_app(Pipeline(llm, candidates=1), {"ctl": db}, max_reply_bytes=1 << 20)
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/run", json={"db": "ctl", "sql": "SELECT id, body FROM blobs ORDER BY id"})
        assert r.status_code == 200 and len(r.content) < (1 << 20) + 10_000
        body = r.json()
        assert [row[0] for row in body["rows"]] == [1] and body["rows"][0][1] == "\x01" * 100_000
        assert body["truncated"] is True and body["note"].startswith("reply size cap reached: the first 1 rows")
        r = c.post("/api/run", json={"db": "ctl", "sql": "SELECT id FROM blobs"})
        assert len(r.json()["rows"]) == 10 and r.json()["truncated"] is False and "note" not in r.json()
        r = c.post("/api/ask", json={"question": "All blobs?", "db": "ctl"})
        assert r.status_code == 200 and len(r.content) < 2 << 20
        answer = r.json()
        assert len(answer["rows"]) == 1 and answer["truncated"] is True and "reply size cap" in answer["note"]
        assert answer["candidates"][0]["rows_truncated"] is True and answer["candidates"][0]["n_rows"] == 10
        with c.stream("POST", "/api/ask/stream", json={"question": "All blobs?", "db": "ctl"}) as s:
            events = s.read().decode().split("\n\n")
        assert "event: answer" in events[-2] and len(events[-2]) < 2 << 20
        assert all(len(e) < 64_000 for e in events[:-2])  # steps leave the big values out


def test_the_server_keeps_its_file_paths_to_itself(pets_db):
    app, _ = pets_app(pets_db, sql="SELECT file FROM pragma_database_list")
    where = str(pets_db.parent)
    with TestClient(app, base_url=LOCAL) as c:
        for sql in ("SELECT file FROM pragma_database_list", "select * from PRAGMA_Database_List",
                    'SELECT upper(file) FROM "pragma_database_list"'):
            r = c.post("/api/run", json={"db": "pets", "sql": sql})
            assert r.status_code == 400 and "pragma_database_list is not served" in one_line_json(r)
            assert where not in r.text
        r = c.post("/api/run", json={"db": "pets", "sql": "SELECT name FROM pragma_table_info('pets')"})
        assert r.status_code == 200 and r.json()["rows"] == [["pet_id"], ["name"], ["kind"]]
        # a model that writes the query itself: the executor refuses the pragma, and no reply holds the path
        r = c.post("/api/ask", json={"question": "Where is this database stored?", "db": "pets"})
        assert r.status_code == 200 and r.json()["rows"] == [] and where not in r.text
        assert r.json()["summary"] == "Cannot answer: not authorized (PRAGMA database_list is not allowed)"
        with c.stream("POST", "/api/ask/stream", json={"question": "Where is it?", "db": "pets"}) as s:
            text = s.read().decode()
        assert "event: answer" in text and where not in text
    # where a result or a message still holds a served database's path, a reply names the database instead
    assert redact({"rows": [[str(pets_db)]], "note": f"in {pets_db}"}, {str(pets_db): "pets"}) == \
        {"rows": [["<database pets>"]], "note": "in <database pets>"}


# ---------------------------------------------------------------------- concurrency of /api/run
SLOW_SQL = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def start_slow_query(http) -> tuple[threading.Thread, list]:
    """A runaway query holding the server's only query slot (until its deadline): its thread and the list
    its response lands in."""
    slow: list = []
    worker = threading.Thread(target=lambda: slow.append(http.post("/api/run", json={"db": "pets", "sql": SLOW_SQL})))
    worker.start()
    deadline = time.monotonic() + 10
    while http.get("/health").json()["queries_running"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.get("/health").json()["queries_running"] == 1
    return worker, slow


def test_a_burst_of_slow_queries_gets_429_and_starves_nothing(pets_db):
    llm = ScriptedLLM(reply_with(PETS_SELECT))
    app = create_app(Pipeline(llm, candidates=1, timeout_s=3), {"pets": pets_db}, run_workers=1, query_wait_s=0)
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        worker, slow = start_slow_query(http)
        r = http.post("/api/run", json={"db": "pets", "sql": "SELECT 1"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert one_line_json(r) == "1 queries are running; try again in a moment"
        # the schema and the questions have threads of their own
        assert http.get("/api/schema", params={"db": "pets"}).status_code == 200
        assert http.post("/api/ask", json={"question": "Cats?", "db": "pets"}).json()["rows"] == [["Kit"], ["Tom"]]
        worker.join(30)
        assert slow[0].status_code == 400 and "deadline" in one_line_json(slow[0])
        assert http.get("/health").json()["queries_running"] == 0
        assert http.post("/api/run", json={"db": "pets", "sql": "SELECT 1"}).json()["rows"] == [[1]]


def test_a_query_waits_for_a_slot_before_429(pets_db):
    """A page asked while every slot is taken waits for one (up to query_wait_s) instead of failing."""
    llm = ScriptedLLM(reply_with(PETS_SELECT))
    app = create_app(Pipeline(llm, candidates=1, timeout_s=1), {"pets": pets_db}, run_workers=1, query_wait_s=30)
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        worker, slow = start_slow_query(http)
        r = http.post("/api/run", json={"db": "pets", "sql": "SELECT 1"})
        worker.join(30)
        # the second query ran once the slow one had hit its deadline and freed the only slot
        assert slow[0].status_code == 400 and "deadline" in one_line_json(slow[0])
        assert r.status_code == 200 and r.json()["rows"] == [[1]]
        assert http.get("/health").json()["queries_running"] == 0


# ------------------------------------------------------------------------- errors are JSON lines
class _BadUsage(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose `usage` holds text where numbers belong."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        sql = PETS_SELECT
        data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                "content": f"```sql\n{sql}\n```"}}],
                           "usage": {"prompt_tokens": "many", "completion_tokens": {"n": 1}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_malformed_model_reply_is_a_json_error_or_an_answer(pets_db):
    from macsql.backends.openai import OpenAICompatLLM

    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadUsage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = OpenAICompatLLM("m", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
        app = create_app(Pipeline(llm, candidates=1), {"pets": pets_db})
        with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
            r = c.post("/api/ask", json={"question": "Which pets are cats?", "db": "pets"})
    finally:
        server.shutdown()
        server.server_close()
    if r.status_code == 200:  # a backend that reads bad token counts as unknown
        assert r.json()["rows"] == [["Kit"], ["Tom"]]
    else:
        assert r.status_code in (500, 502, 503) and one_line_json(r)


class _BuggyLLM:
    name = "buggy"

    def generate(self, prompts, **kwargs):
        raise ValueError("invalid literal for int() with base 10: 'many'\nsecond line")


def test_an_unexpected_error_is_one_line_of_json(pets_db):
    app = create_app(Pipeline(_BuggyLLM(), candidates=1), {"pets": pets_db})
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = c.post("/api/ask", json={"question": "Which pets are cats?", "db": "pets"})
        assert r.status_code == 500 and one_line_json(r) == "internal error (ValueError); see the server log"
        with c.stream("POST", "/api/ask/stream", json={"question": "Cats?", "db": "pets"}) as s:
            assert 'event: error\ndata: {"detail": "internal error (ValueError)' in s.read().decode()
        r = c.get("/api/nowhere")
        assert r.status_code == 404 and one_line_json(r)
        r = c.post("/api/run", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and one_line_json(r)


# ----------------------------------------------------------------------- the port, slow clients
def test_a_busy_port_is_one_line_before_the_model_loads(monkeypatch, pets_db):
    monkeypatch.setattr("macsql.cli.options.build_pipeline", lambda **kw: pytest.fail("no model should load"))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        r = CliRunner().invoke(main, ["serve", "--db", f"pets={pets_db}", "--port", str(port)])
    finally:
        holder.close()
    assert r.exit_code == 1
    assert r.output.strip() == (f"Error: port {port} is in use; stop the program that holds it or pass --port N "
                                "(another free port)")
    sock = bind_port("127.0.0.1", port)  # free again: bound, and handed over as it is
    try:
        assert sock.getsockname()[1] == port
    finally:
        sock.close()
    with pytest.raises(InputError, match="cannot bind 203.0.113.7:"):
        bind_port("203.0.113.7", 0)  # an address of no interface here (TEST-NET-3)


def _closed_within(sock, seconds=10.0) -> bytes:
    """What the server sent before it closed the connection (a timeout here fails the test)."""
    sock.settimeout(seconds)
    got = b""
    while chunk := sock.recv(4096):
        got += chunk
    return got


def test_a_request_that_never_arrives_whole_is_dropped(pets_db):
    app, _ = pets_app(pets_db)
    with serving_in_thread(app, read_timeout_s=0.5) as url:
        port = int(url.rsplit(":", 1)[1])
        # a head that never ends, a body that never ends, and a connection that sends nothing
        for partial in (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a",
                        b"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 40\r\n\r\n{\"db\":", b""):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(partial)
                assert _closed_within(sock) == b""
        # a kept-alive connection idles between whole requests as long as before (the keep-alive clock)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/health")
            assert conn.getresponse().read().startswith(b'{"status":"ok"')
            first = conn.sock
            time.sleep(1.5)
            conn.request("GET", "/health")
            assert conn.getresponse().status == 200 and conn.sock is first  # the same connection
        finally:
            conn.close()

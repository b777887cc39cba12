"""The conversation store of `macsql serve`, one interface with two implementations: the same tests run on the
SQLite file and on PostgreSQL (a throwaway server from tests/pg_server.py; skipped where none can start).
Two store objects on one database stand for two replicas of the server behind a load balancer."""

import socket
import threading
import uuid

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from macsql.backends.base import ScriptedLLM
from macsql.demo import DEMO_SQL, build
from macsql.engines.postgres import redact_url
from macsql.errors import InputError
from macsql.pipeline import Pipeline
from macsql.serve.app import create_app
from macsql.serve.store import (
    MAX_TURNS,
    ConversationMismatch,
    PostgresStore,
    SQLiteStore,
    UnknownConversation,
    open_store,
)
from tests.conftest import demo_reply

NO_SERVER = "no PostgreSQL test server (tests/pg_server.py)"
STATE_USER, STATE_PASSWORD = "macsql_state", "state-secret"
SPAIN = "How many customers live in Spain?"


@pytest.fixture(scope="module")
def pg():
    """A throwaway PostgreSQL server with a database `state` owned by the role the server logs in as."""
    try:
        from tests import pg_server
    except ImportError:
        pytest.skip(NO_SERVER)
    try:
        server = pg_server.start_server()
    except pg_server.Unavailable as exc:
        pytest.skip(f"{NO_SERVER}: {exc}")
    try:
        server.script(f"CREATE ROLE {STATE_USER} LOGIN PASSWORD '{STATE_PASSWORD}'", dbname="postgres")
        server.script(f"CREATE DATABASE state OWNER {STATE_USER}", dbname="postgres")
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    """Where a test's conversations live: a SQLite file, or a PostgreSQL URL (its tables emptied first)."""
    if request.param == "sqlite":
        return str(tmp_path / "conversations.sqlite")
    server = request.getfixturevalue("pg")
    server.script("DROP SCHEMA IF EXISTS macsql CASCADE", dbname="state")
    return server.url("state", user=STATE_USER, password=STATE_PASSWORD)


@pytest.fixture
def replicas(where):
    """`replicas(**options)`: a new store on the same conversations each call, closed at the end."""
    made = []

    def make(**options):
        made.append(open_store(where, **options))
        return made[-1]

    yield make
    for store in made:
        store.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    return build(DEMO_SQL, tmp_path_factory.mktemp("demo") / "shop.sqlite")


# ---------------------------------------------------------------------------------- the interface
def test_turns_are_numbered_kept_and_listed(replicas, where):
    store = replicas()
    assert isinstance(store, PostgresStore if where.startswith("postgresql://") else SQLiteStore)
    cid, turns = store.open(None, "demo")
    assert turns == [] and store.get(cid)["turns"] == [] and store.recent(["demo"]) == []  # no turn, no entry
    assert store.record(cid, SPAIN, "SELECT 1", evidence="e", summary="one") == 0
    assert store.record(cid, "and in Madrid?", "SELECT 2") == 1
    store.replace_last_sql(cid, "demo", "SELECT 3", "three")
    store.replace_last_sql(cid, "other", "SELECT 4", "four")  # another database's conversation: untouched
    again, turns = store.open(cid, "demo")
    assert again == cid and turns == [{"question": SPAIN, "sql": "SELECT 1"},
                                      {"question": "and in Madrid?", "sql": "SELECT 3"}]
    got = store.get(cid)
    assert {k: got[k] for k in ("id", "db")} == {"id": cid, "db": "demo"}
    assert [(t["n"], t["evidence"], t["summary"]) for t in got["turns"]] == [(0, "e", "one"), (1, "", "three")]
    assert isinstance(got["created"], float) and got["updated"] >= got["created"]
    other, _ = store.open(None, "sales")
    store.record(other, "Total sales?", "SELECT 5")
    assert [(c["id"], c["turns"], c["title"]) for c in store.recent(["demo"])] == [(cid, 2, SPAIN)]
    assert [c["id"] for c in store.recent(["demo", "sales"])] == [other, cid]  # the latest first
    assert [c["id"] for c in store.recent(["demo", "sales"], limit=1)] == [other]
    with pytest.raises(ConversationMismatch, match="about database 'demo', not 'sales'"):
        store.open(cid, "sales")
    with pytest.raises(UnknownConversation, match="leave it out to start one"):
        store.open("0" * 32, "demo")
    assert store.record("0" * 32, "q", "SELECT 1") is None and store.get("0" * 32) is None


def test_the_oldest_conversations_and_turns_give_way(replicas):
    store = replicas(max_conversations=3)
    ids = [store.open(None, "demo")[0] for _ in range(5)]
    assert [store.get(i) is not None for i in ids] == [False, False, True, True, True]
    for n in range(MAX_TURNS + 2):
        store.record(ids[-1], f"q{n}", f"SELECT {n}")
    turns = store.get(ids[-1])["turns"]
    assert len(turns) == MAX_TURNS and (turns[0]["n"], turns[-1]["n"]) == (2, MAX_TURNS + 1)


def test_replicas_share_conversations_and_number_turns_apart(replicas):
    a, b = replicas(), replicas()
    cid, _ = a.open(None, "demo")
    assert b.open(cid, "demo") == (cid, [])
    numbers, errors = [], []

    def ask(store, k):
        try:
            for i in range(10):
                numbers.append(store.record(cid, f"{k}-{i}", "SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - collected, so that the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(store, k)) for k, store in enumerate([a, b, a, b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(numbers) == list(range(40))
    assert [t["n"] for t in b.get(cid)["turns"]] == list(range(40))
    a.close()
    assert replicas().turns(cid) == b.turns(cid)  # reopened: nothing was lost


def test_two_servers_on_one_store_continue_each_others_conversations(where, demo_db):
    """Two replicas of the app behind a load balancer: a follow-up may reach either."""
    def app():
        return create_app(Pipeline(ScriptedLLM(demo_reply), candidates=1), {"demo": demo_db}, store=where)

    with TestClient(app(), base_url="http://127.0.0.1") as one, TestClient(app(), base_url="http://127.0.0.1") as two:
        first = one.post("/api/ask", json={"question": SPAIN, "db": "demo"})
        assert first.status_code == 200, first.text
        cid = first.json()["conversation"]
        second = two.post("/api/ask", json={"question": "and in Madrid?", "db": "demo", "conversation": cid})
        assert second.status_code == 200, second.text
        assert [t["question"] for t in second.json()["turns"]] == [SPAIN, "and in Madrid?"]
        assert second.json()["turn"] == 1
        listed = one.get("/api/conversations", params={"db": "demo"}).json()["conversations"]
        assert [(c["id"], c["turns"], c["title"]) for c in listed] == [(cid, 2, SPAIN)]
        assert [t["n"] for t in one.get(f"/api/conversations/{cid}").json()["turns"]] == [0, 1]


# ------------------------------------------------------------------------------- PostgreSQL alone
def test_a_dropped_connection_is_made_anew(pg):
    pg.script("DROP SCHEMA IF EXISTS macsql CASCADE", dbname="state")
    store = open_store(pg.url("state", user=STATE_USER, password=STATE_PASSWORD))
    try:
        cid, _ = store.open(None, "demo")
        with pg.superuser("state") as admin:  # as a server restart does to every connection
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE usename = %s", (STATE_USER,)).fetchall()
        assert killed and all(ok for (ok,) in killed)
        assert store.record(cid, SPAIN, "SELECT 1") == 0 and store.turns(cid)[0]["question"] == SPAIN
    finally:
        store.close()


def test_a_store_out_of_reach_is_503_in_one_line(pg, demo_db):
    pg.script("DROP SCHEMA IF EXISTS macsql CASCADE", dbname="state")
    url = pg.url("state", user=STATE_USER, password=STATE_PASSWORD)
    app = create_app(Pipeline(ScriptedLLM(demo_reply), candidates=1), {"demo": demo_db}, store=url)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            assert client.post("/api/ask", json={"question": SPAIN, "db": "demo"}).status_code == 200
            pg.script(f"ALTER ROLE {STATE_USER} NOLOGIN", dbname="postgres")
            with pg.superuser("state") as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                              (STATE_USER,))
            r = client.post("/api/ask", json={"question": SPAIN, "db": "demo"})
            assert r.status_code == 503 and list(r.json()) == ["detail"]
            assert r.json()["detail"].startswith("the conversation store postgresql://macsql_state@")
            assert "try again" in r.json()["detail"] and STATE_PASSWORD not in r.text
    finally:
        pg.script(f"ALTER ROLE {STATE_USER} LOGIN", dbname="postgres")


# ------------------------------------------------------------------ no server needed: bad URLs, the CLI
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("secret", ["u:hunter2@", "u@"])
def test_an_unreachable_store_is_one_line_without_the_password(secret):
    """Neither form of password is printed: in the user part, or as `password`/`sslpassword` parameters."""
    url = (f"postgresql://{secret}127.0.0.1:{closed_port()}/state"
           "?password=hunter3&sslpassword=hunter4&sslmode=disable")
    with pytest.raises(InputError) as caught:
        open_store(url)
    message = str(caught.value)
    assert not any(word in message for word in ("hunter2", "hunter3", "hunter4")) and "\n" not in message
    assert message.startswith("the conversation store postgresql://u@127.0.0.1:") and "--store" in message
    assert "/state?sslmode=disable " in message
    assert redact_url("postgresql://me@db.example/x") == "postgresql://me@db.example/x"
    assert redact_url("postgres://me:p%40ss@[::1]:5433/x?sslmode=require") == "postgres://me@[::1]:5433/x?sslmode=require"


def test_a_malformed_store_url_is_one_line_without_the_password():
    with pytest.raises(InputError) as caught:
        open_store("postgresql://u:hunter2@[::1/state")  # libpq quotes the URL in its reason
    message = str(caught.value)
    assert message.startswith("--store postgresql://u@[::1/state: not a PostgreSQL URL")
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize("how", ["option", "environment"])
def test_serve_checks_its_store_before_loading_a_model(how, tmp_path, monkeypatch):
    from macsql.cli import main

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    url = f"postgresql://u:hunter2@127.0.0.1:{closed_port()}/state_{uuid.uuid4().hex[:6]}"
    args = ["serve", "--db", "demo", "--port", str(closed_port()), "--model", "no/such-model-anywhere"]
    if how == "option":
        args += ["--store", url]
    else:
        monkeypatch.setenv("MACSQL_STORE", url)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines() == [r.output.strip()]  # one line
    assert "conversation store postgresql://u@127.0.0.1" in r.output and "hunter2" not in r.output

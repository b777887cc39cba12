"""`macsql mcp`: the MCP server through the official SDK's client, in memory and over stdio (a real
`python -m macsql mcp` subprocess whose model is a loopback OpenAI-compatible server), and over streamable
HTTP with a token. Writes and ATTACH are refused and the database file stays byte-identical."""

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("mcp", reason="the MCP SDK is the [mcp] extra: pip install -e '.[mcp]'")

from mcp import Client, StdioServerParameters  # noqa: E402

from macsql.backends.base import ScriptedLLM  # noqa: E402
from macsql.cli import main  # noqa: E402
from macsql.demo import DEMO_SQL, build  # noqa: E402
from macsql.integrations import MAX_QUESTION_BYTES  # noqa: E402
from macsql.mcp.server import create_server, http_app  # noqa: E402
from macsql.pipeline import Pipeline  # noqa: E402
from macsql.schema import introspect, render_schema  # noqa: E402
from macsql.sql import MAX_SQL_CHARS  # noqa: E402
from tests.conftest import demo_reply, spain_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPAIN = "How many customers live in Spain?"
HOSTILE = ["COMMIT; DROP TABLE customers", "DROP TABLE customers", "ATTACH DATABASE '{other}' AS other",
           "SELECT * FROM customers; ATTACH DATABASE '{other}' AS other"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    """The bundled demo database, built once for this module (the per-test cache would rebuild it)."""
    return build(DEMO_SQL, tmp_path_factory.mktemp("demo") / "shop.sqlite")


@pytest.fixture
def server(demo_db):
    return create_server(Pipeline(ScriptedLLM(demo_reply)), {"demo": demo_db})


def text(result) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


async def check_refusals(client, db: Path, tmp_path: Path) -> None:
    """Every way an agent could send something bad: a tool error with a clear line, and the file untouched."""
    before = sha256(db)
    other = tmp_path / "other.sqlite"
    for sql in HOSTILE:
        result = await client.call_tool("run_sql", {"db": "demo", "sql": sql.format(other=other)})
        assert result.is_error, sql
        assert "the query was not run:" in text(result)
    unknown = await client.call_tool("ask", {"question": SPAIN, "db": "shop"})
    assert unknown.is_error and "unknown database 'shop'" in text(unknown) and "demo" in text(unknown)
    big = await client.call_tool("ask", {"question": "x" * (MAX_QUESTION_BYTES + 1), "db": "demo"})
    assert big.is_error and f"at most {MAX_QUESTION_BYTES:,}" in text(big)
    long_sql = await client.call_tool("run_sql", {"db": "demo", "sql": "SELECT 1 " + " " * MAX_SQL_CHARS})
    assert long_sql.is_error and f"at most {MAX_SQL_CHARS:,}" in text(long_sql)
    still = await client.call_tool("run_sql", {"db": "demo", "sql": "SELECT COUNT(*) AS n FROM customers"})
    assert not still.is_error and still.structured_content["rows"][0][0] > 0  # the server lives on
    assert sha256(db) == before and not other.exists()


def test_tools_resources_and_schema(server, demo_db):
    async def go():
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"ask", "run_sql", "list_databases", "get_schema"}
            assert set(tools["ask"].input_schema["required"]) == {"question", "db"}
            assert all(t.annotations.read_only_hint for t in tools.values())
            listed = (await client.call_tool("list_databases", {})).structured_content
            schema = (await client.call_tool("get_schema", {"db": "demo"})).structured_content["result"]
            resources = (await client.list_resources()).resources
            read = await client.read_resource(resources[0].uri)
            return listed, schema, [str(r.uri) for r in resources], read.contents[0].text

    listed, schema, uris, resource = asyncio.run(go())
    assert listed["databases"][0]["name"] == "demo" and "customers" in listed["databases"][0]["tables"]
    assert schema == render_schema(introspect(demo_db)) == resource  # the one renderer, as the agents see it
    assert uris == ["macsql://schema/demo"]


def test_ask_answers_and_reports_each_step(server, demo_db):
    async def go():
        steps = []

        async def progress(value, total, message):
            steps.append((value, message))

        async with Client(server) as client:
            result = await client.call_tool("ask", {"question": SPAIN, "db": "demo"}, progress_callback=progress)
        return result, steps

    result, steps = asyncio.run(go())
    assert not result.is_error, text(result)
    answer = result.structured_content
    assert answer["sql"] == "SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain'"
    assert answer["columns"] == ["customers"] and answer["rows"] == [[spain_count(demo_db)]]
    assert answer["error"] is None and answer["hint"] is None and answer["row_count"] == 1
    assert answer["vote"]["candidates"] >= 2 and answer["vote"]["agreeing"] == answer["vote"]["candidates"]
    assert json.loads(text(result))["rows"] == answer["rows"]  # the same answer as text, for plain clients
    messages = [m for _, m in steps]
    assert messages[0] == "schema done" and messages[-1] == "vote done" and "decomposer done" in messages
    assert [v for v, _ in steps] == list(range(1, len(steps) + 1))


def test_failing_answer_carries_the_refiners_hint(demo_db):
    """A query on a column that lives in another table: the answer says so, with the hint the Refiner got."""
    bad = "Final SQL:\n```sql\nSELECT COUNT(*) FROM orders WHERE country = 'Spain'\n```"
    server = create_server(Pipeline(ScriptedLLM(lambda m, a: bad), candidates=1, max_rounds=0), {"demo": demo_db})

    async def go():
        async with Client(server) as client:
            return await client.call_tool("ask", {"question": SPAIN, "db": "demo"})

    answer = asyncio.run(go()).structured_content
    assert "no such column: country" in answer["error"]
    assert "customers" in answer["hint"]


def test_refusals_in_memory(server, demo_db, tmp_path):
    async def go():
        async with Client(server) as client:
            await check_refusals(client, demo_db, tmp_path)

    asyncio.run(go())


def test_over_stdio_with_an_openai_compatible_model(openai_server, demo_db, tmp_path):
    """The command an MCP client runs: `python -m macsql mcp --db ... --backend openai --base-url ...`."""
    url, requests = openai_server(lambda body: demo_reply(body["messages"], ""))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env.update(MACSQL_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    params = StdioServerParameters(command=sys.executable, cwd=str(ROOT), env=env, args=[
        "-m", "macsql", "mcp", "--db", f"demo={demo_db}", "--backend", "openai", "--base-url", url, "-m", "m"])

    async def go():
        async with Client(params, read_timeout_seconds=60) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            answer = await client.call_tool("ask", {"question": SPAIN, "db": "demo"})
            await check_refusals(client, demo_db, tmp_path)
            return names, answer

    names, answer = asyncio.run(go())
    assert names == {"ask", "run_sql", "list_databases", "get_schema"}
    assert not answer.is_error, text(answer)
    assert answer.structured_content["rows"] == [[spain_count(demo_db)]]
    assert requests and all(path == "/v1/chat/completions" for path, _ in requests)


def test_http_needs_the_token_it_was_started_with(server):
    httpx = pytest.importorskip("httpx")
    httpx2 = pytest.importorskip("httpx2")
    from mcp.client.streamable_http import streamable_http_client

    from macsql.serve.server import serving_in_thread

    with serving_in_thread(http_app(server, host="127.0.0.1", token="s3cret")) as base:
        refused = httpx.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        wrong = httpx.post(f"{base}/mcp", json={}, headers={"Authorization": "Bearer nope"})

        async def go():
            async with httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}) as http:
                async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                    return {t.name for t in (await client.list_tools()).tools}

        names = asyncio.run(go())
    assert refused.status_code == 401 and wrong.status_code == 401
    assert "token" in refused.json()["detail"]
    assert names == {"ask", "run_sql", "list_databases", "get_schema"}


def test_cli_refuses_a_public_bind_without_a_token_before_loading_a_model(monkeypatch):
    monkeypatch.delenv("MACSQL_TOKEN", raising=False)
    r = CliRunner().invoke(main, ["mcp", "--transport", "http", "--host", "0.0.0.0", "--db", "demo"])
    assert r.exit_code == 1
    assert "Error: --host 0.0.0.0 is reachable from other machines, so a token is required" in r.output


def test_cli_refuses_an_unknown_database_file(tmp_path):
    r = CliRunner().invoke(main, ["mcp", "--db", f"shop={tmp_path / 'missing.sqlite'}"])
    assert r.exit_code == 1 and "does not exist" in r.output


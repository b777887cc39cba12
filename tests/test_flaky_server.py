"""`macsql eval` against a loopback OpenAI-compatible server that fails 10% of requests:
every question is answered in one run; failures are retried, nothing is recorded as a crash."""

import json
import threading
from http.server import ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from macsql.backends.openai import OpenAICompatLLM
from macsql.cli import main
from macsql.errors import ModelError
from tests.conftest import SHOP_SQL, _ChatHandler, make_db

N_QUESTIONS = 60
FAULTS = ("500", "503", "429", "drop", "not-json", "no-choices")


class FlakyHandler(_ChatHandler):
    """Answers the chat API; every `fault_every`-th request gets the next of FAULTS instead (10%)."""

    lock = threading.Lock()
    counts = {"requests": 0, "faults": 0}
    fault_every = 10

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.counts["requests"] += 1
            fault = None
            if self.counts["requests"] % self.fault_every == 0:
                fault = FAULTS[self.counts["faults"] % len(FAULTS)]
                self.counts["faults"] += 1
        if fault == "drop":  # the connection closes without a reply (a server restarting)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault in ("500", "503", "429"):
            return self.send(int(fault), b'{"error": "overloaded"}')
        if fault == "not-json":
            return self.send(200, b"<html>502 Bad Gateway</html>")
        if fault == "no-choices":
            return self.send(200, b'{"object": "error", "message": "try again"}')
        text = "```sql\nSELECT count(*) FROM customers\n```"
        if "Relevant" in json.dumps(body) or "JSON" in json.dumps(body):
            text = '{"customers": "keep_all", "orders": "keep_all"}'
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
        self.send(200, json.dumps(reply).encode())



@pytest.fixture
def flaky_server():
    handler = type("Handler", (FlakyHandler,), {"lock": threading.Lock(),
                                                 "counts": {"requests": 0, "faults": 0}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


def test_eval_finishes_every_question_in_one_run_despite_failures(flaky_server, tmp_path):
    url, handler = flaky_server
    (tmp_path / "database" / "shop").mkdir(parents=True)
    make_db(tmp_path / "database" / "shop" / "shop.sqlite", SHOP_SQL)
    data = [{"db_id": "shop", "question": f"How many customers are there? ({i})",
             "query": "SELECT count(*) FROM customers"} for i in range(N_QUESTIONS)]
    (tmp_path / "dev.json").write_text(json.dumps(data))
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "dev.json"), "--out", str(out), "--backend",
                                  "openai", "--base-url", url, "--model", "m", "--workers", "4", "--no-plots",
                                  "-q"])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == N_QUESTIONS and len({x["question_id"] for x in records}) == N_QUESTIONS
    assert not [x for x in records if x["error"]], [x["error"] for x in records if x["error"]][:3]
    assert handler.counts["faults"] >= N_QUESTIONS // 10  # the faults really happened
    print(f"\nflaky server: {N_QUESTIONS}/{N_QUESTIONS} questions answered in one run; "
          f"{handler.counts['requests']} requests, {handler.counts['faults']} faulted")


def test_client_retries_transient_faults_and_reports_the_rest(flaky_server):
    url, handler = flaky_server
    handler.fault_every = 1  # every request fails
    llm = OpenAICompatLLM("m", base_url=url, retries=2, backoff_s=0.01, max_backoff_s=0.02)
    with pytest.raises(ModelError) as info:
        for _ in range(10):
            llm.generate([[{"role": "user", "content": "hi"}]])
    assert "\n" not in str(info.value) and str(info.value).endswith("(after 3 attempts)")
    assert handler.counts["requests"] == 3  # the first request and its two retries, then the error


def test_read_timeout_is_reported_as_a_timeout(tmp_path):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    try:
        llm = OpenAICompatLLM("m", base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1", timeout_s=0.2,
                              retries=1, backoff_s=0.01)
        with pytest.raises(ModelError, match="did not answer within 0.2s"):
            llm.generate([[{"role": "user", "content": "hi"}]])
    finally:
        listener.close()


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://x/v1", "http://", "http://[::1"])
def test_invalid_base_url_is_one_line(url):
    with pytest.raises(ModelError, match="invalid --base-url"):
        OpenAICompatLLM("m", base_url=url)

"""A server that ignores `n` (Ollama sends one choice whatever is asked): the OpenAI-compatible backend asks
again for the rest, so `--candidates 5` means five candidates on every server."""

import json

import pytest

from macsql.backends.openai import OpenAICompatLLM
from macsql.pipeline import Pipeline
from tests.conftest import _ChatHandler, demo_reply


class OneChoiceHandler(_ChatHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        text = type(self).reply(body)
        self.send(200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                                   "usage": {"prompt_tokens": 40, "completion_tokens": 6}}).encode())


@pytest.fixture
def one_choice_server():
    import threading
    from http.server import ThreadingHTTPServer

    replies = iter(range(1000))
    handler = type("Handler", (OneChoiceHandler,), {"requests": [], "reply": staticmethod(
        lambda body: f"reply {next(replies)}")})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


def test_n_replies_from_a_server_that_sends_one(one_choice_server):
    url, handler = one_choice_server
    llm = OpenAICompatLLM("m", base_url=url)
    gens = llm.generate([[{"role": "user", "content": "hi"}]], n=5, temperature=0.8)
    assert [g.text for g in gens] == [f"reply {i}" for i in range(5)]
    assert [body.get("n") for _, body in handler.requests] == [5, 4, 3, 2, None]  # only what is missing
    assert all(g.prompt_tokens == 40 and g.completion_tokens == 6 for g in gens)


def test_candidates_are_all_drawn_on_such_a_server(one_choice_server, shop_db):
    url, handler = one_choice_server
    handler.reply = staticmethod(lambda body: demo_reply(body["messages"], ""))
    answer = Pipeline(OpenAICompatLLM("m", base_url=url), candidates=5, early_stop=False).ask(
        "How many customers live in Spain?", shop_db)
    assert len(answer.candidates) == 5 and answer.error is None

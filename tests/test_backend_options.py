"""Each backend's options are make_llm's to check: an option a backend does not take is an error naming the
backends that take it (checked before a model is resolved or a package imported), and an option left at
None is not an option given. Then the OpenAI-compatible client's time limits: one line per retry, a
malformed reply retried, and a deadline on the whole request that a trickling server cannot stretch."""

import re
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from macsql import backends
from macsql.backends import FLAGS, OPTIONS, make_llm
from macsql.backends.openai import OpenAICompatLLM
from macsql.errors import InputError, ModelError
from macsql.extras import MissingExtraError
from tests.conftest import _ChatHandler

PROMPT = [{"role": "user", "content": "hi"}]


# ------------------------------------------------------------------------------------- which options
@pytest.mark.parametrize("backend, options, message", [
    ("llamacpp", {"device": "cuda"}, "--device/device is not an option of the llamacpp backend; it is taken by: hf"),
    ("llamacpp", {"dtype": "bf16"}, "--dtype/dtype is not an option of the llamacpp backend; it is taken by: hf"),
    ("openai", {"n_ctx": 512}, "n_ctx is not an option of the openai backend; it is taken by: llamacpp"),
    ("openai", {"n_threads": 2},
     "--threads/n_threads is not an option of the openai backend; it is taken by: hf, llamacpp"),
    ("hf", {"base_url": "http://x/v1"},
     "--base-url/base_url is not an option of the hf backend; it is taken by: openai"),
    ("hf", {"timeout_s": 5.0},
     "--request-timeout/timeout_s is not an option of the hf backend; it is taken by: openai"),
])
def test_an_option_the_backend_does_not_take_names_those_that_do(backend, options, message):
    # "no-such-model" would be a ModelError from resolving, and llama.cpp is not needed: the options come first
    with pytest.raises(InputError) as info:
        make_llm("no-such-model", backend, **options)
    assert str(info.value) == message


def test_an_unknown_option_lists_what_the_backend_takes():
    with pytest.raises(InputError) as info:
        make_llm("m", "openai", temprature=0.3)
    assert str(info.value) == ("temprature is not an option of the openai backend; the openai backend takes: "
                               "api_key, backoff_s, base_url, max_backoff_s, models, retries, timeout_s, workers")


def test_options_left_at_none_are_not_given():
    llm = make_llm("m", "openai", base_url="http://127.0.0.1:9/v1", device=None, dtype=None, n_threads=None,
                   n_ctx=None)
    assert isinstance(llm, OpenAICompatLLM) and llm.base_url == "http://127.0.0.1:9/v1"


def test_the_option_table_is_read_from_the_constructors():
    assert {"device", "dtype", "n_threads", "batch_size", "prompt_lookup"} <= OPTIONS["hf"]
    assert {"n_ctx", "n_threads", "parallel", "prompt_cache_mb"} <= OPTIONS["llamacpp"]
    assert {"device", "dtype"}.isdisjoint(OPTIONS["llamacpp"]) and "adapters" not in OPTIONS["hf"]
    assert {"base_url", "timeout_s", "models"} <= OPTIONS["openai"]
    # every flag named in an error is a real option of a backend, and of `macsql ask`
    from macsql.cli import main

    ask = main.get_command(None, "ask")
    flags = {opt for p in ask.params for opt in p.opts}
    for key, flag in FLAGS.items():
        assert any(key in names for names in OPTIONS.values()), key
        assert flag in flags, flag


def test_auto_with_options_that_fit_no_backend_fails_before_resolving():
    with pytest.raises(InputError, match="^n_ctx is not an option of the hf backend; it is taken by: llamacpp$"):
        make_llm("no-such-model", "auto", device="cpu", n_ctx=512)


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """`auto` on a GGUF file with llama.cpp present, both backends replaced by recorders (no weights read)."""
    calls = []
    for name in ("hf", "llamacpp"):
        monkeypatch.setitem(backends.BACKENDS, name,
                            lambda model, name=name, **options: calls.append((name, options)) or name)
    monkeypatch.setattr("macsql.backends.llamacpp.llama_cpp_available", lambda: True)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    return str(gguf), calls


def test_auto_runs_llama_cpp_when_it_takes_the_options(recorded):
    gguf, calls = recorded
    assert make_llm(gguf, "auto", n_threads=2, device=None) == "llamacpp"
    assert calls == [("llamacpp", {"adapters": None, "n_threads": 2})]


def test_auto_runs_transformers_for_an_option_only_it_takes(recorded):
    pytest.importorskip("gguf", reason="a GGUF model on transformers needs gguf (macsql[local])")
    gguf, calls = recorded
    assert make_llm(gguf, "auto", device="cpu") == "hf"
    assert calls == [("hf", {"adapters": None, "device": "cpu"})]


def test_auto_without_llama_cpp_says_which_backend_it_chose(recorded, monkeypatch):
    gguf, calls = recorded
    monkeypatch.setattr("macsql.backends.llamacpp.llama_cpp_available", lambda: False)
    with pytest.raises(InputError) as info:
        make_llm(gguf, "auto", n_ctx=512)
    assert str(info.value) == ("n_ctx is not an option of the hf backend (what --backend auto runs for this "
                               "model); it is taken by: llamacpp")
    assert calls == []


def test_prompt_lookup_on_an_encoder_decoder_is_refused(tiny_t5_dir):
    with pytest.raises(InputError, match="prompt_lookup runs on decoder-only models"):
        make_llm(str(tiny_t5_dir), "hf", prompt_lookup=5)


# ---------------------------------------------------------------------------------- missing packages
def test_a_missing_backend_package_names_its_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` fails, find_spec says absent
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(MissingExtraError) as info:
        make_llm(str(gguf), "llamacpp")
    assert str(info.value) == ('the llamacpp backend needs llama-cpp-python: pip install "macsql[fast]" '
                               '(in a checkout: pip install -e ".[fast]")')
    assert isinstance(info.value, ModelError)  # what callers of make_llm catch for "cannot load"


def test_without_any_local_backend_auto_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr("macsql.backends.llamacpp.llama_cpp_available", lambda: False)
    with pytest.raises(MissingExtraError, match=r'^running a model on this machine needs llama.cpp or '
                                                r'transformers: pip install "macsql\[fast\]"'):
        make_llm("no-such-model", "auto")
    with pytest.raises(MissingExtraError, match=r'^the hf backend needs torch: pip install "macsql\[local\]"'):
        make_llm("no-such-model", "hf")


# ------------------------------------------------------------------------------ OpenAI-compatible client
class _FlakyOnce(_ChatHandler):
    """Answers the chat API, but the first requests get the faults in `faults` (a list, consumed)."""

    faults: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        if self.faults:
            self.rfile.read(int(self.headers["Content-Length"]))
            fault = self.faults.pop(0)
            return self.send(200, b"<html>502 Bad Gateway</html>" if fault == "not-json"
                             else b'{"object": "error", "message": "try again"}')
        return super().do_POST()


def test_a_malformed_reply_is_retried_with_one_line_per_retry(capsys):
    handler = type("H", (_FlakyOnce,), {"reply": staticmethod(lambda body: "SELECT 1"), "requests": [],
                                        "faults": ["not-json", "no-choices"]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        llm = make_llm("m", "openai", base_url=url, backoff_s=0.01, max_backoff_s=0.02)
        assert [g.text for g in llm.generate([PROMPT])] == ["SELECT 1"]
    finally:
        server.shutdown()
        server.server_close()
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"in \d+\.\d s", "in N s", line) for line in lines] == [
        f"model server {url}: retrying in N s: malformed reply (not JSON)",
        f"model server {url}: retrying in N s: malformed reply (no choices)"]


def test_an_unreachable_server_is_retried_with_a_line_each_then_one_error(capsys):
    llm = make_llm("m", "openai", base_url="http://127.0.0.1:9/v1", retries=2, backoff_s=0.01)
    with pytest.raises(ModelError, match=r"cannot reach the model server .* \(after 3 attempts\)$"):
        llm.generate([PROMPT])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"model server http://127\.0\.0\.1:9/v1: retrying in \d+\.\d s: "
                                                r"connection refused", line) for line in lines), lines


class _Trickle:
    """A loopback server that answers every request slowly: `headers` sends the status line then one header
    byte a second; `body` sends the headers at once, then one byte a second of a 600-byte body."""

    def __init__(self, mode: str):
        self.mode, self.stop = mode, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            conn.recv(65536)  # the request (small: it arrives in one read on loopback)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 600\r\n\r\n"
            first, slow = (b"HTTP/1.1 200 OK\r\n", head[17:] + b" " * 600) if self.mode == "headers" else (head, b" " * 600)
            try:
                conn.sendall(first)
                for i in range(len(slow)):
                    if self.stop.wait(1.0):
                        return
                    conn.sendall(slow[i:i + 1])
            except OSError:
                return  # the client gave up: what the test wants

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_a_trickling_server_cannot_stretch_the_request_timeout(mode):
    server = _Trickle(mode)
    try:
        llm = make_llm("m", "openai", base_url=server.url, timeout_s=1, retries=0)
        start = time.monotonic()
        with pytest.raises(ModelError, match=r"did not answer within 1s"):
            llm.generate([PROMPT])
        # each byte arrives well within httpx's per-read timeout, so only a deadline on the whole request
        # ends it; the reply would take 600 s
        assert time.monotonic() - start < 60
    finally:
        server.close()


def test_the_cli_request_timeout_reaches_the_backend(monkeypatch):
    """`--request-timeout` is the openai backend's `timeout_s` (an option make_llm checks by that name)."""
    seen = {}

    def fake_make_llm(model, backend, adapters=None, **options):
        seen.update(options, backend=backend)
        raise InputError("stop here")

    monkeypatch.setattr("macsql.pipeline.make_llm", fake_make_llm)
    from macsql.cli import main

    r = CliRunner().invoke(main, ["ask", "q", "--db", "demo", "--backend", "openai", "--base-url",
                                  "http://127.0.0.1:9/v1", "--request-timeout", "7"])
    assert r.exit_code == 1 and "Error: stop here" in r.output
    assert seen["backend"] == "openai" and seen["timeout_s"] == 7.0 and seen["base_url"] == "http://127.0.0.1:9/v1"

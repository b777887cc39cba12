"""Starting `macsql serve`: which databases, which address, whether a token is needed, which Host names
requests may carry, then uvicorn on a port bound up front.

Everything here is checked before the model loads, so a bad option (or a busy port) costs a second, not a
model load.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from macsql.errors import InputError
from macsql.serve.hosts import ANY_HOST, LOOPBACK_HOSTS, allowed_hosts, host_name, is_loopback, is_wildcard

__all__ = ["ANY_HOST", "LOOPBACK_HOSTS", "allowed_hosts", "bind_port", "host_name", "is_loopback", "is_wildcard",
           "resolve_token", "serve", "server_config", "serving_in_thread"]

TOKEN_ENV = "MACSQL_TOKEN"
# uvicorn closes an idle keep-alive connection after 5 s by default; a client that sends its next request
# just then gets a reset connection (seen under load: 1 in 1000 requests). Browsers and pools keep
# connections longer than that, so the server does too.
KEEP_ALIVE_S = 65
# uvicorn starts no clock until a first response: a client that sends its request head (or a body) a byte
# at a time would hold a connection for ever. A request must arrive whole within this many seconds of its
# first byte (or of the connection), else the connection is closed. Heads are capped at h11's 16 KiB.
REQUEST_READ_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 1000  # open connections (uvicorn's limit_concurrency): beyond it, new requests get 503


def require_server_packages() -> None:
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"`macsql serve` needs {' and '.join(missing)}; install them with "
                         "pip install -e \".[serve]\"")


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for uvicorn to listen on, bound now so a busy port is one line before
    the model loads (and no other program can take the port meanwhile)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a just-closed server's port is free
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} is in use; stop the program that holds it or pass --port N "
                             "(another free port)") from None
        raise InputError(f"cannot bind {host}:{port} ({exc.strerror or exc}); pass --host with an address "
                         "of this machine, e.g. 127.0.0.1") from None
    except OverflowError:
        sock.close()
        raise InputError(f"--port {port} is not a port number (1-65535)") from None
    return sock


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require (`--token`, else $MACSQL_TOKEN); refuses a non-loopback bind without one."""
    token = (token or os.environ.get(TOKEN_ENV) or "").strip() or None
    if token is None and not is_loopback(host):
        raise InputError(f"--host {host} is reachable from other machines, so a token is required: pass "
                         f"--token TOKEN or set ${TOKEN_ENV} (clients send `Authorization: Bearer TOKEN`), "
                         "or bind --host 127.0.0.1")
    return token


def serve(pipeline, databases: dict[str, Path], *, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, workers: int = 8, hosts: Iterable[str] | None = None,
          sock: socket.socket | None = None, store=None) -> None:
    """Serve the API and the page until interrupted (one process, one loaded model). `hosts`: the Host
    names to answer (default `allowed_hosts(host, (), token)`); `sock`: a socket from `bind_port`; `store`:
    where conversations are kept (`store.open_store`: default the cache folder's SQLite file)."""
    import uvicorn

    from macsql.demo import DEMO_QUESTIONS, demo_db_path
    from macsql.serve.app import create_app

    examples = {name: list(DEMO_QUESTIONS) for name, path in databases.items() if path == demo_db_path()}
    hosts = allowed_hosts(host, (), token) if hosts is None else tuple(hosts)
    app = create_app(pipeline, databases, token=token, workers=workers, examples=examples, allowed_hosts=hosts,
                     store=store)
    sock = sock if sock is not None else bind_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"macsql serve: http://{shown}:{port}/  (API docs at /docs; databases: {', '.join(databases)}; "
          f"conversations: {app.state.server.store.where})", flush=True)
    uvicorn.Server(server_config(app, host, port)).run(sockets=[sock])


def server_config(app, host: str, port: int, *, read_timeout_s: float = REQUEST_READ_TIMEOUT_S):
    """uvicorn's settings for the app: its keep-alive, a connection cap, and a deadline on reading each
    request (`ReadDeadlineH11`)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S,
                          limit_concurrency=MAX_CONNECTIONS, http=read_deadline_protocol(read_timeout_s))


def read_deadline_protocol(seconds: float):
    """uvicorn's h11 protocol with a deadline on reading a request: from the connection (or the first byte
    of the next request on a kept-alive one) until the request has arrived whole, head and body. uvicorn
    has no such setting: its keep-alive clock runs only between requests, and the first byte stops it."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ReadDeadlineH11(H11Protocol):
        _read_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._read_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first byte of a next request on this connection
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._disarm()  # the request is in whole (or the connection is done with)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _too_slow(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return ReadDeadlineH11


@contextlib.contextmanager
def serving_in_thread(app, host: str = "127.0.0.1", port: int = 0, *,
                      read_timeout_s: float = REQUEST_READ_TIMEOUT_S):
    """Run `app` on uvicorn in a daemon thread (port 0: a free one); yields its base URL. For tests,
    benchmarks and notebooks; `serve` is the way to run it for people."""
    import uvicorn

    server = uvicorn.Server(server_config(app, host, port, read_timeout_s=read_timeout_s))
    thread = threading.Thread(target=server.run, name="macsql-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

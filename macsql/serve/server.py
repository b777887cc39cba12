"""Starting `macsql serve`: which databases, which address, whether a token is needed, then uvicorn.

Everything here is checked before the model loads, so a bad option costs a second, not a model load.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import threading
import time
from pathlib import Path

from macsql.errors import InputError

TOKEN_ENV = "MACSQL_TOKEN"
# uvicorn closes an idle keep-alive connection after 5 s by default; a client that sends its next request
# just then gets a reset connection (seen under load: 1 in 1000 requests). Browsers and pools keep
# connections longer than that, so the server does too.
KEEP_ALIVE_S = 65


def require_server_packages() -> None:
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"`macsql serve` needs {' and '.join(missing)}; install them with "
                         "pip install -e \".[serve]\"")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require (`--token`, else $MACSQL_TOKEN); refuses a non-loopback bind without one."""
    token = (token or os.environ.get(TOKEN_ENV) or "").strip() or None
    if token is None and not is_loopback(host):
        raise InputError(f"--host {host} is reachable from other machines, so a token is required: pass "
                         f"--token TOKEN or set ${TOKEN_ENV} (clients send `Authorization: Bearer TOKEN`), "
                         "or bind --host 127.0.0.1")
    return token


def named_databases(values: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """`--db` values -> {name: path}. `demo` is the bundled demo database, `NAME=PATH` names a file, and a
    bare PATH is named after its file stem. Each must be an existing SQLite file; names must be unique."""
    from macsql.demo import resolve_db
    from macsql.sqlexec import check_database

    found: dict[str, Path] = {}
    for value in values or ("demo",):
        name, sep, path = value.partition("=")
        if not sep:
            name, path = ("demo", "demo") if value == "demo" else (Path(value).stem, value)
        name = name.strip()
        if not name:
            raise InputError(f"--db {value!r} has an empty name; use NAME=PATH")
        if name in found:
            raise InputError(f"two databases are named {name!r}; name them apart with --db NAME=PATH")
        found[name] = check_database(resolve_db(path))
    return found


def serve(pipeline, databases: dict[str, Path], *, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, workers: int = 8) -> None:
    """Serve the API and the page until interrupted (one process, one loaded model)."""
    import uvicorn

    from macsql.demo import DEMO_QUESTIONS, demo_db_path
    from macsql.serve.app import create_app

    examples = {name: list(DEMO_QUESTIONS) for name, path in databases.items() if path == demo_db_path()}
    app = create_app(pipeline, databases, token=token, workers=workers, examples=examples)
    shown = f"[{host}]" if ":" in host else host
    print(f"macsql serve: http://{shown}:{port}/  (API docs at /docs; databases: {', '.join(databases)})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S)


@contextlib.contextmanager
def serving_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Run `app` on uvicorn in a daemon thread (port 0: a free one); yields its base URL. For tests,
    benchmarks and notebooks; `serve` is the way to run it for people."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_keep_alive=KEEP_ALIVE_S))
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

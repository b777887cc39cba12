"""`macsql serve`: the web page and the HTTP API over one loaded pipeline."""

from __future__ import annotations

import click

from macsql.cli import options
from macsql.cli.groups import SERVER, GroupedCommand

# `--help` in sections: these, then the model options' "Model" and "Agents and ablations"
SERVE_SECTIONS = {SERVER: ("--db", "--host", "--port", "--token", "--allowed-host", "--store")}


@click.command(cls=GroupedCommand, sections=SERVE_SECTIONS, renamed=options.RENAMED)
@click.option("--db", "dbs", multiple=True, metavar="[NAME=]PATH|URL|demo",
              help="A database to serve (repeatable; default: demo). Requests name it, never a path.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", default=None, metavar="TOKEN",
              help="Require `Authorization: Bearer TOKEN` on every API call, /docs and /openapi.json "
                   "(default $MACSQL_TOKEN).")
@click.option("--allowed-host", "allowed", multiple=True, metavar="NAME",
              help="A name clients reach the server by, as sent in the Host header (repeatable). Requests "
                   "naming any other host get 400, a guard against DNS rebinding. Always allowed: "
                   "127.0.0.1, localhost, ::1 and the --host address. With --host 0.0.0.0 (or ::) and no "
                   "--allowed-host, any host is answered, which the required token makes safe.")
@click.option("--store", default=None, metavar="FILE|postgresql://...",
              help="Where the server keeps its own state, the conversations (questions, SQL, summaries): a "
                   "SQLite file (default: serve/conversations.sqlite in the cache folder), or a PostgreSQL "
                   "URL that several replicas share; or $MACSQL_STORE. The server writes there (tables in "
                   "the schema `macsql`), so name a database of its own, never one of the --db databases "
                   "users ask about (those are only ever read).")
@options.model_options
def serve(dbs, host, port, token, allowed, store, **model_opts):
    """Serve a web page and an HTTP API: ask, stream the agents' steps, stop a question, page, sort and
    download results, edit and re-run SQL, follow up. Conversations are kept in the cache folder
    (serve/conversations.sqlite), or with --store in a PostgreSQL database that several replicas share, so
    the history and each answer's link outlive a restart; API docs at /docs.

    \b
    Examples:
      macsql serve --db demo                                  # then open http://127.0.0.1:8000/
      macsql serve --db shop=data/shop.sqlite --db sales.sqlite
      macsql serve --db demo --allowed-host sql.example.org   # behind a proxy that keeps that Host
      MACSQL_TOKEN=secret macsql serve --host 0.0.0.0 --db demo --backend openai --base-url http://gpu:8000/v1
      MACSQL_STORE=postgresql://macsql@pg/macsql_state macsql serve --host 0.0.0.0 --db demo ...  # a replica
    """
    from macsql.demo import named_databases
    from macsql.serve import server
    from macsql.serve.store import open_store

    server.require_server_packages()  # all checks before the model loads
    token = server.resolve_token(host, token)
    hosts = server.allowed_hosts(host, allowed, token)
    databases = named_databases(dbs)
    sock = server.bind_port(host, port)  # a busy port is one line now, not after a model load
    conversations = None
    try:
        conversations = open_store(store)  # so is a store out of reach
        pipeline = options.build_pipeline(**model_opts)
    except BaseException:
        sock.close()
        if conversations is not None:
            conversations.close()
        raise
    try:
        server.serve(pipeline, databases, host=host, port=port, token=token, hosts=hosts, sock=sock,
                     store=conversations)
    finally:
        conversations.close()  # the server got it open, so leaves it open (Server.owns_store)

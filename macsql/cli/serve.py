"""`macsql serve`: the web page and the HTTP API over one loaded pipeline."""

from __future__ import annotations

import click

from macsql.cli import options


@click.command()
@click.option("--db", "dbs", multiple=True, metavar="[NAME=]PATH|demo",
              help="A database to serve (repeatable; default: demo). Requests name it, never a path.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", default=None, metavar="TOKEN",
              help="Require `Authorization: Bearer TOKEN` on every API call (default $MACSQL_TOKEN).")
@options.model_options
def serve(dbs, host, port, token, **model_opts):
    """Serve a web page and an HTTP API: ask, stream the agents' steps, edit and re-run SQL, follow up.

    \b
    Examples:
      macsql serve --db demo                                  # then open http://127.0.0.1:8000/
      macsql serve --db shop=data/shop.sqlite --db sales.sqlite
      MACSQL_TOKEN=secret macsql serve --host 0.0.0.0 --db demo --backend openai --base-url http://gpu:8000/v1
    """
    from macsql.serve.server import named_databases, require_server_packages, resolve_token
    from macsql.serve.server import serve as run_server

    require_server_packages()  # all checks before the model loads
    token = resolve_token(host, token)
    databases = named_databases(dbs)
    run_server(options.build_pipeline(**model_opts), databases, host=host, port=port, token=token)

"""`macsql mcp`: the agents as tools of other agents, over the Model Context Protocol."""

from __future__ import annotations

import click

from macsql.cli import options
from macsql.cli.groups import SERVER, GroupedCommand

# `--help` in sections: these, then the model options' "Model" and "Agents and ablations"
MCP_SECTIONS = {SERVER: ("--db", "--transport", "--host", "--port", "--token")}


@click.command(cls=GroupedCommand, sections=MCP_SECTIONS, renamed=options.RENAMED)
@click.option("--db", "dbs", multiple=True, metavar="[NAME=]PATH|URL|demo",
              help="A database to answer about (repeatable; default: demo). Tools name it, never a path.")
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio: the client starts this command; http: streamable HTTP at http://HOST:PORT/mcp.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="--transport http: address to bind; anything but loopback needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", default=None, metavar="TOKEN",
              help="--transport http: require `Authorization: Bearer TOKEN` (default $MACSQL_TOKEN).")
@options.model_options
def mcp(dbs, transport, host, port, token, **model_opts):
    """Serve the agents as MCP tools: ask, run_sql, list_databases, get_schema.

    \b
    Examples:
      macsql mcp --db demo                                     # stdio, for an MCP client's config
      macsql mcp --db shop=data/shop.sqlite --backend openai --base-url http://localhost:11434/v1 -m qwen2.5-coder
      MACSQL_TOKEN=secret macsql mcp --transport http --host 0.0.0.0 --db demo
    """
    import contextlib
    import sys

    from macsql.demo import named_databases
    from macsql.extras import check
    from macsql.serve.server import resolve_token

    check("mcp", purpose="`macsql mcp`", extra="mcp")  # all checks before the model loads
    token = resolve_token(host, token) if transport == "http" else None
    databases = named_databases(dbs)
    from macsql.mcp.server import create_server, serve

    with contextlib.redirect_stdout(sys.stderr):  # over stdio, stdout is the protocol's alone
        pipeline = options.build_pipeline(**model_opts)
    serve(create_server(pipeline, databases), transport=transport, host=host, port=port, token=token)

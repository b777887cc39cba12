"""`macsql mcp`: macsql as a Model Context Protocol server, on the official SDK (`pip install 'macsql[mcp]'`).

    server.py  `create_server(pipeline, databases)`: the tools (ask, run_sql, list_databases, get_schema), a
               schema resource per database, progress from the graph's steps; `serve`: stdio or streamable
               HTTP (loopback unless a token is set)

What the tools do is macsql.integrations.DatabaseTools, shared with the LangChain tool (`Pipeline.as_tool`).
Importing this package imports no part of the SDK.
"""

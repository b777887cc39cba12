"""`python -m macsql ...`: the `macsql` command (e.g. an MCP client's config: `python -m macsql mcp --db demo`)."""

from macsql.cli import main

if __name__ == "__main__":
    main()

"""The three MAC-SQL agents. Each module holds its prompt, its reply parser, a plain typed function and a
thin LangGraph node. Import as `macsql.agents.<name>`."""

"""A benchmark's databases copied into another engine, and the questions answered on those copies.

`benchmarks/load_engines.py` writes the copies, and `macsql eval --engine` answers on them:

    duckdb    <root>/<db_id>/<db_id>.duckdb, BIRD's database_description folder copied beside it (the
              SQLite layout, so the DuckDB engine finds the descriptions as it would on SQLite)
    postgres  one schema per db_id in one database: <url>?schema=<db_id>

The pipeline gets the copy's spec as its database (`Example.ask_db`), so it introspects, links values and
runs its candidates there, in that engine's dialect. Scoring runs the gold SQL on SQLite as always and the
prediction on the copy (scoring.py): the copies hold the same rows, and load_engines.py's agreement report
shows where the gold SQL, transpiled, gives the same result on the copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from macsql.errors import InputError
from macsql.evaluate.datasets import Example

ENGINES = ("sqlite", "duckdb", "postgres")
LOAD_COMMAND = "python benchmarks/load_engines.py --data DATA --engine {engine} --out DIR"


def duckdb_copy(root: str | Path, db_id: str) -> Path:
    """Where a db_id's DuckDB copy lives under `root`."""
    return Path(root) / db_id / f"{db_id}.duckdb"


def postgres_copy(url: str, db_id: str) -> str:
    """The URL of a db_id's schema on the server `url` names (its own `?schema=` replaced)."""
    parts = urlsplit(url)
    params = [p for p in parts.query.split("&") if p and p.partition("=")[0] != "schema"]
    return urlunsplit(parts._replace(query="&".join([*params, f"schema={quote(db_id, safe='')}"])))


def on_engine(examples: Sequence[Example], engine: str, *, root: str | Path | None = None,
              url: str | None = None) -> list[Example]:
    """The examples answered on their databases' copies in `engine` (unchanged for sqlite). Every copy is
    opened here, before a model loads: a missing file or schema is one InputError line."""
    from macsql.engines import open_database
    from macsql.errors import DatabaseError

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "sqlite":
        if root or url:
            raise InputError("--engine-root and --engine-url are for --engine duckdb or postgres")
        return list(examples)
    if engine == "duckdb" and (url or not root):
        raise InputError("--engine duckdb answers on DuckDB copies: pass --engine-root DIR (the --out folder of "
                         f"`{LOAD_COMMAND.format(engine='duckdb')}`), not --engine-url")
    if engine == "postgres" and (root or not url):
        raise InputError("--engine postgres answers on a server with one schema per db_id: pass --engine-url "
                         "postgresql://USER:PASSWORD@HOST/DB (loaded by "
                         f"`{LOAD_COMMAND.format(engine='postgres')} --url URL`), not --engine-root")
    specs = {e.db_id: str(duckdb_copy(root, e.db_id)) if engine == "duckdb" else postgres_copy(url, e.db_id)
             for e in examples}
    if engine == "duckdb":
        missing = sorted(db_id for db_id, spec in specs.items() if not Path(spec).is_file())
        if missing:
            raise InputError(f"{len(missing)} DuckDB copy(ies) missing under --engine-root {root}, e.g. "
                             f"{duckdb_copy(root, missing[0])}; make them with "
                             f"`{LOAD_COMMAND.format(engine='duckdb')}`")
    for db_id, spec in specs.items():
        try:
            open_database(spec)
        except DatabaseError as exc:
            raise InputError(f"the {engine} copy of {db_id!r} cannot be used: {exc}") from None
    return [replace(e, ask_db=specs[e.db_id]) for e in examples]


def engine_config(engine: str, *, root: str | Path | None = None, url: str | None = None) -> dict:
    """What run.json records about the engine: nothing for sqlite (so that earlier runs, which recorded
    nothing, still resume), else the engine and where its copies are (a URL without its password)."""
    if engine == "sqlite":
        return {}
    if engine == "duckdb":
        return {"engine": engine, "engine_location": str(Path(root).resolve())}
    from macsql.engines.postgres import split_url

    return {"engine": engine, "engine_location": split_url(url)[2]}

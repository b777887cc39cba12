"""Which engine a `--db` value names, and the `Database` that opens it (see `base.py` for the interface).

    postgresql://... or postgres://...           PostgreSQL (macsql.engines.postgres, the [postgres] extra)
    shop.duckdb, shop.ddb                         a DuckDB file, opened read-only (the [duckdb] extra)
    a folder, a glob ('data/*.parquet') or one    DuckDB over the .csv/.tsv/.parquet files, one view per
    .csv/.tsv/.parquet file                       file, named after the file (macsql.engines.duckdb)
    anything else                                 a SQLite file (macsql.sqlexec's checks and messages)

Everything above the engines passes the `--db` value along as it came (a SQLite file as the checked `Path`,
anything else as its text) and calls `open_database(db)` where it needs the engine: an engine that holds
something (PostgreSQL's pooled connections, the views over CSV files) is opened once per value and kept.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from macsql.engines.base import Database
from macsql.engines.duckdb import DATA_SUFFIXES, DUCKDB_SUFFIXES  # the module, not the duckdb package

_URL = re.compile(r"(?i)^postgres(?:ql)?://")
_GLOB = re.compile(r"[*?\[]")

_OPEN: dict[str, Database] = {}
_LOCK = threading.Lock()
# A forked child's copies of the parent's open databases (eval's scoring workers): never used, never closed.
_INHERITED: list[Database] = []


def _forget_inherited() -> None:
    """In a forked child: the parent's pooled connections share its sockets, so using them would interleave
    two processes' messages, and closing them (or letting them be collected) would end the parent's
    sessions. The child keeps them, untouched, and opens its own."""
    global _LOCK
    _INHERITED.extend(_OPEN.values())
    _OPEN.clear()
    _LOCK = threading.Lock()  # the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited)


def engine_of(db) -> str:
    """The engine a `--db` value names: "sqlite", "duckdb" or "postgres" (from its text and what is on disk;
    nothing is opened). A `Database` names its own."""
    if isinstance(db, Database):
        return db.dialect
    text = str(db)
    if _URL.match(text):
        return "postgres"
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in DUCKDB_SUFFIXES or suffix in DATA_SUFFIXES:
        return "duckdb"
    if path.is_dir() or (_GLOB.search(text) and not path.exists()):
        return "duckdb"
    return "sqlite"


def open_database(db) -> Database:
    """The `Database` for a `--db` value (a path, a glob, a URL) or a `Database` itself.

    A SQLite file is checked on every call (today's checks and messages: it may have been replaced); a DuckDB
    or PostgreSQL database is opened once per value and kept for the process. DatabaseError (one line) for
    a database that cannot be used; MissingExtraError naming the extra when its engine is not installed.
    """
    if isinstance(db, Database):
        return db
    engine = engine_of(db)
    if engine == "sqlite":
        from macsql.engines.sqlite import SQLiteDatabase

        return SQLiteDatabase(db)
    key = f"{engine}:{db}"
    with _LOCK:
        found = _OPEN.get(key)
    if found is not None:
        return found
    if engine == "postgres":
        database = _postgres(str(db))
    else:
        from macsql.engines.duckdb import DuckDBDatabase

        database = DuckDBDatabase(db)
    with _LOCK:
        found = _OPEN.setdefault(key, database)
    if found is not database:  # another thread opened it meanwhile: keep one
        database.close()
    return found


def _postgres(url: str) -> Database:
    from macsql.extras import MissingExtraError, install_command

    try:
        from macsql.engines.postgres import PostgresDatabase
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] not in ("psycopg", "macsql"):
            raise
        raise MissingExtraError(f"a PostgreSQL database needs psycopg: {install_command('postgres')}") from None
    return PostgresDatabase(url)


def check_db(db) -> Path | str:
    """A `--db` value, checked before any work (a model load, a server start): a SQLite file's checked `Path`
    (sqlexec.check_database), else the value's text once its engine has opened it (a wrong URL, folder or
    file fails here, in one line)."""
    if engine_of(db) == "sqlite" and not isinstance(db, Database):
        from macsql.sqlexec import check_database

        return check_database(db)
    database = open_database(db)
    return database if isinstance(db, Database) else str(db)


def default_name(db) -> str:
    """The name a bare `--db` value is served under: a file's stem, a folder's name, a URL's database."""
    if engine_of(db) == "sqlite":
        return Path(str(db)).stem
    return open_database(db).name


def close_all() -> None:
    """Close every kept database (pooled connections, in-memory views)."""
    with _LOCK:
        kept = list(_OPEN.values())
        _OPEN.clear()
    for database in kept:
        database.close()


__all__ = ["Database", "check_db", "close_all", "default_name", "engine_of", "open_database"]

"""The bundled demo database: built from databases/shop.sql into the cache on first use (`--db demo`).

databases/ is installed as the data-only package `macsql.databases`, so the SQL is found through the
package (importlib.resources) the same way in a checkout, an editable install and a wheel.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from importlib import resources
from pathlib import Path

from macsql.cache import cache_root
from macsql.errors import DatabaseError, InputError

DEMO_SQL = resources.files("macsql.databases") / "shop.sql"
DEMO_QUESTIONS = (
    "How many customers live in Spain?",
    "Which product has the highest price?",
    "What is the total revenue of delivered orders?",
    "List the names of customers who have never placed an order.",
)


def build(sql_file, target: Path) -> Path:
    """Build a database from SQL text into `target`, which appears whole or not at all.

    The database is built in a temporary file of its own beside `target`, then renamed onto it: two
    processes building the demo at once (two first runs) each build their own file, and the last rename
    wins with the same content, instead of one deleting or writing into the file the other is building."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".building", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(sql_file.read_text())
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def demo_db_path() -> Path:
    if not DEMO_SQL.exists():
        raise DatabaseError(f"the demo database source {DEMO_SQL} is missing from the installed package; "
                            "reinstall macsql (pip install .) or pass --db PATH")
    digest = hashlib.sha256(DEMO_SQL.read_bytes()).hexdigest()[:12]
    target = cache_root() / "demo" / f"shop-{digest}.sqlite"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        build(DEMO_SQL, target)
    return target


def resolve_db(value: str) -> Path | str:
    """`demo` means the bundled demo database; a URL (postgresql://...) stays as written; anything else is
    a path (of a file, a folder or a glob: macsql.engines)."""
    if value == "demo":
        return demo_db_path()
    return value if "://" in str(value) else Path(value)


def named_databases(values: tuple[str, ...] | list[str]) -> dict[str, Path | str]:
    """`--db` values -> {name: database}. `demo` is the bundled demo database, `NAME=PATH` names a database,
    and a bare PATH is named after its file stem (a folder after itself, a URL after its database). Each
    must be a database macsql.engines opens (a SQLite file comes back as its checked Path, any other as its
    text); names must be unique. The server, the MCP server and the tools for other agents all name their
    databases this way."""
    from macsql.engines import check_db, default_name

    found: dict[str, Path | str] = {}
    for value in values or ("demo",):
        name, sep, path = value.partition("=")
        if sep and any(mark in name for mark in ("://", "/", "*", "?")):
            sep = ""  # an '=' inside a URL's query or a path, not after a name
        if not sep:
            name, path = ("demo", "demo") if value == "demo" else (default_name(resolve_db(value)), value)
        name = name.strip()
        if not name:
            raise InputError(f"--db {value!r} has an empty name; use NAME=PATH")
        if name in found:
            raise InputError(f"two databases are named {name!r}; name them apart with --db NAME=PATH")
        found[name] = check_db(resolve_db(path))
    return found

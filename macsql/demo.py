"""The bundled demo database: built from databases/shop.sql into the cache on first use (`--db demo`).

databases/ is installed as the data-only package `macsql.databases`, so the SQL is found through the
package (importlib.resources) the same way in a checkout, an editable install and a wheel.
"""

from __future__ import annotations

import hashlib
import sqlite3
from importlib import resources
from pathlib import Path

from macsql.cache import cache_root
from macsql.errors import DatabaseError

DEMO_SQL = resources.files("macsql.databases") / "shop.sql"
DEMO_QUESTIONS = (
    "How many customers live in Spain?",
    "Which product has the highest price?",
    "What is the total revenue of delivered orders?",
    "List the names of customers who have never placed an order.",
)


def build(sql_file, target: Path) -> Path:
    """Build a database from SQL text into `target` (a new file; never touches an existing database)."""
    tmp = target.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(sql_file.read_text())
        conn.commit()
    finally:
        conn.close()
    tmp.replace(target)
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


def resolve_db(value: str) -> Path:
    """`demo` means the bundled demo database; anything else is a path."""
    return demo_db_path() if value == "demo" else Path(value)

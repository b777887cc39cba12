"""The demo database's build (two first runs at once must both get a whole database) and the naming of
`--db` values that the server, the MCP server and the tools for other agents share."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from macsql.demo import DEMO_SQL, build, demo_db_path, named_databases
from macsql.errors import InputError


def _tables(path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_concurrent_builds_of_one_target_each_finish_whole(tmp_path):
    target = tmp_path / "shop.sqlite"
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def one_build():
        start.wait()
        try:
            build(DEMO_SQL, target)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one_build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert {"customers", "orders", "products", "categories"} <= _tables(target)
    assert [p.name for p in tmp_path.iterdir()] == ["shop.sqlite"]  # no temporary file left behind


def test_a_failed_build_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE t (a INT);\nTHIS IS NOT SQL;\n")
    target = tmp_path / "out" / "bad.sqlite"
    target.parent.mkdir()
    with pytest.raises(sqlite3.Error):
        build(bad, target)
    assert list(target.parent.iterdir()) == []


def test_named_databases(tmp_path):
    shop = build(DEMO_SQL, tmp_path / "shop.sqlite")
    assert named_databases(["demo", f"sales={shop}", str(shop)]) == {
        "demo": demo_db_path(), "sales": shop, "shop": shop}
    assert named_databases([]) == {"demo": demo_db_path()}
    with pytest.raises(InputError, match=r"two databases are named 'shop'"):
        named_databases([str(shop), f"shop={shop}"])
    with pytest.raises(InputError, match=r"has an empty name; use NAME=PATH"):
        named_databases([f" ={shop}"])

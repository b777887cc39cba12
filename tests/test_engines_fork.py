"""A forked process (eval's scoring workers) opens its own connections instead of the parent's
(macsql.engines: the parent's are left untouched in the child)."""

import multiprocessing

import pytest

from macsql.engines import open_database
from tests.conftest import make_duckdb

pytest.importorskip("duckdb", reason="duckdb is not installed (pip install 'macsql[duckdb]')")


def _in_child(path: str, queue) -> None:
    database = open_database(path)
    queue.put((id(database), list(database.execute("SELECT count(*) FROM t", timeout_s=5, max_rows=10).rows)))


def test_a_forked_child_opens_its_own_database(tmp_path):
    path = make_duckdb(tmp_path / "shop.duckdb", "CREATE TABLE t AS SELECT * FROM range(3)")
    parent = open_database(str(path))
    assert list(parent.execute("SELECT count(*) FROM t", timeout_s=5, max_rows=10).rows) == [(3,)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(str(path), queue))
    child.start()
    child_id, rows = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert child_id != id(parent)  # a fork keeps ids: the same id would be the inherited object
    assert rows == [(3,)]
    # the parent's own database is still open and answers
    assert open_database(str(path)) is parent
    assert list(parent.execute("SELECT count(*) FROM t", timeout_s=5, max_rows=10).rows) == [(3,)]

"""Every database in ../shared/data introspects and renders: Spider's 157 and GeoQuery's.

Seven Spider databases once crashed the renderer (compound foreign keys have no single referenced column).
"""

import sqlite3

import pytest

from macsql.schema import introspect, render_schema
from tests.conftest import SHARED_DATA, needs_shared_data

pytestmark = [pytest.mark.shared_data, needs_shared_data()]


def shared_databases():
    if not SHARED_DATA.is_dir():
        return []
    return sorted(SHARED_DATA.glob("spider/database/*/*.sqlite")) + sorted(SHARED_DATA.glob("geoquery/*.sqlite"))


def test_every_shared_database_introspects_and_renders():
    dbs = shared_databases()
    assert len(dbs) >= 158, f"expected Spider's 157 databases and GeoQuery's, found {len(dbs)}"
    failures = []
    for db in dbs:
        try:
            schema = introspect(db)
            text = render_schema(schema)
        except Exception as exc:  # noqa: BLE001 - collect every failure, then report them together
            failures.append(f"{db.parent.name}: {type(exc).__name__}: {exc}")
            continue
        assert schema.tables, db
        # the rendered tables are DDL that SQLite itself parses (what a model copies names from)
        conn = sqlite3.connect(":memory:")
        for block in text.split(";\n"):
            if block.startswith("CREATE TABLE"):
                try:
                    conn.execute(block.rstrip(";"))
                except sqlite3.Error as exc:
                    failures.append(f"{db.parent.name}: rendered DDL does not parse: {exc}: {block[:120]}")
        conn.close()
    assert not failures, "\n".join(failures[:20])

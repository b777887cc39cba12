"""Names copied from the prompt run on SQLite: every table and column name of the BIRD dev schemas, as
render_schema writes it, pasted into `SELECT <columns> FROM <table>`, runs through the one executor and reads
the column (a double-quoted name that SQLite took for a string would read back as text)."""

import json
import re

import pytest

from macsql.schema import introspect, render_schema, schema_from_tables_json
from macsql.sqlexec import execute
from tests.conftest import SHARED_DATA, make_db

BIRD = SHARED_DATA / "bird"
MARK = 12345  # the value every column holds in the databases built here


def rendered_names(schema, table) -> tuple[str, list[str]]:
    """The table's name and its columns' names, read back from the prompt text."""
    text = render_schema(schema, {table.name: [c.name for c in table.columns]}, examples=False,
                         descriptions=False)
    lines = text.splitlines()
    name = re.match(r"CREATE (?:TABLE|VIEW) (.*) \($", lines[0]).group(1)
    columns = []
    for line in lines[1:-1]:
        line = line.strip()
        if line.startswith(("PRIMARY KEY (", "FOREIGN KEY (")):
            continue
        quoted = re.match(r'"(?:[^"]|"")*"', line)
        columns.append(quoted.group(0) if quoted else line.split()[0])
    return name, columns


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.mark.skipif(not BIRD.is_dir(), reason="needs ../shared/data/bird (the project's benchmark data)")
@pytest.mark.parametrize("db_id", ["superhero", "toxicology"])
def test_every_column_of_the_real_bird_databases_runs_as_rendered(db_id):
    db = BIRD / "dev_databases" / db_id / f"{db_id}.sqlite"
    if not db.is_file():
        pytest.skip(f"{db} is absent")
    schema = introspect(db)
    for table in schema.tables:
        name, columns = rendered_names(schema, table)
        assert len(columns) == len(table.columns)
        result = execute(db, f"SELECT {', '.join(columns)} FROM {name} LIMIT 1")
        assert result.ok, (name, result.error)
        assert result.columns == tuple(c.name for c in table.columns)


@pytest.mark.skipif(not (BIRD / "dev_tables.json").is_file(), reason="needs ../shared/data/bird/dev_tables.json")
def test_every_bird_dev_name_runs_as_rendered(tmp_path):
    """All eleven BIRD dev schemas (names such as `Enrollment (K-12)`, `T-CHO`, `date`), as empty copies."""
    odd = 0
    for entry in json.loads((BIRD / "dev_tables.json").read_text()):
        schema = schema_from_tables_json(entry)
        ddl = "".join(f"CREATE TABLE {_quote(t.name)} ({', '.join(_quote(c.name) for c in t.columns)}); "
                      f"INSERT INTO {_quote(t.name)} VALUES ({', '.join(str(MARK) for _ in t.columns)});"
                      for t in schema.tables)
        db = make_db(tmp_path / f"{entry['db_id']}.sqlite", ddl)
        for table in schema.tables:
            name, columns = rendered_names(schema, table)
            odd += sum(c.startswith('"') for c in columns)
            result = execute(db, f"SELECT {', '.join(columns)} FROM {name}")
            assert result.ok, (entry["db_id"], name, result.error)
            assert result.rows == ((MARK,) * len(table.columns),), (entry["db_id"], name)
    assert odd >= 30  # the quoting was exercised: 39 BIRD dev names have spaces, dashes or brackets

"""`macsql data clean` on tiny Spider-, BIRD- and GeoQuery-format files built from SQL text."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from macsql.cli import MacSQLGroup
from macsql.cli.clean import clean_cmd
from macsql.finetune.clean import clean_data, schema_diff, summary_text
from macsql.schema import introspect, schema_from_tables_json
from tests.conftest import SHARED_DATA, SHOP_SQL, make_db, needs_shared_data

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
QUESTIONS = [
    ("shop", "SELECT count(*) FROM customers WHERE country = \"Spain\""),  # "Spain" is a string in SQLite
    ("shop", "SELECT * FROM (SELECT"),  # unparsable
    ("shop", "SELECT no_such_fn(name) FROM customers"),  # parses, names resolve, fails in SQLite
    ("shop", "SELECT nickname FROM customers"),  # unknown column (and fails)
    ("shop", "SELECT count(*) FROM clients"),  # unknown table (and fails)
    ("shop", RUNAWAY),  # timeout
    ("shop", "SELECT status FROM orders"),  # tables.json lacks orders.status
    ("shop", "SELECT `name` FROM customers WHERE country = 'Nowhere'"),  # fine, empty result
    ("other", "SELECT x FROM t"),  # no tables.json entry for `other`
    ("gone", "SELECT a FROM g"),  # no database file: names checked against tables.json only
    ("gone", "SELECT b FROM g"),  # ... and b is not in it
]


def tables_entry(db_id: str, tables: dict[str, list[str]]) -> dict:
    names = list(tables)
    cols = [[-1, "*"]] + [[i, c] for i, t in enumerate(names) for c in tables[t]]
    return {"db_id": db_id, "table_names_original": names, "table_names": names, "column_names_original": cols,
            "column_names": cols, "column_types": ["text"] * len(cols), "primary_keys": [], "foreign_keys": []}


@pytest.fixture
def spider_dir(tmp_path) -> Path:
    root = tmp_path / "spider"
    for db_id, sql in (("shop", SHOP_SQL), ("other", "CREATE TABLE t (x INT); INSERT INTO t VALUES (1);")):
        (root / "database" / db_id).mkdir(parents=True)
        make_db(root / "database" / db_id / f"{db_id}.sqlite", sql)
    records = [{"db_id": db, "query": sql, "question": f"question {i}", "query_toks": [], "sql": {}}
               for i, (db, sql) in enumerate(QUESTIONS)]
    (root / "dev.json").write_text(json.dumps(records))
    tables = [tables_entry("shop", {"customers": ["customer_id", "name", "country"],
                                    "orders": ["order_id", "customer_id", "amount"]}),  # no `status`
              tables_entry("gone", {"g": ["a"]})]
    (root / "tables.json").write_text(json.dumps(tables))
    return root


def test_each_reason_is_found_and_dropped(spider_dir):
    kept, report = clean_data(spider_dir / "dev.json", timeout_s=0.3, progress=False)
    flagged = {f["question_id"]: [r["reason"] for r in f["reasons"]] for f in report["flagged"]}
    assert flagged == {
        "1": ["unparsable", "execution_error"],
        "2": ["execution_error"],
        "3": ["execution_error", "unknown_names"],
        "4": ["execution_error", "unknown_names"],
        "5": ["timeout"],
        "6": ["schema_mismatch"],
        "8": ["schema_mismatch"],
        "10": ["unknown_names"],
    }
    assert [r["query"] for r in kept] == [QUESTIONS[i][1] for i in (0, 7, 9)]
    assert report["reasons"] == {"unparsable": 1, "execution_error": 4, "timeout": 1, "unknown_names": 3,
                                 "schema_mismatch": 2}
    assert (report["questions"], report["kept"], report["dropped"]) == (11, 3, 8)
    assert report["skipped_checks"] == {"execute": 2, "schema_mismatch": 2}
    assert report["databases_missing"] == ["gone"]
    assert report["empty_results"] == 1
    assert report["schema_differences"]["shop"]["missing_in_context"] == {"tables": [], "columns": ["orders.status"]}
    assert "Column 'nickname' could not be resolved" in report["examples"]["unknown_names"][0]["detail"]
    assert report["examples"]["unknown_names"][1]["detail"] == "unknown table clients"


def test_keep_reports_without_dropping_and_no_tables(spider_dir):
    kept, report = clean_data(spider_dir / "dev.json", timeout_s=0.3, keep=("timeout", "schema_mismatch"),
                              progress=False)
    assert report["dropped"] == 5 and report["dropped_by_reason"].get("timeout") is None
    assert RUNAWAY in [r["query"] for r in kept]
    text = summary_text(report)
    assert "timeout" in text and "(kept: --keep)" in text
    _, report = clean_data(spider_dir / "dev.json", use_tables=False, timeout_s=0.3, progress=False)
    assert "schema_mismatch" not in report["reasons"] and report["tables"] is None
    assert report["skipped_checks"]["names"] == 2  # `gone` has neither a database nor a tables entry


def test_bird_format_without_databases_checks_names_against_tables(tmp_path):
    root = tmp_path / "bird"
    (root / "dev_databases" / "club").mkdir(parents=True)  # descriptions only, as in ../shared/data
    records = [{"question_id": 7, "db_id": "club", "question": "q", "evidence": "", "difficulty": "simple",
                "SQL": "SELECT `first name` FROM member"},
               {"question_id": 8, "db_id": "club", "question": "q", "evidence": "", "difficulty": "simple",
                "SQL": "SELECT `last name` FROM member"}]
    (root / "dev.json").write_text(json.dumps(records))
    (root / "dev_tables.json").write_text(json.dumps([tables_entry("club", {"member": ["first name"]})]))
    kept, report = clean_data(root / "dev.json", progress=False)
    assert kept == records[:1]
    assert report["reasons"] == {"unknown_names": 1}
    assert report["skipped_checks"]["execute"] == 2
    assert "execution not checked for 2 questions" in summary_text(report)
    assert "not compared" in summary_text(report)


def test_geoquery_drops_sentences_and_empty_entries(tmp_path):
    make_db(tmp_path / "geo.sqlite", "CREATE TABLE city (city_name TEXT, state_name TEXT);"
                                     "INSERT INTO city VALUES ('austin', 'texas');")
    good_sql = "SELECT city_name FROM city WHERE state_name = 'state_name0'"
    records = [
        {"query-split": "train", "variables": [], "sql": [good_sql],
         "sentences": [{"text": "cities in state_name0", "question-split": "train",
                        "variables": {"state_name0": "texas"}},
                       {"text": "cities in state_name0", "question-split": "train",
                        "variables": {"state_name0": "o'hare"}}]},  # the quote breaks the SQL text
        {"query-split": "train", "variables": [], "sql": ["SELECT population FROM city"],
         "sentences": [{"text": "population", "question-split": "dev", "variables": {}}]},
    ]
    data = tmp_path / "geography.json"
    data.write_text(json.dumps(records))
    kept, report = clean_data(data, progress=False)
    assert report["questions"] == 3 and report["dropped"] == 2
    assert (report["records"], report["kept_records"]) == (2, 1)
    assert kept == [{**records[0], "sentences": records[0]["sentences"][:1]}]


def test_schema_diff_both_ways(shop_db):
    context = schema_from_tables_json(tables_entry("shop", {"customers": ["customer_id", "name", "country", "age"],
                                                            "suppliers": ["id"]}))
    diff = schema_diff(context, introspect(shop_db))
    assert diff == {"missing_in_database": {"tables": ["suppliers"], "columns": ["customers.age"]},
                    "missing_in_context": {"tables": ["orders"], "columns": []}}


def _cli():
    group = MacSQLGroup("macsql")
    group.add_command(clean_cmd)
    return group


def test_cli_writes_same_format_and_report(spider_dir, tmp_path):
    out, rep = tmp_path / "clean.json", tmp_path / "report.json"
    result = CliRunner().invoke(_cli(), ["clean", "--data", str(spider_dir / "dev.json"), "--out", str(out),
                                         "--report", str(rep), "--timeout", "0.3", "-q"])
    assert result.exit_code == 0, result.output
    assert "11 questions in dev.json (spider): kept 3, dropped 8" in result.output
    kept = json.loads(out.read_text())
    assert kept[0] == json.loads((spider_dir / "dev.json").read_text())[0]
    assert json.loads(rep.read_text())["dropped_by_reason"]["execution_error"] == 4


@pytest.mark.parametrize("args, message", [
    (["--data", "nope.json", "--out", "x.json"], "Error: data file 'nope.json' does not exist; pass --data PATH"),
    (["--keep", "timout"], "Error: unknown reason 'timout' (did you mean 'timeout'?)"),
    (["--out", "{data}"], "Error: --out would overwrite --data; write the cleaned file somewhere else"),
    (["--tables", "missing.json"], "Error: tables file 'missing.json' does not exist"),
])
def test_cli_errors(spider_dir, tmp_path, args, message):
    data = str(spider_dir / "dev.json")
    base = {"--data": data, "--out": str(tmp_path / "o.json")}
    args = [a.replace("{data}", data) for a in args]
    for key, value in base.items():
        if key not in args:
            args += [key, value]
    result = CliRunner().invoke(_cli(), ["clean", *args])
    assert result.exit_code == 1
    assert message in result.output


@needs_shared_data()
def test_real_spider_and_bird_dev():
    _, spider = clean_data(SHARED_DATA / "spider" / "dev.json", progress=False)
    assert spider["questions"] == 480 and spider["kept"] == 480  # SOURCES.md: all Spider gold SQL executes
    assert spider["databases_compared"] and not spider["schema_differences"]
    _, bird = clean_data(SHARED_DATA / "bird" / "dev.json", progress=False)
    # SOURCES.md: only some BIRD dev databases are here (superhero and toxicology: 274 questions); the
    # questions of the others skip execution. Counted from the files, so a database added later keeps it true.
    questions = json.loads((SHARED_DATA / "bird" / "dev.json").read_text())
    present = {q["db_id"] for q in questions
               if (SHARED_DATA / "bird" / "dev_databases" / q["db_id"] / f"{q['db_id']}.sqlite").exists()}
    without_db = sum(q["db_id"] not in present for q in questions)
    assert bird["questions"] == 1534 and bird["skipped_checks"]["execute"] == without_db
    assert {"superhero", "toxicology"} <= present and without_db <= 1534 - 274
    assert bird["tables"].endswith("dev_tables.json")


def test_registered_as_macsql_data_clean(spider_dir, tmp_path):
    from macsql.cli import main

    result = CliRunner().invoke(main, ["data", "clean", "--data", str(spider_dir / "dev.json"), "--out",
                                       str(tmp_path / "c.json"), "--timeout", "0.3", "--keep", "timeout", "-q"])
    assert result.exit_code == 0, result.output
    assert "kept 4, dropped 7" in result.output
    result = CliRunner().invoke(main, ["data", "clean", "--data", str(spider_dir / "dev.json"), "--out",
                                       str(tmp_path / "c.json"), "--keep", "nope"])
    assert result.exit_code == 1 and "Error: unknown reason 'nope'" in result.output

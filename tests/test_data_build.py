"""Agent dataset building: gold schema use, targets from the agents' own formatters, Refiner examples with
real SQLite errors, balancing and the stratified split, the SQL-Llama import and the `data build` command."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from macsql.agents import decomposer, refiner, selector
from macsql.finetune import data
from macsql.schema import introspect

SCHOOL = """
CREATE TABLE teacher (teacher_id INTEGER PRIMARY KEY, name TEXT, age INTEGER, hometown TEXT);
CREATE TABLE course (course_id INTEGER PRIMARY KEY, title TEXT, teacher_id INTEGER REFERENCES teacher(teacher_id));
CREATE TABLE room (room_id INTEGER PRIMARY KEY, building TEXT);
INSERT INTO teacher VALUES (1, 'Joseph', 32, 'Bolton'), (2, 'Anne', 45, 'Wigan'), (3, 'Gustaaf', 29, 'Bolton');
INSERT INTO course VALUES (1, 'Math', 1), (2, 'Art', 2), (3, 'History', 1);
INSERT INTO room VALUES (1, 'North');
"""


@pytest.fixture()
def school(tmp_path) -> Path:
    db = tmp_path / "school" / "school.sqlite"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHOOL)
    return db


def src(db, question, sql, evidence=""):
    return data.Source(question, sql, db.stem, db, evidence)


def test_rows_use_the_agents_own_prompts_and_targets(school):
    s = src(school, "Which teachers are older than 30?", "SELECT name FROM teacher WHERE age > 30", "old: age > 30")
    rows = data.rows_for(s, random.Random(0))
    tasks = {r["task"]: r for r in rows if r.get("reply") != "direct"}
    assert set(tasks) == {"selector", "decomposer", "refiner"}
    direct = [r for r in rows if r.get("reply") == "direct"]
    assert len(direct) == 1 and direct[0]["task"] == "decomposer"
    schema = introspect(school)
    from macsql.schema import render_schema

    assert tasks["selector"]["prompt"] == selector.build_prompt(s.question, schema, s.evidence)
    assert tasks["selector"]["completion"] == [
        {"role": "assistant", "content": selector.format_target({"teacher": ["name", "age"]}, schema)}]
    assert json.loads(tasks["selector"]["completion"][0]["content"]) == {"teacher": ["name", "age"]}
    # a small schema is not pruned at inference, so the Decomposer is trained on the whole schema
    assert tasks["decomposer"]["prompt"] == decomposer.build_prompt(s.question, render_schema(schema), s.evidence)
    assert tasks["decomposer"]["completion"][0]["content"] == decomposer.format_target(s.gold_sql)
    # the direct prompt's row: the prompt the vote's first candidate and its samples are drawn from, and a
    # reply that the inference parser reads back as the gold SQL
    assert direct[0]["prompt"] == decomposer.build_prompt(s.question, render_schema(schema), s.evidence, direct=True)
    assert decomposer.parse_reply(direct[0]["completion"][0]["content"])[0] == s.gold_sql
    assert "Steps" not in direct[0]["completion"][0]["content"]
    assert tasks["refiner"]["completion"][0]["content"] == refiner.format_target(s.gold_sql)
    for r in rows:
        assert r["db_id"] == "school" and r["gold_sql"] == s.gold_sql and r["db_path"] == str(school)


def test_refiner_rows_carry_the_real_sqlite_problem(school):
    from macsql.sqlexec import execute

    s = src(school, "Titles of the courses taught by Joseph?",
            "SELECT T2.title FROM teacher AS T1 JOIN course AS T2 ON T1.teacher_id = T2.teacher_id "
            "WHERE T1.name = 'Joseph'")
    kinds = Counter()
    for seed in range(12):
        for r in data.rows_for(s, random.Random(seed), tasks=["refiner"], refiner_per_question=3):
            problem = refiner.problem_with(execute(school, r["broken_sql"]))
            assert problem is not None
            assert f"Problem: {problem}" in r["prompt"][-1]["content"]
            assert r["broken_sql"] in r["prompt"][-1]["content"]
            kinds[r["corruption"]] += 1
    assert {"wrong_column", "wrong_table", "bad_alias", "syntax_slip", "literal_case"} <= set(kinds)
    wrong_table = next(r for seed in range(12) for r in data.rows_for(s, random.Random(seed), tasks=["refiner"],
                                                                     refiner_per_question=5)
                       if r["corruption"] == "wrong_table")
    assert "SQLite error: no such table:" in wrong_table["prompt"][-1]["content"]
    case = next(r for seed in range(12) for r in data.rows_for(s, random.Random(seed), tasks=["refiner"],
                                                              refiner_per_question=5)
                if r["corruption"] == "literal_case")
    assert "returned no rows" in case["prompt"][-1]["content"] and "'JOSEPH'" in case["broken_sql"]


def test_failing_gold_sql_is_skipped(school):
    assert data.rows_for(src(school, "?", "SELECT nope FROM teacher"), random.Random(0)) == []


def _rows(counts: dict[str, int]) -> list[dict]:
    return [{"task": t, "i": i} for t, n in counts.items() for i in range(n)]


def test_undersample_and_split_are_exact_and_seeded():
    rows = _rows({"selector": 50, "decomposer": 30, "refiner": 20})
    train, val = data.balance_and_split(rows, mode="undersample", val_frac=0.1, seed=3)
    assert Counter(r["task"] for r in train) == {"selector": 18, "decomposer": 18, "refiner": 18}
    assert Counter(r["task"] for r in val) == {"selector": 2, "decomposer": 2, "refiner": 2}
    again = data.balance_and_split(rows, mode="undersample", val_frac=0.1, seed=3)
    assert (train, val) == again
    other = data.balance_and_split(rows, mode="undersample", val_frac=0.1, seed=4)
    assert other != (train, val)
    assert not {(r["task"], r["i"]) for r in train} & {(r["task"], r["i"]) for r in val}


def test_oversample_after_split_keeps_validation_out_of_training():
    rows = _rows({"selector": 40, "decomposer": 20, "refiner": 10})
    train, val = data.balance_and_split(rows, mode="oversample", val_frac=0.1, seed=0)
    assert Counter(r["task"] for r in val) == {"selector": 4, "decomposer": 2, "refiner": 1}
    assert Counter(r["task"] for r in train) == {"selector": 36, "decomposer": 36, "refiner": 36}
    refiner_train = Counter(r["i"] for r in train if r["task"] == "refiner")
    assert len(refiner_train) == 9 and set(refiner_train.values()) == {4}  # 9 rows x 4 = 36, evenly
    assert not {("refiner", i) for i in refiner_train} & {(r["task"], r["i"]) for r in val}


def test_no_balance_and_bad_inputs():
    rows = _rows({"selector": 3, "decomposer": 1})
    assert Counter(r["task"] for r in data.balance(rows, "none")) == {"selector": 3, "decomposer": 1}
    from macsql.errors import InputError

    with pytest.raises(InputError, match="unknown balance mode"):
        data.balance(rows, "median")
    with pytest.raises(InputError, match="--val-frac"):
        data.split(rows, 1.5)


def _db_rows(per_db: dict[str, int]) -> list[dict]:
    return [{"task": t, "db_id": db, "i": i} for db, n in per_db.items() for t in data.TASKS for i in range(n)]


def test_split_by_database_keeps_validation_databases_out_of_training():
    rows = _db_rows({f"db{k}": 5 + k for k in range(10)})
    train, val = data.balance_and_split(rows, mode="undersample", val_frac=0.2, seed=1, by="db")
    train_dbs, val_dbs = {r["db_id"] for r in train}, {r["db_id"] for r in val}
    assert val_dbs and not train_dbs & val_dbs and train_dbs | val_dbs == {f"db{k}" for k in range(10)}
    assert len(val) >= round(len(rows) * 0.2) > len(val) - 3 * 14  # whole databases until the share is reached
    assert len(train) + len(val) == len(rows)
    assert data.balance_and_split(rows, mode="undersample", val_frac=0.2, seed=1, by="db") == (train, val)
    assert {r["db_id"] for r in data.split_by_db(rows, 0.2, seed=2)[1]} != val_dbs  # the seed picks them
    # oversampling repeats training rows only, after the database split
    train, val = data.balance_and_split(rows[:-3], mode="oversample", val_frac=0.2, seed=1, by="db")
    assert not {r["db_id"] for r in train} & {r["db_id"] for r in val}
    # one database cannot be split by database: the split is by row (stratified), not an empty validation
    one = _db_rows({"geo": 10})
    train, val = data.balance_and_split(one, val_frac=0.2, by="db")
    assert Counter(r["task"] for r in val) == {t: 2 for t in data.TASKS}
    from macsql.errors import InputError

    with pytest.raises(InputError, match="unknown split 'table'"):
        data.balance_and_split(rows, by="table")


def test_dedupe_keeps_the_first_of_identical_rows():
    a = {"task": "decomposer", "prompt": [{"role": "user", "content": "q"}],
         "completion": [{"role": "assistant", "content": "Final SQL: SELECT 1"}], "db_id": "x"}
    b = {**a, "task": "refiner"}  # same prompt and reply, another task: not a duplicate
    c = {**a, "completion": [{"role": "assistant", "content": "Final SQL: SELECT 2"}]}
    assert data.dedupe([a, b, dict(a, db_id="y"), c, a]) == [a, b, c]


def test_build_rows_skips_a_database_whose_schema_fails(school, tmp_path, monkeypatch):
    other = tmp_path / "other" / "other.sqlite"
    other.parent.mkdir()
    with sqlite3.connect(other) as conn:
        conn.executescript(SCHOOL)
    import macsql.schema

    real = macsql.schema.introspect

    def broken_for_other(path, **kw):
        if Path(path).stem == "other":
            raise TypeError("expected string or bytes-like object, got 'NoneType'")
        return real(path, **kw)

    monkeypatch.setattr(macsql.schema, "introspect", broken_for_other)
    sources = [src(school, "How many teachers?", "SELECT count(*) FROM teacher"),
               src(other, "How many rooms?", "SELECT count(*) FROM room"),
               src(school, "Names of the teachers?", "SELECT name FROM teacher")]
    skipped: dict[str, str] = {}
    rows = data.build_rows(sources, progress=False, skipped=skipped)
    assert {r["db_id"] for r in rows} == {"school"} and len([r for r in rows if r["task"] == "decomposer"]) == 4
    assert skipped == {"other": "TypeError: expected string or bytes-like object, got 'NoneType'"}
    with pytest.raises(TypeError):  # a caller that does not collect skipped databases sees the error
        data.build_rows(sources, progress=False)


SQL_LLAMA = [
    {"source": "As an experienced and professional database administrator, your task is to analyze a user "
               "question and a database schema to provide relevant information.\n【DB_ID】 school\n...",
     "target": '```json\n{"teacher": "keep_all", "room": "drop_all"}\n```'},
    {"source": "Given a 【Database schema】 description, a knowledge 【Evidence】 and the 【Question】, you need to "
               "use valid SQLite and understand the database and knowledge, and then decompose the question into "
               "subquestions for text-to-SQL generation.\n【DB_ID】 school\n...",
     "target": "Sub question 1: Which teachers are from Bolton?\nSQL\n```sql\nSELECT name FROM teacher WHERE "
               "hometown = 'Bolton'\n```\n\nSub question 2: How many are they?\nSQL\n```sql\nSELECT count(*) FROM "
               "teacher WHERE hometown = 'Bolton'\n```"},
    {"source": "【Instruction】\nWhen executing SQL below, some errors occurred, please fix up SQL based on query "
               "and database info.\n【DB_ID】 school\n...",
     "target": "```sql\nSELECT name FROM teacher\n```"},
    {"source": "Translate this sentence into French.", "target": "..."},
]


def test_import_sql_llama(tmp_path):
    path = tmp_path / "sql-llama.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in SQL_LLAMA) + "\n")
    rows = data.import_sql_llama(path)
    assert [r["task"] for r in rows] == ["selector", "decomposer", "refiner"]  # the unrelated prompt is skipped
    assert all(r["db_id"] == "school" for r in rows)
    assert rows[0]["prompt"] == [{"role": "user", "content": SQL_LLAMA[0]["source"]}]
    # the Decomposer's sub-questions are rewritten in our Decomposer's reply format, which it parses back
    sql, subs = decomposer.parse_reply(rows[1]["completion"][0]["content"])
    assert sql == "SELECT count(*) FROM teacher WHERE hometown = 'Bolton'"
    assert subs == [{"question": "Which teachers are from Bolton?",
                     "sql": "SELECT name FROM teacher WHERE hometown = 'Bolton'"}]
    assert rows[2]["completion"][0]["content"] == "```sql\nSELECT name FROM teacher\n```"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    from macsql.errors import InputError

    with pytest.raises(InputError, match="expected a JSON object with `source` and `target`"):
        data.import_sql_llama(bad)


def test_data_build_command(school, tmp_path):
    from click.testing import CliRunner

    from macsql.cli import main

    bench = [{"db_id": "school", "question": f"Teachers older than {n}?",
              "query": f"SELECT name FROM teacher WHERE age > {n}"} for n in range(20, 40)]
    bench.append({"db_id": "other", "question": "held out", "query": "SELECT 1"})
    (tmp_path / "dev.json").write_text(json.dumps(bench))
    out = tmp_path / "out"
    args = ["data", "build", "--data", str(tmp_path / "dev.json"), "--db-root", str(tmp_path), "--out", str(out),
            "--exclude-db", "other", "--val-frac", "0.2", "--seed", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    n = min(stats["built"].values())
    assert stats["validation"] == {t: round(n * 0.2) for t in ("decomposer", "refiner", "selector")}
    train = data.read_jsonl(out / "train.jsonl")
    assert {r["db_id"] for r in train} == {"school"}
    first = (out / "train.jsonl").read_text()
    assert CliRunner().invoke(main, args).exit_code == 0
    assert (out / "train.jsonl").read_text() == first  # seeded: the same files again

    result = CliRunner().invoke(main, ["data", "build", "--out", str(out)])
    assert result.exit_code == 1 and "Error: nothing to build from" in result.output


def test_data_build_command_splits_by_database_and_reports_skips(school, tmp_path):
    from click.testing import CliRunner

    from macsql.cli import main

    bench = []
    for db in ("north", "south", "east", "west"):
        path = tmp_path / db / f"{db}.sqlite"
        path.parent.mkdir()
        with sqlite3.connect(path) as conn:
            conn.executescript(SCHOOL)
        bench += [{"db_id": db, "question": f"Teachers of {db} older than {n}?",
                   "query": f"SELECT name FROM teacher WHERE age > {n}"} for n in range(20, 30)]
    bench += [bench[0]]  # a repeated question: one row
    bench += [{"db_id": "gone", "question": "?", "query": "SELECT 1"}]  # no database file
    (tmp_path / "train.json").write_text(json.dumps(bench))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["data", "build", "--data", str(tmp_path / "train.json"), "--db-root",
                                       str(tmp_path), "--out", str(out), "--val-frac", "0.25"])
    assert result.exit_code == 0, result.output
    assert "Warning: skipped database 'gone': no database file" in result.output
    assert "1 databases skipped" in result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["duplicates_dropped"] >= 2 and stats["split"] == "db" and 1 <= len(stats["validation_dbs"]) < 4
    train = data.read_jsonl(out / "train.jsonl")
    val = data.read_jsonl(out / "validation.jsonl")
    assert {r["db_id"] for r in val} == set(stats["validation_dbs"])
    assert not {r["db_id"] for r in train} & set(stats["validation_dbs"])


@pytest.mark.shared_data
def test_build_from_spider_and_geoquery():
    root = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / "spider" / "dev.json").exists():
        pytest.skip(f"needs the shared benchmark data at {root}")
    spider = data.load_sources(root / "spider" / "dev.json", exclude_db=["concert_singer"], max_per_db=3, seed=0)
    geo = data.load_sources(root / "geoquery" / "geography.json", max_per_db=5, seed=0)
    assert "concert_singer" not in {s.db_id for s in spider}
    rows = data.build_rows(spider + geo, progress=False)
    assert Counter(r["task"] for r in rows)["decomposer"] >= len(spider + geo) - 2
    assert all(r["completion"][0]["content"] for r in rows)


def test_data_build_data_format_option_and_the_old_name(school, tmp_path):
    """`--data-format` names the benchmark as in `eval` and `score`; `--format` still works for one release."""
    from click.testing import CliRunner

    from macsql.cli import main

    bench = [{"db_id": "school", "question": f"Teachers older than {n}?",
              "query": f"SELECT name FROM teacher WHERE age > {n}"} for n in range(20, 26)]
    (tmp_path / "dev.json").write_text(json.dumps(bench))
    base = ["data", "build", "--data", str(tmp_path / "dev.json"), "--db-root", str(tmp_path), "--tasks", "decomposer"]
    result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "new"), "--data-format", "spider"])
    assert result.exit_code == 0, result.output
    assert "deprecated" not in result.output
    result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "old"), "--format", "spider"])
    assert result.exit_code == 0, result.output
    assert "Warning: --format is deprecated; use --data-format" in result.output
    assert (tmp_path / "old" / "train.jsonl").read_text() == (tmp_path / "new" / "train.jsonl").read_text()
    result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "bad"), "--data-format", "sqlite"])
    assert result.exit_code == 2 and "Error: Invalid value for '--data-format'" in result.output

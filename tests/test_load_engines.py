"""benchmarks/load_engines.py and `macsql eval --engine`: a tiny BIRD-style SQLite database built from SQL
text (with SQLite's loose typing in it) copied into DuckDB with its types, each fallback and left-out key
reported, the source untouched; the gold-result agreement with its reason categories; and an eval run with
a scripted model answering on the DuckDB copy. The PostgreSQL variant runs on a throwaway server
(tests/pg_server.py) and skips, with the reason, where PostgreSQL's binaries are absent."""

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (pip install 'macsql[duckdb]')")

from benchmarks.load_engines import main as load_engines  # noqa: E402
from macsql.backends.base import ScriptedLLM  # noqa: E402
from macsql.cli import main  # noqa: E402
from macsql.engines import close_all, open_database  # noqa: E402
from macsql.pipeline import Pipeline  # noqa: E402
from tests.conftest import make_db  # noqa: E402

SHOP_SQL = """
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country VARCHAR(10), joined DATETIME,
                        vip BOOL, score INTEGER);
CREATE TABLE orders (order_id INT PRIMARY KEY, customer_id INTEGER REFERENCES customers (customer_id),
                     amount DECIMAL(10, 2), placed DATE, note);
CREATE TABLE returns (order_id TEXT REFERENCES orders (order_id), reason TEXT);
INSERT INTO customers VALUES (1, 'Ana', 'Spain', '2024-01-05 10:00:00', 1, 10),
                             (2, 'Bo', 'Sweden', '2024-02-01 00:00:00', 0, 'n/a'),
                             (3, 'cy', 'Spain', '2024-03-09 08:30:00', 1, 7);
INSERT INTO orders VALUES (10, 1, 12.5, '2024-01-05', 'gift'), (11, 1, 3, 'not a date', 4),
                          (12, 2, 99.99, '2024-03-09', NULL), (13, 9, 1, '2024-04-01', 'x');
INSERT INTO returns VALUES ('10', 'broken'), ('12', 'late');
"""
# (question, gold SQL as SQLite reads it, what the scripted model answers on the copy: text, or per engine)
QUESTIONS = [
    ("How many customers live in Spain?", 'SELECT count(*) FROM customers WHERE country = "Spain"',
     "SELECT count(*) FROM customers WHERE country ILIKE 'spain'"),  # ILIKE: DuckDB's, not SQLite's
    ("Which customers have a name starting with C?", "SELECT name FROM customers WHERE name LIKE 'C%'",
     "SELECT name FROM customers WHERE name ILIKE 'c%'"),
    ("How many orders has each customer placed?",
     "SELECT customer_id, count(*) FROM orders GROUP BY customer_id",
     "SELECT customer_id, count(*) FROM orders GROUP BY customer_id"),
    ("Name each customer with their order count.",
     "SELECT name, count(*) FROM customers JOIN orders USING (customer_id) GROUP BY customer_id",
     "SELECT min(name), count(*) FROM customers JOIN orders USING (customer_id) GROUP BY customer_id"),
    ("What is each order id divided by four?", "SELECT order_id / 4 FROM orders",
     {"duckdb": "SELECT order_id // 4 FROM orders", "postgres": "SELECT order_id / 4 FROM orders"}),
]


@pytest.fixture
def bird(tmp_path):
    """BIRD's layout: dev.json, dev_databases/shop/shop.sqlite and its description folder."""
    folder = tmp_path / "bird" / "dev_databases" / "shop"
    folder.mkdir(parents=True)
    make_db(folder / "shop.sqlite", SHOP_SQL)
    (folder / "database_description").mkdir()
    (folder / "database_description" / "customers.csv").write_text(
        "original_column_name,column_name,column_description,data_format,value_description\n"
        "vip,vip,whether the customer is a VIP,integer,\n")
    records = [{"question_id": i, "db_id": "shop", "question": q, "evidence": "", "SQL": gold, "difficulty": "simple"}
               for i, (q, gold, _answer) in enumerate(QUESTIONS)]
    records.append({"question_id": 99, "db_id": "absent", "question": "?", "evidence": "", "SQL": "SELECT 1",
                    "difficulty": "simple"})  # a database without a SQLite file: skipped, and counted
    (tmp_path / "bird" / "dev.json").write_text(json.dumps(records))
    yield tmp_path / "bird" / "dev.json"
    close_all()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _report(out: Path, engine: str) -> dict:
    return json.loads((out / f"agreement-{engine}-bird-dev.json").read_text())


def _check_agreement(report: dict, engine: str) -> None:
    plain, typed = report["agreement"]["sqlglot"], report["agreement"]["sqlglot+types"]
    assert report["skipped"] == {"databases": ["absent"], "questions": 1,
                                 "why": "no SQLite file under the database folder"}
    why = {d["question_id"]: d["category"] for d in plain["disagreements"]}
    # the double-quoted "Spain" is read as SQLite reads it (a string) and agrees; GROUP BY agrees
    assert "0" not in why and "2" not in why
    assert why["1"] == "case-sensitive LIKE"  # SQLite's LIKE ignores ASCII case, the engines' does not
    assert {d["question_id"]: d["category"] for d in typed["disagreements"]}.get("4") is None  # typed: kept
    if engine == "duckdb":
        assert why["3"] == "bare column with GROUP BY (a SQLite extension)"
        assert why["4"] == "integer division"  # DuckDB's / divides as floats unless sqlglot knows the types
        assert (plain["questions"], plain["transpiled"], plain["ran"], plain["agreed"]) == (5, 5, 4, 2)
        assert (typed["ran"], typed["agreed"]) == (4, 3)
    else:  # grouped by the primary key, PostgreSQL allows the other columns of the table; / is integer
        assert set(why) == {"1"} and (plain["ran"], plain["agreed"]) == (5, 4)


def test_a_sqlite_database_is_copied_into_duckdb_with_its_types(bird, tmp_path):
    source = bird.parent / "dev_databases" / "shop" / "shop.sqlite"
    before = _sha(source)
    out = tmp_path / "engines"
    load_engines(["--data", str(bird), "--engine", "duckdb", "--out", str(out)])
    assert _sha(source) == before and sorted(p.name for p in source.parent.iterdir()) == [
        "database_description", "shop.sqlite"]  # read-only: not a byte changed, no journal left

    report = _report(out, "duckdb")
    load = report["loads"]["shop"]
    assert load["types"] == {
        "customers": {"customer_id": "BIGINT", "name": "VARCHAR", "country": "VARCHAR", "joined": "TIMESTAMP",
                      "vip": "BOOLEAN", "score": "VARCHAR"},
        "orders": {"order_id": "BIGINT", "customer_id": "BIGINT", "amount": "DECIMAL(10,2)", "placed": "VARCHAR",
                   "note": "VARCHAR"},
        "returns": {"order_id": "BIGINT", "reason": "VARCHAR"}}  # text of integers: the type of the key it names
    fallbacks = {(f["table"], f["column"]): f["why"] for f in load["fallbacks"]}
    assert fallbacks == {("customers", "score"): "text or blob values in an integer column (e.g. 'n/a')",
                         ("orders", "placed"): "values that are not dates as written (e.g. 'not a date')",
                         ("orders", "note"): "mixed values (int, str) in a column without a type (e.g. 'gift')",
                         ("returns", "order_id"): "integers in a TEXT column: bigint, the type of the key it references"}
    assert load["keys_left_out"] == [{"table": "orders",
                                      "what": "foreign key (customer_id) -> customers: 1 row(s) reference no row"}]
    assert (load["tables"], load["rows"], load["primary_keys"], load["foreign_keys"]) == (3, 9, 2, 1)

    copy = out / "shop" / "shop.duckdb"
    assert (out / "shop" / "database_description" / "customers.csv").is_file()  # beside it, as on SQLite
    db = open_database(copy)
    schema = db.introspect()
    customers = schema.table("customers")
    assert customers.primary_key == ["customer_id"]
    assert customers.column("vip").description == "whether the customer is a VIP"
    rows = db.execute("SELECT joined, vip, score FROM customers ORDER BY customer_id").rows
    assert rows == (("2024-01-05 10:00:00", True, "10"), ("2024-02-01 00:00:00", False, "n/a"),
                    ("2024-03-09 08:30:00", True, "7"))  # read back as the SQLite executor gives them
    assert db.execute("SELECT note FROM orders ORDER BY order_id").rows == (("gift",), ("4",), (None,), ("x",))
    _check_agreement(report, "duckdb")


def scripted_build(engine: str):
    answers = {q: answer if isinstance(answer, str) else answer[engine] for q, _gold, answer in QUESTIONS}

    def reply(messages, agent):
        asked = messages[-1]["content"].rsplit("Question: ", 1)[1].split("\n", 1)[0].strip()
        return f"```sql\n{answers.get(asked, 'SELECT 1')}\n```"

    llm = ScriptedLLM(reply)

    def build(**opts):
        return Pipeline(llm, max_rounds=opts["max_rounds"], timeout_s=opts["timeout_s"],
                        use_selector=not opts["no_selector"], use_decomposer=not opts["no_decomposer"],
                        use_refiner=not opts["no_refiner"], candidates=1, prompt_engine=opts["prompt_engine"])
    return build, llm


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _eval_on_copies(bird, tmp_path, monkeypatch, engine: str, where: list, prompt_engine: str = "sqlite") -> Path:
    """An eval answering on the copies: the model's SQL for the engine (ILIKE, DuckDB's //) is right there,
    and the gold SQL is scored on SQLite. The prompts name SQLite, or with `--prompt-engine native` the
    engine."""
    build, llm = scripted_build(engine)
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    out = tmp_path / f"run-{engine}"
    r = run("eval", "--data", bird, "--db-id", "shop", "--engine", engine, *where, "--out", out, "-q",
            "--prompt-engine", prompt_engine)
    assert r.exit_code == 0, r.output
    assert "n=5  EX(Spider) 100.0  EX(BIRD) 100.0" in r.output and "fails 0.0%" in r.output
    name = {"duckdb": "DuckDB", "postgres": "PostgreSQL"}[engine]
    named, other = (name, "SQLite") if prompt_engine == "native" else ("SQLite", name)
    prompts = [m[-1]["content"] for agent, m in llm.calls if agent == "decomposer"]
    assert len(prompts) == 5 and all(f"one {named} query" in p and other not in p for p in prompts), prompts[0]
    config = json.loads((out / "run.json").read_text())
    assert config["engine"] == engine and "secret" not in json.dumps(config)
    return out


def test_eval_answers_on_the_duckdb_copies(bird, tmp_path, monkeypatch):
    engines = tmp_path / "engines"
    load_engines(["--data", str(bird), "--engine", "duckdb", "--out", str(engines)])
    out = _eval_on_copies(bird, tmp_path, monkeypatch, "duckdb", ["--engine-root", engines])
    assert json.loads((out / "run.json").read_text())["engine_location"] == str(engines.resolve())
    # the same folder on SQLite is another run
    r = run("eval", "--data", bird, "--db-id", "shop", "--out", out, "-q")
    assert r.exit_code == 1 and "holds a run with a different engine (engine='duckdb')" in r.output


@pytest.mark.parametrize("args, message", [
    (["--engine", "duckdb"], "--engine duckdb answers on DuckDB copies: pass --engine-root DIR"),
    (["--engine", "duckdb", "--engine-root", "{empty}"], "1 DuckDB copy(ies) missing under --engine-root"),
    (["--engine-root", "{empty}"], "--engine-root and --engine-url are for --engine duckdb or postgres"),
    (["--engine", "postgres", "--engine-root", "{empty}"], "--engine postgres answers on a server"),
    (["--engine", "duckdb", "--engine-root", "{empty}", "--ves"], "leave out --ves"),
    (["--engine", "postgres", "--engine-url", "postgresql://u@127.0.0.1:1/x", "--half", "first"],
     "examples and descriptions given for the run go to each database by its db_id"),
])
def test_engine_options_that_cannot_work_fail_before_a_model_loads(bird, tmp_path, monkeypatch, args, message):
    def no_model(**opts):
        raise AssertionError("no model may load")

    monkeypatch.setattr("macsql.cli.options.build_pipeline", no_model)
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in args]
    r = run("eval", "--data", bird, "--db-id", "shop", "--out", tmp_path / "run", "-q", *args)
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output


def test_eval_help_has_an_engine_section():
    r = run("eval", "--help")
    engine = r.output.split("\nEngine:\n", 1)[1].split("\n\n", 1)[0]
    assert all(opt in engine for opt in ("--engine ", "--engine-root", "--engine-url"))


# ------------------------------------------------------------------------------------------- PostgreSQL
def test_postgres_copy_agreement_and_eval(bird, tmp_path, monkeypatch):
    pytest.importorskip("psycopg", reason='psycopg is not installed: pip install -e ".[postgres]"')
    from tests.pg_server import READER, READER_PASSWORD, Unavailable, start_server

    try:
        server = start_server()
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        server.script(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'; "
                      f"GRANT CONNECT ON DATABASE shop TO {READER}")
        owner = f"postgresql://postgres@/shop?host={server.socket_dir}&port={server.port}"
        out = tmp_path / "engines"
        load_engines(["--data", str(bird), "--engine", "postgres", "--url", owner, "--grant", READER,
                      "--out", str(out)])
        report = _report(out, "postgres")
        load = report["loads"]["shop"]
        assert load["types"]["customers"] == {"customer_id": "bigint", "name": "text", "country": "varchar(10)",
                                              "joined": "timestamp", "vip": "boolean", "score": "text"}
        assert load["types"]["orders"]["amount"] == "numeric(10,2)"
        assert load["types"]["returns"] == {"order_id": "bigint", "reason": "text"}
        # the order that references no customer stays, and so does the key: added NOT VALID, as SQLite has it
        assert load["keys_left_out"] == [] and load["foreign_keys"] == 2
        _check_agreement(report, "postgres")
        with server.superuser() as conn:  # one schema per db_id, names in lower case, owned by the loader
            assert conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop' "
                                "ORDER BY 1").fetchall() == [("customers",), ("orders",), ("returns",)]
        close_all()
        reader = server.url("shop", user=READER, password=READER_PASSWORD)
        # in SQLite's order, the keys as SQLite has them
        schema = open_database(server.url("shop", user=READER, password=READER_PASSWORD, schema="shop")).introspect()
        assert [t.name for t in schema.tables] == ["customers", "orders", "returns"]
        assert [(f.column, f.ref_table) for t in schema.tables for f in t.foreign_keys] == [
            ("customer_id", "customers"), ("order_id", "orders")]
        close_all()
        _eval_on_copies(bird, tmp_path, monkeypatch, "postgres", ["--engine-url", reader], prompt_engine="native")
    finally:
        close_all()
        server.stop()

"""`macsql eval` with examples and descriptions given for the run: examples from another GeoQuery split,
from the other half of each database's questions, or from a file; descriptions on and off. No question is
shown its own answer, the single prompt shows examples too, and run.json says which examples a run had."""

import hashlib
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from macsql.backends.base import ScriptedLLM
from macsql.cli import main
from macsql.evaluate.datasets import Example
from macsql.evaluate.teaching import split_halves
from macsql.pipeline import Pipeline
from tests.conftest import make_db

GEO_SQL = """
CREATE TABLE state (state_name TEXT PRIMARY KEY, capital TEXT, area REAL);
CREATE TABLE city (city_name TEXT, population INTEGER, state_name TEXT REFERENCES state(state_name));
INSERT INTO state VALUES ('texas', 'austin', 695662), ('ohio', 'columbus', 116096);
INSERT INTO city VALUES ('houston', 2300000, 'texas'), ('austin', 960000, 'texas'),
                        ('dayton', 140000, 'ohio'), ('columbus', 900000, 'ohio');
"""


def sentence(split, text, **variables):
    return {"question-split": split, "text": text, "variables": variables}


# text2sql-data's format: one record per query, its sentences (with variables) in the question-splits.
GEO_RECORDS = [
    {"sql": ['SELECT capital FROM state WHERE state_name = "state_name0" ;'],
     "sentences": [sentence("train", "what is the capital of state_name0", state_name0="texas"),
                   sentence("test", "capital of state_name0 ?", state_name0="ohio")]},
    {"sql": ["SELECT COUNT( * ) FROM city ;"],  # the test question's own text is in train too (folded)
     "sentences": [sentence("train", "how many cities are there"),
                   sentence("test", "How many cities are there?")]},
    {"sql": ['SELECT COUNT( * ) FROM city WHERE state_name = "state_name0" ;'],
     "sentences": [sentence("train", "how many cities are in state_name0", state_name0="texas")]},
    {"sql": ['SELECT population FROM city WHERE city_name = "city_name0" ;'],
     "sentences": [sentence("train", "what is the population of city_name0", city_name0="houston"),
                   sentence("train", "population of city_name0", city_name0="dayton"),
                   sentence("dev", "how many people live in city_name0", city_name0="dayton")]},
]
TEST_QUESTIONS = {"capital of ohio ?": 'SELECT capital FROM state WHERE state_name = "ohio"',
                  "How many cities are there?": "SELECT COUNT( * ) FROM city"}


@pytest.fixture
def geo_set(tmp_path):
    folder = tmp_path / "geoquery"
    folder.mkdir()
    make_db(folder / "geography.sqlite", GEO_SQL)
    (folder / "geography.json").write_text(json.dumps(GEO_RECORDS))
    return folder / "geography.json"


SHOP_SQL = """
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
INSERT INTO customers VALUES (1, 'Ana', 'Spain'), (2, 'Bo', 'Sweden'), (3, 'Cy', 'Spain'), (4, 'Di', 'Peru');
"""
SHOP_QUESTIONS = [("How many customers live in Spain?", "SELECT COUNT(*) FROM customers WHERE country = 'Spain'"),
                  ("How many customers live in Peru?", "SELECT COUNT(*) FROM customers WHERE country = 'Peru'"),
                  ("List the names of customers in Sweden.", "SELECT name FROM customers WHERE country = 'Sweden'"),
                  ("Which customers live in Spain?", "SELECT name FROM customers WHERE country = 'Spain'"),
                  ("How many customers are there?", "SELECT COUNT(*) FROM customers")]
GEO_QUESTIONS = [("How many cities are in texas?", "SELECT COUNT(*) FROM city WHERE state_name = 'texas'"),
                 ("How many cities are in ohio?", "SELECT COUNT(*) FROM city WHERE state_name = 'ohio'"),
                 ("What is the capital of texas?", "SELECT capital FROM state WHERE state_name = 'texas'"),
                 ("What is the capital of ohio?", "SELECT capital FROM state WHERE state_name = 'ohio'")]


@pytest.fixture
def bird_set(tmp_path):
    """BIRD's layout: dev.json and dev_databases/<db_id>/<db_id>.sqlite, shop with a description folder."""
    root = tmp_path / "bird" / "dev_databases"
    for db_id, sql in (("shop", SHOP_SQL), ("geo", GEO_SQL)):
        (root / db_id).mkdir(parents=True)
        make_db(root / db_id / f"{db_id}.sqlite", sql)
    described = root / "shop" / "database_description"
    described.mkdir()
    (described / "customers.csv").write_text(
        "original_column_name,column_name,column_description,data_format,value_description\n"
        "country,country,the customer's home country,text,\n")
    records = [{"question_id": i, "db_id": db_id, "question": q, "evidence": "", "SQL": sql, "difficulty": "simple"}
               for i, (db_id, (q, sql)) in enumerate([("shop", x) for x in SHOP_QUESTIONS]
                                                     + [("geo", x) for x in GEO_QUESTIONS])]
    (tmp_path / "bird" / "dev.json").write_text(json.dumps(records))
    return tmp_path / "bird" / "dev.json"


def asked(content: str) -> str:
    """The question a prompt asks: its last `Question:` line (the examples' come before it)."""
    return content.rsplit("Question: ", 1)[1].split("\n", 1)[0].strip()


def examples_block(content: str) -> str:
    if "Approved examples on this database:" not in content:
        return ""
    return content.split("Approved examples on this database:", 1)[1].rsplit("Task:", 1)[0]


def shown_sql(content: str) -> list[str]:
    """The SQL of the examples a prompt shows, one query a line."""
    lines = examples_block(content).splitlines()
    return [lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.strip() == "```sql"]


def scripted(answers: dict[str, str]):
    """A stand-in for build_pipeline: the real graph over ScriptedLLM, answering each question's gold SQL;
    the backend is returned too, to read the prompts it saw."""
    llm = ScriptedLLM(lambda messages, agent: f"```sql\n{answers.get(asked(messages[-1]['content']), 'SELECT 1')}\n```")

    def build(**opts):
        return Pipeline(llm, max_rounds=opts["max_rounds"], timeout_s=opts["timeout_s"],
                        use_selector=not opts["no_selector"], use_decomposer=not opts["no_decomposer"],
                        use_refiner=not opts["no_refiner"], candidates=opts["candidates"])
    return build, llm


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def prompts(llm) -> list[str]:
    return [m[-1]["content"] for agent, m in llm.calls if agent == "decomposer"]


def test_geoquery_examples_from_train_never_show_a_question_its_own_sql(geo_set, tmp_path, monkeypatch):
    build, llm = scripted(TEST_QUESTIONS)
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    out = tmp_path / "run"
    args = ["eval", "--data", geo_set, "--split", "test", "--examples-from-split", "train", "--out", out,
            "--candidates", "1", "-q"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "n=2  EX(Spider) 100.0" in r.output
    seen = {asked(p): p for p in prompts(llm)}
    assert set(seen) == set(TEST_QUESTIONS)
    for question, prompt in seen.items():
        shown = examples_block(prompt)
        assert shown_sql(prompt) and TEST_QUESTIONS[question] not in shown_sql(prompt)  # never its own SQL
        assert "Question: how many cities are there\n" not in shown  # its own text, folded, is left out
    # an example from the train split, most like the question, is shown
    assert "Question: how many cities are in texas" in examples_block(seen["How many cities are there?"])
    assert "Question: what is the capital of texas" in examples_block(seen["capital of ohio ?"])
    assert "how many people live in dayton" not in "".join(prompts(llm))  # dev is neither asked nor shown

    config = json.loads((out / "run.json").read_text())
    source = config["examples_source"]
    pairs_file = Path(source["path"])
    assert source["kind"] == "split" and source["split"] == "train" and source["pairs"] == 5
    assert pairs_file.parent == out.resolve() and pairs_file.name == f"examples-{source['sha256'][:12]}.json"
    assert hashlib.sha256(pairs_file.read_bytes()).hexdigest() == source["sha256"]
    assert {p["question"] for p in json.loads(pairs_file.read_text())} == {
        "what is the capital of texas", "how many cities are there", "how many cities are in texas",
        "what is the population of houston", "population of dayton"}
    assert config["pipeline_options"]["exclude_asked"] is True  # recorded as it ran
    assert config["pipeline_options"]["examples_file"] == str(pairs_file)
    summary = (out / "summary.md").read_text()
    assert f"- examples: 5 pairs from split `train` of the data file, in `{pairs_file}`" in summary
    assert "- questions shown an example with their own gold SQL (another wording): 0" in summary

    calls = len(llm.calls)
    r = run(*args)  # finished: rebuilt without a model
    assert r.exit_code == 0 and len(llm.calls) == calls
    for other in (["--examples-from-split", "dev"], []):  # other examples, or none: refused
        r = run("eval", "--data", geo_set, "--split", "test", *other, "--out", out, "--candidates", "1", "-q")
        assert r.exit_code == 1 and "holds a run with a different" in r.output and "examples_source" in r.output
    assert len(llm.calls) == calls

    # GeoQuery's question split puts one query under several wordings, in train and in dev: the wording in
    # train is shown (the split's design), and the report counts it
    r = run("eval", "--data", geo_set, "--split", "dev", "--examples-from-split", "train", "--out", tmp_path / "dev",
            "--candidates", "1", "-q")
    assert r.exit_code == 0, r.output
    assert "Question: population of dayton" in examples_block(prompts(llm)[-1])
    dev_summary = (tmp_path / "dev" / "summary.md").read_text()
    assert "their own gold SQL (another wording): 1" in dev_summary
    assert "EX on the other" not in dev_summary  # its one question was shown its own SQL: nothing else to score


def test_the_summary_sets_apart_questions_shown_their_own_sql():
    from macsql.evaluate.report import _taught_lines

    config = {"examples_source": {"kind": "split", "split": "train", "path": "ex.json", "sha256": "ab" * 32,
                                  "pairs": 549}}
    lines = _taught_lines({"examples_same_sql": 14, "ex_without_own_sql": {"n": 35, "ex_spider": 71.43,
                                                                          "ex_bird": 71.43}}, config)
    assert "- questions shown an example with their own gold SQL (another wording): 14" in lines
    assert "- EX on the other 35 questions: 71.4 (Spider), 71.4 (BIRD)" in lines
    assert not any("EX on the other" in line for line in _taught_lines({"examples_same_sql": 0}, config))


def test_without_examples_the_same_questions_see_none(geo_set, tmp_path, monkeypatch):
    build, llm = scripted(TEST_QUESTIONS)
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    r = run("eval", "--data", geo_set, "--split", "test", "--out", tmp_path / "run", "--candidates", "1", "-q")
    assert r.exit_code == 0, r.output
    assert len(prompts(llm)) == 2 and not any(examples_block(p) for p in prompts(llm))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["examples_source"] is None


def test_the_single_prompt_shows_examples_and_no_knowledge_shows_none(geo_set, tmp_path, monkeypatch):
    build, llm = scripted(TEST_QUESTIONS)
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    out = tmp_path / "run"
    r = run("eval", "--data", geo_set, "--split", "test", "--examples-from-split", "train", "--out", out,
            "--ablations", "--variants", "baseline,no-knowledge", "-q")
    assert r.exit_code == 0, r.output
    for variant, shows in (("baseline", True), ("no-knowledge", False)):
        records = [json.loads(line) for line in (out / variant / "predictions.jsonl").read_text().splitlines()]
        assert len(records) == 2
        if variant == "baseline":
            assert all(rec["llm_calls"] == 1 for rec in records)  # one prompt per question
        shown = [t for rec in records for t in rec["trace"] if t["agent"] == "knowledge"]
        assert bool(shown) == shows
    baseline, no_knowledge = prompts(llm)[:2], prompts(llm)[2:]  # the variants run in the order named
    assert len(baseline) == 2 and all(shown_sql(p) for p in baseline)
    assert no_knowledge and not any(examples_block(p) for p in no_knowledge)


def _examples(db_ids=("a", "b"), n=(7, 4)):
    return [Example(question_id=str(100 * k + i), db_id=db, question=f"q{k}-{i}", gold_sql="SELECT 1",
                    db_path=Path(f"{db}.sqlite")) for k, (db, count) in enumerate(zip(db_ids, n, strict=True)) for i in range(count)]


def test_halves_are_deterministic_disjoint_and_cover_every_question():
    examples = _examples()
    halves = split_halves(examples)
    first, second = ({(e.db_id, e.question_id) for e in halves[h]} for h in ("first", "second"))
    assert not first & second and first | second == {(e.db_id, e.question_id) for e in examples}
    for db, n in (("a", 7), ("b", 4)):  # per database: the first half has the odd one
        assert sum(1 for d, _ in first if d == db) == (n + 1) // 2
        assert sum(1 for d, _ in second if d == db) == n // 2
    shuffled = examples[:]
    random.Random(3).shuffle(shuffled)
    again = split_halves(shuffled)  # the file's order does not decide a question's half
    assert {(e.db_id, e.question_id) for e in again["first"]} == first
    assert [e.question_id for e in halves["first"]] == [e.question_id for e in examples if (e.db_id, e.question_id)
                                                        in first]  # each half keeps the file's order
    assert {(e.db_id, e.question_id) for e in split_halves(examples, seed=1)["first"]} != first


def test_each_half_is_answered_with_the_other_halfs_pairs(bird_set, tmp_path, monkeypatch):
    answers = dict(SHOP_QUESTIONS + GEO_QUESTIONS)
    build, llm = scripted(answers)
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    answered = {}
    for half in ("first", "second"):
        out = tmp_path / half
        r = run("eval", "--data", bird_set, "--half", half, "--out", out, "--candidates", "1", "-q")
        assert r.exit_code == 0, r.output
        config = json.loads((out / "run.json").read_text())
        source = config["examples_source"]
        assert source["kind"] == "half" and source["half"] == half and source["seed"] == 0
        pairs = json.loads(Path(source["path"]).read_text())
        answered[half] = set(config["question_ids"])
        assert not answered[half] & {p["id"] for p in pairs}  # the examples are the other half only
        assert {p["db_id"] for p in pairs} == {"shop", "geo"}
        assert config["examples_per_database"] == {"geo": 2, "shop": 2 if half == "first" else 3}
    assert not answered["first"] & answered["second"]
    assert answered["first"] | answered["second"] == {str(i) for i in range(9)}
    for p in prompts(llm):
        assert answers[asked(p)] not in shown_sql(p)
    assert sum(1 for p in prompts(llm) if examples_block(p)) >= 6  # most questions share words with a pair

    r = run("eval", "--data", bird_set, "--half", "second", "--out", tmp_path / "first", "--candidates", "1", "-q")
    assert r.exit_code == 1 and "holds a run with a different" in r.output


def test_descriptions_on_and_off(bird_set, tmp_path, monkeypatch):
    build, llm = scripted(dict(SHOP_QUESTIONS))
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    common = ["--data", bird_set, "--db-id", "shop", "--limit", "1", "--candidates", "1", "-q"]
    r = run("eval", *common, "--out", tmp_path / "on")
    assert r.exit_code == 0, r.output
    assert "the customer's home country" in prompts(llm)[-1]
    r = run("eval", *common, "--out", tmp_path / "off", "--no-descriptions")
    assert r.exit_code == 0, r.output
    assert "the customer's home country" not in prompts(llm)[-1] and "country TEXT" in prompts(llm)[-1]
    assert r.output.startswith("no-descriptions: n=1")
    config = json.loads((tmp_path / "off" / "run.json").read_text())
    assert config["pipeline_options"]["use_descriptions"] is False and config["descriptions_source"] == {"kind": "none"}
    assert "- descriptions: none (--no-descriptions" in (tmp_path / "off" / "summary.md").read_text()

    # a description folder given for the run, on a database that has none beside it
    folder = bird_set.parent / "dev_databases" / "shop" / "database_description"
    geo_build, geo_llm = scripted(dict(GEO_QUESTIONS))
    monkeypatch.setattr("macsql.cli.options.build_pipeline", geo_build)
    (tmp_path / "geo_desc").mkdir()
    (tmp_path / "geo_desc" / "city.csv").write_text("original_column_name,column_description\n"
                                                    "population,people living there\n")
    r = run("eval", "--data", bird_set, "--db-id", "geo", "--limit", "1", "--candidates", "1", "-q",
            "--out", tmp_path / "desc", "--descriptions", tmp_path / "geo_desc")
    assert r.exit_code == 0, r.output
    assert "people living there" in prompts(geo_llm)[-1]
    source = json.loads((tmp_path / "desc" / "run.json").read_text())["descriptions_source"]
    assert source["kind"] == "file" and len(source["sha256"]) == 64
    r = run("eval", "--data", bird_set, "--db-id", "geo", "--out", tmp_path / "x", "--descriptions", folder, "-q")
    assert r.exit_code == 1 and "holds no descriptions for the databases evaluated (geo)" in r.output


def test_an_examples_file_is_recorded_by_its_hash(bird_set, tmp_path, monkeypatch):
    build, llm = scripted(dict(SHOP_QUESTIONS))
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("question,sql\nHow many customers live in Sweden?,"
                     "SELECT COUNT(*) FROM customers WHERE country = 'Sweden'\n")
    out = tmp_path / "run"
    args = ["eval", "--data", bird_set, "--db-id", "shop", "--limit", "1", "--candidates", "1", "-q", "--out", out]
    r = run(*args, "--examples", pairs)
    assert r.exit_code == 0, r.output
    assert "Question: How many customers live in Sweden?" in examples_block(prompts(llm)[-1])
    config = json.loads((out / "run.json").read_text())
    assert config["examples_source"] == {"kind": "file", "path": str(pairs.resolve()),
                                         "sha256": hashlib.sha256(pairs.read_bytes()).hexdigest()}
    assert config["examples_per_database"] == {"shop": 1}
    pairs.write_text(pairs.read_text() + "How many customers are in Peru?,SELECT 1\n")  # the file changed
    r = run(*args, "--examples", pairs)
    assert r.exit_code == 1 and "examples_source" in r.output


def test_an_earlier_runs_config_still_resumes(geo_set, tmp_path, monkeypatch):
    """Runs recorded `exclude_asked: false` though eval always excluded, and had no `use_descriptions`."""
    build, llm = scripted(TEST_QUESTIONS)
    monkeypatch.setattr("macsql.cli.options.build_pipeline", build)
    out = tmp_path / "run"
    args = ["eval", "--data", geo_set, "--split", "test", "--out", out, "--candidates", "1", "-q"]
    assert run(*args, "--limit", "1").exit_code == 0
    config = json.loads((out / "run.json").read_text())
    del config["pipeline_options"]["use_descriptions"], config["examples_source"], config["descriptions_source"]
    config["pipeline_options"]["exclude_asked"] = False
    (out / "run.json").write_text(json.dumps(config))
    r = run(*args)  # the sample grows to 2: the earlier answer is kept, one question is asked
    assert r.exit_code == 0, r.output
    assert len(prompts(llm)) == 2 and json.loads((out / "run.json").read_text())["pipeline_options"]["exclude_asked"]


@pytest.mark.parametrize("extra, message", [
    (["--examples-from-split", "train", "--half", "first"],
     "--examples-from-split and --half are two sources of examples"),
    (["--split", "train", "--examples-from-split", "train"],
     "--examples-from-split train is the split being evaluated (--split train)"),
    (["--split", "test", "--examples-from-split", "nope"], "no questions in split 'nope' of"),
])
def test_examples_options_that_cannot_work_fail_before_a_model_loads(geo_set, tmp_path, monkeypatch, extra, message):
    monkeypatch.setattr("macsql.cli.options.build_pipeline", lambda **_: pytest.fail("a model was loaded"))
    r = run("eval", "--data", geo_set, "--out", tmp_path / "run", *extra)
    assert r.exit_code == 1 and r.output.startswith("Error: ") and message in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_examples_from_split_needs_geoquery(bird_set, tmp_path, monkeypatch):
    monkeypatch.setattr("macsql.cli.options.build_pipeline", lambda **_: pytest.fail("a model was loaded"))
    r = run("eval", "--data", bird_set, "--out", tmp_path / "run", "--examples-from-split", "train")
    assert r.exit_code == 1 and "--examples-from-split takes a question-split of a GeoQuery" in r.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"db_id": "nowhere", "question": "q?", "SQL": "SELECT 1"}]))
    r = run("eval", "--data", bird_set, "--out", tmp_path / "run", "--examples", other)
    assert r.exit_code == 1 and "holds no question/SQL pairs for the databases evaluated (geo, shop)" in r.output

"""Teaching macsql a database: the knowledge file, its importers, the checks that keep bad examples out,
retrieval, the Decomposer's prompt, eval's exclusion of a question's own example, and `macsql teach`."""

import json

import pytest
from click.testing import CliRunner

from macsql import knowledge
from macsql.backends.base import ScriptedLLM
from macsql.cli import main
from macsql.errors import InputError
from macsql.pipeline import Pipeline
from macsql.schema import introspect, render_schema
from tests.conftest import make_db

GEO_SQL = """
CREATE TABLE state (state_name TEXT PRIMARY KEY, capital TEXT, area REAL);
CREATE TABLE city (city_name TEXT, pop INTEGER, state_name TEXT REFERENCES state(state_name));
INSERT INTO state VALUES ('texas', 'austin', 695662), ('ohio', 'columbus', 116096);
INSERT INTO city VALUES ('houston', 2300000, 'texas'), ('austin', 960000, 'texas'),
                        ('dayton', 140000, 'ohio'), ('columbus', 900000, 'ohio');
"""
MAJOR = "SELECT COUNT(*) FROM city WHERE pop > 150000"
MAJOR_Q = "How many major cities are there?"


@pytest.fixture
def geo(tmp_path):
    return make_db(tmp_path / "geo.sqlite", GEO_SQL)


def fenced(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def reply(sql: str = MAJOR):
    return lambda messages, agent: "Final SQL:\n" + fenced(sql)


def decomposer_prompts(llm) -> list[str]:
    return [m[-1]["content"] for agent, m in llm.calls if agent == "decomposer"]


# ---------------------------------------------------------------------------------------- the file
def test_what_is_taught_is_stored_and_read_back(geo):
    ex = knowledge.add_example(geo, MAJOR_Q, MAJOR, approved_by="ana")
    term = knowledge.add_term(geo, "major city", "city.pop > 150000", approved_by="ana")
    key, _ = knowledge.describe(geo, "CITY.Pop", "number of people", approved_by="bo", values="people")
    knowledge.describe(geo, "state", "US states", approved_by="bo")
    assert (ex["id"], term["id"], key) == ("e1", "t1", "city.pop")
    assert ex["approved_by"] == "ana" and ex["approved_at"].endswith("Z")

    known = knowledge.load(geo)
    assert [e["question"] for e in known.examples] == [MAJOR_Q]
    assert known.terms[0]["meaning"] == "city.pop > 150000"
    assert known.descriptions["city.pop"]["value_description"] == "people"
    assert known.descriptions["state"]["description"] == "US states"
    path = knowledge.knowledge_file(geo, introspect(geo))
    data = json.loads(path.read_text())
    assert data["format"] == "macsql-knowledge" and data["database"]["path"] == str(geo.resolve())
    assert knowledge.read_knowledge(path).to_dict() == known.to_dict()


def test_a_different_schema_at_the_same_path_gets_no_stale_knowledge(geo, tmp_path):
    knowledge.add_term(geo, "major city", "city.pop > 150000", approved_by="ana")
    old = knowledge.knowledge_file(geo, introspect(geo))
    geo.unlink()
    make_db(geo, "CREATE TABLE city (name TEXT, people INTEGER); INSERT INTO city VALUES ('x', 1);")
    schema = introspect(geo)
    assert knowledge.load(geo, schema).empty
    assert knowledge.earlier_files(geo, schema) == [old]
    # another file with the same schema at another path starts empty too
    other = make_db(tmp_path / "copy.sqlite", GEO_SQL)
    assert knowledge.load(other).empty


# ----------------------------------------------------------------------------------------- importers
def test_import_a_bird_description_folder(geo, tmp_path):
    folder = tmp_path / "desc"
    folder.mkdir()
    (folder / "city.csv").write_text(
        "original_column_name,column_name,column_description,data_format,value_description\n"
        "pop,population,number of people living in the city,integer,\n"
        "state_name,,the state the city is in,text,lower case\n", encoding="utf-8")
    done = knowledge.import_file(geo, folder, approved_by="ana")
    assert done.descriptions == 2 and not done.refused
    known = knowledge.load(geo)
    assert known.descriptions["city.pop"]["description"] == "number of people living in the city"
    assert known.descriptions["city.state_name"]["value_description"] == "lower case"
    assert known.descriptions["city.pop"]["approved_by"] == "ana"
    text = render_schema(knowledge.apply_descriptions(introspect(geo), known))
    assert "pop INTEGER, -- number of people living in the city" in text


def test_import_a_tables_json_with_column_descriptions(geo, tmp_path):
    entry = {"db_id": "geo", "table_names_original": ["state", "city"],
             "column_names_original": [[-1, "*"], [0, "state_name"], [0, "capital"], [0, "area"],
                                       [1, "city_name"], [1, "pop"], [1, "state_name"]],
             # KaggleDBQA's texts, one per column; a [table index, text] pair is read too
             "column_descriptions": ["", "", "capital city", "area in square km", "", [1, "population"], ""]}
    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps([{**entry, "db_id": "other"}, entry]))
    done = knowledge.import_file(geo, tables, approved_by="ana")
    assert done.descriptions == 3
    known = knowledge.load(geo)
    assert known.descriptions["state.area"]["description"] == "area in square km"
    assert known.descriptions["city.pop"]["description"] == "population"
    tables.write_text(json.dumps([{**entry, "db_id": "other"}, {**entry, "db_id": "x"}]))
    with pytest.raises(InputError, match="no entry with db_id 'geo'"):
        knowledge.import_file(geo, tables, approved_by="ana")


def test_import_pairs_stores_the_good_ones_and_lists_the_refused(geo, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("question,sql\n"
                     f"{MAJOR_Q},{MAJOR}\n"
                     "Which cities are in utah?,SELECT city_name FROM city WHERE state_name = 'utah'\n"
                     "Drop the cities,DELETE FROM city\n", encoding="utf-8")
    done = knowledge.import_file(geo, pairs, approved_by="ana")
    assert done.examples == 1 and len(done.refused) == 2
    assert done.refused[0] == "pair 2: the SQL returns no rows"
    assert done.refused[1].startswith("pair 3: the SQL is not one read-only query: only SELECT/WITH")
    again = knowledge.import_file(geo, pairs, approved_by="ana")
    assert again.examples == 0 and len(again.skipped) == 1  # a question stored already is not stored twice
    # a Spider data file gives this database's pairs only
    spider = tmp_path / "train.json"
    spider.write_text(json.dumps([{"db_id": "geo", "question": "How many states?", "query": "SELECT COUNT(*) FROM state"},
                                  {"db_id": "x", "question": "Other?", "query": "SELECT 1"}]))
    assert knowledge.import_file(geo, spider, approved_by="bo").examples == 1
    assert [e["question"] for e in knowledge.load(geo).examples] == [MAJOR_Q, "How many states?"]


# ---------------------------------------------------------------------------------------- poisoning
@pytest.mark.parametrize("sql, why", [
    ("SELECT * FROM city WHERE (", "the SQL does not parse"),
    ("DELETE FROM city", "the SQL is not one read-only query: only SELECT/WITH queries are allowed, got DELETE"),
    ("SELECT 1; SELECT 2", "the SQL is not one read-only query: only one statement is allowed, got 2"),
    ("SELECT city_name FROM city WHERE pop > 1e12", "the SQL returns no rows"),
    ("SELECT MAX(pop) FROM city WHERE 0", "the SQL returns only NULL"),
    ("SELECT nope FROM city", "the SQL fails on the database: no such column: nope"),
])
def test_an_example_that_does_not_run_with_rows_is_refused(geo, sql, why):
    with pytest.raises(InputError) as err:
        knowledge.add_example(geo, "a question", sql, approved_by="ana")
    message = str(err.value)
    assert message.startswith(f"refused: {why}") and "\n" not in message
    assert knowledge.load(geo).empty


@pytest.mark.parametrize("who", ["", "   ", None])
def test_nothing_is_stored_without_an_approver(geo, who):
    with pytest.raises(InputError, match="refused: no approver"):
        knowledge.add_example(geo, MAJOR_Q, MAJOR, approved_by=who)
    with pytest.raises(InputError, match="refused: no approver"):
        knowledge.import_file(geo, geo, approved_by=who)
    assert knowledge.load(geo).empty


# ----------------------------------------------------------------------------------------- retrieval
EXAMPLES = [{"id": "e1", "question": "What is the capital of texas?", "sql": "SELECT capital FROM state"},
            {"id": "e2", "question": "How many major cities are in ohio?", "sql": MAJOR},
            {"id": "e3", "question": "What is the area of ohio?", "sql": "SELECT area FROM state"},
            {"id": "e4", "question": "How many major cities are there?", "sql": MAJOR}]


def test_retrieval_picks_the_most_similar_examples():
    got = knowledge.similar_examples(EXAMPLES, "how many major cities does texas have", 2)
    assert [e["id"] for e in got] == ["e4", "e2"]
    assert [e["id"] for e in knowledge.similar_examples(EXAMPLES, "the capital of ohio?", 1)] == ["e1"]
    assert knowledge.similar_examples(EXAMPLES, "list every river", 3) == []  # nothing in common: none
    assert knowledge.similar_examples(EXAMPLES, "the capital of ohio?", 0) == []


def test_retrieval_never_returns_the_question_itself():
    asked = "  how MANY major cities are there ?"
    got = knowledge.similar_examples(EXAMPLES, asked, 3, exclude=[asked])
    assert "e4" not in [e["id"] for e in got] and got[0]["id"] == "e2"


def test_glossary_terms_whose_words_are_in_the_question():
    terms = [{"term": "major city", "meaning": "pop > 150000"}, {"term": "big state", "meaning": "area > 1e5"}]
    assert knowledge.matching_terms(terms, "Which major cities are in ohio?") == terms[:1]
    assert knowledge.matching_terms(terms, "Which city is the biggest?") == []


# ------------------------------------------------------------------------------------- in the agents
def test_the_decomposer_shows_examples_after_an_unchanged_schema(geo):
    knowledge.add_example(geo, "How many major cities are in ohio?",
                          "SELECT COUNT(*) FROM city WHERE pop > 150000 AND state_name = 'ohio'", approved_by="ana")
    knowledge.add_term(geo, "major city", "city.pop > 150000", approved_by="ana")
    question = "How many major cities are in texas?"
    plain, taught = ScriptedLLM(reply()), ScriptedLLM(reply())
    Pipeline(plain, candidates=1, use_knowledge=False).ask(question, geo)
    answer = Pipeline(taught, candidates=1).ask(question, geo)
    (without,), (with_,) = decomposer_prompts(plain), decomposer_prompts(taught)
    schema_part = without.split("\n\nTask:")[0]
    assert schema_part.startswith("Database schema:\nCREATE TABLE")
    assert with_.startswith(schema_part + "\n\n")  # byte for byte: the schema prefix is cached across questions
    rest = with_[len(schema_part):]
    assert rest.index("Terms used in questions on this database:\n- major city: city.pop > 150000") \
        < rest.index("Approved examples on this database:\nQuestion: How many major cities are in ohio?") \
        < rest.index("Task:")
    assert "state_name = 'ohio'" in rest
    assert [t for t in answer.trace if t["agent"] == "knowledge"][0]["examples"] == ["e1"]
    assert answer.rows == [[3]]


def test_descriptions_show_in_the_schema_the_agents_read(geo):
    knowledge.describe(geo, "city.pop", "number of people", approved_by="ana")
    llm = ScriptedLLM(reply())
    Pipeline(llm, candidates=1).ask("How many cities have over a million people?", geo)
    assert "pop INTEGER, -- number of people" in decomposer_prompts(llm)[0]
    r = CliRunner().invoke(main, ["schema", "--db", str(geo)])
    assert r.exit_code == 0 and "-- number of people" in r.stdout


def test_eval_never_shows_a_question_its_own_example(geo):
    from macsql.evaluate.datasets import Example
    from macsql.evaluate.runner import VARIANTS, run_predictions
    from macsql.state import ablation_name

    knowledge.add_example(geo, MAJOR_Q, MAJOR, approved_by="ana")
    knowledge.add_example(geo, "How many major cities are in ohio?",
                          "SELECT COUNT(*) FROM city WHERE pop > 150000 AND state_name = 'ohio'", approved_by="ana")
    llm = ScriptedLLM(reply())
    asked = Example("q1", "geo", "how many  MAJOR cities are there?", MAJOR, geo)
    run_predictions(Pipeline(llm, candidates=1), [asked], None, progress=False)
    (prompt,) = decomposer_prompts(llm)
    assert "Question: How many major cities are in ohio?" in prompt
    assert f"Question: {MAJOR_Q}" not in prompt
    assert VARIANTS["no-knowledge"] == {"use_knowledge": False} and ablation_name("use_knowledge") == "no-knowledge"


# ---------------------------------------------------------------------------------------- the CLI
def teach(*args):
    return CliRunner().invoke(main, ["teach", *args])


def test_teach_add_list_remove(geo):
    db = ["--db", str(geo)]
    r = teach("add-example", *db, "--question", MAJOR_Q, "--sql", MAJOR, "--by", "ana")
    assert r.exit_code == 0 and r.stdout.strip() == "stored example e1"
    assert teach("add-term", *db, "major city", "city.pop > 150000", "--by", "ana").stdout.strip() == "stored term t1"
    assert teach("describe", *db, "city.pop", "people", "--by", "ana").stdout.strip() == \
        "stored the description of city.pop"
    listed = json.loads(teach("list", *db, "--json").stdout)
    assert [e["id"] for e in listed["examples"]] == ["e1"] and listed["examples"][0]["approved_by"] == "ana"
    assert listed["terms"][0]["term"] == "major city" and listed["file"].endswith(".json")
    human = teach("list", *db)
    assert human.exit_code == 0 and "e1  How many major cities are there?" in human.stdout
    r = teach("remove", *db, "e1")
    assert r.exit_code == 0 and r.stdout.strip() == "removed example e1"
    assert json.loads(teach("list", *db, "--json").stdout)["examples"] == []


def test_teach_bad_input_is_one_line(geo):
    db = ["--db", str(geo)]
    r = teach("add-example", *db, "--question", "q", "--sql", "DELETE FROM city", "--by", "ana")
    assert r.exit_code == 1 and r.output.strip() == ("Error: refused: the SQL is not one read-only query: "
                                                     "only SELECT/WITH queries are allowed, got DELETE")
    r = teach("add-example", *db, "--question", "q", "--sql", MAJOR, "--by", " ")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "--by" in r.output
    r = teach("add-example", *db, "--question", "q", "--sql", MAJOR)
    assert r.exit_code == 2 and r.output.startswith("Error: Missing option '--by'")
    r = teach("describe", *db, "city.popu", "people", "--by", "ana")
    assert r.exit_code == 1 and r.output.strip() == ("Error: no column 'popu' in table 'city' "
                                                     "(did you mean 'pop'?)")
    r = teach("remove", *db, "e9")
    assert r.exit_code == 1 and r.output.startswith("Error: nothing with id 'e9'")
    r = teach("frobnicate", *db)
    assert r.exit_code == 2


def test_teach_import_lists_refused_pairs(geo, tmp_path):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"question": MAJOR_Q, "sql": MAJOR},
                                 {"question": "Utah?", "sql": "SELECT * FROM city WHERE state_name = 'utah'"}]))
    r = teach("import", "--db", str(geo), str(pairs), "--by", "ana")
    assert r.exit_code == 0 and r.stdout.strip() == "imported 0 description(s), 0 term(s), 1 example(s); 1 refused"
    assert r.stderr.strip() == "refused pair 2: the SQL returns no rows"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "Drop?", "sql": "DROP TABLE city"}]))
    r = teach("import", "--db", str(geo), str(bad), "--by", "ana")
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1].startswith("Error: nothing imported from")


# ------------------------------------------------------------------------------------- ask, one-off
def test_one_off_pairs_for_other_databases_and_a_changed_file(geo, tmp_path):
    schema = introspect(geo)
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"db_id": "shop", "question": "How many orders?", "sql": "SELECT 1"}]))
    with pytest.raises(knowledge.NotForThisDatabase, match="no pairs for database 'geo'"):
        knowledge.read_one_off(schema, examples_file=str(pairs))  # ask: one file, one database
    assert knowledge.read_one_off(schema, examples_file=str(pairs), strict=False).empty  # eval: many
    pairs.write_text(json.dumps([{"db_id": "geo", "question": MAJOR_Q, "sql": MAJOR}, {"db_id": "shop",
                                 "question": "How many orders?", "sql": "SELECT 1"}]))  # edited: read again
    (found,) = knowledge.read_one_off(schema, examples_file=str(pairs), strict=False).examples
    assert found["question"] == MAJOR_Q


def test_one_off_examples_are_read_in_the_engines_dialect(geo, tmp_path):
    """`ask --examples` on DuckDB or PostgreSQL: the pairs' SQL is checked as that engine reads it."""
    schema = introspect(geo)
    pairs = tmp_path / "pairs.json"
    sql = r"SELECT city_name FROM city WHERE city_name <> E'bob\'s'"  # an escape string: not SQLite's
    pairs.write_text(json.dumps([{"db_id": "geo", "question": "Which cities are not Bob's?", "sql": sql}]))
    with pytest.raises(InputError, match="refused: the SQL does not parse"):
        knowledge.read_one_off(schema, examples_file=str(pairs))
    for dialect in ("duckdb", "postgres"):
        (found,) = knowledge.read_one_off(schema, examples_file=str(pairs), dialect=dialect).examples
        assert found["sql"] == sql


def test_ask_with_an_examples_file_shows_them_and_stores_nothing(geo, tmp_path, monkeypatch):
    import macsql.cli.options

    llm = ScriptedLLM(reply())
    monkeypatch.setattr(macsql.cli.options, "build_pipeline", lambda **_: Pipeline(llm, candidates=1))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"question,sql\nHow many major cities are in ohio?,{MAJOR} AND state_name = 'ohio'\n")
    r = CliRunner().invoke(main, ["ask", "How many major cities are in texas?", "--db", str(geo), "--json",
                                  "--examples", str(pairs)])
    assert r.exit_code == 0, r.output
    assert "Approved examples on this database:\nQuestion: How many major cities are in ohio?" in \
        decomposer_prompts(llm)[0]
    assert json.loads(r.stdout)["rows"] == [[3]]
    assert knowledge.load(geo).empty and not knowledge.knowledge_dir().exists()

    # a bad example file fails before any model is asked
    bad = tmp_path / "bad.csv"
    bad.write_text("question,sql\nDrop?,DROP TABLE city\n")
    calls = len(llm.calls)
    r = CliRunner().invoke(main, ["ask", "How many cities?", "--db", str(geo), "--examples", str(bad)])
    assert r.exit_code == 1 and r.output.startswith(f"Error: {bad}: example pair 1 refused: the SQL is not one")
    assert len(llm.calls) == calls

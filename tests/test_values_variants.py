"""Value linking finds the values real questions write differently from how they are stored (macsql.values)."""

import pytest

from macsql import values
from macsql.values import MAX_COLUMNS_PER_PHRASE, MAX_MATCHES, code_meanings, value_index
from tests.conftest import make_db

HEROES_SQL = """
CREATE TABLE team (id INTEGER PRIMARY KEY, name TEXT, sport TEXT);
CREATE TABLE hero (id INTEGER PRIMARY KEY, hero_name TEXT, race TEXT, hair TEXT, born TEXT, seen TEXT);
CREATE TABLE power (id INTEGER PRIMARY KEY, power_name TEXT);
CREATE TABLE attribute (id INTEGER PRIMARY KEY, attribute_name TEXT);
INSERT INTO team VALUES (1, 'Women''s Soccer', 'soccer'), (2, 'Men''s Rowing', 'rowing');
INSERT INTO hero VALUES
  (1, 'Apocalypse', 'Alien', 'Blond', '1990-01-01', '2012-03-04 10:00:00'),
  (2, 'Spider-Man', 'Human', 'Blue', '1985-12-31', '2015-07-01 08:30:00'),
  (3, '3-D Man', 'God / Eternal', 'No Colour', '1970-06-15', '2001-01-01 00:00:00'),
  (4, 'Spiderman', 'Mutant', 'Gold', '1962-08-10', '1999-09-09 09:09:09');
INSERT INTO power VALUES (1, 'Intelligence'), (2, 'Flight'), (3, 'Super Strength');
INSERT INTO attribute VALUES (1, 'Power'), (2, 'Speed');
"""


def found(db, question, **kw) -> set[tuple[str, str, str]]:
    return {(m.table, m.column, m.value) for m in value_index(db).match(question, **kw)}


@pytest.fixture
def heroes(tmp_path):
    return make_db(tmp_path / "heroes.sqlite", HEROES_SQL)


@pytest.mark.parametrize("question", [
    "How many players are in the womens soccer team?",
    "How many players are in the Women's Soccer team?",
    "How many players are in the WOMEN’S SOCCER team?",  # curly apostrophe, capitals
])
def test_apostrophes_and_case_are_folded(heroes, question):
    assert ("team", "name", "Women's Soccer") in found(heroes, question)


def test_possessives_and_plurals(heroes):
    assert ("hero", "hero_name", "Apocalypse") in found(heroes, "What is the colour of Apocalypse's skin?")
    assert ("hero", "race", "Alien") in found(heroes, "Find the average weight of the heroes who are aliens.")


def test_hyphens_slashes_and_closed_up_compounds(heroes):
    assert ("hero", "hair", "Blue") in found(heroes, "Give the race of the blue-haired male hero.")
    assert ("hero", "race", "God / Eternal") in found(heroes, "Among the heroes of the race god/eternal, who flies?")
    assert ("hero", "hero_name", "3-D Man") in found(heroes, "State all of 3-D Man's attributes.")
    # 'Spiderman' stored both ways: the closed-up spelling finds both, the hyphenated one its own
    assert {("hero", "hero_name", "Spider-Man"), ("hero", "hero_name", "Spiderman")} <= found(
        heroes, "What is spiderman's race?")
    assert ("hero", "hero_name", "Spider-Man") in found(heroes, "What is Spider-Man's race?")
    assert ("hero", "race", "Human") in found(heroes, "What is the average height of a non-human hero?")


@pytest.mark.parametrize("written", ["January 1, 1990", "1st of January 1990", "1 Jan. 1990", "1/1/1990",
                                     "1990/01/01", "1990-01-01"])
def test_dates_written_out_find_iso_dates(heroes, written):
    assert ("hero", "born", "1990-01-01") in found(heroes, f"Who was born on {written}?")


def test_a_date_finds_the_timestamp_of_that_day(heroes):
    assert ("hero", "seen", "2012-03-04 10:00:00") in found(heroes, "Which hero was seen on March 4th, 2012?")
    assert not found(heroes, "Which hero was seen on February 30, 2012?")  # not a date: nothing invented


def test_one_spelling_slip_in_a_long_word_only(heroes):
    assert ("power", "power_name", "Intelligence") in found(heroes, "Which heroes have intellegence?")
    assert ("hero", "hair", "Blond") in found(heroes, "How many heroes with blonde hair are there?")
    assert ("hero", "hair", "Gold") not in found(heroes, "How many heroes hold a title?")  # short words: exact


def test_names_written_as_identifiers_do_not_link_their_words(heroes):
    # 'power_name' in BIRD evidence is a column, not the attribute 'Power'
    assert not found(heroes, "superpowers refers to power_name")
    assert ("attribute", "attribute_name", "Power") in found(heroes, "Which hero has the most power?")


def test_codes_match_whole_never_in_part(tmp_path):
    db = make_db(tmp_path / "tox.sqlite", """
        CREATE TABLE atom (code TEXT, element TEXT);
        CREATE TABLE bond (code TEXT, bond_type TEXT);
        INSERT INTO atom VALUES ('TR001_2', 'cl'), ('TR001_24', 'c'), ('TR001', 'h');
        INSERT INTO bond VALUES ('TR001_2_4', '-'), ('TR002_1_2', '#');
    """)
    assert found(db, "Name the elements of atom TR001_2.") == {("atom", "code", "TR001_2")}
    assert found(db, "Name the elements of bond tr001_2_4.") == {("bond", "code", "TR001_2_4")}
    # an absent code finds nothing: not its prefix 'TR001_2' or 'TR001', nor 'TR001_24' (the same closed up)
    assert not found(db, "Name the elements of bond TR001_2_5.")
    assert not found(db, "What about TR001_2_4_9 and TR0012_4?")


def test_quoted_literals_link_even_when_short_or_numbers(tmp_path):
    db = make_db(tmp_path / "tox.sqlite", """
        CREATE TABLE atom (atom_id TEXT PRIMARY KEY, element TEXT, symbol TEXT);
        CREATE TABLE ship (name TEXT, tonnage TEXT, label TEXT);
        INSERT INTO atom VALUES ('a1', 'cl', 'cl'), ('a2', 'c', 'x');
        INSERT INTO ship VALUES ('Lettice', 't', '+'), ('Bon', '225', '-');
    """)
    assert ("ship", "tonnage", "t") in found(db, "Which ships have tonnage 't'?")
    assert ("ship", "tonnage", "225") in found(db, "How many battles lost a ship with tonnage '225'?")
    assert not found(db, "How many ships have tonnage t or 225?")  # unquoted: a letter and a number say nothing
    # "element = 'cl'": the column named beside it, though another column stores 'cl' too
    assert found(db, "chlorine refers to element = 'cl'") == {("atom", "element", "cl")}
    assert found(db, "carcinogenic refers to label = '+'") == {("ship", "label", "+")}


def test_a_quoted_literal_in_many_columns_links_the_one_named_beside_it(tmp_path):
    cols = ", ".join(f"c{i} TEXT" for i in range(MAX_COLUMNS_PER_PHRASE + 2))
    row = ", ".join("'Y'" for _ in range(MAX_COLUMNS_PER_PHRASE + 2))
    db = make_db(tmp_path / "flags.sqlite", f"CREATE TABLE flags ({cols}); INSERT INTO flags VALUES ({row});")
    assert not found(db, "Which rows are 'Y'?")  # in every column: says nothing
    assert found(db, "charter refers to c3 = 'Y'") == {("flags", "c3", "Y")}


def test_code_meanings_from_bird_value_descriptions(tmp_path):
    folder = tmp_path / "tox"
    (folder / "database_description").mkdir(parents=True)
    db = make_db(folder / "tox.sqlite", """
        CREATE TABLE atom (atom_id TEXT PRIMARY KEY, element TEXT);
        CREATE TABLE bond (bond_id TEXT PRIMARY KEY, bond_type TEXT);
        INSERT INTO atom VALUES ('a1', 'cl'), ('a2', 'c'), ('a3', 'sn');
        INSERT INTO bond VALUES ('b1', '-'), ('b2', '='), ('b3', '#');
    """)
    (folder / "database_description" / "atom.csv").write_text(
        'original_column_name,column_name,column_description,data_format,value_description\n'
        'element,,the element,text," cl: chlorine\n c: carbon\n sn: Tin\n xx: not stored"\n')
    (folder / "database_description" / "bond.csv").write_text(
        'original_column_name,column_name,column_description,data_format,value_description\n'
        'bond_type,,type of the bond,text,"commonsense evidence:\n-: single bond\n\'=\': double bond\n\'#\': triple bond"\n',
        encoding="utf-8")
    question = "How many molecules with chlorine have double bonds?"
    assert found(db, question) == {("atom", "element", "cl"), ("bond", "bond_type", "=")}
    assert ("atom", "element", "sn") in found(db, "Which atoms are tin?")
    values._MEMORY.clear()  # the meanings survive the disk cache
    assert found(db, question) == {("atom", "element", "cl"), ("bond", "bond_type", "=")}
    # a run shown no descriptions does not link through them either; stored values still match
    assert found(db, question, meanings=False) == set()
    assert found(db, "Which atoms are 'sn'?", meanings=False) == {("atom", "element", "sn")}


def test_the_index_is_the_same_whoever_builds_it_first(tmp_path):
    """A caller holding a copy of the schema without its descriptions (a --no-descriptions run) builds
    the same cached index as one holding the database's own: the meanings are never lost to the cache."""
    from macsql import knowledge
    from macsql.agents.hints import empty_result_hints
    from macsql.schema import introspect

    folder = tmp_path / "tox"
    (folder / "database_description").mkdir(parents=True)
    db = make_db(folder / "tox.sqlite", "CREATE TABLE atom (atom_id TEXT PRIMARY KEY, element TEXT);"
                                        "INSERT INTO atom VALUES ('a1', 'cl'), ('a2', 'c');")
    (folder / "database_description" / "atom.csv").write_text(
        'original_column_name,column_name,column_description,data_format,value_description\n'
        'element,,the element,text," cl: chlorine\n c: carbon"\n')
    stripped = knowledge.without_descriptions(introspect(db))
    assert not any(c.value_description for t in stripped.tables for c in t.columns)
    empty_result_hints("SELECT * FROM atom WHERE element = 'chlorine'", stripped, db)  # builds the index first
    values._MEMORY.clear()
    assert found(db, "Which atoms are chlorine?") == {("atom", "element", "cl")}


def test_code_meanings_parsing():
    assert code_meanings("F: female; M: male") == [("F", "female"), ("M", "male")]
    assert code_meanings('"VKLAD": credit in cash "UROK": stands for interest credited') == [
        ("VKLAD", "credit in cash"), ("UROK", "interest credited")]
    # cp1252 quotes read as latin-1 (BIRD's CSVs), and a heading that is no code
    assert code_meanings("commonsense evidence: \x93-\x94: single bond '=': double bond") == [
        ("-", "single bond"), ("=", "double bond")]


def test_matches_per_question_are_bounded(tmp_path):
    names = [f"Place{chr(65 + i)}{chr(65 + j)}" for i in range(6) for j in range(6)]
    rows = ", ".join(f"({i}, '{n}')" for i, n in enumerate(names))
    common = ", ".join(f"({i}, 'yes')" for i in range(3))
    tables = "".join(f"CREATE TABLE t{k} (id INTEGER, flag TEXT); INSERT INTO t{k} VALUES {common};"
                     for k in range(MAX_COLUMNS_PER_PHRASE + 1))
    db = make_db(tmp_path / "many.sqlite", f"CREATE TABLE city (id INTEGER, name TEXT); "
                                           f"INSERT INTO city VALUES {rows}; {tables}")
    question = "Which of " + ", ".join(names) + " say yes?"
    assert len(value_index(db).match(question)) == MAX_MATCHES
    assert len(value_index(db).match(question, limit=3)) == 3
    # 'yes' is in more columns than MAX_COLUMNS_PER_PHRASE: it says nothing about which one is meant
    assert not found(db, "Which say yes?")
    assert not found(db, "What is the name of the one with the most of them?")  # stopwords link nothing


def test_no_phrase_runs_across_a_quoted_literal(tmp_path):
    db = make_db(tmp_path / "towns.sqlite", """
        CREATE TABLE town (name TEXT, code TEXT);
        INSERT INTO town VALUES ('New York', 'NY'), ('Oslo', 'x');
    """)
    assert found(db, "towns with code 'NY' and New York") == {("town", "code", "NY"), ("town", "name", "New York")}
    # 'New' before the literal and 'York' after it are not the phrase 'New York'
    assert ("town", "name", "New York") not in found(db, "is it new 'x' york?")


def test_retrieval_keeps_the_tables_named_their_link_table_and_the_tables_of_values(tmp_path):
    from macsql.linking import retrieve_tables
    from macsql.schema import introspect

    db = make_db(tmp_path / "heroes2.sqlite", """
        CREATE TABLE superhero (id INTEGER PRIMARY KEY, superhero_name TEXT, publisher_id INTEGER
                                REFERENCES publisher(id));
        CREATE TABLE superpower (id INTEGER PRIMARY KEY, power_name TEXT);
        CREATE TABLE hero_power (hero_id INTEGER REFERENCES superhero(id), power_id INTEGER REFERENCES superpower(id));
        CREATE TABLE publisher (id INTEGER PRIMARY KEY, publisher_name TEXT);
        CREATE TABLE colour (id INTEGER PRIMARY KEY, colour TEXT);
        INSERT INTO publisher VALUES (1, 'Marvel Comics');
    """)
    schema = introspect(db)
    kept = retrieve_tables("Which superhero has the superpower of flight?", schema, max_tables=2)
    assert set(kept) == {"superhero", "superpower", "hero_power"}  # hero_power joins the two named
    assert kept["superhero"] == [c.name for c in schema.table("superhero").columns]  # kept whole
    matches = {("publisher", "publisher_name"): ["Marvel Comics"]}
    # the table of a matched value is kept, and ranks first
    assert set(retrieve_tables("Which superpower is from Marvel Comics?", schema, max_tables=1)) == {"superpower"}
    kept = retrieve_tables("Which superpower is from Marvel Comics?", schema, max_tables=2, matches=matches)
    assert set(kept) == {"superpower", "publisher"}
    assert set(retrieve_tables("Which one is Marvel Comics?", schema, max_tables=0, matches=matches)) == {"publisher"}
    assert set(retrieve_tables("Hello?", schema)) == {t.name for t in schema.tables}  # nothing to go on

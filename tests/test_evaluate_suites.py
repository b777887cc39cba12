"""Category validation suites: the case files are well-formed and true to their databases, and the runner
scores, skips and thresholds as documented."""

import json

import pytest
from click.testing import CliRunner

from macsql.backends.base import ScriptedLLM
from macsql.cli import main
from macsql.errors import InputError, MacSQLError
from macsql.evaluate.suite import available_suites, parse_suite, resolve_case_db, run_suites
from macsql.pipeline import Pipeline
from macsql.sqlexec import execute
from tests.conftest import SHARED_DATA, needs_shared_data

CATEGORIES = {"schema_knowledge", "sql_generation", "join_patterns", "error_correction", "business_logic",
              "hallucination"}


def _cases(db_filter):
    for suite in available_suites().values():
        for case in suite.cases:
            if db_filter(case["db"]):
                yield suite, case


def test_suites_ship_as_package_data():
    suites = available_suites()
    assert set(suites) == CATEGORIES
    for s in suites.values():
        assert s.version >= 1 and 0 < s.threshold <= 1 and len({c["id"] for c in s.cases}) == len(s.cases)


def _check_case(db_name, suite, case, root):
    from macsql.agents.refiner import problem_with

    db = resolve_case_db(db_name, root)
    if "gold_sql" in case:
        assert execute(db, case["gold_sql"]).ok, case["id"]
    if "broken_sql" in case:  # an error-correction case must really be broken
        assert problem_with(execute(db, case["broken_sql"])) is not None, case["id"]


def test_demo_cases_are_true_to_the_demo_database(tmp_path):
    for suite, case in _cases(lambda db: db == "demo"):
        _check_case("demo", suite, case, tmp_path)


@pytest.mark.shared_data
@needs_shared_data()
def test_shared_data_cases_are_true_to_their_databases():
    for suite, case in _cases(lambda db: db != "demo"):
        assert resolve_case_db(case["db"], SHARED_DATA) is not None, case["id"]
        _check_case(case["db"], suite, case, SHARED_DATA)


def _oracle():
    """A scripted model that knows every case's answer: gold SQL, the expected tables, the fix."""
    answers = {}
    for suite, case in _cases(lambda db: True):
        key = case["question"]
        if suite.kind == "selector":
            answers[(key, "selector")] = json.dumps({t: "keep_all" for t in case["expect_tables"]})
        elif "gold_sql" in case:
            answers[(key, "decomposer")] = answers[(key, "refiner")] = f"```sql\n{case['gold_sql']}\n```"
        else:  # hallucination cases: an honest model answers with what the database has
            answers[(key, "decomposer")] = "```sql\nSELECT name FROM products\n```"

    def reply(messages, agent):
        text = messages[-1]["content"]
        hits = [(q, a) for (q, a) in answers if a == agent and f"Question: {q}" in text]
        question = max(hits, key=lambda h: len(h[0]))[0]  # the longest matching question
        return answers[(question, agent)]

    return reply


def test_oracle_passes_every_suite_and_skips_absent_databases(tmp_path):
    lines = []
    results = run_suites("all", lambda: Pipeline(ScriptedLLM(_oracle())), data_root=tmp_path / "no-data",
                         out=tmp_path / "out", echo=lines.append)
    assert all(r.passed for r in results)
    assert any(line.startswith("skip sql_generation/gen-spider-1: database 'spider:concert_singer' not found")
               for line in lines)
    report = json.loads((tmp_path / "out" / "suites.json").read_text())
    assert {r["suite"] for r in report} == CATEGORIES and all(r["pass_rate"] == 1.0 for r in report)


def test_inventing_a_table_fails_the_hallucination_suite(tmp_path):
    def liar(messages, agent):
        return "```sql\nSELECT avg(salary) FROM employees\n```"

    lines = []
    with pytest.raises(MacSQLError, match="below their pass threshold: hallucination"):
        run_suites("hallucination", lambda: Pipeline(ScriptedLLM(liar)), data_root=tmp_path, echo=lines.append)
    assert any(line.startswith("FAIL hallucination/hal-demo-1: invented employees, salary") for line in lines)


def test_cli_suite_selection_errors(tmp_path):
    r = CliRunner().invoke(main, ["eval", "--suite", "join_pattern", "--data-root", str(tmp_path)])
    assert r.exit_code == 1 and r.output.startswith("Error: no suite 'join_pattern' (did you mean 'join_patterns'?)")
    r = CliRunner().invoke(main, ["eval", "--suite", "--db-id", "nowhere", "--data-root", str(tmp_path)])
    assert r.exit_code == 1 and "no suite case can run here" in r.output


def test_cli_suite_runs_on_demo(tmp_path, monkeypatch):
    monkeypatch.setattr("macsql.cli.options.build_pipeline", lambda **_: Pipeline(ScriptedLLM(_oracle())))
    r = CliRunner().invoke(main, ["eval", "--suite", "error_correction", "--db-id", "demo", "-q"])
    assert r.exit_code == 0, r.output
    assert "error_correction" in r.output and "PASS" in r.output.splitlines()[-1]


def test_malformed_suite_is_an_input_error():
    with pytest.raises(InputError, match="needs name, version, threshold and cases"):
        parse_suite({"name": "x"})
    with pytest.raises(InputError, match="unknown kind"):
        parse_suite({"name": "x", "version": 1, "threshold": 0.5, "cases": [{"id": "a", "kind": "poem"}]})

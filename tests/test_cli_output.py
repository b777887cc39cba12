"""`macsql ask` output as sqlite-utils has it: output formats, stdin, exit codes, a closed pipe, defaults from
`MACSQL_*` variables and a config file, and hostile values that must not act on the terminal. The model is a
real HTTP server on loopback (conftest's `openai_server`) that answers with scripted SQL; the databases are
the bundled demo and tiny files built from SQL text."""

import csv
import io
import json
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from macsql.cli import main
from macsql.demo import resolve_db
from macsql.display import SUMMARY_FIELDS, terminal_safe
from tests.conftest import make_db

QUESTION = "How many customers are there in each country?"
PER_COUNTRY = "SELECT country, COUNT(*) AS customers FROM customers GROUP BY country ORDER BY country"


@pytest.fixture(autouse=True)
def _no_user_defaults(tmp_path, monkeypatch):
    """Neither the user's config file nor MACSQL_* variables of the machine reach these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    import os

    for name in [n for n in os.environ if n.startswith("MACSQL_") and n != "MACSQL_CACHE"]:
        monkeypatch.delenv(name)


@pytest.fixture
def model(openai_server):
    """`model(sql) -> (options, requests)`: a loopback server that answers every prompt with `sql`, and the
    options that point `macsql ask` at it (one candidate: one request per question)."""

    def start(sql: str):
        url, requests = openai_server(lambda body: f"Final SQL:\n```sql\n{sql}\n```")
        return ["--backend", "openai", "--base-url", url, "--model", "m", "--candidates", "1"], requests

    return start


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def expected_rows(sql=PER_COUNTRY):
    conn = sqlite3.connect(resolve_db("demo"))
    try:
        return [list(r) for r in conn.execute(sql)]
    finally:
        conn.close()


# -- formats ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag,delimiter", [("--csv", ","), ("--tsv", "\t")])
def test_csv_and_tsv(model, flag, delimiter):
    opts, _ = model(PER_COUNTRY)
    r = run("ask", QUESTION, "--db", "demo", *opts, flag)
    assert r.exit_code == 0, r.output
    table = list(csv.reader(io.StringIO(r.stdout), delimiter=delimiter))
    assert table == [["country", "customers"]] + [[c, str(n)] for c, n in expected_rows()]
    r = run("ask", QUESTION, "--db", "demo", *opts, flag, "--no-headers")
    assert list(csv.reader(io.StringIO(r.stdout), delimiter=delimiter)) == table[1:]


def test_nl_is_one_object_per_row(model):
    opts, _ = model(PER_COUNTRY)
    r = run("ask", QUESTION, "--db", "demo", *opts, "--nl")
    assert r.exit_code == 0, r.output
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"country": c, "customers": n} for c, n in expected_rows()]


def test_json_is_the_answer_and_json_trace_the_whole_of_it(model):
    opts, _ = model(PER_COUNTRY)
    r = run("ask", QUESTION, "--db", "demo", *opts, "--json")
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)
    assert tuple(answer) == SUMMARY_FIELDS and "trace" not in answer
    assert answer["sql"] == PER_COUNTRY and answer["rows"] == expected_rows() and answer["error"] is None
    assert answer["question"] == QUESTION and answer["llm_calls"] == 1
    r = run("ask", QUESTION, "--db", "demo", *opts, "--json-trace")
    full = json.loads(r.stdout)
    assert r.exit_code == 0 and {"trace", "candidates", "selection"} <= set(full)
    assert [t["agent"] for t in full["trace"]][-1] == "vote"
    assert {k: full[k] for k in ("sql", "rows", "columns")} == {k: answer[k] for k in ("sql", "rows", "columns")}


def test_follow_up_on_a_saved_json_answer(openai_server, tmp_path):
    from tests.conftest import demo_reply

    url, requests = openai_server(lambda body: demo_reply(body["messages"], "decomposer"))
    opts = ["--backend", "openai", "--base-url", url, "--model", "m", "--candidates", "1"]
    saved = tmp_path / "a.json"
    first = run("ask", "How many customers live in Spain?", "--db", "demo", *opts, "--json")
    assert first.exit_code == 0, first.output
    saved.write_text(first.stdout)  # the summary JSON: it holds the question and the SQL a follow-up needs
    r = run("ask", "and only those in Madrid?", "--db", "demo", *opts, "--json", "--follow-up", saved)
    assert r.exit_code == 0, r.output
    assert "city = 'Madrid'" in json.loads(r.stdout)["sql"]
    assert json.loads(r.stdout)["history"] == [{"question": "How many customers live in Spain?",
                                                "sql": json.loads(first.stdout)["sql"]}]


def test_tables_right_align_numbers(model):
    opts, _ = model(PER_COUNTRY)
    rows = expected_rows()
    r = run("ask", QUESTION, "--db", "demo", *opts, "--table")
    assert r.exit_code == 0, r.output
    header, rule, *body = r.stdout.splitlines()
    assert header.split() == ["country", "customers"] and set(rule) <= {"-", " "}
    assert [line.split() for line in body] == [[c, str(n)] for c, n in rows]
    assert len({len(line) for line in [header, *body]}) == 1  # the counts end in one column: right-aligned
    r = run("ask", QUESTION, "--db", "demo", *opts, "--fmt", "github")  # --fmt implies --table
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and re.fullmatch(r"\| country +\| +customers \|", lines[0])
    assert len(lines) == 2 + len(rows) and all(re.search(r" \d+ \|$", line) for line in lines[2:])


def test_default_view_keeps_sql_whole_and_numbers_right(model):
    long_sql = PER_COUNTRY.replace("SELECT country,", "SELECT country AS country_of_the_customer,")
    opts, _ = model(long_sql)
    r = run("ask", QUESTION, "--db", "demo", *opts)
    assert r.exit_code == 0, r.output
    assert long_sql in r.stdout.splitlines()  # not wrapped: stdout is no terminal here
    cells = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert len(cells) == len(expected_rows())
    assert all(re.search(r"│ +\d+ │$", line) for line in cells) and len({len(line) for line in cells}) == 1
    assert re.search(r"\d+ row\(s\) · 1 LLM call\(s\)", r.stdout)


def test_sql_only(model):
    opts, requests = model(PER_COUNTRY)
    r = run("ask", QUESTION, "--db", "demo", *opts, "--sql-only")
    assert r.exit_code == 0 and r.stdout == PER_COUNTRY + "\n"
    assert len(requests) == 1  # the pipeline ran


def test_question_from_stdin(model):
    opts, requests = model(PER_COUNTRY)
    r = run("ask", "-", "--db", "demo", *opts, "--sql-only", input=QUESTION + "\n")
    assert r.exit_code == 0, r.output
    prompt = requests[0][1]["messages"][-1]["content"]
    assert f"Question: {QUESTION}" in prompt and "Question: -" not in prompt
    r = run("ask", "-", "--db", "demo", *opts, input="  \n")
    assert r.exit_code == 1 and r.stderr.startswith("Error: the question is empty")


# -- exit codes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["--csv", "--json"], "Error: --csv and --json pick different output formats; pass one of --csv, "),
    (["--fmt", "githb"], "Error: --fmt 'githb' is not a table format (did you mean 'github'?)"),
    (["--backend", "opnai"], "Error: Invalid value for '--backend': 'opnai' is not one of"),
    (["--show", "many"], "Error: Invalid value for '--show': 'many' is not a valid integer"),
    (["--no-such-flag"], "Error: No such option '--no-such-flag'"),
])
def test_usage_errors_exit_2_with_one_line(args, message):
    r = run("ask", "How many?", "--db", "demo", *args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and r.stderr.startswith(message), r.stderr


def test_missing_database_exits_1(tmp_path):
    r = run("ask", "How many?", "--db", tmp_path / "nope.sqlite", "--csv")
    assert r.exit_code == 1 and r.stderr.startswith("Error: database ") and "does not exist" in r.stderr


def test_unreachable_server_exits_1(shop_db):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run("ask", "How many customers?", "--db", shop_db, "--backend", "openai", "--base-url",
            f"http://127.0.0.1:{port}/v1", "--model", "m", "--request-timeout", "0.5", "--candidates", "1", "--csv")
    assert r.exit_code == 1, r.output
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: cannot reach the model server") and "Traceback" not in r.output


def test_no_working_sql_exits_3(model):
    opts, _ = model("SELECT nope FROM nowhere")
    for fmt in ([], ["--csv"], ["--sql-only"]):
        r = run("ask", "How many?", "--db", "demo", *opts, "--max-rounds", "0", *fmt)
        assert r.exit_code == 3, (fmt, r.output)
        assert r.stderr.strip().splitlines()[-1] == ("Error: no working SQL after 0 refine round(s): "
                                                     "no such table: nowhere")
    r = run("ask", "How many?", "--db", "demo", *opts, "--max-rounds", "0", "--json")
    assert r.exit_code == 3 and json.loads(r.stdout)["error"] == "no such table: nowhere"


@pytest.mark.parametrize("flag", ["--csv", ""])
def test_closed_pipe_exits_0_quietly(openai_server, flag):
    """`macsql ask ... --csv | head -1`: more output than a pipe holds, and the reader goes after one line."""
    many = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) "
            "SELECT i, 'row number ' || i AS label FROM n")
    url, _ = openai_server(lambda body: f"```sql\n{many}\n```")
    cmd = [sys.executable, "-m", "macsql.cli", "ask", "How many?", "--db", "demo", "--backend", "openai",
           "--base-url", url, "--model", "m", "--candidates", "1", "--show", "4000", *([flag] if flag else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[1])
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert first.strip() and err == ""


# -- defaults: environment and config file --------------------------------------------------------------------


def test_environment_variables(model, monkeypatch, tmp_path):
    opts, requests = model(PER_COUNTRY)
    url = opts[opts.index("--base-url") + 1]
    monkeypatch.setenv("MACSQL_ASK_BASE_URL", url)  # click's PREFIX_COMMAND_OPTION
    monkeypatch.setenv("MACSQL_ASK_CANDIDATES", "1")
    monkeypatch.setenv("MACSQL_BACKEND", "openai")  # the short forms
    monkeypatch.setenv("MACSQL_MODEL", "env-model")
    monkeypatch.setenv("MACSQL_DB", "demo")
    monkeypatch.setenv("MACSQL_ASK_CSV", "1")
    r = run("ask", QUESTION)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "country,customers" and requests[-1][1]["model"] == "env-model"
    r = run("ask", QUESTION, "--nl")  # a format on the command line beats the one from the environment
    assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[0])["country"]
    # variables are named after the options as typed, also where click's parameter is named otherwise
    monkeypatch.delenv("MACSQL_ASK_CSV")
    monkeypatch.setenv("MACSQL_ASK_JSON", "1")  # --json, parameter `as_json`
    monkeypatch.setenv("MACSQL_ASK_TIMEOUT", "nan")  # --timeout, parameter `timeout_s`
    assert "positive, finite number of seconds, got nan" in run("ask", QUESTION).stderr
    monkeypatch.setenv("MACSQL_ASK_TIMEOUT", "5")
    r = run("ask", QUESTION)
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == expected_rows()
    monkeypatch.setenv("MACSQL_DB", str(tmp_path / "nope.sqlite"))
    assert "does not exist" in run("ask", QUESTION).stderr
    monkeypatch.setenv("MACSQL_ASK_DB", "demo")  # the command's own variable beats the short form
    assert run("ask", QUESTION).exit_code == 0
    assert run("ask", QUESTION, "--db", tmp_path / "nope.sqlite").exit_code == 1  # the command line beats both
    monkeypatch.setenv("MACSQL_DB", "demo")
    r = run("schema")
    assert r.exit_code == 0 and "CREATE TABLE customers" in r.stdout


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_file(model, monkeypatch, tmp_path):
    opts, requests = model(PER_COUNTRY)
    url = opts[opts.index("--base-url") + 1]
    config = write_config(tmp_path / "macsql.toml", f'[ask]\ndb = "demo"\nbackend = "openai"\nbase-url = "{url}"\n'
                                                    'model = "toml-model"\ncandidates = 1\ntsv = true\n')
    r = run("--config", config, "ask", QUESTION)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "country\tcustomers" and requests[-1][1]["model"] == "toml-model"
    monkeypatch.setenv("MACSQL_CONFIG", str(config))
    monkeypatch.setenv("MACSQL_MODEL", "env-model")  # a variable beats the file
    r = run("ask", QUESTION, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] and requests[-1][1]["model"] == "env-model"
    monkeypatch.delenv("MACSQL_CONFIG")
    write_config(tmp_path / "xdg" / "macsql" / "config.toml", config.read_text())  # the per-user file
    r = run("ask", QUESTION)
    assert r.exit_code == 0 and r.stdout.startswith("country\tcustomers")


@pytest.mark.parametrize("text,message", [
    ("[ask\ndb = 1", "is not valid TOML"),
    ("[aks]\ndb = 'demo'", "[aks] is not a command (did you mean 'ask'?)"),
    ("[ask]\nbase-ulr = 'x'", "[ask] has no option 'base-ulr' (did you mean 'base-url'?)"),
    ("db = 'demo'", "db = ... belongs in a section"),
])
def test_bad_config_file_is_one_line_and_exit_2(tmp_path, text, message):
    config = write_config(tmp_path / "bad.toml", text)
    r = run("--config", config, "ask", "How many?", "--db", "demo")
    assert r.exit_code == 2, r.output
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"Error: config file {config}")
    assert message in r.stderr
    r = run("--config", tmp_path / "none.toml", "ask", "How many?", "--db", "demo")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "does not exist" in r.stderr


# -- hostile values -------------------------------------------------------------------------------------------

HOSTILE_SQL = """
CREATE TABLE t ("[bold]name[/bold]" TEXT, "v\x1b[31m" TEXT, n INTEGER);
INSERT INTO t VALUES ('\x1b[2J', '\x1b]52;c;aGk=\x07', 1), ('[/x]', '\x9b31mred', 22), ('[bold]b[/bold]', 'a\rb', 333);
"""


@pytest.fixture
def hostile_db(tmp_path):
    return make_db(tmp_path / "hostile.sqlite", HOSTILE_SQL)


@pytest.mark.parametrize("flag", ["", "-v", "--csv", "--tsv", "--nl", "--json", "--json-trace", "--table",
                                  "--sql-only"])
def test_hostile_values_do_not_reach_the_terminal(model, hostile_db, flag):
    opts, _ = model("SELECT * FROM t")
    r = run("ask", "Show everything", "--db", hostile_db, *opts, *([flag] if flag else []))
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x9b" not in r.output and "Traceback" not in r.output
    if flag in ("--nl", "--json", "--json-trace"):  # JSON keeps the data exactly
        rows = [json.loads(line) for line in r.stdout.splitlines()] if flag == "--nl" else json.loads(r.stdout)["rows"]
        values = [list(row.values()) for row in rows] if flag == "--nl" else rows
        assert values[0][:2] == ["\x1b[2J", "\x1b]52;c;aGk=\x07"] and values[1][1] == "\x9b31mred"
    elif flag != "--sql-only":
        assert "\\x1b[2J" in r.stdout and "[/x]" in r.stdout and "\\x9b31mred" in r.stdout
        assert "[bold]name[/bold]" in r.stdout and "v\\x1b[31m" in r.stdout  # names are text, not markup
    if flag == "-v":
        assert "values " in r.stdout and "[bold]" not in r.stdout.split("SELECT")[0]


def test_hostile_sql_and_errors_are_escaped(model, hostile_db):
    opts, _ = model('SELECT * FROM "\x1b]0;owned\x07"')
    r = run("ask", "Show everything", "--db", hostile_db, *opts, "--max-rounds", "0")
    assert r.exit_code == 3 and "\x1b" not in r.output and "\x07" not in r.output
    assert r.stderr.strip().splitlines()[-1] == "Error: no working SQL after 0 refine round(s): no such table: \\x1b]0;owned\\x07"
    r = run("schema", "--db", hostile_db)
    assert r.exit_code == 0 and "\x1b" not in r.output and "\x9b" not in r.output


def test_terminal_safe():
    assert terminal_safe("a\x1b[2Jb\x9bc\x7f\x00") == "a\\x1b[2Jb\\x9bc\\x7f\\x00"
    assert terminal_safe("one\ntwo\tthree") == "one\ntwo\tthree"
    assert terminal_safe("one\ntwo", keep="") == "one\\x0atwo"
    assert terminal_safe("España [bold]") == "España [bold]" and terminal_safe(12) == "12"


FORMULAS_SQL = """
CREATE TABLE f ("=name" TEXT, v TEXT, n INTEGER, x REAL);
INSERT INTO f VALUES ('=HYPERLINK("http://x")', '-2+3+cmd|'' /C calc''!A0', -5, -1.5),
                     ('@SUM(A1)', '-5', 7, 2.0), ('plain', '+34 600', 0, NULL);
"""


@pytest.mark.parametrize("flag,delimiter", [("--csv", ","), ("--tsv", "\t")])
def test_spreadsheet_safe_guards_formulas_and_plain_csv_stays_exact(model, tmp_path, flag, delimiter):
    db = make_db(tmp_path / "formulas.sqlite", FORMULAS_SQL)
    opts, _ = model("SELECT * FROM f")
    r = run("ask", "Show everything", "--db", db, *opts, flag)
    assert r.exit_code == 0, r.output
    assert list(csv.reader(io.StringIO(r.stdout), delimiter=delimiter)) == [
        ["=name", "v", "n", "x"], ['=HYPERLINK("http://x")', "-2+3+cmd|' /C calc'!A0", "-5", "-1.5"],
        ["@SUM(A1)", "-5", "7", "2.0"], ["plain", "+34 600", "0", ""]]  # for programs: as stored
    r = run("ask", "Show everything", "--db", db, *opts, flag, "--spreadsheet-safe")
    assert r.exit_code == 0, r.output
    assert list(csv.reader(io.StringIO(r.stdout), delimiter=delimiter)) == [
        ["'=name", "v", "n", "x"], ['\'=HYPERLINK("http://x")', "'-2+3+cmd|' /C calc'!A0", "-5", "-1.5"],
        ["'@SUM(A1)", "-5", "7", "2.0"], ["plain", "'+34 600", "0", ""]]  # numbers, and text "-5", unchanged
    r = run("ask", "Show everything", "--db", db, *opts, "--json", "--spreadsheet-safe")
    assert r.exit_code == 2 and "--spreadsheet-safe guards --csv and --tsv" in r.stderr

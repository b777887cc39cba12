"""`--help` in sections, old option names that keep working with one warning line, and one meaning per option
name across commands. Commands run for real where they finish without a model (schema, score, data build,
data clean, eval's suite selection) or against conftest's loopback OpenAI-compatible server (ask)."""

import json
import re
from collections import defaultdict
from dataclasses import fields

import click
import pytest
from click.core import ParameterSource
from click.testing import CliRunner

from macsql.cli import main
from macsql.cli.groups import DeprecatedAlias
from macsql.state import Settings
from tests.conftest import make_db

AGENTS = "Agents and ablations"

# Every old option name still accepted, per command: old -> new. A rename adds its line here.
ALIASES = {
    "ask": {"--format": "--reply-format"},
    "serve": {"--format": "--reply-format"},
    "mcp": {"--format": "--reply-format"},
    "eval": {"--format": "--reply-format", "--db": "--db-id"},
    "score": {"--db": "--db-id", "--workers": "--score-workers"},
    "schema": {"--no-examples": "--no-sample-values"},
    "data build": {"--format": "--data-format", "--split": "--split-by"},
    "data clean": {"--format": "--data-format"},
}

# Option names that several commands declare with different help texts, with the one thing each means and the
# commands that use it. A name declared with the very same help everywhere (the model options of
# ask/serve/mcp/eval) means one thing by construction and needs no line here; a command that starts using one
# of these names must be added to its line, which is the moment to check that it means the same there.
MEANINGS = {
    "--db": ("a database to query: a file, `demo` (or NAME=PATH where several are served)",
             {"ask", "schema", "serve", "mcp", "teach add-example", "teach add-term", "teach describe",
              "teach import", "teach list", "teach remove"}),
    "--data": ("the input data: a benchmark file, or for finetune the folder `data build` wrote from one",
               {"eval", "score", "judge", "data build", "data clean", "finetune", "runs unpack"}),
    "--db-root": ("the folder of the benchmark's <db_id>/<db_id>.sqlite databases",
                  {"eval", "score", "judge", "data build", "data clean", "runs unpack"}),
    "--data-format": ("the benchmark file's format", {"eval", "score", "data build", "data clean"}),
    "--out": ("where the command writes its result (folder or file)",
              {"eval", "score", "judge", "data build", "data clean", "finetune", "runs unpack"}),
    "--limit": ("at most N of the items the command reads", {"eval", "score", "judge", "finetune"}),
    "--seed": ("the random seed of a sample or a run", {"eval", "score", "data build", "finetune"}),
    "--model": ("the model to load: an alias, a Hugging Face id, a folder or a .gguf file",
                {"ask", "serve", "mcp", "eval", "judge", "finetune"}),
    "-m": ("short for --model", {"ask", "serve", "mcp", "eval", "judge", "finetune"}),
    "--backend": ("what runs the model", {"ask", "serve", "mcp", "eval", "judge"}),
    "--base-url": ("the OpenAI-compatible server's URL", {"ask", "serve", "mcp", "eval", "judge"}),
    "--dtype": ("the model weights' dtype", {"ask", "serve", "mcp", "eval", "finetune"}),
    "--threads": ("CPU threads of the model's runtime", {"ask", "serve", "mcp", "eval", "finetune"}),
    "--temperature": ("the model's sampling temperature", {"ask", "serve", "mcp", "eval", "finetune"}),
    "--timeout": ("seconds one SQL query may run", {"ask", "serve", "mcp", "eval", "score", "judge", "data clean"}),
    "--quiet": ("no progress bars", {"eval", "score", "judge", "data clean"}),
    "-q": ("short for --quiet", {"eval", "score", "judge", "data clean"}),
    "--json": ("print JSON instead of text", {"ask", "schema", "teach list"}),
    "--evidence": ("BIRD's evidence: knowledge the question needs", {"ask", "teach add-example"}),
    "--examples": ("a file of question/SQL pairs shown to the agents, nothing stored", {"ask", "eval"}),
    "--descriptions": ("a file or folder of column descriptions for this run, nothing stored", {"ask", "eval"}),
    "--overwrite": ("replace what --out already holds", {"eval", "runs unpack"}),
    "--no-plots": ("skip the PNG plots", {"eval", "score"}),
    "--ves": ("also measure VES and R-VES", {"eval", "score"}),
    "--ves-repeats": ("timed runs per query for VES", {"eval", "score"}),
    "--score-workers": ("processes executing gold and predicted SQL while scoring", {"eval", "score"}),
    "--host": ("the address the server binds", {"serve", "mcp"}),
    "--token": ("the bearer token clients must send", {"serve", "mcp"}),
    "--config": ("a file of option values", {"macsql", "finetune"}),
}


@pytest.fixture(autouse=True)
def _no_user_defaults(tmp_path, monkeypatch):
    """Neither the user's config file nor MACSQL_* variables of the machine reach these tests."""
    import os

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in [n for n in os.environ if n.startswith("MACSQL_") and n != "MACSQL_CACHE"]:
        monkeypatch.delenv(name)


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def commands():
    """(path, command) of every command and subcommand, the group itself as "macsql"."""
    ctx = click.Context(main)
    out = [("macsql", main)]

    def walk(group, prefix):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            path = f"{prefix} {name}".strip()
            out.append((path, command))
            if isinstance(command, click.Group):
                walk(command, path)

    walk(main, "")
    return out


def command(path: str) -> click.Command:
    return dict(commands())[path]


def help_sections(*path: str) -> dict[str, list[str]]:
    """`macsql PATH --help` as {section title: the option names in it, in order}."""
    r = run(*path, "--help")
    assert r.exit_code == 0, r.output
    sections, current = {}, None
    for line in r.stdout.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif current is not None and line.startswith("  -"):
            term = re.split(r"\s{2,}", line.strip())[0]
            current.extend(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", term))
    return sections


def where(sections: dict[str, list[str]], name: str) -> list[str]:
    return [title for title, names in sections.items() if name in names]


# -- sections ---------------------------------------------------------------------------------------------------


def test_ask_help_sections_in_order_and_ablations_only_with_the_agents():
    sections = help_sections("ask")
    assert list(sections) == ["Everyday", "Output", "Model", AGENTS, "Other options"]
    assert {"--db", "--evidence", "--follow-up", "--verbose"} <= set(sections["Everyday"])
    assert {"--csv", "--tsv", "--json", "--table", "--fmt", "--sql-only"} <= set(sections["Output"])
    assert {"-m", "--model", "--backend", "--base-url", "--adapters"} <= set(sections["Model"])
    assert sections["Other options"] == ["-h", "--help"]
    # the switches eval's ablation variants turn off, and the options generated from Settings fields
    ablations = {"--" + f.metadata["ablation"] for f in fields(Settings) if f.metadata.get("ablation")}
    shown = {name for names in sections.values() for name in names}
    assert {"--no-selector", "--no-decomposer", "--no-refiner", "--no-values", "--all-samples"} <= shown
    for flag in (ablations | {"--no-selector", "--no-decomposer", "--no-refiner"}) & shown:
        assert where(sections, flag) == [AGENTS], flag
    for generated in ("--confident-prob", "--budget", "--budget-x", "--prune-above-tokens", "--prompt-engine"):
        assert where(sections, generated) == [AGENTS], generated
    # every option once, hidden ones (the old names) never
    visible = [p for p in command("ask").params if isinstance(p, click.Option) and not p.hidden]
    assert sorted(n for names in sections.values() for n in names if n.startswith("--")) == \
        sorted([o for p in visible for o in p.opts if o.startswith("--")] + ["--help"])
    assert "--format" not in shown


@pytest.mark.parametrize("path,titles", [
    (("serve",), ["Server", "Model", AGENTS]),
    (("mcp",), ["Server", "Model", AGENTS]),
    (("eval",), ["Benchmark", "Examples and descriptions", "Engine", "Run", "Scoring and report", "Model",
                 AGENTS]),
    (("score",), ["Predictions", "Benchmark", "Scoring and report"]),
    (("judge",), ["Run", "Model"]),
    (("finetune",), ["Everyday", "Steps and validation", "Memory and speed", "LoRA", "GRPO and DPO", "Sweep"]),
    (("teach", "add-example"), ["Database", "What to store", "Approval"]),
    (("teach", "list"), ["Database", "Output"]),
])
def test_other_commands_help_in_sections_with_nothing_left_over(path, titles):
    sections = help_sections(*path)
    assert list(sections) == [*titles, "Other options"]
    assert sections["Other options"] == ["-h", "--help"]  # every option was placed in a section
    if AGENTS in sections:
        assert not {"--no-selector", "--no-refiner", "--no-values"} & {n for t in titles[:-1] for n in sections[t]}
        assert where(sections, "--no-selector") == [AGENTS]


# -- deprecated names -------------------------------------------------------------------------------------------


def test_the_old_names_are_these_hidden_aliases():
    found = {path: {p.old: p.new for p in cmd.params if isinstance(p, DeprecatedAlias)} for path, cmd in commands()}
    assert {path: names for path, names in found.items() if names} == ALIASES
    for path, cmd in commands():  # no hidden option other than an old name
        assert all(isinstance(p, DeprecatedAlias) for p in cmd.params if isinstance(p, click.Option) and p.hidden), path


# what each command needs besides the option under test to parse
REQUIRED = {"ask": ["How many?", "--db", "demo"], "schema": ["--db", "demo"], "data build": ["--out", "x"],
            "data clean": ["--data", "x.json", "--out", "y.json"]}


def sample(option: click.Option) -> list[str]:
    """Arguments giving `option` a value other than its default."""
    if option.is_flag:
        return []
    if isinstance(option.type, click.Choice):
        return [next(c for c in reversed(option.type.choices) if c != option.default)]
    if isinstance(option.type, click.IntRange):
        return ["2"]
    return ["some_db"]


@pytest.mark.parametrize("path,old,new", [(p, o, n) for p, names in ALIASES.items() for o, n in names.items()])
def test_an_old_name_gives_the_new_option_its_value_with_one_warning(path, old, new, capsys):
    cmd = command(path)
    target = next(p for p in cmd.params if new in p.opts)
    value = sample(target)
    with_new = cmd.make_context(path, [*REQUIRED.get(path, []), new, *value])
    assert capsys.readouterr().err == ""
    with_old = cmd.make_context(path, [*REQUIRED.get(path, []), old, *value])
    assert capsys.readouterr().err == f"Warning: {old} is deprecated; use {new}\n"
    assert with_old.params == with_new.params and with_new.params[target.name] not in (None, False, ())
    assert with_old.get_parameter_source(target.name) == ParameterSource.COMMANDLINE
    with pytest.raises(click.UsageError, match=f"{old} and {new} are one option; pass {new} alone"):
        cmd.make_context(path, [*REQUIRED.get(path, []), old, *value, new, *value])


def test_the_command_line_beats_the_environment_whichever_name_each_uses(monkeypatch, capsys):
    cmd = command("eval")
    monkeypatch.setenv("MACSQL_EVAL_DB", "from_env")
    ctx = cmd.make_context("eval", ["--db-id", "typed"], auto_envvar_prefix="MACSQL_EVAL")
    assert ctx.params["dbs"] == ("typed",)
    assert "--db is deprecated" in capsys.readouterr().err  # the variable's old name is worth a word too
    monkeypatch.delenv("MACSQL_EVAL_DB")
    monkeypatch.setenv("MACSQL_EVAL_DBS", "from_env")
    ctx = cmd.make_context("eval", ["--db", "typed"], auto_envvar_prefix="MACSQL_EVAL")
    assert ctx.params["dbs"] == ("typed",)


def test_old_names_run_as_the_new_ones_exit_0(tmp_path):
    """schema, score, data build and data clean under both spellings: the same output, exit 0, the warning."""
    plain, new = run("schema", "--db", "demo"), run("schema", "--db", "demo", "--no-sample-values")
    old = run("schema", "--db", "demo", "--no-examples")
    assert new.exit_code == old.exit_code == 0 and old.stdout == new.stdout != plain.stdout
    assert new.stderr == "" and old.stderr == "Warning: --no-examples is deprecated; use --no-sample-values\n"

    (tmp_path / "db" / "school").mkdir(parents=True)
    make_db(tmp_path / "db" / "school" / "school.sqlite",
            "CREATE TABLE teacher (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);"
            "INSERT INTO teacher VALUES (1, 'Ann', 31), (2, 'Bo', 45), (3, 'Cy', 52);")
    bench = [{"db_id": "school", "question": f"Teachers older than {n}?",
              "query": f"SELECT name FROM teacher WHERE age > {n}"} for n in (30, 40, 50)]
    (tmp_path / "dev.json").write_text(json.dumps(bench))
    base = ["--data", tmp_path / "dev.json", "--db-root", tmp_path / "db"]
    new = run("score", "--gold-as-pred", *base, "--db-id", "school", "--score-workers", "1", "-q")
    old = run("score", "--gold-as-pred", *base, "--db", "school", "--workers", "1", "-q")
    assert new.exit_code == old.exit_code == 0, old.output
    assert old.stdout == new.stdout and "EX(Spider) 100" in new.stdout
    assert [line for line in old.stderr.splitlines() if "deprecated" in line] == [
        "Warning: --db is deprecated; use --db-id", "Warning: --workers is deprecated; use --score-workers"]

    build = ["data", "build", *base, "--tasks", "decomposer", "--val-frac", "0.34"]
    new = run(*build, "--data-format", "spider", "--split-by", "row", "--out", tmp_path / "new")
    old = run(*build, "--format", "spider", "--split", "row", "--out", tmp_path / "old")
    assert new.exit_code == old.exit_code == 0, old.output
    assert (tmp_path / "old" / "train.jsonl").read_text() == (tmp_path / "new" / "train.jsonl").read_text()
    assert "deprecated" not in new.stderr and "Warning: --split is deprecated; use --split-by" in old.stderr

    clean = ["data", "clean", *base, "--no-tables", "-q"]
    new = run(*clean, "--data-format", "spider", "--out", tmp_path / "new.json")
    old = run(*clean, "--format", "spider", "--out", tmp_path / "old.json")
    assert new.exit_code == old.exit_code == 0, old.output
    assert (tmp_path / "old.json").read_text() == (tmp_path / "new.json").read_text()
    assert "Warning: --format is deprecated; use --data-format" in old.stderr and "deprecated" not in new.stderr


def test_ask_format_is_the_reply_format(openai_server):
    url, requests = openai_server(lambda body: "<reasoning>count them</reasoning>\n<sql>SELECT COUNT(*) FROM customers</sql>")
    opts = ["--backend", "openai", "--base-url", url, "--model", "m", "--candidates", "1", "--sql-only"]
    new = run("ask", "How many customers are there?", "--db", "demo", *opts, "--reply-format", "reasoning")
    prompt_new = json.dumps(requests[-1][1]["messages"])
    old = run("ask", "How many customers are there?", "--db", "demo", *opts, "--format", "reasoning")
    assert new.exit_code == old.exit_code == 0, old.output
    assert old.stdout == new.stdout == "SELECT COUNT(*) FROM customers\n"
    assert json.dumps(requests[-1][1]["messages"]) == prompt_new and "<reasoning>" in prompt_new
    assert old.stderr == "Warning: --format is deprecated; use --reply-format\n" and new.stderr == ""


def test_eval_db_id_and_its_old_name_fail_alike(tmp_path):
    new = run("eval", "--suite", "--db-id", "nowhere", "--data-root", tmp_path)
    old = run("eval", "--suite", "--db", "nowhere", "--data-root", tmp_path)
    assert new.exit_code == old.exit_code == 1
    assert new.stderr.splitlines() == old.stderr.splitlines()[1:] == [
        "Error: no suite case can run here (databases absent or filtered out by --db-id); try --db-id demo"]
    assert old.stderr.splitlines()[0] == "Warning: --db is deprecated; use --db-id"


def test_variables_and_config_keys_reach_a_renamed_option(monkeypatch, tmp_path):
    """MACSQL_<COMMAND>_<OPTION> under the new name, and still under the old one (with the warning); the same
    for a config file's keys."""
    expected = "Error: no suite case can run here"
    monkeypatch.setenv("MACSQL_EVAL_DB_ID", "nowhere")
    r = run("eval", "--suite", "--data-root", tmp_path)
    assert r.exit_code == 1 and r.stderr.startswith(expected)
    monkeypatch.delenv("MACSQL_EVAL_DB_ID")
    monkeypatch.setenv("MACSQL_EVAL_DB", "nowhere")
    r = run("eval", "--suite", "--data-root", tmp_path)
    assert r.exit_code == 1 and r.stderr.splitlines()[0] == "Warning: --db is deprecated; use --db-id"
    assert r.stderr.splitlines()[1].startswith(expected)
    monkeypatch.delenv("MACSQL_EVAL_DB")

    flag = run("schema", "--db", "demo", "--no-sample-values").stdout
    monkeypatch.setenv("MACSQL_SCHEMA_NO_SAMPLE_VALUES", "1")
    r = run("schema", "--db", "demo")
    assert r.exit_code == 0 and r.stdout == flag and r.stderr == ""
    monkeypatch.delenv("MACSQL_SCHEMA_NO_SAMPLE_VALUES")
    monkeypatch.setenv("MACSQL_SCHEMA_NO_EXAMPLES", "1")
    r = run("schema", "--db", "demo")
    assert r.exit_code == 0 and r.stdout == flag and "--no-examples is deprecated" in r.stderr
    monkeypatch.delenv("MACSQL_SCHEMA_NO_EXAMPLES")

    for key in ("db-id", "db"):
        config = tmp_path / f"{key}.toml"
        config.write_text(f'[eval]\n{key} = ["nowhere"]\n')
        r = run("--config", config, "eval", "--suite", "--data-root", tmp_path)
        assert r.exit_code == 1 and expected in r.stderr
        assert ("--db is deprecated" in r.stderr) == (key == "db")
    config.write_text('[eval]\ndb-ids = ["nowhere"]\n')  # a typo gets the new name suggested
    r = run("--config", config, "eval", "--suite")
    assert r.exit_code == 2 and "[eval] has no option 'db-ids' (did you mean 'db-id'?)" in r.stderr


# -- one meaning per name ----------------------------------------------------------------------------------------


def test_no_option_name_means_two_things():
    """An option name declared with different help texts in several commands must be in MEANINGS, listing
    exactly those commands; a flag in one command is a flag in all."""
    helps, flags, users = defaultdict(set), defaultdict(set), defaultdict(set)
    for path, cmd in commands():
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.hidden or p.is_eager:
                continue
            for name in [*p.opts, *p.secondary_opts]:
                helps[name].add(p.help or "")
                flags[name].add(p.is_flag)
                users[name].add(path)
    differing = {name for name, texts in helps.items() if len(texts) > 1}
    unexplained = {name: sorted(users[name]) for name in differing - set(MEANINGS)}
    assert not unexplained, f"option names with different help in different commands: {unexplained}; say what " \
                            "each means in MEANINGS (or give the new one its own name)"
    for name, (_, listed) in MEANINGS.items():
        assert users[name] == listed, (name, sorted(users[name] ^ listed))
    assert {name: f for name, f in flags.items() if len(f) > 1} == {}
    # and the clashes this file was written for stay gone
    assert "--format" not in users and "--workers" in users and users["--workers"] == {"eval"}
    assert users["--split"] == {"eval", "score"} and users["--db-id"] == {"eval", "score"}

"""Bad input gets one line `Error: ...` and exit code 1, before any model is loaded where possible."""

import json
import subprocess
import sys

from click.testing import CliRunner

from macsql.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_missing_database(tmp_path):
    r = run("ask", "How many?", "--db", str(tmp_path / "nope.sqlite"))
    assert r.exit_code == 1
    assert r.output.strip() == (f"Error: database {str(tmp_path / 'nope.sqlite')!r} does not exist; "
                                "pass --db PATH to a .sqlite file")


def test_non_sqlite_file(tmp_path):
    junk = tmp_path / "notes.sqlite"
    junk.write_text("just text")
    r = run("ask", "How many?", "--db", str(junk))
    assert r.exit_code == 1 and r.output.strip() == (
        f"Error: {str(junk)!r} is not a SQLite database (bad header); pass a .sqlite file")


def test_empty_question(shop_db):
    r = run("ask", "  ", "--db", str(shop_db))
    assert r.exit_code == 1 and r.output.startswith("Error: the question is empty")
    assert len(r.output.strip().splitlines()) == 1


def test_unknown_model(shop_db):
    r = run("ask", "How many?", "--db", str(shop_db), "--model", "qwen2.5-coder-1.5", "--backend", "hf")
    assert r.exit_code == 1
    assert r.output.startswith("Error: unknown model 'qwen2.5-coder-1.5' (did you mean 'qwen2.5-coder-1.5b'?)")
    assert "Traceback" not in r.output


def test_model_reply_without_sql(tiny_causal_dir, shop_db):
    r = run("ask", "how many customers are there ?", "--db", str(shop_db), "--model", str(tiny_causal_dir),
            "--backend", "hf", "--max-rounds", "0", "--budget-x", "0", "--json-trace")
    assert r.exit_code == 3  # no working SQL: its own exit code
    payload = json.loads(r.stdout)  # --json-trace still prints the answer with its trace
    assert payload["sql"] == "" and [t["agent"] for t in payload["trace"]][1:3] == ["values", "decomposer"]
    assert len(payload["candidates"]) == 5 and all(c["group"] is None for c in payload["candidates"])
    assert r.stderr.strip().splitlines()[-1] == ("Error: no working SQL after 0 refine round(s): the model reply contains no SQL query")


def test_unknown_command_suggests():
    r = run("akс")
    assert r.exit_code == 2 and r.output.startswith("Error: no command 'akс'")


def test_schema_command_on_demo():
    r = run("schema", "--db", "demo")
    assert r.exit_code == 0 and "CREATE TABLE customers" in r.output and "FOREIGN KEY" in r.output


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from macsql.cli import main; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_mapped_packages_import_under_macsql():
    import macsql.agents
    import macsql.finetune

    assert macsql.agents.__name__ == "macsql.agents"
    assert macsql.finetune.__name__ == "macsql.finetune"


def test_demo_database_and_suites_come_from_the_package():
    from importlib import resources

    from macsql.demo import resolve_db
    from macsql.evaluate.suite import available_suites
    from macsql.schema import introspect

    assert (resources.files("macsql.databases") / "shop.sql").is_file()
    assert {t.name for t in introspect(resolve_db("demo")).tables} >= {"customers", "orders", "products"}
    assert available_suites()  # read through importlib.resources, not the checkout's layout


def test_every_registered_command_loads():
    from macsql.cli import COMMANDS

    r = run("--help")
    assert r.exit_code == 0 and all(f"  {name} " in r.output for name in COMMANDS)
    assert run("data", "--help").output.count("clean") >= 1


def test_adapters_note(tmp_path):
    """--adapters says on one line which agents load an adapter (with its date, so one left by an earlier run
    stands out) and which run on the base weights, with the flag that leaves those out."""
    import os
    import time

    from macsql.cli.options import adapters_note

    def adapter(agent, age_s=0):
        (tmp_path / agent).mkdir()
        cfg = tmp_path / agent / "adapter_config.json"
        cfg.write_text("{}")
        os.utime(cfg, (time.time() - age_s,) * 2)

    adapter("decomposer")
    all_on = {"selector": True, "decomposer": True, "refiner": True}
    today = time.strftime("%Y-%m-%d")
    note = adapters_note(tmp_path, all_on)
    assert note.startswith(f"adapters from {tmp_path}: decomposer (saved {today} ")
    assert note.endswith("; base weights: selector, refiner (pass --no-selector --no-refiner to leave them out)")
    assert "base weights" not in adapters_note(tmp_path, {**all_on, "selector": False, "refiner": False})
    adapter("selector", age_s=400 * 86400)  # left by an earlier run: its date tells
    note = adapters_note(tmp_path, all_on)
    assert f"selector (saved {time.strftime('%Y-%m-%d', time.localtime(time.time() - 400 * 86400))} " in note
    assert note.endswith("; base weights: refiner (pass --no-refiner to leave it out)") and "\n" not in note
    (tmp_path / "decomposer" / "adapter_config.json").unlink()
    assert adapters_note(tmp_path, {**all_on, "selector": False}).endswith("base weights: decomposer, refiner "
                                                                            "(pass --no-refiner to leave it out)")

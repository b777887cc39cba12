"""Bad input through every command: one line `Error: ...`, exit code 1 (2 for a usage error: an option value
the option does not take), no traceback, nothing written. No model is loaded: the OpenAI backend needs no server until a question is asked, and each
case here fails before that (or at the database)."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from macsql.cli import main
from tests.conftest import SHOP_SQL, make_db

DEAD_SERVER = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]


@pytest.fixture
def world(tmp_path):
    """A benchmark, a prediction file, a data folder and a few broken files, all under tmp_path."""
    (tmp_path / "database" / "shop").mkdir(parents=True)
    db = make_db(tmp_path / "database" / "shop" / "shop.sqlite", SHOP_SQL)
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": "shop", "question": "How many?",
                                                    "query": "SELECT count(*) FROM customers"}]))
    (tmp_path / "pred.jsonl").write_text(json.dumps({"question_id": "0", "pred_sql": "SELECT 1"}) + "\n")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notsqlite.sqlite").write_text("hello")
    data = db.read_bytes()
    (tmp_path / "truncated.sqlite").write_bytes(data[:1224])
    (tmp_path / "corrupt.sqlite").write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    for name, text in {"notjson": "{oops\n", "notask": '{"prompt": "x"}\n'}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.jsonl").write_text(text)
        (tmp_path / name / "validation.jsonl").write_text("")
    (tmp_path / "readonly").mkdir()
    os.chmod(tmp_path / "readonly", 0o555)
    yield tmp_path
    os.chmod(tmp_path / "readonly", 0o755)


CASES = {
    "ask: missing db": (["ask", "q", "--db", "{t}/nope.sqlite", *DEAD_SERVER], "does not exist"),
    "ask: db is a folder": (["ask", "q", "--db", "{t}/database", *DEAD_SERVER], "is not a file"),
    "ask: not sqlite": (["ask", "q", "--db", "{t}/notsqlite.sqlite", *DEAD_SERVER], "not a SQLite database"),
    "ask: truncated db": (["ask", "q", "--db", "{t}/truncated.sqlite", *DEAD_SERVER], "cannot be read"),
    "ask: corrupt db": (["ask", "q", "--db", "{t}/corrupt.sqlite", *DEAD_SERVER], "cannot be read"),
    "ask: timeout nan": (["ask", "q", "--db", "{t}/database/shop/shop.sqlite", "--timeout", "nan", *DEAD_SERVER],
                         "positive, finite"),
    "ask: timeout inf": (["ask", "q", "--db", "{t}/database/shop/shop.sqlite", "--timeout", "inf", *DEAD_SERVER],
                         "positive, finite"),
    "ask: timeout negative": (["ask", "q", "--db", "{t}/database/shop/shop.sqlite", "--timeout", "-1",
                               *DEAD_SERVER], "positive, finite"),
    "ask: request timeout 0": (["ask", "q", "--db", "{t}/database/shop/shop.sqlite", "--request-timeout", "0",
                                *DEAD_SERVER], "positive, finite"),
    "ask: timeout not a number": (["ask", "q", "--db", "{t}/database/shop/shop.sqlite", "--timeout", "soon",
                                   *DEAD_SERVER], "'soon' is not a valid float"),
    "ask: invalid base url": (["ask", "q", "--db", "{t}/database/shop/shop.sqlite", "--backend", "openai",
                               "--base-url", "localhost", "--model", "m"], "invalid --base-url"),
    "ask: server down": (["ask", "q", "--db", "{t}/database/shop/shop.sqlite", *DEAD_SERVER,
                          "--no-selector"], "cannot reach the model server"),
    "schema: corrupt db": (["schema", "--db", "{t}/corrupt.sqlite"], "cannot be read"),
    "eval: out under a file": (["eval", "--data", "{t}/dev.json", "--out", "{t}/afile/run", *DEAD_SERVER],
                               "cannot use"),
    "eval: out read-only": (["eval", "--data", "{t}/dev.json", "--out", "{t}/readonly/run", *DEAD_SERVER],
                            "cannot use"),
    "eval: timeout nan": (["eval", "--data", "{t}/dev.json", "--out", "{t}/run", "--timeout", "nan",
                           *DEAD_SERVER], "positive, finite"),
    "eval: missing data": (["eval", "--data", "{t}/nope.json", "--out", "{t}/run", *DEAD_SERVER], "nope.json"),
    "eval: limit 0": (["eval", "--data", "{t}/dev.json", "--out", "{t}/run", "--limit", "0", *DEAD_SERVER],
                      "--limit"),
    "score: out under a file": (["score", "--pred", "{t}/pred.jsonl", "--data", "{t}/dev.json",
                                 "--out", "{t}/afile/score", "-q"], "cannot use"),
    "score: timeout inf": (["score", "--pred", "{t}/pred.jsonl", "--data", "{t}/dev.json", "--timeout", "inf"],
                           "positive, finite"),
    "score: missing pred": (["score", "--pred", "{t}/nope.jsonl", "--data", "{t}/dev.json"], "does not exist"),
    "data build: max-per-db -1": (["data", "build", "--data", "{t}/dev.json", "--out", "{t}/built",
                                   "--max-per-db", "-1"], "--max-per-db"),
    "data build: val-frac 2": (["data", "build", "--data", "{t}/dev.json", "--out", "{t}/built",
                                "--val-frac", "2"], "--val-frac"),
    "data build: out under a file": (["data", "build", "--data", "{t}/dev.json", "--out", "{t}/afile/built"],
                                     "cannot use"),
    "data build: missing data": (["data", "build", "--data", "{t}/nope.json", "--out", "{t}/built"],
                                 "does not exist"),
    "finetune: train.jsonl not JSON": (["finetune", "all", "--data", "{t}/notjson", "--out", "{t}/ft",
                                        "--max-steps", "1"], "is not JSON"),
    "finetune: row without task": (["finetune", "all", "--data", "{t}/notask", "--out", "{t}/ft",
                                    "--max-steps", "1"], "`task` field"),
    "finetune: missing data": (["finetune", "all", "--data", "{t}/nope", "--out", "{t}/ft"], "does not exist"),
}


# Options given a value they do not take: click's usage errors, exit 2
USAGE_CASES = {"ask: timeout nan", "ask: timeout inf", "ask: timeout negative", "ask: request timeout 0",
               "ask: timeout not a number", "eval: timeout nan", "eval: limit 0", "score: timeout inf",
               "data build: max-per-db -1", "data build: val-frac 2", "data build: missing data",
               "finetune: missing data"}


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if "macsql-cache" not in p.parts}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_exit_1_or_2(world, case):
    args, expected = CASES[case]
    if "read-only" in case and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    before = _tree(world)
    r = CliRunner().invoke(main, [a.format(t=world) for a in args])
    assert r.exit_code == (2 if case in USAGE_CASES else 1), (case, r.exit_code, r.output, r.exception)
    # a model server that cannot be reached is retried with one line each ("... retrying in 0.4 s: ...")
    lines = [line for line in r.stderr.strip().splitlines() if ": retrying in " not in line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), (case, r.stderr)
    assert expected in lines[0], (case, lines[0])
    assert "Traceback" not in r.output
    assert _tree(world) == before, f"{case} wrote files"

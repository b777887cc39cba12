"""`macsql finetune`'s numbers are checked against the ranges their config fields declare: on the command line
while click parses the options (one line, exit 2, before any model loads), and in `--config` files, sweeps
and Python through the same `value_problem`."""

import dataclasses
import json

import click
import pytest
from click.testing import CliRunner

from macsql.cli import main
from macsql.cli.finetune import finetune
from macsql.errors import EXIT_USAGE, UsageError
from macsql.finetune.config import Options, load_config, number_kind, recipe_names, typed, value_problem

# (option, value, what the message says)
BAD_NUMBERS = [
    ("--lr", "-1", "-1.0 is not in the range x>0"),
    ("--lr", "0", "0.0 is not in the range x>0"),
    ("--lr", "nan", "nan is not a finite number"),
    ("--lr", "inf", "inf is not a finite number"),
    ("--lr", "-inf", "-inf is not a finite number"),
    ("--lr", "fast", "'fast' is not a valid float"),
    ("--epochs", "0", "0.0 is not in the range x>0"),
    ("--epochs", "nan", "nan is not a finite number"),
    ("--max-steps", "-2", "-2 is not in the range x>=-1"),
    ("--batch-size", "0", "0 is not in the range x>=1"),
    ("--batch-size", "-4", "-4 is not in the range x>=1"),
    ("--batch-size", "2.5", "'2.5' is not a valid integer"),
    ("--grad-accum", "0", "0 is not in the range x>=1"),
    ("--max-length", "0", "0 is not in the range x>=1"),
    ("--eval-steps", "0", "0 is not in the range x>=1"),
    ("--eval-batch-size", "0", "0 is not in the range x>=1"),
    ("--max-eval-rows", "0", "0 is not in the range x>=1"),
    ("--patience", "-1", "-1 is not in the range x>=0"),
    ("--logging-steps", "0", "0 is not in the range x>=1"),
    ("--limit", "-1", "-1 is not in the range x>=1"),
    ("--limit", "0", "0 is not in the range x>=1"),
    ("--max-minutes", "0", "0.0 is not in the range x>0"),
    ("--max-minutes", "inf", "inf is not a finite number"),
    ("--threads", "0", "0 is not in the range x>=1"),
    ("--seed", "-1", "-1 is not in the range 0<=x<=4294967295"),
    ("--seed", "4294967296", "4294967296 is not in the range 0<=x<=4294967295"),
    ("--lora-r", "0", "0 is not in the range x>=1"),
    ("--lora-alpha", "0", "0 is not in the range x>=1"),
    ("--lora-dropout", "2", "2.0 is not in the range 0<=x<1"),
    ("--lora-dropout", "1", "1.0 is not in the range 0<=x<1"),
    ("--lora-dropout", "-0.1", "-0.1 is not in the range 0<=x<1"),
    ("--lora-dropout", "nan", "nan is not a finite number"),
    ("--prompts-per-step", "0", "0 is not in the range x>=1"),
    ("--num-generations", "1", "1 is not in the range x>=2"),
    ("--max-completion-length", "0", "0 is not in the range x>=1"),
    ("--temperature", "0", "0.0 is not in the range x>0"),
    ("--temperature", "nan", "nan is not a finite number"),
    ("--beta", "-0.5", "-0.5 is not in the range x>=0"),
    ("--beta", "inf", "inf is not a finite number"),
    ("--dpo-beta", "0", "0.0 is not in the range x>0"),
]


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a run starts or a model loads: a bad number must stop the command before either."""
    from macsql.backends import loading
    from macsql.finetune import training

    calls = []
    monkeypatch.setattr(training, "run", lambda *a, **k: calls.append("run"))
    monkeypatch.setattr(loading, "load_transformers", lambda *a, **k: calls.append("load"))
    return calls


@pytest.mark.parametrize("flag, value, message", BAD_NUMBERS, ids=[f"{f}={v}" for f, v, _ in BAD_NUMBERS])
def test_a_bad_number_is_one_line_and_exit_2_before_anything_loads(tmp_path, no_training, flag, value, message):
    args = ["all", "--data", str(tmp_path), "--out", str(tmp_path / "out"), flag, value]
    # while click parses the options: the command's own parser refuses it, before its body runs
    with pytest.raises(click.BadParameter) as caught:
        finetune.make_context("finetune", list(args))
    assert message in caught.value.format_message()

    result = CliRunner().invoke(main, ["finetune", *args])
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: Invalid value for '{flag}': {message}"), result.output
    assert no_training == []


def test_the_guard_sees_a_run_start(tmp_path, no_training):
    """The control for the tests above: good numbers reach the (stubbed) training run."""
    result = CliRunner().invoke(main, ["finetune", "all", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                                       "--lr", "1e-3", "--lora-dropout", "0", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert no_training == ["run"]


GOOD_EDGES = [("--lora-dropout", "0"), ("--max-steps", "-1"), ("--max-steps", "0"), ("--patience", "0"),
              ("--beta", "0"), ("--seed", "4294967295"), ("--num-generations", "2"), ("--lr", "1e-7")]


@pytest.mark.parametrize("flag, value", GOOD_EDGES)
def test_values_at_the_edge_of_a_range_are_taken(tmp_path, flag, value):
    ctx = finetune.make_context("finetune", ["all", "--data", str(tmp_path), "--out", str(tmp_path), flag, value])
    name = flag[2:].replace("-", "_")
    assert ctx.params[name] == (float(value) if isinstance(ctx.params[name], float) else int(value))


def test_every_number_declares_its_range():
    for f in dataclasses.fields(Options):
        if number_kind(f):
            assert "min" in f.metadata or "max" in f.metadata, f"{f.name} has no range"


BAD_CONFIGS = [
    ("lr: -1", "option 'lr' in {cfg}: -1 is not in the range x>0"),
    ("lr: .nan", "option 'lr' in {cfg}: nan is not a finite number"),
    ("lr: .inf", "option 'lr' in {cfg}: inf is not a finite number"),
    ("lr: 1e400", "option 'lr' in {cfg}: inf is not a finite number"),  # YAML reads it as text, typed() as inf
    ("batch_size: 0", "option 'batch_size' in {cfg}: 0 is not in the range x>=1"),
    ("batch_size: 2.5", "option 'batch_size' in {cfg}: 2.5 is not a whole number"),
    ("batch_size: true", "option 'batch_size' in {cfg}: True is not a whole number"),
    ("lora_dropout: 2", "option 'lora_dropout' in {cfg}: 2 is not in the range 0<=x<1"),
    ("num_generations: 1", "option 'num_generations' in {cfg}: 1 is not in the range x>=2"),
    ("limit: -1", "option 'limit' in {cfg}: -1 is not in the range x>=1"),
    ("max_steps: fast", "option 'max_steps' must be a number, got 'fast'"),
]


@pytest.mark.parametrize("line, message", BAD_CONFIGS, ids=[line for line, _ in BAD_CONFIGS])
def test_a_bad_number_in_a_config_file_is_the_same_error(tmp_path, no_training, line, message):
    pytest.importorskip("yaml", reason="YAML configs need pyyaml")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"agent: all\n{line}\n")
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(main, ["finetune", "--config", str(cfg), "--data", str(data), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"Error: {message.format(cfg=cfg)}"]
    assert no_training == []


def test_json_configs_sweeps_and_python_are_checked_too(tmp_path):
    with pytest.raises(UsageError, match=r"^option 'lr' in c.json: nan is not a finite number$"):
        Options.from_config({"lr": float("nan")}, "c.json")
    with pytest.raises(UsageError, match=r"^option 'batch_size': 0 is not in the range x>=1$"):
        Options(batch_size=0)
    with pytest.raises(UsageError, match=r"lora_dropout"):
        dataclasses.replace(Options(), lora_dropout=1.5)  # what a sweep does for each of its settings
    assert Options.from_config(json.loads('{"lr": 0.001, "lora_dropout": 0, "max_steps": -1}')).lr == 0.001
    assert value_problem("model", "anything") is None and value_problem("limit", None) is None


def test_shipped_recipes_are_within_range():
    for name in recipe_names():
        cfg = {k: typed(k, v) for k, v in load_config(name).items() if k != "agent"}
        assert all(value_problem(k, v) is None for k, v in cfg.items()), name

"""Hyperparameter sweeps: the spec, the grid, the table, and one real 2-setting sweep on a tiny model."""

import json

import pytest

from macsql.cli.sweep import sweep_from_cli
from macsql.errors import InputError
from macsql.finetune.sweep import expand, losses, parse_sweep, run_sweep, table_markdown
from tests.conftest import SHOP_SQL, make_db


def test_parse_the_documented_spec():
    sweep = parse_sweep("lr=3e-5,5e-5,1e-4 batch=4,8")
    assert sweep == {"lr": [("3e-5", 3e-5), ("5e-5", 5e-5), ("1e-4", 1e-4)], "batch": [("4", 4), ("8", 8)]}
    assert parse_sweep(["lr=3e-5,5e-5,1e-4", "batch=4,8"]) == sweep  # one click value per part
    assert parse_sweep(["lr=1e-4 batch=4"]) == {"lr": [("1e-4", 1e-4)], "batch": [("4", 4)]}


def test_parse_types_aliases_and_none():
    sweep = parse_sweep("lora-r=8,16 max_eval_rows=none,8 gradient_checkpointing=true,false preset=r8,r16")
    assert sweep["lora_r"] == [("8", 8), ("16", 16)]
    assert sweep["max_eval_rows"] == [("none", None), ("8", 8)]
    assert sweep["gradient_checkpointing"] == [("true", True), ("false", False)]
    assert sweep["preset"] == [("r8", "r8"), ("r16", "r16")]
    assert parse_sweep("steps=2e1")["steps"] == [("2e1", 20)]


@pytest.mark.parametrize("spec, message", [
    ("", "--sweep is empty"),
    ("lr", "cannot read 'lr'; write NAME=V1,V2"),
    ("lr=", "cannot read 'lr='"),
    ("lrr=1e-4", "'lrr' is not a setting that can be swept (did you mean 'lr'?)"),
    ("out=a,b", "'out' is not a setting that can be swept"),
    ("lr=1e-4 learning_rate=2e-4", "'learning_rate' appears twice (as 'lr' too)"),
    ("batch=4,4", "'batch' lists a value twice"),
    ("batch=4.5", "batch_size needs int values, got '4.5'"),
    ("lr=fast", "lr needs float values, got 'fast'"),
    ("gradient_checkpointing=maybe", "needs bool values"),
])
def test_parse_errors(spec, message):
    with pytest.raises(InputError, match=None) as err:
        parse_sweep(spec)
    assert message in str(err.value)


def test_grid_expansion_order_and_names():
    settings = expand(parse_sweep("lr=3e-5,1e-4 batch=4,8 r=8"))
    assert [s.name for s in settings] == ["lr3e-5_batch4_r8", "lr3e-5_batch8_r8", "lr1e-4_batch4_r8",
                                          "lr1e-4_batch8_r8"]
    assert settings[1].overrides == {"lr": 3e-5, "batch_size": 8, "lora_r": 8}
    assert settings[1].labels == {"lr": "3e-5", "batch": "8", "r": "8"}
    assert len(expand(parse_sweep("lr=1,2,3 batch=1,2 epochs=1,2"))) == 12


def test_losses_from_a_trainer_log():
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "eval_loss": 2.5}, {"step": 2, "loss": 2.0},
               {"step": 4, "eval_loss": 2.1}, {"step": 4, "loss": 1.5}, {"step": 6, "eval_loss": 2.2}]
    assert losses(history) == {"steps": 6, "train_loss": 1.5, "best_eval_loss": 2.1, "best_eval_step": 4,
                               "last_eval_loss": 2.2}
    assert losses([])["best_eval_loss"] is None


def test_cli_helper_errors(tmp_path):
    with pytest.raises(InputError, match="unexpected argument 'batch=4'"):
        sweep_from_cli("all", None, (), ["batch=4"], 0)
    with pytest.raises(InputError, match="--sweep-eval needs --sweep"):
        sweep_from_cli("all", None, (), [], 3)
    assert sweep_from_cli("all", None, (), [], 0) is False


def test_run_sweep_with_a_fake_trainer_reuses_finished_settings(tmp_path):
    from macsql.finetune.config import Options

    calls = []

    def fake_train(agent, opts):
        calls.append((agent, opts.lr, opts.batch_size, opts.out))
        history = [{"step": 1, "loss": 1.0 / opts.lr / 1e4}, {"step": 1, "eval_loss": opts.lr * 1e3}]
        (tmp_path / "out").mkdir(exist_ok=True)
        from pathlib import Path

        out = Path(opts.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{agent}-lora-log.json").write_text(json.dumps(history))
        summary = {"steps": 1, "seconds": 0.5}
        (out / f"{agent}-lora-summary.json").write_text(json.dumps(summary))
        return summary

    base = Options(data=str(tmp_path / "data"), out=str(tmp_path / "out"), method="lora")
    lines = []
    rows = run_sweep("all", base, parse_sweep("lr=1e-4,2e-4 batch=2"), train=fake_train, echo=lines.append)
    assert [c[1:3] for c in calls] == [(1e-4, 2), (2e-4, 2)]
    assert calls[0][3] == str(tmp_path / "out" / "lr1e-4_batch2")
    assert [r["best_eval_loss"] for r in rows] == [0.1, 0.2]
    table = (tmp_path / "out" / "sweep.md").read_text()
    assert "| lr1e-4_batch2 * | 1e-4 | 2 |" in table
    assert (tmp_path / "out" / "sweep.csv").read_text().splitlines()[0].startswith("setting,lr,batch,steps")
    assert (tmp_path / "out" / "sweep-loss.png").stat().st_size > 1000
    rows_again = run_sweep("all", base, parse_sweep("lr=1e-4,2e-4 batch=2"), train=fake_train,
                           echo=lines.append)
    assert len(calls) == 2 and rows_again == rows  # finished settings are read back, not retrained
    assert "already trained" in lines[-1]


@pytest.fixture
def agent_data(tmp_path):
    """Agent rows built by the real data builder from a tiny Spider-format file."""
    from macsql.finetune import data

    (tmp_path / "database" / "shop").mkdir(parents=True)
    make_db(tmp_path / "database" / "shop" / "shop.sqlite", SHOP_SQL)
    questions = [("How many customers are there?", "SELECT count(*) FROM customers"),
                 ("Names of customers in Spain?", "SELECT name FROM customers WHERE country = 'Spain'"),
                 ("Total amount of all orders?", "SELECT sum(amount) FROM orders"),
                 ("How many orders are shipped?", "SELECT count(*) FROM orders WHERE status = 'shipped'")]
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": "shop", "question": q, "query": s}
                                                   for q, s in questions]))
    sources = data.load_sources(tmp_path / "dev.json")
    rows = data.build_rows(sources, tasks=("decomposer",), progress=False)
    train, val = data.balance_and_split(rows, mode="none", val_frac=0.5)
    data.save_dataset(tmp_path / "agent-data", train, val, {})
    return tmp_path / "agent-data"


def test_real_two_setting_sweep_on_a_tiny_model(tiny_causal_dir, agent_data, tmp_path):
    pytest.importorskip("trl")
    from macsql.finetune.config import Options

    base = Options(model=str(tiny_causal_dir), data=str(agent_data), out=str(tmp_path / "sweep"), method="lora",
                   max_steps=2, batch_size=1, eval_batch_size=2, eval_steps=1, logging_steps=1, save=False,
                   max_length=2048, extra={"save_strategy": "no", "disable_tqdm": True})
    rows = run_sweep("decomposer", base, parse_sweep("lr=1e-3,5e-2 lora_r=4"), eval_questions=1,
                     pipeline_options={"max_new_tokens": 8}, echo=lambda _: None)
    assert [r["setting"] for r in rows] == ["lr1e-3_lora-r4", "lr5e-2_lora-r4"]
    for r in rows:
        assert r["steps"] == 2 and r["train_loss"] is not None and r["best_eval_loss"] is not None
        assert r["ex"] in (0.0, 100.0) and r["eval_n"] == 1
        out = tmp_path / "sweep" / r["setting"]
        assert (out / "decomposer" / "adapter_config.json").is_file()
        assert json.loads((out / "decomposer" / "adapter_config.json").read_text())["r"] == 4
    assert rows[0]["best_eval_loss"] != rows[1]["best_eval_loss"]  # the settings really differ
    assert "EX %" in table_markdown(rows)
    assert (tmp_path / "sweep" / "sweep-loss.png").is_file()


def test_cli_finetune_sweep_on_a_tiny_model(tiny_causal_dir, agent_data, tmp_path):
    pytest.importorskip("trl")
    from click.testing import CliRunner

    from macsql.cli import main

    out = tmp_path / "cli-sweep"
    result = CliRunner().invoke(main, [
        "finetune", "decomposer", "--method", "lora", "--model", str(tiny_causal_dir), "--data", str(agent_data),
        "--out", str(out), "--max-steps", "2", "--batch-size", "1", "--eval-steps", "1", "--max-length", "2048",
        "--no-save", "--sweep", "lr=1e-3,5e-2", "lora_r=4"])
    assert result.exit_code == 0, result.output
    assert "| lr1e-3_lora-r4" in result.output and "| lr5e-2_lora-r4" in result.output
    assert "best eval loss" in result.output
    assert (out / "sweep.md").is_file() and (out / "lr5e-2_lora-r4" / "decomposer" / "adapter_config.json").is_file()
    result = CliRunner().invoke(main, ["finetune", "decomposer", "--data", str(agent_data), "--out", str(out),
                                       "--sweep", "lr=1e-3", "batch"])
    assert result.exit_code == 1 and "Error: --sweep: cannot read 'batch'" in result.output

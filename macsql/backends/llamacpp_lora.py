"""LoRA adapters from `macsql finetune` (PEFT folders) as GGUF adapter files that llama.cpp applies.

Training runs on transformers, which dequantises the GGUF base (weights.convert_gguf); llama.cpp runs the
quantised file itself several times faster on a CPU. llama.cpp applies a LoRA adapter at run time from a
GGUF file of `<base tensor>.lora_a` / `.lora_b` pairs, so an adapter needs no merge and the base stays
shared by every agent.

The only subtle part is layout. transformers reorders the rows of some GGUF tensors when it loads them
(llama's Q and K rows: llama.cpp's rotary layout against transformers'), and an adapter trained on the
reordered weights must be reordered back. Rather than keep a list of architectures, each target's row
order is read off transformers' own GGUF tensor processor by passing it an index array.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from macsql.cache import cache_root
from macsql.errors import ModelError
from macsql.weights import ResolvedModel

_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _adapter_files(folder: Path) -> tuple[dict, Path]:
    config_path = folder / "adapter_config.json"
    if not config_path.exists():
        raise ModelError(f"adapter at {folder} has no adapter_config.json")
    weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).exists()), None)
    if weights is None:
        raise ModelError(f"adapter at {folder} has no {' or '.join(_WEIGHT_FILES)}")
    return json.loads(config_path.read_text()), weights


def gguf_adapter(folder: str | os.PathLike, base: ResolvedModel) -> Path:
    """The GGUF form of the PEFT LoRA adapter in `folder` for the GGUF model `base`, converted once and
    cached (keyed by the adapter's bytes and the base file)."""
    folder = Path(folder)
    config, weights = _adapter_files(folder)
    digest = hashlib.sha256()
    for part in (folder / "adapter_config.json", weights):
        digest.update(part.read_bytes())
    st = base.path.stat()
    digest.update(f"{base.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    target = cache_root() / "lora" / f"{folder.name}-{digest.hexdigest()[:12]}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        convert_adapter(config, weights, base.path, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _scale_alpha(config: dict) -> float:
    """The alpha to write: llama.cpp scales by alpha / r, PEFT by lora_alpha / r (or / sqrt(r) with rsLoRA)."""
    r, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    return alpha * r ** 0.5 if config.get("use_rslora") else alpha


def _check_supported(config: dict) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"llama.cpp runs LoRA adapters, not {config['peft_type']}; use --backend hf")
    for key, what in (("use_dora", "DoRA"), ("modules_to_save", "fully trained modules (modules_to_save)")):
        if config.get(key):
            raise ModelError(f"this adapter uses {what}, which llama.cpp cannot apply; use --backend hf")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ModelError("this adapter has per-module ranks (rank_pattern/alpha_pattern), which one GGUF alpha "
                         "cannot express; use --backend hf")


def _load_tensors(weights: Path) -> dict:
    """The adapter's tensors as float32 numpy arrays (through torch: numpy has no bfloat16)."""
    import torch

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(weights))
    else:
        raw = torch.load(weights, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in raw.items()}


def _row_order(processor, gguf_name: str, rows: int):
    """The permutation `p` with hf[i] = gguf[p[i]] that transformers' processor applies to the rows of the
    GGUF tensor `gguf_name`; None when it keeps them in order. ModelError if it does more than reorder rows."""
    import numpy as np

    cols = 2  # two columns of element ids are enough to tell a row reordering from anything else
    ids = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    out = np.asarray(processor.process(ids.copy(), gguf_name).weights)
    if out.shape != ids.shape or not (out % cols == ids % cols).all():
        raise ModelError(f"transformers changes {gguf_name} on load in a way a LoRA adapter cannot follow; "
                         "use --backend hf")
    order = out[:, 0] // cols
    if not (np.sort(order) == np.arange(rows)).all():
        raise ModelError(f"transformers changes {gguf_name} on load in a way a LoRA adapter cannot follow; "
                         "use --backend hf")
    return None if (order == np.arange(rows)).all() else order


def convert_adapter(config: dict, weights: Path, base_gguf: Path, out: Path) -> None:
    """Write `out`, the GGUF adapter file of a PEFT LoRA adapter (config and weights) for `base_gguf`."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        read_field,
    )

    _check_supported(config)
    reader = gguf.GGUFReader(base_gguf)
    arch = read_field(reader, "general.architecture")[0]
    rows = {t.name: int(t.shape.tolist()[-1]) for t in reader.tensors}  # ggml lists a matrix's dims (cols, rows)
    del reader
    model_config = AutoConfig.from_pretrained(base_gguf.parent, gguf_file=base_gguf.name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config)
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model_config.to_dict())
    to_gguf = {hf: g for g, hf in get_gguf_hf_weights_map(skeleton, processor).items()}

    tensors = _load_tensors(weights)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        for side in ("lora_A", "lora_B"):
            marker = f".{side}."
            if marker in key:
                module = key.split(marker)[0]
                break
        else:
            raise ModelError(f"adapter tensor {key!r} is not a LoRA A/B matrix; llama.cpp cannot apply it "
                             "(use --backend hf)")
        # PEFT saves "base_model.model.<module>"; transformers names the weight "<module>.weight"
        hf_name = module.removeprefix("base_model.model.") + ".weight"
        if hf_name not in to_gguf:
            raise ModelError(f"adapter targets {module!r}, which has no tensor in {base_gguf.name}")
        pairs.setdefault(to_gguf[hf_name], {})[side] = np.asarray(value, dtype=np.float32)

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, _scale_alpha(config))
    for name, pair in sorted(pairs.items()):
        if set(pair) != {"lora_A", "lora_B"}:
            raise ModelError(f"adapter for {name} lacks its {'B' if 'lora_A' in pair else 'A'} matrix")
        a, b = pair["lora_A"], pair["lora_B"]  # a: (r, in), b: (out, r), as llama.cpp wants them
        if config.get("fan_in_fan_out"):  # Conv1D-style weights store (in, out)
            a, b = b.T, a.T
        if b.shape[0] != rows[name]:
            raise ModelError(f"adapter for {name} has {b.shape[0]} output rows, the base {rows[name]}: it was "
                             f"trained on another model than {base_gguf.name}")
        order = _row_order(processor, name, rows[name])
        if order is not None:
            # hf rows are gguf rows taken in `order`; put each back where the GGUF base has it
            moved = np.empty_like(b)
            moved[order] = b
            b = moved
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

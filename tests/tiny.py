"""Tiny real models built in-process (random weights, real classes), saved to a folder and loaded by path
through the same code users run. No downloads."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
WORDS = ("select count ( * ) from where = , . ; ` ' \" 1 2 3 sql final question : answer table column "
         "schema database create primary key foreign references integer text real json keep_all ```sql ``` "
         "name id customers orders products how many what is the of in a are there").split()
SPECIALS = ["<pad>", "<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal(folder: Path, arch: str = "qwen2") -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = word_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(Qwen2Config(**common)) if arch == "qwen2" else LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_t5(folder: Path) -> Path:
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    tok = ByT5Tokenizer()
    config = T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                      tie_word_embeddings=False)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():  # random T5 weights favour pad/eos; push them down so the output is visible text
        model.lm_head.weight[:3] = 0.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def lora_adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero B (peft initialises B to zero, which would change nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


def tiny_gguf(path: Path, arch: str = "llama") -> tuple[Path, dict]:
    """A tiny random llama/qwen2 model written as a GGUF file the way llama.cpp's converter lays it out
    (GGUF tensor names, llama's Q/K rows permuted, Q8_0 and F16 weights, a byte-level BPE vocabulary).
    Returns the file and the model's own float32 state dict, to check a conversion against."""
    import gguf
    import numpy as np
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tokens = sorted(ByteLevel.alphabet()) + ["se", "le", "ct", "<|endoftext|>", "<|im_start|>"]
    merges = ["s e", "l e", "c t"]
    eos = len(tokens) - 2
    heads, kv_heads, hidden, layers = 4, 2, 32, 2
    common = dict(vocab_size=len(tokens), hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
                  rms_norm_eps=1e-6, rope_theta=10000.0, bos_token_id=eos, eos_token_id=eos,
                  tie_word_embeddings=arch == "qwen2")
    model = Qwen2ForCausalLM(Qwen2Config(**common)) if arch == "qwen2" else LlamaForCausalLM(LlamaConfig(**common))
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(64)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 2) + [3, 3])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), layers)
    for hf_name, tensor in state.items():
        if arch == "qwen2" and hf_name == "lm_head.weight":
            continue  # tied to the embedding: llama.cpp writes no output tensor
        base, _, suffix = hf_name.rpartition(".")
        name = f"{names.get_name(base)}.{suffix}"
        data = tensor.numpy()
        if ".q_proj." in hf_name or ".k_proj." in hf_name:
            if arch == "llama":  # llama.cpp's rotary layout for llama's Q and K rows
                n = heads if ".q_proj." in hf_name else kv_heads
                data = data.reshape(n, 2, data.shape[0] // n // 2, *data.shape[1:]).swapaxes(1, 2).reshape(data.shape)
            writer.add_tensor(name, np.ascontiguousarray(data))  # float32, so a test can compare exactly
        elif data.ndim == 2 and ".v_proj." in hf_name:
            writer.add_tensor(name, data.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)
        elif data.ndim == 2:
            writer.add_tensor(name, gguf.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, state

"""GGUF naming and layout of every architecture, checked against Hugging Face: each tiny HF fixture
is converted to GGUF the way llama.cpp's convert_hf_to_gguf.py does it (llama.cpp tensor and key
names, Q/K rows permuted to the interleaved rope layout for llama/mistral, llama3 scaling as a
rope_freqs tensor, gpt_bigcode as the "starcoder" architecture), and pagoda's logits on the GGUF
must match transformers' golden logits like the HF folder does. gpt_bigcode with multi_query=false
(a random model made on the spot, needs torch) is written with n_head k/v heads and its per-head
c_attn rows regrouped into q | k | v blocks, the fused-qkv layout llama.cpp's graphs read (its
converter regroups Bloom's per-head query_key_value the same way)."""
import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

gguf = pytest.importorskip("gguf")

ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "starcoder2": "starcoder2",
        "gpt_bigcode": "starcoder"}


def permute(w, n_head):
    # HF rotate_half rows -> interleaved pairs (what llama.cpp's converter does for llama)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def qkv_blocks(w, n_head):
    # [n_head][q, k, v][head_dim] rows (HF gpt_bigcode without multi_query) -> q | k | v blocks
    return w.reshape(n_head, 3, w.shape[0] // n_head // 3, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)


def llama3_rope_freqs(rp, head_dim):
    base, factor = rp["rope_theta"], rp["factor"]
    low, high, old = rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / base ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def convert(src, dst, model_type):
    cfg = json.loads((src / "config.json").read_text())
    t = load_file(str(src / "model.safetensors"))
    arch = ARCH[model_type]
    w = gguf.GGUFWriter(str(dst), arch)
    if model_type == "gpt_bigcode":
        n_embd, n_layer, n_head = cfg["n_embd"], cfg["n_layer"], cfg["n_head"]
        w.add_uint32(f"{arch}.context_length", cfg["n_positions"])
        w.add_uint32(f"{arch}.embedding_length", n_embd)
        w.add_uint32(f"{arch}.feed_forward_length", cfg["n_inner"])
        w.add_uint32(f"{arch}.block_count", n_layer)
        w.add_uint32(f"{arch}.attention.head_count", n_head)
        n_kv = 1 if cfg.get("multi_query", True) else n_head
        w.add_uint32(f"{arch}.attention.head_count_kv", n_kv)
        w.add_float32(f"{arch}.attention.layer_norm_epsilon", cfg["layer_norm_epsilon"])
        names = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
                 "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}
        per = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
               "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        for i in range(n_layer):
            for k, v in per.items():
                for suf in ("weight", "bias"):
                    names[f"transformer.h.{i}.{k}.{suf}"] = f"blk.{i}.{v}.{suf}"
    else:
        n_embd, n_layer, n_head = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
        n_kv = cfg["num_key_value_heads"]
        head_dim = cfg.get("head_dim") or n_embd // n_head
        rp = cfg["rope_parameters"]
        w.add_uint32(f"{arch}.context_length", cfg["max_position_embeddings"])
        w.add_uint32(f"{arch}.embedding_length", n_embd)
        w.add_uint32(f"{arch}.feed_forward_length", cfg["intermediate_size"])
        w.add_uint32(f"{arch}.block_count", n_layer)
        w.add_uint32(f"{arch}.attention.head_count", n_head)
        w.add_uint32(f"{arch}.attention.head_count_kv", n_kv)
        w.add_uint32(f"{arch}.attention.key_length", head_dim)
        w.add_uint32(f"{arch}.rope.dimension_count", head_dim)
        w.add_float32(f"{arch}.rope.freq_base", rp["rope_theta"])
        if model_type == "starcoder2":
            w.add_float32(f"{arch}.attention.layer_norm_epsilon", cfg["norm_epsilon"])
        else:
            w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
        if rp.get("rope_type") == "llama3":
            w.add_tensor("rope_freqs.weight", llama3_rope_freqs(rp, head_dim))
        names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "model.norm.bias": "output_norm.bias", "lm_head.weight": "output.weight"}
        per = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
               "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        for i in range(n_layer):
            for k, v in per.items():
                for suf in ("weight", "bias"):
                    names[f"model.layers.{i}.{k}.{suf}"] = f"blk.{i}.{v}.{suf}"
    w.add_uint32(f"{arch}.vocab_size", cfg["vocab_size"])
    for name, arr in t.items():
        arr = arr.astype(np.float32)
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            arr = permute(arr, n_head if "q_proj" in name else n_kv)
        if arch == "starcoder" and n_kv > 1 and ".attn.c_attn." in name:
            arr = qkv_blocks(arr, n_head)
        w.add_tensor(names[name], arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("name", ["llama", "llama3", "mistral", "qwen2", "qwen3", "starcoder2", "gpt_bigcode"])
def test_gguf_conversion_matches_transformers(shared, run_pagoda, tmp_path, name):
    src = shared / "fixtures" / "hf" / name
    model_type = json.loads((src / "config.json").read_text())["model_type"]
    convert(src, tmp_path / "m.gguf", model_type)
    g = load_file(str(src / "golden.safetensors"))
    save_file({"input_ids": g["input_ids"]}, str(tmp_path / "ids.safetensors"))
    run_pagoda("logits", "-m", tmp_path / "m.gguf", "-i", tmp_path / "ids.safetensors", "-o", tmp_path / "out.safetensors")
    got = load_file(str(tmp_path / "out.safetensors"))["logits"]
    assert np.abs(got - g["logits"]).max() <= 1e-4


@pytest.mark.parametrize("n_head,n_embd", [(2, 32), (4, 64), (8, 64)])
def test_gguf_conversion_gpt_bigcode_mha(run_pagoda, tmp_path, n_head, n_embd):
    torch = pytest.importorskip("torch", reason="torch not installed: pip install torch transformers")
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    torch.manual_seed(0)
    cfg = transformers.GPTBigCodeConfig(vocab_size=300, n_positions=128, n_embd=n_embd, n_layer=2, n_head=n_head,
                                        n_inner=96, multi_query=False)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.08)
    model.save_pretrained(tmp_path / "hf")
    ids = np.random.default_rng(1).integers(0, 300, size=(2, 30)).astype(np.int32)
    with torch.no_grad():
        ref = model(torch.tensor(ids).long()).logits.numpy()
    convert(tmp_path / "hf", tmp_path / "m.gguf", "gpt_bigcode")
    save_file({"input_ids": ids}, str(tmp_path / "ids.safetensors"))
    run_pagoda("logits", "-m", tmp_path / "m.gguf", "-i", tmp_path / "ids.safetensors", "-o", tmp_path / "out.safetensors")
    got = load_file(str(tmp_path / "out.safetensors"))["logits"]
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))

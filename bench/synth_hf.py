"""Writes a Hugging Face Llama folder with random f16 weights of TinyLlama-1.1B's shape (layers,
widths, GQA), sharded safetensors + index, for `pagoda bench load` (loading a safetensors folder
of a real size without downloading one). The tokenizer files are borrowed from a given HF folder
(default ../shared/models/pycoder-tiny) and the vocabulary size follows it.

    .venv/bin/python bench/synth_hf.py OUT_DIR [--tokenizer-from DIR] [--layers N] [--shard-gb G]
"""
import argparse
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--tokenizer-from", default=os.path.join(here, "..", "..", "shared", "models", "pycoder-tiny"))
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--shard-gb", type=float, default=1.0)
    a = ap.parse_args()
    tok_cfg = json.load(open(os.path.join(a.tokenizer_from, "config.json")))
    vocab = tok_cfg["vocab_size"]
    d, ff, heads, kv = 2048, 5632, 32, 4
    hd = d // heads
    os.makedirs(a.out, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(a.tokenizer_from, f)):
            shutil.copy(os.path.join(a.tokenizer_from, f), a.out)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": a.layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "bos_token_id": tok_cfg.get("bos_token_id", 1),
        "eos_token_id": tok_cfg.get("eos_token_id", 2), "torch_dtype": "float16",
    }
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    shapes = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (d,)), (p + "post_attention_layernorm.weight", (d,)),
                   (p + "self_attn.q_proj.weight", (d, d)), (p + "self_attn.k_proj.weight", (kv * hd, d)),
                   (p + "self_attn.v_proj.weight", (kv * hd, d)), (p + "self_attn.o_proj.weight", (d, d)),
                   (p + "mlp.gate_proj.weight", (ff, d)), (p + "mlp.up_proj.weight", (ff, d)),
                   (p + "mlp.down_proj.weight", (d, ff))]
    shapes += [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]
    rng = np.random.default_rng(1)
    limit = int(a.shard_gb * 2**30)
    shards, cur, size = [], {}, 0
    for name, shp in shapes:
        if name.endswith("norm.weight"):
            t = (1 + 0.02 * rng.standard_normal(shp, dtype=np.float32)).astype(np.float16)
        else:
            t = (0.02 * rng.standard_normal(shp, dtype=np.float32)).astype(np.float16)
        if cur and size + t.nbytes > limit:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += t.nbytes
    shards.append(cur)
    index, total = {}, 0
    for k, s in enumerate(shards):
        fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(s, os.path.join(a.out, fn), metadata={"format": "pt"})
        for n, t in s.items():
            index[n] = fn
            total += t.nbytes
        print(f"wrote {fn} ({sum(t.nbytes for t in s.values()) / 2**20:.0f} MiB)", flush=True)
    json.dump({"metadata": {"total_size": total}, "weight_map": index},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)


if __name__ == "__main__":
    main()

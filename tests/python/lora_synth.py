"""Synthetic LoRA adapters for a Hugging Face Llama folder, and the independent reference for them:
the same model with the adapter MERGED into its weights (W + scale * B @ A, computed here in NumPy
float64 and written as f32). A server that applies the adapter at run time must answer like a
server of the merged model. NumPy only (no torch / peft in the test environment)."""
import json
import os
import shutil
import struct

import numpy as np
from safetensors.numpy import save_file

PROJ = {
    "q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp",
}


def read_safetensors(path):
    """Every tensor of a .safetensors file as float32 NumPy arrays (F32, F16, BF16)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        if t["dtype"] == "F32":
            x = np.frombuffer(raw, dtype="<f4")
        elif t["dtype"] == "F16":
            x = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif t["dtype"] == "BF16":
            x = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{name}: dtype {t['dtype']} not handled")
        out[name] = x.reshape(t["shape"]).copy()
    return out


def make_adapter(base_dir, out_dir, r=8, alpha=16, targets=("q_proj", "v_proj"), seed=0, magnitude=0.05,
                 use_rslora=False):
    """Writes a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) with random
    A [r, in] and B [out, r] for every layer's targets; returns {weight name: delta (float64)}."""
    cfg = json.load(open(os.path.join(base_dir, "config.json")))
    w = read_safetensors(os.path.join(base_dir, "model.safetensors"))
    rng = np.random.default_rng(seed)
    scale = alpha / (np.sqrt(r) if use_rslora else r)
    tensors, deltas = {}, {}
    for i in range(cfg["num_hidden_layers"]):
        for t in targets:
            name = f"model.layers.{i}.{PROJ[t]}.{t}"
            n_out, n_in = w[name + ".weight"].shape
            A = (rng.standard_normal((r, n_in)) * magnitude).astype(np.float32)
            B = (rng.standard_normal((n_out, r)) * magnitude).astype(np.float32)
            tensors[f"base_model.model.{name}.lora_A.weight"] = A
            tensors[f"base_model.model.{name}.lora_B.weight"] = B
            deltas[name + ".weight"] = scale * (B.astype(np.float64) @ A.astype(np.float64))
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
               "use_rslora": use_rslora, "target_modules": list(targets), "bias": "none",
               "fan_in_fan_out": False, "lora_dropout": 0.0, "modules_to_save": None,
               "base_model_name_or_path": os.path.abspath(base_dir), "inference_mode": True},
              open(os.path.join(out_dir, "adapter_config.json"), "w"), indent=2)
    return deltas


def make_merged(base_dir, deltas, out_dir):
    """The base folder with the deltas added to its weights, saved as f32 (tokenizer files copied)."""
    w = read_safetensors(os.path.join(base_dir, "model.safetensors"))
    for name, d in deltas.items():
        w[name] = (w[name].astype(np.float64) + d).astype(np.float32)
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(base_dir):
        if f.endswith(".json") and f != "config.json":
            shutil.copy(os.path.join(base_dir, f), out_dir)
    cfg = json.load(open(os.path.join(base_dir, "config.json")))
    cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    save_file(w, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

"""A float64 NumPy forward pass of a Llama GGUF (quantized tensors dequantized by gguf-py), by the
conventions of ../shared/fixtures/gguf/README.md: the independent reference for tests that check
pagoda's hidden states, logits and the figures computed from them."""
import math

import numpy as np
import pytest


def llama_hidden(path, ids_list, hook=None):
    """Final hidden states (after output_norm) of each list of token ids, float64 activations over
    the file's weights (quantized ones dequantized by gguf-py), by the conventions of
    ../shared/fixtures/gguf/README.md (adjacent-pair rope, KV head h // group, SiLU(gate) * up).
    hook(weight_name, x): called with the input rows x [T, n_in] of every layer product."""
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(path))
    W = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32) for t in r.tensors}

    def field(k):
        f = r.fields[k]
        return f.parts[f.data[0]][0]

    E, L = int(field("llama.embedding_length")), int(field("llama.block_count"))
    H, Hkv = int(field("llama.attention.head_count")), int(field("llama.attention.head_count_kv"))
    eps, base = float(field("llama.attention.layer_norm_rms_epsilon")), float(field("llama.rope.freq_base"))
    hd = E // H
    return [forward(W, ids, E, L, H, Hkv, hd, eps, base, hook) for ids in ids_list]


def llama_logits(path, ids_list):
    """Logits [T, V] of each list of token ids (the LM head: output.weight, else token_embd)."""
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(path))
    names = {t.name: t for t in r.tensors}
    t = names.get("output.weight", names["token_embd.weight"])
    head = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64)
    return [h @ head.T for h in llama_hidden(path, ids_list)]


def forward(W, ids, E, L, H, Hkv, hd, eps, base, hook=None):
    T = len(ids)

    def mm(x, name):
        if hook:
            hook(name, x)
        return x @ W[name].T

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    inv = base ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # [T, n, hd], pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos[:, None, :] - b * sin[:, None, :]
        out[..., 1::2] = a * sin[:, None, :] + b * cos[:, None, :]
        return out

    x = W["token_embd.weight"][ids].astype(np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope(mm(h, p + "attn_q.weight").reshape(T, H, hd))
        k = rope(mm(h, p + "attn_k.weight").reshape(T, Hkv, hd))
        v = mm(h, p + "attn_v.weight").reshape(T, Hkv, hd)
        att = np.empty((T, H, hd))
        for hh in range(H):
            kv = hh // (H // Hkv)
            s = q[:, hh] @ k[:, kv].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + mm(att.reshape(T, E), p + "attn_output.weight")
        h = rms(x, W[p + "ffn_norm.weight"])
        g, u = mm(h, p + "ffn_gate.weight"), mm(h, p + "ffn_up.weight")
        x = x + mm(g / (1 + np.exp(-g)) * u, p + "ffn_down.weight")
    return rms(x, W["output_norm.weight"])

"""Decode and prefill speed of Hugging Face quantized checkpoints against pagoda's own GGUF types
at the same model size, one run on this machine (the issue's figures: GPTQ/AWQ int4 decode within
10% of Q4_0's, W8A8 prefill at least 1.5x F16's).

The model: bench/synth_hf.py's TinyLlama-1.1B shape (hidden 2048, ffn 5632, GQA 32/4) with
--layers layers of random f16 weights. From it: GGUF F16 and Q4_0 (`pagoda quantize DIR`, --pure so
every matrix is Q4_0), and, written here with the layouts tests/python/test_quant_checkpoints.py
checks: GPTQ int4 g128 (symmetric), AWQ int4 g128 (zero points), compressed-tensors W8A8 (int8 per
channel, int8 per-token activations) and FP8 (e4m3 per channel, fp8 per-token activations).
Each is run with `pagoda bench -p 128 -n 32 -t 2 -r 3`, rounds interleaved, medians reported;
GPTQ/AWQ with --quant-activations float, int16 (their default on CPUs with AVX-512 VNNI) and int8.

Usage: python bench/quant_speed.py [--layers 4] [--rounds 2] [--work DIR] [--out bench/results/quant-speed]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGODA = str(ROOT / "build" / "pagoda")
sys.path.insert(0, str(ROOT / "tests" / "python"))
from test_quant_checkpoints import (LINEAR, _arr, _ct_qc, _pack_awq, _pack_cols, _quantize, _read_st,  # noqa: E402
                                    _to_e4m3, _write_st)


def run(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{r.stderr[-2000:]}")
    return r


def write_variant(base, dst, qc, pack):
    dst.mkdir(exist_ok=True)
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization_config"] = qc
    (dst / "config.json").write_text(json.dumps(cfg))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (base / f).exists():
            (dst / f).write_bytes((base / f).read_bytes())
    out = {}
    for shard in sorted(base.glob("*.safetensors")):
        for k, v in _read_st(shard).items():
            mod = k[: -len(".weight")]
            if any(mod.endswith(m) for m in LINEAR):
                out.update(pack(mod, v))
            else:
                out[k] = _arr(v.astype(np.float16), "F16")
    _write_st(dst / "model.safetensors", out)


def gptq(mod, w):
    n_out, n_in = w.shape
    q, z, s, g_idx, _ = _quantize(w, 4, 128, True)
    qT = q.T.astype(np.uint32).reshape(n_in // 8, 8, n_out)
    qw = sum(qT[:, j, :] << np.uint32(4 * j) for j in range(8)).view(np.int32)
    return {f"{mod}.qweight": _arr(qw, "I32"), f"{mod}.qzeros": _arr(_pack_cols((z - 1).T, 4), "I32"),
            f"{mod}.scales": _arr(s.T.astype(np.float16), "F16"), f"{mod}.g_idx": _arr(g_idx, "I32")}


def awq(mod, w):
    q, z, s, _, _ = _quantize(w, 4, 128, False)
    return {f"{mod}.qweight": _arr(_pack_awq(q.T), "I32"), f"{mod}.qzeros": _arr(_pack_awq(z.T), "I32"),
            f"{mod}.scales": _arr(s.T.astype(np.float16), "F16")}


def w8a8(mod, w):
    q, _, s, _, _ = _quantize(w, 8, w.shape[1], True, signed=True)
    return {f"{mod}.weight": _arr(q, "I8"), f"{mod}.weight_scale": _arr(s, "F32")}


def fp8(mod, w):
    s = (np.abs(w).max(1, keepdims=True) / 448).astype(np.float32)
    return {f"{mod}.weight": ("F8_E4M3", w.shape, _to_e4m3(w / s).tobytes()), f"{mod}.weight_scale": _arr(s, "F32")}


ACT = {"dynamic": True, "num_bits": 8, "symmetric": True, "strategy": "token", "group_size": None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", default="/tmp/pagoda-quant-speed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quant-speed"))
    a = ap.parse_args()
    work, out = pathlib.Path(a.work), pathlib.Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    base = work / "base-f16"
    if not (base / "config.json").exists():
        run(sys.executable, ROOT / "bench" / "synth_hf.py", base, "--layers", a.layers)
    models = {}
    for t in ("F16", "Q4_0"):
        g = work / f"model-{t}.gguf"
        if not g.exists():
            run(PAGODA, "quantize", "--pure", base, g, t)
        models[f"GGUF {t}"] = (g, ())
    # the like-for-like reference for the int4 checkpoints: Q4_0 layers, F16 embedding and head (the
    # checkpoints below keep lm_head and the embedding unquantized, as GPTQ/AWQ/llm-compressor do)
    g = work / "model-Q4_0-f16head.gguf"
    if not g.exists():
        run(PAGODA, "quantize", "--pure", "--output-tensor-type", "F16", "--token-embedding-type", "F16", base, g, "Q4_0")
    models["GGUF Q4_0, F16 embedding and head"] = (g, ())
    variants = {
        "GPTQ int4 g128": ({"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False,
                            "checkpoint_format": "gptq"}, gptq),
        "AWQ int4 g128": ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}, awq),
        "W8A8 int8 (compressed-tensors)": (_ct_qc("int-quantized", 8, "channel", None, True, act={**ACT, "type": "int"}), w8a8),
        "FP8 (compressed-tensors)": (_ct_qc("float-quantized", 8, "channel", None, True, typ="float",
                                            act={**ACT, "type": "float"}), fp8),
    }
    for name, (qc, pack) in variants.items():
        d = work / name.split()[0].lower()
        if not (d / "model.safetensors").exists():
            print(f"writing {name} ...", file=sys.stderr, flush=True)
            write_variant(base, d, qc, pack)
        if "int4" in name:  # weight-only: float, int16 (the default where the CPU has AVX-512 VNNI) and int8
            for act in ("float", "int16", "int8"):
                models[f"{name}, {act} activations"] = (d, ("--quant-activations", act))
        else:
            models[name] = (d, ())
    res = {k: {"pp": [], "tg": []} for k in models}
    for r in range(a.rounds):
        for name, (path, extra) in models.items():
            print(f"round {r + 1}/{a.rounds}: {name}", file=sys.stderr, flush=True)
            j = work / "bench.json"
            run(PAGODA, "bench", "-m", path, "-p", 128, "-n", 32, "-t", 2, "-r", 3, "--no-membw", "--json", j, *extra)
            d = json.loads(j.read_text())
            res[name]["pp"].append(d["runs"][0]["pp_tok_s"])
            res[name]["tg"].append(d["runs"][0]["tg_tok_s"])
            res[name]["weight_bytes"] = d["weight_bytes"]
    med = {k: {m: statistics.median(v[m]) for m in ("pp", "tg")} | {"weight_bytes": v["weight_bytes"]} for k, v in res.items()}
    q4, f16 = med["GGUF Q4_0, F16 embedding and head"], med["GGUF F16"]
    lines = ["# Quantized checkpoints: speed against pagoda's GGUF types, same model size, one run", "",
             f"`python bench/quant_speed.py --layers {a.layers} --rounds {a.rounds}` (see its docstring). TinyLlama-1.1B "
             f"shape, {a.layers} layers, random weights; `pagoda bench -p 128 -n 32 -t 2 -r 3`, {a.rounds} interleaved "
             "rounds, medians; 2 shared cores (compare ratios, not absolute figures).", "",
             "\"vs Q4_0\": against Q4_0 layers with an F16 embedding and head, as the quantized checkpoints keep them.", "",
             "| weights | MiB read per token | pp128 tok/s | vs Q4_0 | vs F16 | tg32 tok/s | vs Q4_0 | vs F16 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, v in med.items():
        lines.append(f"| {k} | {v['weight_bytes'] / 2**20:.0f} | {v['pp']:.1f} | {v['pp'] / q4['pp']:.2f} | "
                     f"{v['pp'] / f16['pp']:.2f} | {v['tg']:.2f} | {v['tg'] / q4['tg']:.2f} | {v['tg'] / f16['tg']:.2f} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "speed.json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

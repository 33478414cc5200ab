"""What each quantization costs, in one table: every format pagoda runs for a model, with its size
on disk, the weight bytes read per token, perplexity on a held-out text, KL divergence / top-1
agreement against the unquantized model, and prompt/generation speed, all measured in one run on
this machine (pagoda perplexity, pagoda bench).

Models:
  pycoder-tiny (../shared/models/pycoder-tiny, bf16 Hugging Face folder): the base itself, GGUF F16
    (`pagoda quantize DIR out.gguf F16`: converted as llama.cpp's converter does) and pagoda quantize's Q8_0 / Q6_K / Q5_K_M / Q4_K_M /
    Q4_0 of it, and the real-tool checkpoints of ../shared/fixtures/quant/ (GPTQModel int4,
    llm-compressor W4A16 / W8A8 / FP8).
  SmolLM2-135M-Instruct (the built-in model): only its Q4_1 GGUF exists here, so the "base" is that
    file requantized to F16 (--allow-requantize; exact, Q4_1 values are representable) and the other
    types are made from it: their KL divergence is measured against the Q4_1 model's own
    predictions, not against the original bf16 weights. The KV cache types (int8, fp8) are rows too.
Text: HumanEval prompts + canonical solutions (../shared/data/HumanEval.jsonl.gz), held out from
both models' training; 512-token chunks scored as llama-perplexity does.

Usage: python bench/quant_quality.py [--out bench/results/quant-quality] [--chunks 24] [--work DIR]
Writes OUT/README.md (the table), OUT/quality.json and OUT/quality.svg (KL divergence against
bytes per weight)."""
import argparse
import gzip
import html
import json
import math
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("PAGODA_SHARED", ROOT.parent / "shared"))
PAGODA = str(ROOT / "build" / "pagoda")


def run(*args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{r.stderr[-2000:]}")
    return r


def disk_bytes(path):
    p = pathlib.Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".safetensors", ".gguf"))
    return p.stat().st_size


def perplexity(model, text, chunks, base_kld, make_base=False, extra=()):
    args = [PAGODA, "perplexity", "-m", model, "-f", text, "-c", 512, "--chunks", chunks, "-t", 2,
            "--kl-divergence-base", base_kld, *extra]
    if not make_base:
        args.append("--kl-divergence")
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"perplexity failed on {model}:\n{r.stderr[-2000:]}")
    s = r.stdout + r.stderr
    res = {"ppl": float(re.search(r"PPL = ([0-9.]+)", s).group(1)),
           "ppl_err": float(re.search(r"PPL = [0-9.]+ \+/- ([0-9.]+)", s).group(1))}
    if not make_base:
        res["kld"] = float(re.search(r"Mean\s+KLD:\s+([0-9.eE+-]+)", s).group(1))
        res["kld_99"] = float(re.search(r"99\.0%\s+KLD:\s+([0-9.eE+-]+)", s).group(1))
        res["same_top"] = float(re.search(r"Same top p:\s+([0-9.]+)", s).group(1))
    return res


def speed(model, extra=()):
    j = pathlib.Path("/tmp/pagoda-quant-quality-bench.json")
    run(PAGODA, "bench", "-m", model, "-p", 128, "-n", 32, "-t", 2, "-r", 3, "--no-membw", "--json", j, *extra)
    d = json.loads(j.read_text())
    r = d["runs"][0]
    return {"pp": r["pp_tok_s"], "tg": r["tg_tok_s"], "weight_bytes": d["weight_bytes"]}


def n_params(gguf_path):
    """Elements of every tensor of a GGUF file (the parameters)."""
    import gguf
    return sum(int(t.n_elements) for t in gguf.GGUFReader(str(gguf_path)).tensors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quant-quality"))
    ap.add_argument("--work", default="/tmp/pagoda-quant-quality")
    ap.add_argument("--chunks", type=int, default=24)
    a = ap.parse_args()
    work, out = pathlib.Path(a.work), pathlib.Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    text = work / "humaneval.txt"
    rows = [json.loads(l) for l in gzip.open(SHARED / "data" / "HumanEval.jsonl.gz", "rt")]
    text.write_text("\n".join(r["prompt"] + r["canonical_solution"] for r in rows))
    results = []

    def measure(model_name, fmt, path, base_kld, bpw_params, extra=(), make_base=False):
        print(f"{model_name}: {fmt} ...", file=sys.stderr, flush=True)
        q = perplexity(path, text, a.chunks, base_kld, make_base, extra)
        s = speed(path, extra)
        size = disk_bytes(path)
        row = {"model": model_name, "format": fmt, "disk_bytes": size, **q, **s,
               "bits_per_weight": 8 * s["weight_bytes"] / bpw_params}
        results.append(row)
        return row

    # ---- pycoder-tiny
    base = SHARED / "models" / "pycoder-tiny"
    kld = work / "pycoder.kld"
    f16 = work / "pycoder-f16.gguf"
    run(PAGODA, "quantize", base, f16, "F16")  # the HF folder converted as llama.cpp's converter does
    params = n_params(f16)
    measure("pycoder-tiny", "bf16 (HF folder, base)", base, kld, params, make_base=True)
    measure("pycoder-tiny", "GGUF F16", f16, kld, params)
    for t in ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]:
        g = work / f"pycoder-{t}.gguf"
        run(PAGODA, "quantize", f16, g, t)
        measure("pycoder-tiny", f"GGUF {t}", g, kld, params)
    for name, label in [("gptq_4bit_g32", "GPTQ int4 g32 (GPTQModel)"), ("w4a16_g32_ct", "W4A16 g32 (llm-compressor)"),
                        ("w8a8_int8_ct", "W8A8 int8 (llm-compressor)"), ("fp8_dynamic_ct", "FP8 dynamic (llm-compressor)")]:
        d = SHARED / "fixtures" / "quant" / name
        measure("pycoder-tiny", label, d, kld, params)
        if name == "gptq_4bit_g32":
            measure("pycoder-tiny", label + ", int8 activations", d, kld, params, ("--quant-activations", "int8"))

    # ---- the built-in model
    q41 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if q41.exists():
        kld = work / "smollm2.kld"
        sf16 = work / "smollm2-f16.gguf"
        run(PAGODA, "quantize", "--allow-requantize", q41, sf16, "F16")
        sm_params = n_params(sf16)
        measure("SmolLM2-135M", "F16 (requantized from Q4_1: the base)", sf16, kld, sm_params, make_base=True)
        measure("SmolLM2-135M", "Q4_1 (the shipped file)", q41, kld, sm_params)
        for t in ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]:
            g = work / f"smollm2-{t}.gguf"
            run(PAGODA, "quantize", sf16, g, t)
            measure("SmolLM2-135M", f"{t} (from the F16)", g, kld, sm_params)
        for kv in ["int8", "fp8"]:
            measure("SmolLM2-135M", f"Q4_1, KV cache {kv}", q41, kld, sm_params, ("--kv-cache-dtype", kv))

    (out / "quality.json").write_text(json.dumps(results, indent=1))
    write_table(out / "README.md", results, a.chunks)
    write_svg(out / "quality.svg", results)
    print(f"wrote {out}/README.md, quality.json, quality.svg", file=sys.stderr)


def write_table(path, results, chunks):
    lines = [
        "# Quantization quality and speed, one run",
        "",
        "`python bench/quant_quality.py` (see its docstring for the models, the text and what \"base\" means).",
        f"Perplexity: HumanEval prompts + solutions, {chunks} chunks of 512 tokens, the second half of each scored",
        "(llama-perplexity's method). KLD: mean KL divergence of each scored position's next-token",
        "distribution from the base's; top-1: how often both pick the same token. Speed: `pagoda bench",
        "-p 128 -n 32 -t 2 -r 3` on this machine (2 shared cores: compare rows, not machines).",
        "bits/weight: weight bytes read per token x 8 / parameters (embedding rows counted whole).",
        "",
        "| model | format | disk MiB | bits/weight | PPL | ± | KLD | KLD p99 | same top-1 % | pp128 tok/s | tg32 tok/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        k = lambda key, f: (f.format(r[key]) if key in r else "—")  # noqa: E731
        lines.append(f"| {r['model']} | {r['format']} | {r['disk_bytes'] / 2**20:.1f} | {r['bits_per_weight']:.2f} | "
                     f"{r['ppl']:.4f} | {r['ppl_err']:.3f} | {k('kld', '{:.6f}')} | {k('kld_99', '{:.5f}')} | "
                     f"{k('same_top', '{:.2f}')} | {r['pp']:.0f} | {r['tg']:.0f} |")
    pathlib.Path(path).write_text("\n".join(lines) + "\n\n![KL divergence against bits per weight](quality.svg)\n")


def write_svg(path, results):
    pts = [r for r in results if "kld" in r and r["kld"] > 0]
    W, H, L, B = 760, 420, 70, 50
    xs = [r["bits_per_weight"] for r in pts]
    x0, x1 = 0, max(xs) * 1.1 if xs else 1
    ly = [math.log10(r["kld"]) for r in pts]
    y0, y1 = (min(ly) - 0.3, max(ly) + 0.3) if ly else (-6, 0)
    X = lambda v: L + (W - L - 20) * (v - x0) / (x1 - x0)  # noqa: E731
    Y = lambda v: H - B - (H - B - 30) * (v - y0) / (y1 - y0)  # noqa: E731
    colors = {"pycoder-tiny": "#1f77b4", "SmolLM2-135M": "#d62728"}
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
         f'<text x="{L}" y="18" font-size="14" font-weight="bold">Mean KL divergence from the base vs bits per weight</text>',
         f'<line x1="{L}" y1="{H - B}" x2="{W - 20}" y2="{H - B}" stroke="black"/>',
         f'<line x1="{L}" y1="30" x2="{L}" y2="{H - B}" stroke="black"/>',
         f'<text x="{W / 2}" y="{H - 10}" font-size="12">bits per weight (weight bytes read per token x 8 / parameters)</text>']
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= e <= y1:
            o.append(f'<text x="{L - 45}" y="{Y(e) + 4:.1f}" font-size="11">1e{e}</text>')
            o.append(f'<line x1="{L}" y1="{Y(e):.1f}" x2="{W - 20}" y2="{Y(e):.1f}" stroke="#ddd"/>')
    for b in range(0, int(x1) + 1, 2):
        o.append(f'<text x="{X(b) - 4:.1f}" y="{H - B + 16}" font-size="11">{b}</text>')
    for r, lv in zip(pts, ly):
        c = colors.get(r["model"], "black")
        o.append(f'<circle cx="{X(r["bits_per_weight"]):.1f}" cy="{Y(lv):.1f}" r="4" fill="{c}"/>')
        o.append(f'<text x="{X(r["bits_per_weight"]) + 6:.1f}" y="{Y(lv) + 4:.1f}" font-size="9" fill="{c}">'
                 f'{html.escape(r["format"][:34])}</text>')
    for i, (m, c) in enumerate(colors.items()):
        o.append(f'<text x="{W - 160}" y="{40 + 16 * i}" font-size="12" fill="{c}">● {m}</text>')
    o.append("</svg>")
    pathlib.Path(path).write_text("\n".join(o))


if __name__ == "__main__":
    main()

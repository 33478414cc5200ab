#!/usr/bin/env python3
"""pagoda beside llama.cpp on the same GGUF files in the same run: `pagoda bench` and `llama-bench`
(the anchor build of ../shared/anchors, unpacked where --llama points) alternated round by round,
prompt processing (pp) and generation (tg) tokens/s, and their ratio per round.

Both with the same thread count, prompt and generation lengths; the KV cache in f16 for both
(llama-bench's default; pagoda's CPU default is f32). Models: any GGUFs, e.g. the random-weight
shapes of `pagoda synth --shape tinyllama-1.1b|llama-2-7b --type q4_0` (llama.cpp runs files
without a tokenizer).

  bench/vs_llamacpp.py --llama /tmp/llama -m tl-q4_0.gguf,l7-q4_0.gguf [-p 128] [-n 32] [-t 2]
      [--reps 3] [--rounds 2] [--json out.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pagoda(exe, model, a):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([exe, "bench", "-m", model, "-p", str(a.p), "-n", str(a.n), "-t", str(a.t), "-r", str(a.reps),
                        "--no-membw", "--kv-type", "f16", "--json", f.name], check=True, capture_output=True)
        run = json.load(open(f.name))["runs"][0]
    return run["pp_tok_s"], run["tg_tok_s"]


def llama(dir_, model, a):
    env = dict(os.environ, LD_LIBRARY_PATH=dir_)
    r = subprocess.run([os.path.join(dir_, "llama-bench"), "-m", model, "-p", str(a.p), "-n", str(a.n), "-t", str(a.t),
                        "-r", str(a.reps), "-o", "json"], check=True, capture_output=True, text=True, env=env)
    rows = json.loads(r.stdout)
    pp = next(x["avg_ts"] for x in rows if x["n_prompt"] == a.p and x["n_gen"] == 0)
    tg = next(x["avg_ts"] for x in rows if x["n_gen"] == a.n and x["n_prompt"] == 0)
    return pp, tg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pagoda", default=os.path.join(ROOT, "build", "pagoda"))
    ap.add_argument("--llama", required=True, help="folder with llama-bench and its libraries")
    ap.add_argument("-m", "--models", required=True, help="comma-separated GGUF files")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    models = a.models.split(",")
    res = {m: {"pagoda": [], "llama.cpp": []} for m in models}
    for rnd in range(a.rounds):
        for m in models:
            for name in (("pagoda", "llama.cpp") if rnd % 2 == 0 else ("llama.cpp", "pagoda")):
                print(f"round {rnd + 1}/{a.rounds}: {name} {os.path.basename(m)}", file=sys.stderr, flush=True)
                r = pagoda(a.pagoda, m, a) if name == "pagoda" else llama(a.llama, m, a)
                res[m][name].append(r)
    print(f"\n| model | pagoda pp{a.p} | llama.cpp pp{a.p} | ratio | pagoda tg{a.n} | llama.cpp tg{a.n} | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    out = []
    for m in models:
        P, L = res[m]["pagoda"], res[m]["llama.cpp"]
        rpp = [p[0] / l[0] for p, l in zip(P, L)]
        rtg = [p[1] / l[1] for p, l in zip(P, L)]
        f = lambda xs: " / ".join(f"{x:.1f}" for x in xs)  # noqa: E731
        print(f"| {os.path.basename(m)} | {f(p[0] for p in P)} | {f(l[0] for l in L)} | "
              f"{min(rpp):.2f}-{max(rpp):.2f}x | {f(p[1] for p in P)} | {f(l[1] for l in L)} | "
              f"{min(rtg):.2f}-{max(rtg):.2f}x |")
        out.append({"model": m, "pagoda": P, "llama.cpp": L, "pp_ratio_median": statistics.median(rpp),
                    "tg_ratio_median": statistics.median(rtg)})
    if a.json:
        json.dump({"p": a.p, "n": a.n, "threads": a.t, "reps": a.reps, "results": out}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()

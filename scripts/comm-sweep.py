#!/usr/bin/env python3
"""Measures what tensor / pipeline parallelism sends over MPI (docs/scaling.md): for each model and
TP x PP layout, `pagoda run --comm-stats` once with -n 1 (the prompt's step only: prefill of P
tokens) and once with -n G+1 (the same plus G decode steps), and prints per rank the all-reduce,
broadcast and point-to-point calls and bytes, the prefill and the decode part (the difference of
the two runs), and each count checked against the formula from the model's shape.

  scripts/comm-sweep.py --pagoda build/pagoda --model NAME=PATH:EMBD:LAYERS ... [--prompt 64]
                        [--gen 16] [--layouts 1x1,2x1,4x1,2x2] [--json out.json]

Byte counts are exact; the seconds are wall time on whatever machine runs it (on an oversubscribed
one, ranks wait for cores: the times then say nothing about compute)."""
import argparse
import json
import re
import shutil
import subprocess
import sys

LINE = re.compile(r"pagoda: comm-stats (.*)")
PROMPT = re.compile(r"prompt (\d+) tokens \((\d+) cached\) in ([0-9.]+) s .* generated (\d+) tokens in ([0-9.]+) s")


def run(args, pagoda, path, tp, pp, n):
    ranks = tp * pp
    prompt = ",".join(str(3 + i % 900) for i in range(args.prompt))
    cmd = [pagoda, "run", "-m", path, "--prompt-ids", prompt, "-n", str(n), "--ignore-eos", "-t", "1",
           "--comm-stats"]
    if ranks > 1:
        cmd = [shutil.which("mpirun"), "--allow-run-as-root", "--oversubscribe", "-np", str(ranks), *cmd,
               "--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    stats = {}
    for m in LINE.finditer(r.stderr):
        kv = dict(x.split("=") for x in m.group(1).split())
        stats[int(kv["rank"])] = {k: float(v) if "." in v else int(v) for k, v in kv.items()}
    t = PROMPT.search(r.stderr)
    return stats, {"prefill_s": float(t.group(3)), "gen_tokens": int(t.group(4)), "decode_s": float(t.group(5))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pagoda", default="build/pagoda")
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH:N_EMBD:N_LAYER")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--layouts", default="1x1,2x1,4x1", help="TPxPP,...")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for spec in args.model:
        name, rest = spec.split("=", 1)
        path, E, L = rest.rsplit(":", 2)
        E, L = int(E), int(L)
        for lay in args.layouts.split(","):
            tp, pp = map(int, lay.split("x"))
            pre, tpre = run(args, args.pagoda, path, tp, pp, 1)
            full, tfull = run(args, args.pagoda, path, tp, pp, args.gen + 1)
            P, G = args.prompt, args.gen
            for rank in sorted(full):
                a, b = pre[rank], full[rank]
                dec = {k: b[k] - a[k] for k in b if k.endswith(("_calls", "_bytes", "_s"))}
                # the formula: 2 all-reduces per layer of this rank's stage per forward pass, each of
                # tokens x n_embd floats; this rank's stage holds L / pp layers (earlier stages the rest)
                stage = rank // tp
                Ls = L // pp + (1 if stage < L % pp else 0)
                exp_pre = (2 * Ls, 2 * Ls * P * E * 4) if tp > 1 else (0, 0)
                exp_dec = (2 * Ls * G, 2 * Ls * G * E * 4) if tp > 1 else (0, 0)
                ok = (a["all_reduce_calls"], a["all_reduce_bytes"]) == exp_pre and \
                     (dec["all_reduce_calls"], dec["all_reduce_bytes"]) == exp_dec
                row = {"model": name, "n_embd": E, "n_layer": L, "tp": tp, "pp": pp, "rank": rank,
                       "prompt": P, "gen": G, "prefill": a, "decode": dec, "formula_ok": ok,
                       "times_rank0": {"prefill_s": tpre["prefill_s"], "decode_s": tfull["decode_s"],
                                       "decode_tokens": tfull["gen_tokens"] - 1}}
                rows.append(row)
                print(f"{name:10s} TP{tp} PP{pp} rank {rank}: prefill {P} tok: AR {a['all_reduce_calls']} calls "
                      f"{a['all_reduce_bytes']} B {a['all_reduce_s']:.4f} s, bcast {a['bcast_calls']} / "
                      f"{a['bcast_bytes']} B, send {a['send_bytes']} B, recv {a['recv_bytes']} B | decode {G} steps: "
                      f"AR {dec['all_reduce_calls']} calls {dec['all_reduce_bytes']} B {dec['all_reduce_s']:.4f} s, "
                      f"bcast {dec['bcast_calls']} / {dec['bcast_bytes']} B, send {dec['send_bytes']} B, "
                      f"recv {dec['recv_bytes']} B | formula {'ok' if ok else 'MISMATCH'} | rank 0 wall: prefill "
                      f"{tpre['prefill_s']:.2f} s, decode {tfull['decode_s']:.2f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

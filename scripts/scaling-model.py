#!/usr/bin/env python3
"""The arithmetic behind docs/scaling.md: per-step compute time against tensor-parallel
communication time for Llama-2-7B / 70B on H100s, from the communication pattern measured with
`pagoda ... --comm-stats` (2 all-reduces per layer per forward pass, each of tokens x n_embd
activations, wire volume per rank 2 (N-1)/N of that, as Open MPI's pml monitoring showed; per step
one gather of the logits columns of the vocabulary-parallel head and two broadcasts of the step
plan) and the
ASSUMED hardware figures below. Prints the markdown tables of the document.

  scripts/scaling-model.py [--mfu 1.0] [--hbm-eff 1.0]

Every hardware number here is an assumption (public nominal figures), not a measurement."""
import argparse
import math

# ---- assumptions (nominal public figures; see docs/scaling.md) ----
H100_FLOPS = 989e12      # dense bf16 tensor-core FLOP/s, H100 SXM nominal
H100_HBM = 3.35e12       # HBM3 bytes/s, H100 SXM nominal
H100_MEM = 80e9          # bytes of HBM
ACT_BYTES = 2            # bf16 activations on the wire (pagoda's CPU path sends f32: 4)
WEIGHT_BYTES = 2         # bf16 weights
CTX = 1024               # tokens of context each decoding sequence reads (KV) per step

LINKS = {
    # name: (bytes/s per direction per GPU, all-reduce latency function of N in seconds)
    "NVLink 4": (450e9, lambda n: 10e-6),                                  # NVSwitch, one node
    "400 GbE RoCE": (50e9, lambda n: 2 * math.log2(n) * 10e-6),             # 2 log2 N messages x 10 us
    "100 GbE RoCE": (12.5e9, lambda n: 2 * math.log2(n) * 10e-6),
}

MODELS = {
    # name: n_embd, n_layer, n_head, n_kv_head, n_ff, vocab
    "Llama-2-7B": (4096, 32, 32, 32, 11008, 32000),
    "Llama-2-70B": (8192, 80, 64, 8, 28672, 32000),
}


def params(E, L, H, KV, F, V):
    hd = E // H
    attn = E * E * 2 + 2 * E * KV * hd   # Wq, Wo, Wk, Wv
    mlp = 3 * E * F                      # gate, up, down
    return L * (attn + mlp) + 2 * V * E  # + embedding and LM head (untied)


def kv_bytes_per_token(E, L, H, KV):
    return L * 2 * KV * (E // H) * 2     # K and V, bf16


def step(model, T, n_seq, decode, N, link, mfu, hbm_eff):
    E, L, H, KV, F, V = MODELS[model]
    P = params(E, L, H, KV, F, V)
    flops = 2 * P * T + (2 * L * T * T * E if not decode else 4 * L * n_seq * CTX * E)
    weights = P * WEIGHT_BYTES
    kv = n_seq * CTX * kv_bytes_per_token(E, L, H, KV) if decode else 0
    t_flop = flops / N / (H100_FLOPS * mfu)
    t_mem = (weights + kv) / N / (H100_HBM * hbm_eff)
    t_comp = max(t_flop, t_mem)
    fits = (weights + (kv if decode else T * kv_bytes_per_token(E, L, H, KV))) / N < 0.9 * H100_MEM
    S = T * E * ACT_BYTES                 # one all-reduce's payload per rank
    n_ar = 2 * L
    n_out = n_seq                         # logits rows: each sequence's last token
    if N == 1:
        t_comm = 0.0
    else:
        bw, lat = LINKS[link]
        t_comm = n_ar * (lat(N) + 2 * (N - 1) / N * S / bw)
        # pagoda's per-step extras: the vocabulary-parallel head's float32 logits columns gathered
        # into the first rank (its inbound link carries (N-1)/N of the rows), and rank 0's step plan
        # (header + plan: two broadcasts of ~100 B), each counted at one all-reduce latency
        t_comm += lat(N) + (N - 1) / N * n_out * V * 4 / bw
        t_comm += 2 * lat(N)
    return {"flops": flops, "t_flop": t_flop, "t_mem": t_mem, "t_comp": t_comp, "t_comm": t_comm, "fits": fits,
            "S": S, "n_ar": n_ar, "bound": "memory" if t_mem >= t_flop else "compute"}


def ms(x):
    return f"{x * 1e3:.2f}" if x < 0.1 else f"{x * 1e3:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mfu", type=float, default=1.0, help="share of the nominal FLOP/s reached")
    ap.add_argument("--hbm-eff", type=float, default=1.0, help="share of the nominal HBM bandwidth reached")
    a = ap.parse_args()
    for model in MODELS:
        E, L, H, KV, F, V = MODELS[model]
        P = params(E, L, H, KV, F, V)
        print(f"\n### {model}: {P / 1e9:.2f} B parameters, {P * WEIGHT_BYTES / 1e9:.1f} GB in bf16, "
              f"{2 * L} all-reduces per forward pass, KV {kv_bytes_per_token(E, L, H, KV) / 1e6:.3f} MB/token\n")
        print("| step | payload per all-reduce | TP | compute (ms) | NVLink comm | 400 GbE comm | 100 GbE comm |")
        print("|---|---|---|---|---|---|---|")
        for label, T, n_seq, decode in (("decode, batch 1", 1, 1, True), ("decode, batch 64", 64, 64, True),
                                        ("prefill 2048", 2048, 1, False)):
            base = step(model, T, n_seq, decode, 1, "NVLink 4", a.mfu, a.hbm_eff)["t_comp"]
            for N in (1, 2, 4, 8):
                cells = []
                r = None
                for link in LINKS:
                    r = step(model, T, n_seq, decode, N, link, a.mfu, a.hbm_eff)
                    if N == 1:
                        cells.append("-")
                    else:
                        tot = r["t_comp"] + r["t_comm"]
                        cells.append(f"{ms(r['t_comm'])} (x{base / tot:.2f}, {100 * base / tot / N:.0f}%)")
                comp = f"{ms(r['t_comp'])} {r['bound'][:3]}" + ("" if r["fits"] else ", does not fit")
                pay = f"{r['S'] / 1024:.0f} KiB" if r["S"] < 1 << 20 else f"{r['S'] >> 20} MiB"
                print(f"| {label if N == 1 else ''} | {pay if N == 1 else ''} | {N} | {comp} | "
                      f"{cells[0]} | {cells[1]} | {cells[2]} |")

        print(f"\nPipeline stage boundary instead (one send of tokens x n_embd x {ACT_BYTES} B per step per boundary, "
              "10 us per message on Ethernet, assumed):\n")
        print("| step | bytes per boundary | 400 GbE | 100 GbE |")
        print("|---|---|---|---|")
        for label, T in (("decode, batch 1", 1), ("decode, batch 64", 64), ("prefill 2048", 2048)):
            b = T * E * ACT_BYTES
            size = f"{b / 1024:.0f} KiB" if b < 1 << 20 else f"{b >> 20} MiB"
            print(f"| {label} | {size} | {ms(10e-6 + b / 50e9)} ms | {ms(10e-6 + b / 12.5e9)} ms |")


if __name__ == "__main__":
    main()

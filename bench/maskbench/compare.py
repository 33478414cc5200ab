#!/usr/bin/env python3
"""MaskBench's table, side by side, from run_reference.py / `pagoda bench grammar` outputs.

  compare.py RUN.jsonl[.gz] [RUN2.jsonl ...] [--plot tbm.png] [--summary-out DIR] [--common]

Each input holds one JSON line per schema (shape in run_reference.py). Prints a markdown table:
schemas, passing, compile / validation / invalidation errors, timeouts, crashes, TTFM p50/p99 and
TBM p50/p99 in microseconds. TTFM is over the schemas that compiled; TBM pools every TBM sample of
every compiled schema (when a file has only per-schema tbm_summary, the TBM figures are the
medians of the per-schema figures, marked with ~). --common restricts every run to the schema ids
present in all inputs. --plot draws the TBM distributions (matplotlib; skipped with a message if it
is missing). --summary-out writes, per input, a .summary.jsonl.gz copy without the per-token lists
(what bench/results/maskbench/ keeps).
"""
import argparse
import gzip
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run_reference import percentile  # noqa: E402

STATUSES = ("passing", "compile_error", "validation_error", "invalidation_error", "timeout", "crash")


def load(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not JSON ({e})")
    for r in rows:
        for k in ("id", "status"):
            if k not in r:
                raise SystemExit(f"{path}: a line lacks {k!r}")
        if r["status"] not in STATUSES:
            raise SystemExit(f"{path}: schema {r['id']}: unknown status {r['status']!r}")
    return rows


def label(path, rows):
    if rows:
        r = rows[0]
        v = r.get("engine_version")
        return f"{r.get('engine', '?')}{' ' + v if v else ''} / {r.get('tokenizer', '?')}"
    return pathlib.Path(path).name


COMPILED = ("passing", "validation_error", "invalidation_error")


def stats(rows, only=None):
    """The table's figures for one run; only: restrict TTFM/TBM to these schema ids."""
    st = {s: 0 for s in STATUSES}
    for r in rows:
        st[r["status"]] += 1
    compiled = [r for r in rows if r["status"] in COMPILED and (only is None or r["id"] in only)]
    ttfm = [r["ttfm_us"] for r in compiled if r.get("ttfm_us") is not None]
    approx = False
    tbm = []
    for r in compiled:
        if "tbm_us" in r:
            tbm.extend(r["tbm_us"])
        else:
            approx = True
    if approx:
        p50 = [r["tbm_summary"]["p50"] for r in compiled if r.get("tbm_summary", {}).get("p50") is not None]
        p99 = [r["tbm_summary"]["p99"] for r in compiled if r.get("tbm_summary", {}).get("p99") is not None]
        tbm50, tbm99 = percentile(p50, 50), percentile(p99, 50)
        ntok = sum(r.get("tbm_summary", {}).get("n", 0) for r in compiled)
    else:
        tbm50, tbm99, ntok = percentile(tbm, 50), percentile(tbm, 99), len(tbm)
    return {"schemas": len(rows), **st, "ttfm_p50": percentile(ttfm, 50), "ttfm_p99": percentile(ttfm, 99),
            "tbm_p50": tbm50, "tbm_p99": tbm99, "tbm_n": ntok, "tbm_approx": approx, "tbm": tbm,
            "n_tests": sum(r.get("n_tests", 0) for r in rows)}


def fmt_us(x, approx=False):
    if x is None:
        return "-"
    s = f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
    return ("~" if approx else "") + s


def table(labels, all_stats, common_stats=None, n_common=0):
    def pct(n, tot):
        return f"{n:,} ({100.0 * n / tot:.1f}%)" if tot else "0"
    rows = [
        ("schemas", lambda s: f"{s['schemas']:,}"),
        ("passing", lambda s: pct(s["passing"], s["schemas"])),
        ("compile errors", lambda s: f"{s['compile_error']:,}"),
        ("validation errors", lambda s: f"{s['validation_error']:,}"),
        ("invalidation errors", lambda s: f"{s['invalidation_error']:,}"),
        ("timeouts", lambda s: f"{s['timeout']:,}"),
        ("crashes", lambda s: f"{s['crash']:,}"),
        ("TTFM p50 (us)", lambda s: fmt_us(s["ttfm_p50"])),
        ("TTFM p99 (us)", lambda s: fmt_us(s["ttfm_p99"])),
        ("TBM p50 (us)", lambda s: fmt_us(s["tbm_p50"], s["tbm_approx"])),
        ("TBM p99 (us)", lambda s: fmt_us(s["tbm_p99"], s["tbm_approx"])),
        ("masks timed (TBM samples)", lambda s: f"{s['tbm_n']:,}"),
    ]
    out = ["| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, f in rows:
        out.append(f"| {name} | " + " | ".join(f(s) for s in all_stats) + " |")
    if common_stats:
        # the same figures over the schemas that every run compiled: like for like
        for name, key in (("TTFM p50", "ttfm_p50"), ("TTFM p99", "ttfm_p99"), ("TBM p50", "tbm_p50"),
                          ("TBM p99", "tbm_p99")):
            out.append(f"| {name} (us), the {n_common:,} schemas all compiled | " +
                       " | ".join(fmt_us(s[key], key.startswith("tbm") and s["tbm_approx"]) for s in common_stats)
                       + " |")
        out.append(f"| masks timed there | " + " | ".join(f"{s['tbm_n']:,}" for s in common_stats) + " |")
    return "\n".join(out)


def plot(labels, all_stats, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"compare: matplotlib is not installed: no plot written to {path}", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drew = False
    for lab, s in zip(labels, all_stats):
        xs = sorted(x for x in s["tbm"] if x > 0)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.plot(xs, ys, label=f"{lab} (n={len(xs):,})")
        drew = True
    if not drew:
        print("compare: no per-token TBM samples in the inputs: no plot", file=sys.stderr)
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("time between masks (us, log scale)")
    ax.set_ylabel("fraction of masks")
    ax.set_title("MaskBench TBM distribution (cumulative)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--plot", default=None, help="PNG file for the TBM distributions")
    ap.add_argument("--common", action="store_true", help="only the schema ids present in every input")
    ap.add_argument("--summary-out", default=None, help="folder for .summary.jsonl.gz copies without tbm_us")
    args = ap.parse_args(argv)
    runs = [load(p) for p in args.runs]
    if args.common:
        ids = set.intersection(*[{r["id"] for r in rows} for rows in runs])
        runs = [[r for r in rows if r["id"] in ids] for rows in runs]
    labels = [label(p, rows) for p, rows in zip(args.runs, runs)]
    all_stats = [stats(rows) for rows in runs]
    common_stats, n_common = None, 0
    if len(runs) > 1:
        both = set.intersection(*[{r["id"] for r in rows if r["status"] in COMPILED} for rows in runs])
        common_stats, n_common = [stats(rows, both) for rows in runs], len(both)
    print(table(labels, all_stats, common_stats, n_common))
    if args.plot:
        if plot(labels, all_stats, args.plot):
            print(f"\n(plot: {args.plot})")
    if args.summary_out:
        from run_reference import summary
        d = pathlib.Path(args.summary_out)
        d.mkdir(parents=True, exist_ok=True)
        for p, rows in zip(args.runs, runs):
            name = pathlib.Path(p).name.replace(".gz", "").replace(".jsonl", "") + ".summary.jsonl.gz"
            with gzip.open(d / name, "wt", encoding="utf-8") as f:
                for r in rows:
                    r = dict(r)
                    if "tbm_us" in r:  # recomputed from the samples, so every copy uses one percentile rule
                        r["tbm_summary"] = summary(r.pop("tbm_us"))
                    f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

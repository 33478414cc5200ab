#!/usr/bin/env python3
"""Speculative decoding benchmark (issue: speculative decoding inside continuous batching).

Builds two workloads from HumanEval (../shared/data/HumanEval.jsonl.gz) and runs
`pagoda bench throughput` on each with and without speculation, alternated in one run:

  edit   the prompt holds a problem's canonical solution and asks for it back with a small
         change (type hints added, or a variable renamed), in the model's chat format; the answer
         repeats most of the prompt, which is where prompt lookup pays
  plain  HumanEval completion (the problem's prompt, the model writes the body)

and, with --draft, a draft model (the target in F16 made from the built-in Q4_1 GGUF with
`pagoda quantize`, the Q4_1 file as the draft). Prints a table of decode tokens/s, the ratio to
no speculation, acceptance rate and mean accepted length per row; writes JSON with --json.

  bench/spec_workload.py --pagoda build/pagoda -m models/SmolLM2-135M-Instruct.Q4_1.gguf \
      [--problems 20] [--out 128] [--conc 1,8,32] [--draft] [--reps 2] [--json out.json]

With --pagoda-old OLD, every repetition runs both builds (old off, old on, new off, new on, in an
order that alternates between repetitions) and the table adds each build's rate and the new/old
ratios (medians of the repetitions' ratios). --methods picks the rows' proposers: ngram, draft
(the cost model's number of drafts), draft-fixed (--spec-k fixed: every draft every step).
"""
import argparse
import gzip
import json
import os
import re
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def humaneval(shared):
    with gzip.open(os.path.join(shared, "data", "HumanEval.jsonl.gz"), "rt") as f:
        return [json.loads(l) for l in f]


def chatml(user, assistant_start):
    return (f"<|im_start|>system\nYou are a helpful coding assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n{assistant_start}")


def edit_prompts(rows, n):
    out = []
    for i, r in enumerate(rows[:n]):
        code = r["prompt"] + r["canonical_solution"]
        ask = ("Add type hints to every function below that lacks them. Output the whole code and nothing else."
               if i % 2 == 0 else
               "Rename the function's first parameter to `value` everywhere below. Output the whole code and nothing else.")
        out.append(chatml(f"{ask}\n\n```python\n{code}```", "```python\n"))
    return out


def plain_prompts(rows, n):
    return [r["prompt"] for r in rows[:n]]


def write_jsonl(prompts, path):
    with open(path, "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")


def run_bench(args, model, dataset, conc, spec, extra=(), binary=None, out=None):
    cmd = [binary or args.pagoda, "bench", "throughput", "-m", model, "--dataset", dataset, "--lens", f"1/{out or args.out}",
           "-c", str(conc), "-n", str(max(args.problems, conc)), "-t", str(args.threads), "--kv-mem", "1G",
           "--max-batch-tokens", "512"]
    if args.nice is not None:
        cmd = ["nice", "-n", str(args.nice)] + cmd
    if spec:
        cmd += ["--speculative", spec] + (["--spec-max-seqs", str(args.spec_max_seqs)] if args.spec_max_seqs else [])
        cmd += list(extra)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
        jpath = tf.name
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd + ["--json", jpath], capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(f"bench failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    with open(jpath) as f:
        j = json.load(f)
    os.unlink(jpath)
    row = j["rows"][0]
    d, p, a = j.get("spec_drafts", 0), j.get("spec_draft_tokens", 0), j.get("spec_accepted_tokens", 0)
    # per request: output tokens after the first over the time they took (1 / TPOT), so every
    # request of the run counts (the table's decode t/s is the phase after the last prompt only)
    return {"decode_tok_s": 1e3 / row["tpot_ms"] if row.get("tpot_ms") else 0.0, "out_tok_s": row["output_tokens_per_s"],
            "acceptance": a / p if p else 0.0, "mean_accepted_len": 1 + a / d if d else 1.0,
            # CPU seconds of the whole run (user + system): on a shared machine a steadier measure
            # of the work than wall time (with -t 1 no thread spins waiting for another)
            "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "out_tokens": row["output_tokens_per_s"] * row["seconds"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pagoda", default=os.path.join(ROOT, "build", "pagoda"))
    ap.add_argument("-m", "--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--out", type=int, default=128)
    ap.add_argument("--conc", default="1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--spec-max-seqs", type=int, default=0, help="pass --spec-max-seqs (default: the engine's, no limit)")
    ap.add_argument("--workloads", default="edit,plain")
    ap.add_argument("--draft", action="store_true", help="also the F16 target with the Q4_1 model as draft")
    ap.add_argument("--pagoda-old", help="a second build to run alternated with --pagoda (new/old ratios)")
    ap.add_argument("--methods", help="rows' proposers, comma-separated: ngram, draft, draft-fixed "
                    "(default: ngram, and draft with --draft)")
    ap.add_argument("--nice", type=int, default=None, help="run the benchmarks under nice -n N")
    ap.add_argument("--cpu-decode", action="store_true", help="with --pagoda-old: also runs of one output token, "
                    "and the decode CPU time per token from the difference (CPU seconds, not wall: steadier on a "
                    "shared machine; use -t 1)")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = humaneval(args.shared)
    tmp = tempfile.mkdtemp(prefix="pagoda-spec-")
    sets = {"edit": edit_prompts(rows, args.problems), "plain": plain_prompts(rows, args.problems)}
    results = []
    methods = (args.methods or ("ngram,draft" if args.draft else "ngram")).split(",")
    configs = []
    f16 = os.path.join(tmp, "target-f16.gguf")
    if any(m.startswith("draft") for m in methods):
        subprocess.run([args.pagoda, "quantize", "--allow-requantize", args.model, f16, "F16"], check=True,
                       capture_output=True)
    for m in methods:
        if m == "ngram":
            configs.append((args.model, "ngram", "ngram", ()))
        elif m == "draft":
            configs.append((f16, f"draft:{args.model}", "draft", ()))
        elif m == "draft-fixed":
            configs.append((f16, f"draft:{args.model}", "draft-fixed", ("--spec-k", "fixed")))
        else:
            sys.exit(f"unknown method {m}")
    if args.pagoda_old:
        return main_ab(args, sets, tmp, configs)
    for wl in args.workloads.split(","):
        path = os.path.join(tmp, f"{wl}.jsonl")
        write_jsonl(sets[wl], path)
        for model, spec, _label, extra in configs:
            for conc in [int(c) for c in args.conc.split(",")]:
                base, sp = [], []
                for rep in range(args.reps):  # alternated: the machine's load hits both alike
                    base.append(run_bench(args, model, path, conc, None))
                    sp.append(run_bench(args, model, path, conc, spec, extra))
                    print(f"  {wl} {spec} c={conc} rep {rep + 1}: {base[-1]['decode_tok_s']:.1f} vs "
                          f"{sp[-1]['decode_tok_s']:.1f} decode tok/s", file=sys.stderr)
                med = lambda xs, k: sorted(x[k] for x in xs)[len(xs) // 2]
                res = {"workload": wl, "target": os.path.basename(model), "speculative": spec.split(":")[0], "concurrency": conc,
                       "base_decode_tok_s": med(base, "decode_tok_s"), "spec_decode_tok_s": med(sp, "decode_tok_s"),
                       "base_out_tok_s": med(base, "out_tok_s"), "spec_out_tok_s": med(sp, "out_tok_s"),
                       "acceptance": med(sp, "acceptance"), "mean_accepted_len": med(sp, "mean_accepted_len")}
                # each repetition's pair ran back to back: the median of the pairs' ratios
                pair = lambda k: sorted(y[k] / x[k] for x, y in zip(base, sp) if x[k] > 0)
                res["decode_ratio"] = pair("decode_tok_s")[len(base) // 2]
                res["out_ratio"] = pair("out_tok_s")[len(base) // 2]
                results.append(res)
    print(f"| workload | target | speculation | conc | decode t/s off | decode t/s on | ratio | out t/s ratio | accepted | mean len |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['workload']} | {r['target']} | {r['speculative']} | {r['concurrency']} | {r['base_decode_tok_s']:.1f} | "
              f"{r['spec_decode_tok_s']:.1f} | {r['decode_ratio']:.2f}x | {r['out_ratio']:.2f}x | "
              f"{100 * r['acceptance']:.1f}% | {r['mean_accepted_len']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "problems": args.problems, "out_tokens": args.out, "rows": results}, f, indent=2)


def main_ab(args, sets, tmp, configs):
    """Both builds in every repetition, alternated (old first in odd repetitions, new first in even)."""
    builds = [("old", args.pagoda_old), ("new", args.pagoda)]
    results = []
    med = lambda xs: sorted(xs)[len(xs) // 2]
    for wl in args.workloads.split(","):
        path = os.path.join(tmp, f"{wl}.jsonl")
        write_jsonl(sets[wl], path)
        for model, spec, label, extra in configs:
            for conc in [int(c) for c in args.conc.split(",")]:
                runs = {b: {"off": [], "on": []} for b, _ in builds}
                for rep in range(args.reps):
                    order = builds if rep % 2 == 0 else builds[::-1]
                    for name, binary in order:
                        runs[name]["off"].append(run_bench(args, model, path, conc, None, binary=binary))
                        runs[name]["on"].append(run_bench(args, model, path, conc, spec, extra, binary=binary))
                        if args.cpu_decode:  # the same with one output token: the decode's CPU is the difference
                            for mode, sp_ in (("off", None), ("on", spec)):
                                one = run_bench(args, model, path, conc, sp_, extra if sp_ else (), binary=binary, out=1)
                                full = runs[name][mode][-1]
                                full["decode_cpu_ms"] = 1e3 * (full["cpu_s"] - one["cpu_s"]) / max(1.0, full["out_tokens"] - one["out_tokens"])
                    print(f"  {wl} {label} c={conc} rep {rep + 1}: " + ", ".join(
                        f"{n} {runs[n]['off'][-1]['decode_tok_s']:.1f} -> {runs[n]['on'][-1]['decode_tok_s']:.1f}"
                        for n, _ in builds) + " decode tok/s", file=sys.stderr)
                res = {"workload": wl, "target": os.path.basename(model), "speculative": label, "concurrency": conc,
                       "reps": args.reps}
                for n, _ in builds:
                    off, on = runs[n]["off"], runs[n]["on"]
                    res[n] = {"off_decode_tok_s": med([x["decode_tok_s"] for x in off]),
                              "on_decode_tok_s": med([x["decode_tok_s"] for x in on]),
                              "decode_ratio": med([y["decode_tok_s"] / x["decode_tok_s"] for x, y in zip(off, on)]),
                              "out_ratio": med([y["out_tok_s"] / x["out_tok_s"] for x, y in zip(off, on)]),
                              "acceptance": med([y["acceptance"] for y in on]),
                              "mean_accepted_len": med([y["mean_accepted_len"] for y in on]),
                              "cpu_ratio": med([x["decode_cpu_ms"] / y["decode_cpu_ms"] for x, y in zip(off, on)]) if args.cpu_decode else None,
                              "off_decode_cpu_ms": med([x["decode_cpu_ms"] for x in off]) if args.cpu_decode else None,
                              "on_decode_cpu_ms": med([x["decode_cpu_ms"] for x in on]) if args.cpu_decode else None,
                              "runs": {"off": off, "on": on}}
                res["new_vs_old_on"] = med([b["decode_tok_s"] / a["decode_tok_s"] for a, b in zip(runs["old"]["on"], runs["new"]["on"])])
                res["new_vs_old_off"] = med([b["decode_tok_s"] / a["decode_tok_s"] for a, b in zip(runs["old"]["off"], runs["new"]["off"])])
                res["new_vs_old_on_out"] = med([b["out_tok_s"] / a["out_tok_s"] for a, b in zip(runs["old"]["on"], runs["new"]["on"])])
                results.append(res)
    def per_build(head, cells):
        """a table row per result and build: workload, speculation, concurrency, build, then cells(x)"""
        print(f"| workload | speculation | conc | build | {head} |")
        print("|---|---|---:|---|" + "---:|" * (head.count("|") + 1))
        for r in results:
            for n in ("old", "new"):
                print(f"| {r['workload']} | {r['speculative']} | {r['concurrency']} | {n} | {cells(r[n])} |")

    per_build("decode t/s off | decode t/s on | ratio | out t/s ratio | accepted | mean len",
              lambda x: f"{x['off_decode_tok_s']:.1f} | {x['on_decode_tok_s']:.1f} | {x['decode_ratio']:.2f}x | "
                        f"{x['out_ratio']:.2f}x | {100 * x['acceptance']:.1f}% | {x['mean_accepted_len']:.2f}")
    print()
    print("| workload | speculation | conc | new/old decode, spec on | new/old decode, spec off | new/old output t/s, spec on |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['workload']} | {r['speculative']} | {r['concurrency']} | {r['new_vs_old_on']:.2f}x | "
              f"{r['new_vs_old_off']:.2f}x | {r['new_vs_old_on_out']:.2f}x |")
    if args.cpu_decode:
        print()
        per_build("decode CPU ms/token off | on | speedup (off/on)",
                  lambda x: f"{x['off_decode_cpu_ms']:.2f} | {x['on_decode_cpu_ms']:.2f} | {x['cpu_ratio']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "problems": args.problems, "out_tokens": args.out, "rows": results}, f, indent=2)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Structured output with grammar-forced drafts (`--speculative grammar`, and the forced text drafted
before the n-gram proposer's): decode speed of json_schema requests through `pagoda serve`, with and
without, alternated in one run, greedy, outputs checked equal across the modes.

Schemas: the first --schemas objects of ../shared/data/maskbench's corpus with at least 3 required
properties that pagoda compiles (strict), each asked for by "Write a JSON object that follows this
schema" with the schema in the prompt (or, with --schema-not-in-prompt, only in response_format), one
request at a time. Decode tokens/s per request =
(completion tokens - 1) / (last chunk - first chunk), streamed; the table has the medians, the ratio
to no speculation, and the drafted / accepted tokens (/metrics).

  bench/spec_grammar.py [--pagoda build/pagoda] [-m MODEL] [--schemas 12] [--reps 2] [--json out.json]
                        [--draft DRAFT_MODEL]

--draft: the modes are none, the draft model without grammar drafts, and with them (a draft model
the cost model finds too dear leaves the forced text as the only drafts worth verifying).
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from serve_harness import metric, running  # noqa: E402

MODES = {"none": (), "grammar": ("--speculative", "grammar"),
         "ngram, no grammar drafts": ("--speculative", "ngram", "--spec-grammar-drafts", "off"),
         "ngram + grammar drafts": ("--speculative", "ngram")}


def schemas(shared, n):
    out = []
    with gzip.open(os.path.join(shared, "data", "maskbench", "maskbench-visible.jsonl.gz"), "rt") as f:
        for line in f:
            rec = json.loads(line)
            s = rec["schema"]
            if not isinstance(s, dict) or s.get("type") != "object" or len(s.get("required", [])) < 3:
                continue
            if len(json.dumps(s)) > 1500 or "$ref" in json.dumps(s):
                continue
            out.append((rec["id"], s))
    return out


def ask(srv, schema, in_prompt=True):
    import openai
    c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=300)
    t, times = time.time(), []
    text, n = "", 0
    for ch in c.chat.completions.create(
            model=srv.model_name, stream=True, temperature=0, max_tokens=256, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Write a JSON object that follows this schema:\n" + json.dumps(schema)
                       if in_prompt else "Write the JSON object."}],
            response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}):
        if ch.usage:
            n = ch.usage.completion_tokens
        if ch.choices and ch.choices[0].delta.content:
            times.append(time.time() - t)
            text += ch.choices[0].delta.content
    rate = (n - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")
    return text, n, rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pagoda", default=os.path.join(ROOT, "build", "pagoda"))
    ap.add_argument("-m", "--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--schemas", type=int, default=12)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--schema-not-in-prompt", action="store_true",
                    help="the schema only in response_format (the prompt just asks for the object)")
    ap.add_argument("--json")
    ap.add_argument("--draft", help="a draft model: compare none / draft / draft + grammar drafts")
    a = ap.parse_args()
    if a.draft:
        MODES.clear()
        MODES.update({"none": (), "draft, no grammar drafts": ("--speculative", f"draft:{a.draft}", "--spec-grammar-drafts", "off"),
                      "draft + grammar drafts": ("--speculative", f"draft:{a.draft}")})
    cands = schemas(a.shared, a.schemas * 4)
    res = {m: {"rates": [], "drafted": 0, "accepted": 0, "texts": []} for m in MODES}
    picked = None
    for rep in range(a.reps):
        order = list(MODES) if rep % 2 == 0 else list(MODES)[::-1]
        for mode in order:
            for srv in running(a.pagoda, a.model, "--kv-mem", "256M", "-t", str(a.threads), *MODES[mode]):
                if picked is None:  # the schemas this build compiles (a 400 otherwise), in file order
                    picked = []
                    for sid, s in cands:
                        st, _, _ = srv.post("/v1/chat/completions", {"model": srv.model_name, "max_tokens": 1,
                                            "messages": [{"role": "user", "content": "x"}],
                                            "response_format": {"type": "json_schema",
                                                                "json_schema": {"name": "o", "schema": s, "strict": True}}})
                        if st == 200:
                            picked.append((sid, s))
                        if len(picked) == a.schemas:
                            break
                ask(srv, picked[0][1], not a.schema_not_in_prompt)  # warm-up
                m0 = srv.metrics()
                texts = []
                for sid, s in picked:
                    text, n, rate = ask(srv, s, not a.schema_not_in_prompt)
                    res[mode]["rates"].append(rate)
                    texts.append(text)
                    print(f"rep {rep + 1} {mode:26s} {sid:40s} {n:4d} tokens {rate:7.1f} tok/s", file=sys.stderr, flush=True)
                m1 = srv.metrics()
                for k, key in (("drafted", "pagoda:spec_decode_num_draft_tokens_total"),
                               ("accepted", "pagoda:spec_decode_num_accepted_tokens_total")):
                    res[mode][k] += (metric(m1, key) or 0) - (metric(m0, key) or 0)
                res[mode]["texts"].append(texts)
                break
    base = statistics.median(res["none"]["rates"])
    same = all(t == res["none"]["texts"][0] for m in MODES for t in res[m]["texts"])
    lines = [f"{len(picked)} schemas x {a.reps} repetitions, greedy, {a.threads} threads, schema "
             f"{'only in response_format' if a.schema_not_in_prompt else 'in the prompt'}; outputs equal across modes: {same}",
             "", "| mode | decode tok/s (median) | vs none | drafted | accepted | acceptance |", "|---|---:|---:|---:|---:|---:|"]
    for m, r in res.items():
        med = statistics.median(r["rates"])
        acc = f"{100 * r['accepted'] / r['drafted']:.1f}%" if r["drafted"] else "-"
        lines.append(f"| {m} | {med:.1f} | {med / base:.2f}x | {r['drafted']:.0f} | {r['accepted']:.0f} | {acc} |")
    print("\n".join(lines))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"schemas": [sid for sid, _ in picked], "modes": {m: {k: v for k, v in r.items() if k != "texts"}
                                                                       for m, r in res.items()}, "same": same}, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

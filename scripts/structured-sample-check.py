#!/usr/bin/env python3
"""Samples structured output from a running `pagoda serve` for MaskBench schemas and validates
every output with Python `jsonschema` (an independent validator).

For each schema: POST /v1/chat/completions with response_format json_schema at temperature 1
(the mask, not the model's habits, must keep the output valid). Outcomes per schema:
  refused    400 at compile time (an honest "cannot honour this schema")
  valid      finish_reason stop and the output validates
  invalid    finish_reason stop but the output does not parse or validate (a bug)
  truncated  finish_reason length (max_tokens reached: cannot be judged; counted apart)
  error      any other failure (5xx, finish_reason error, transport)

  scripts/structured-sample-check.py --url http://127.0.0.1:8080 --limit 600 --out build/sample.json
"""
import argparse
import concurrent.futures as cf
import gzip
import json
import pathlib
import sys
import time
import urllib.error
import urllib.request

import jsonschema

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "maskbench" / "maskbench-visible.jsonl.gz"


def post(url, body, timeout):
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:
            return e.code, {}


def validator_for(schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check_one(url, rec, seed, max_tokens, timeout):
    schema = rec["schema"]
    body = {"messages": [{"role": "user", "content": "Give an example JSON value for this schema:\n"
                          + json.dumps(schema)[:2000]}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            "temperature": 1.0, "seed": seed, "max_tokens": max_tokens}
    t0 = time.time()
    try:
        status, resp = post(url, body, timeout)
    except Exception as e:  # noqa: BLE001 - a transport failure is an outcome
        return {"id": rec["id"], "outcome": "error", "detail": repr(e)[:300]}
    out = {"id": rec["id"], "seconds": round(time.time() - t0, 3)}
    if status == 400:
        return {**out, "outcome": "refused", "detail": resp.get("error", {}).get("message", "")[:300]}
    if status != 200:
        return {**out, "outcome": "error", "detail": f"HTTP {status}: {json.dumps(resp)[:300]}"}
    ch = resp["choices"][0]
    text = ch["message"].get("content") or ""
    out["tokens"] = resp.get("usage", {}).get("completion_tokens")
    if ch["finish_reason"] == "length":
        return {**out, "outcome": "truncated"}
    if ch["finish_reason"] != "stop":
        return {**out, "outcome": "error", "detail": f"finish_reason {ch['finish_reason']}: {text[:200]}"}
    try:
        value = json.loads(text)
    except ValueError as e:
        return {**out, "outcome": "invalid", "detail": f"not JSON ({e}): {text[:300]}"}
    try:
        validator_for(schema).validate(value)
    except jsonschema.exceptions.SchemaError as e:
        return {**out, "outcome": "schema_error", "detail": str(e)[:300]}
    except jsonschema.ValidationError as e:
        return {**out, "outcome": "invalid", "detail": f"{e.message[:200]}: {text[:300]}"}
    return {**out, "outcome": "valid"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--stride", type=int, default=1, help="take every k-th schema")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", help="per-schema results and the summary as JSON")
    a = ap.parse_args(argv)
    recs = []
    with gzip.open(a.corpus, "rt") as f:
        for i, line in enumerate(f):
            if i % a.stride == 0:
                recs.append(json.loads(line))
            if len(recs) >= a.limit:
                break
    results = []
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.concurrency) as ex:
        futs = [ex.submit(check_one, a.url, r, i + 1, a.max_tokens, a.timeout) for i, r in enumerate(recs)]
        for k, fu in enumerate(cf.as_completed(futs), 1):
            results.append(fu.result())
            if k % 50 == 0 or k == len(futs):
                print(f"  {k}/{len(futs)} schemas, {time.time() - t0:.0f} s", file=sys.stderr)
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    compiled = len(results) - counts.get("refused", 0)
    summary = {"schemas": len(results), "compiled": compiled, **counts, "seconds": round(time.time() - t0, 1)}
    print(json.dumps(summary))
    for r in results:
        if r["outcome"] in ("invalid", "error"):
            print(f"  {r['outcome']}: {r['id']}: {r.get('detail', '')}", file=sys.stderr)
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    return 1 if counts.get("invalid") or counts.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())

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

--keep-text stores the raw output of truncated and invalid outcomes in the results ("text") and
names what a truncated output was doing when the tokens ran out ("kind", counted in the summary):
  repeated-keys   an object with a key written twice (the grammar allowed a repeat)
  number          inside a number of 15+ characters (digits or zeros without end)
  string          inside a string already 100+ characters long (a free string)
  array           an array of 20+ elements (no maxItems)
  members         many short members (open objects / untyped values)
--classify RESULTS.json does the same for a results file written with --keep-text.
--close-objects sends every object schema that has `properties` but neither additionalProperties
nor patternProperties with "additionalProperties": false (what OpenAI's strict mode does), to
measure how much open objects cost; outputs are still validated against the original schema. --ids re-runs
chosen schemas only (each keeps the seed it has in a full run: its index in the corpus, plus one).
"""
import argparse
import concurrent.futures as cf
import gzip
import json
import pathlib
import re
import sys
import time
import urllib.error
import urllib.request

import jsonschema

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "maskbench" / "maskbench-visible.jsonl.gz"


SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_ONE = ("items", "additionalItems", "additionalProperties", "not", "if", "then", "else", "contains",
              "propertyNames", "unevaluatedProperties", "unevaluatedItems")


def closed(schema):
    """schema with additionalProperties false where it has properties and says nothing else."""
    if not isinstance(schema, dict):
        return schema
    r = dict(schema)
    for k, v in schema.items():
        if k in SCHEMA_MAPS and isinstance(v, dict):
            r[k] = {name: closed(s) for name, s in v.items()}
        elif k in SCHEMA_LISTS and isinstance(v, list) or k == "items" and isinstance(v, list):
            r[k] = [closed(s) for s in v]
        elif k in SCHEMA_ONE:
            r[k] = closed(v)
    if isinstance(r.get("properties"), dict) and "additionalProperties" not in r and "patternProperties" not in r:
        r["additionalProperties"] = False
    return r


def truncation_kind(text):
    """What a truncated output was doing at its end (see the module's doc)."""
    stack, dup, longest_array, i, n = [], 0, 0, 0, len(text)
    end, tail = "structure", ""
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                end, tail = "string", text[i + 1:]
                break
            top = stack[-1] if stack else None
            if top and top[0] == "o" and top[2]:
                dup += text[i + 1:j] in top[1]
                top[1].add(text[i + 1:j])
                top[2] = False
            i = j + 1
            continue
        if ch in "-0123456789":
            tok = re.match(r"-?[0-9]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?", text[i:]).group(0)
            if i + len(tok) >= n:
                end, tail = "number", tok
                break
            i += len(tok)
            continue
        if ch == "{":
            stack.append(["o", set(), True])
        elif ch == "[":
            stack.append(["a", 1])
        elif ch in "}]" and stack:
            stack.pop()
        elif ch == "," and stack:
            if stack[-1][0] == "o":
                stack[-1][2] = True
            else:
                stack[-1][1] += 1
                longest_array = max(longest_array, stack[-1][1])
        i += 1
    if end == "number" and len(tail) >= 15:
        return "number"
    if dup and (dup >= 3 or end != "string" or len(tail) < 200):
        return "repeated-keys"
    if end == "string" and len(tail) >= 100:
        return "string"
    if longest_array >= 20:
        return "array"
    return "members"


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


def check_one(url, rec, seed, max_tokens, timeout, keep_text=False, close_objects=False):
    schema = rec["schema"]
    body = {"messages": [{"role": "user", "content": "Give an example JSON value for this schema:\n"
                          + json.dumps(schema)[:2000]}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "x", "schema": closed(schema) if close_objects else schema}},
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
    if keep_text:
        out["text"] = text
    if ch["finish_reason"] == "length":
        return {**out, "outcome": "truncated", **({"kind": truncation_kind(text)} if keep_text else {})}
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
    out.pop("text", None)
    return {**out, "outcome": "valid"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--classify", metavar="RESULTS", help="only classify the truncated outputs of a results file")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--stride", type=int, default=1, help="take every k-th schema")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", help="per-schema results and the summary as JSON")
    ap.add_argument("--keep-text", action="store_true", help="store the raw text of truncated/invalid outputs")
    ap.add_argument("--ids", help="only these schema ids: ID,ID,... or @FILE (one id a line)")
    ap.add_argument("--close-objects", action="store_true", help="additionalProperties false where a schema says nothing")
    a = ap.parse_args(argv)
    if a.classify:
        results = json.loads(pathlib.Path(a.classify).read_text())["results"]
        kinds = {}
        for r in results:
            if r["outcome"] == "truncated":
                if "text" not in r:
                    ap.error(f"{a.classify} has no output texts (written without --keep-text)")
                r["kind"] = truncation_kind(r["text"])
                kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        print(json.dumps(kinds))
        return 0
    if not a.url:
        ap.error("--url is required")
    ids = None
    if a.ids:
        ids = set((pathlib.Path(a.ids[1:]).read_text().split() if a.ids.startswith("@") else a.ids.split(",")))
    recs = []  # (seed, record)
    with gzip.open(a.corpus, "rt") as f:
        for i, line in enumerate(f):
            if i % a.stride == 0:
                rec = json.loads(line)
                if ids is None or rec["id"] in ids:
                    recs.append((len(recs) + 1 if ids is None else i // a.stride + 1, rec))
            if len(recs) >= a.limit:
                break
    results = []
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.concurrency) as ex:
        futs = [ex.submit(check_one, a.url, r, seed, a.max_tokens, a.timeout, a.keep_text,
                          a.close_objects) for seed, r in recs]
        for k, fu in enumerate(cf.as_completed(futs), 1):
            results.append(fu.result())
            if k % 50 == 0 or k == len(futs):
                print(f"  {k}/{len(futs)} schemas, {time.time() - t0:.0f} s", file=sys.stderr)
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    compiled = len(results) - counts.get("refused", 0)
    summary = {"schemas": len(results), "compiled": compiled, **counts, "seconds": round(time.time() - t0, 1)}
    kinds = {}
    for r in results:
        if "kind" in r:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    if kinds:
        summary["truncated_kinds"] = kinds
    print(json.dumps(summary))
    for r in results:
        if r["outcome"] in ("invalid", "error"):
            print(f"  {r['outcome']}: {r['id']}: {r.get('detail', '')}", file=sys.stderr)
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    return 1 if counts.get("invalid") or counts.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())

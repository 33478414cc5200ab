#!/usr/bin/env python3
"""Structured output against a running `pagoda serve` with the standard library only (for device
machines without PyPI): N requests per constraint, sampled at temperature 1, each output checked
by hand against what the constraint demands (JSON Schema below: an array of >= 3 objects with an
integer id, a string name of at most 12 characters, up to 4 optional tags from an enum, nothing else; a
regex; a choice). Prints one line per constraint and exits 1 on any invalid output.

  scripts/structured-check.py --url http://127.0.0.1:8080 [-n 16] [--endpoint completions|chat]
"""
import argparse
import json
import re
import sys
import urllib.request

SCHEMA = {"type": "array", "minItems": 3, "maxItems": 6, "items": {
    "type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string", "maxLength": 12},
                                     "tags": {"type": "array", "maxItems": 4, "items": {"type": "string", "enum": ["a", "b", "c"]}}},
    "required": ["id", "name"]}}
REGEX = r"[A-Z][a-z]{2,8} [0-9]{1,3}"
CHOICE = ["red", "green", "blue"]


def valid_rows(text):
    try:
        v = json.loads(text)
    except ValueError:
        return False
    if not isinstance(v, list) or not 3 <= len(v) <= 6:
        return False
    for o in v:
        if not isinstance(o, dict) or set(o) - {"id", "name", "tags"} or not {"id", "name"} <= set(o):
            return False
        if not isinstance(o["id"], int) or isinstance(o["id"], bool):
            return False
        if not isinstance(o["name"], str) or len(o["name"]) > 12:
            return False
        if "tags" in o and (not isinstance(o["tags"], list) or len(o["tags"]) > 4 or any(t not in ("a", "b", "c") for t in o["tags"])):
            return False
    return True


CASES = [
    ("json_schema", {"structured_outputs": {"json": SCHEMA}}, valid_rows),
    ("regex", {"structured_outputs": {"regex": REGEX}}, lambda t: re.fullmatch(REGEX, t) is not None),
    ("choice", {"structured_outputs": {"choice": CHOICE}}, lambda t: t in CHOICE),
]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--endpoint", default="completions", choices=["completions", "chat"])
    ap.add_argument("--max-tokens", type=int, default=400)
    a = ap.parse_args()
    models = json.loads(urllib.request.urlopen(a.url + "/v1/models", timeout=60).read())
    model = models["data"][0]["id"]
    bad = 0
    for name, extra, check in CASES:
        counts = {"valid": 0, "invalid": 0, "truncated": 0}
        body = {"model": model, "max_tokens": a.max_tokens, "temperature": 1.0, "n": a.n, "seed": 1, **extra}
        if a.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": "Give me some rows."}]
            r = post(a.url + "/v1/chat/completions", body)
            outs = [(c["message"]["content"], c["finish_reason"]) for c in r["choices"]]
        else:
            body["prompt"] = "Rows:"
            r = post(a.url + "/v1/completions", body)
            outs = [(c["text"], c["finish_reason"]) for c in r["choices"]]
        for text, finish in outs:
            if finish == "length":
                counts["truncated"] += 1
            elif check(text):
                counts["valid"] += 1
            else:
                counts["invalid"] += 1
                print(f"  invalid {name}: {text[:200]!r}", file=sys.stderr)
        bad += counts["invalid"]
        print(f"{name}: {counts}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

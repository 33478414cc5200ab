"""JSON Schema compiler on the MaskBench corpus, at the byte level.

Every schema of ../shared/data/maskbench/maskbench-visible.jsonl.gz is compiled by js_compile and
gr_compile (256 single-byte tokens) in `js_corpus_check` (tests/helpers, built in $PAGODA_BUILD);
each instance, serialized as MaskBench does (json.dumps(data, separators=(",", ":"),
ensure_ascii=False)), is fed byte by byte and must end the grammar exactly when it is valid.

Asserted: no valid instance rejected (validation error), no invalid instance accepted
(invalidation error), no refused matcher work, no crash, every schema answered; and more schemas
passing than llguidance's 2,287 on this corpus (bench/results/maskbench). Printed: the counts,
compile-time percentiles and the compile-error reasons ranked by count.
"""
import collections
import gzip
import json
import os
import re
import subprocess

import pytest

BUILD = os.environ.get("PAGODA_BUILD", "")
SHARED = os.environ.get("PAGODA_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
CORPUS = os.path.join(SHARED, "data", "maskbench", "maskbench-visible.jsonl.gz")
CHECK = os.path.join(BUILD, "js_corpus_check")

if not os.path.exists(CHECK):
    pytest.skip("PAGODA_BUILD does not hold js_corpus_check", allow_module_level=True)
if not os.path.exists(CORPUS):
    pytest.skip("no MaskBench corpus under PAGODA_SHARED", allow_module_level=True)

LLGUIDANCE_PASSING = 2287  # bench/results/maskbench/README.md, SmolLM2 tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("maskbench") / "corpus.jsonl"
    n = 0
    with gzip.open(CORPUS, "rt") as f, open(path, "w") as out:
        for line in f:
            o = json.loads(line)
            tests = [[t["valid"], json.dumps(t["data"], separators=(",", ":"), ensure_ascii=False)] for t in o["tests"]]
            out.write(json.dumps({"id": o["id"], "schema": json.dumps(o["schema"]), "tests": tests}) + "\n")
            n += 1
    return str(path), n


def run_check(path, *flags):
    p = subprocess.run([CHECK, path, *flags], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"js_corpus_check exited {p.returncode}: {p.stderr[-2000:]}"
    rows = [line.split("\t") for line in p.stdout.splitlines()]
    return rows


def report(rows, label):
    status = collections.Counter(r[1] for r in rows)
    times = sorted(float(r[2]) for r in rows)
    pct = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"\n[{label}] {dict(status)}")
    print(f"[{label}] compile time (js_compile + gr_compile, us): p50 {pct(0.5):.0f} p90 {pct(0.9):.0f} "
          f"p99 {pct(0.99):.0f} max {times[-1]:.0f}")
    reasons = collections.Counter()
    for r in rows:
        if r[1] == "compile_error":
            msg = r[3].split(": ", 1)[-1]
            reasons[re.sub(r"\d+", "N", msg)[:110]] += 1
    for msg, n in reasons.most_common(25):
        print(f"[{label}] {n:5d}  {msg}")
    return status


def check(rows, n_schemas, label):
    status = report(rows, label)
    assert len(rows) == n_schemas, "every schema answered"
    bad = [r for r in rows if r[1] in ("validation_error", "invalidation_error", "matcher_error", "bad_line")]
    assert not bad, "\n".join("\t".join(r) for r in bad[:20])
    assert status["pass"] > LLGUIDANCE_PASSING, f"only {status['pass']} schemas pass"


def test_compact(corpus):
    path, n = corpus
    check(run_check(path), n, "compact")


def test_flexible_whitespace(corpus):
    # the same compact instances must pass when whitespace is allowed between tokens
    path, n = corpus
    check(run_check(path, "--flexible"), n, "flexible")

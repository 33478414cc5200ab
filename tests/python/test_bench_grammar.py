"""`pagoda bench grammar`: MaskBench with pagoda's grammar engine beside llguidance and XGrammar.

- the instances are serialized byte for byte as Python's json.dumps(data, separators=(",", ":"),
  ensure_ascii=False) (floats, big integers, escapes, repeated keys; and the whole corpus);
- a run on a few schemas with both tokenizers writes run_reference.py's line shape, and the reference
  engines run in the same invocation on the same schemas (same ids, same tokens counted);
- the walk itself, checked with a grammar of all compact JSON (--gbnf): every valid instance goes
  through to eos (no validation error: serialization, tokenization, masks and eos agree), every
  invalid one too (an invalidation error each, since each is still JSON);
- a schema past --timeout and a worker that dies are reported ("timeout", "crash") and the run goes on;
- bad input gets a clear error.
"""
import gzip
import importlib.util
import json
import os
import pathlib
import random
import struct
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

STATUSES = {"passing", "compile_error", "validation_error", "invalidation_error", "timeout", "crash"}
KEYS = {"id": str, "engine": str, "engine_version": str, "tokenizer": str, "features": list, "status": str,
        "n_tests": int, "n_valid": int, "n_tokens": int, "n_validation_errors": int,
        "n_invalidation_errors": int, "tbm_us": list, "tbm_summary": dict}
# small schemas (few tokens) with valid and invalid instances
SMALL = ["Github_trivial---o91001", "Snowplow---sp_74_Normalized", "Kubernetes---kb_960_Normalized"]

JSON_GBNF = r'''
root   ::= value
value  ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ( member ( "," member )* )? "}"
member ::= string ":" value
array  ::= "[" ( value ( "," value )* )? "]"
string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
'''


@pytest.fixture(scope="module")
def corpus(shared):
    p = shared / "data" / "maskbench" / "maskbench-visible.jsonl.gz"
    if not p.exists():
        pytest.skip(f"no MaskBench data at {p}")
    return p


@pytest.fixture(scope="module")
def records(corpus):
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, filter(str.strip, f))}


@pytest.fixture(scope="module")
def qwen3(shared):
    p = shared / "fixtures" / "tokenizers" / "qwen3-hf"
    if not (p / "tokenizer.json").exists():
        pytest.skip(f"no Qwen3 tokenizer at {p}")
    return p


def compact(x):
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False)


def bench(pagoda_bin, *args, timeout=900):
    return subprocess.run([pagoda_bin, "bench", "grammar", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def lines(path):
    rows = [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]
    for r in rows:
        for k, t in KEYS.items():
            assert isinstance(r[k], t), (r.get("id"), k, r.get(k))
        assert r["status"] in STATUSES
        s = r["tbm_summary"]
        assert s["n"] == len(r["tbm_us"])
        if s["n"]:
            assert 0 <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
        if r["status"] == "compile_error":
            assert r["error"] and r["ttfm_us"] is None
        if r["status"] in ("passing", "validation_error", "invalidation_error"):
            assert r["ttfm_us"] > 0
            assert len(r["tbm_us"]) <= r["n_tokens"]
        assert (r["status"] == "validation_error") == (r["n_validation_errors"] > 0)
        if r["status"] == "invalidation_error":
            assert r["n_invalidation_errors"] > 0
    return rows


def test_serialization_like_python(pagoda_bin, tmp_path):
    rnd = random.Random(14)
    floats = [1e-05, 1.0, 1e16, 1e15, 0.1, -0.0, 0.0001, 123456789.123, 5e-324, 1.7976931348623157e308,
              2.5e-7, 100.0, -3.25e22, 1.5]
    floats += [struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0] for _ in range(3000)]
    floats = [x for x in floats if x == x and abs(x) != float("inf")]
    floats += [rnd.uniform(-1e6, 1e6) for _ in range(1000)] + [rnd.random() * 10 ** rnd.randint(-30, 30)
                                                                for _ in range(1000)]
    texts = [
        # raw JSON text, as it may appear in a corpus file
        '{"a": 1, "b": 2, "a": 3}',  # a repeated key: first place, last value
        '{"x": {"k": [1, 2]}, "y": 0, "x": "again", "z": {"q": 1, "q": 2}}',
        '[-0, 0, -0.0, 123456789012345678901234567890, -98765432109876543210]',
        '[1E400, -1e400, NaN, Infinity, -Infinity, 1e-400, 2.50, 1.0e2]',
        '["\\u00e9\\ud83d\\ude00", "é😀", "\\/", "\\b\\f\\n\\r\\t\\"\\\\", "\\u0001\\u001f\\u007f", "\u2028"]',
        ' { "spaced" :\t[ true , false , null ] , "e" : { } , "a" : [ ] } ',
        '"just a string"', '7', 'null',
    ]
    texts += [json.dumps(x) for x in floats]
    texts.append(json.dumps({"nested": [[[[{"d": floats[:50]}]]]]}))
    data = tmp_path / "tricky.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(f'{{"id": "t{i}", "schema": {{}}, "tests": [{{"valid": true, "data": {t}}}]}}\n')
    out = tmp_path / "inst.txt"
    r = bench(pagoda_bin, "--data", data, "--dump-instances", out)
    assert r.returncode == 0, r.stderr
    got = out.read_text(encoding="utf-8").split("\n")[:-1]
    want = [compact(json.loads(t)) for t in texts]
    assert len(got) == len(want)
    for t, g, w in zip(texts, got, want):
        assert g == w, t


def test_serialization_whole_corpus(pagoda_bin, corpus, records, tmp_path):
    out = tmp_path / "inst.txt"
    r = bench(pagoda_bin, "--data", corpus, "--dump-instances", out)
    assert r.returncode == 0, r.stderr
    got = out.read_text(encoding="utf-8").split("\n")[:-1]
    want = [compact(t["data"]) for rec in records.values() for t in rec["tests"]]
    assert len(got) == len(want) == 8912
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, (len(bad), want[bad[0]][:300], got[bad[0]][:300])


def _check_run(rows_by_engine, records, ids):
    for eng, rows in rows_by_engine.items():
        assert [r["id"] for r in rows] == ids, eng
        for r in rows:
            rec = records[r["id"]]
            assert r["engine"] == eng
            assert r["n_tests"] == len(rec["tests"])
            assert r["n_valid"] == sum(1 for t in rec["tests"] if t["valid"])
            assert r["features"] == rec["features"]
    for r in rows_by_engine["pagoda"]:
        assert r["status"] not in ("timeout", "crash"), r
        # on these simple schemas a schema pagoda compiles must pass (a refusal is honest)
        assert r["status"] in ("passing", "compile_error"), r


@pytest.mark.parametrize("which", ["smollm2", "qwen3"])
def test_side_by_side(which, pagoda_bin, builtin_model, corpus, records, request, tmp_path):
    pytest.importorskip("llguidance", reason="llguidance is not installed (scripts/requirements-bench.txt)")
    tok = builtin_model if which == "smollm2" else request.getfixturevalue("qwen3")
    # SmolLM2: the first 5 schemas of the file with all three engines; Qwen3: a few ids, two engines
    if which == "smollm2":
        if importlib.util.find_spec("xgrammar") is None:  # not imported: it wants torch (engines.py stands in)
            pytest.skip("xgrammar is not installed (scripts/requirements-bench.txt)")
        sel, engines = ["--limit", "5"], "pagoda,llguidance,xgrammar"
        with gzip.open(corpus, "rt", encoding="utf-8") as f:
            ids = [json.loads(next(f))["id"] for _ in range(5)]
    else:
        ids = SMALL + ["BFCL_java_16"]
        ids = [i for i in records if i in ids]  # file order
        sel, engines = ["--ids", ",".join(ids)], "pagoda,llguidance"
    out = tmp_path / "out"
    r = bench(pagoda_bin, "--tokenizer", tok, "--data", corpus, "--engines", engines, "--python", sys.executable,
              "--out-dir", out, "--progress", "2", *sel)
    assert r.returncode == 0, r.stderr
    name = "SmolLM2-135M-Instruct.Q4_1" if which == "smollm2" else "qwen3-hf"
    rows = {e: lines(out / f"{e}-{name}.jsonl") for e in engines.split(",")}
    _check_run(rows, records, ids)
    for e, rs in rows.items():
        assert all(x["tokenizer"] == name for x in rs)
    # the same text tokenized the same way: pagoda counts the tokens the reference (HF tokenizers) does
    for a, b in zip(rows["pagoda"], rows["llguidance"]):
        assert a["n_tokens"] == b["n_tokens"] or a["status"] == "compile_error", (a["id"], a["n_tokens"], b["n_tokens"])
    # compare.py's table on stdout, every engine a column
    assert "| passing |" in r.stdout and r.stdout.count(f"/ {name}") == len(rows)
    assert (out / f"table-{name}.md").read_text() in r.stdout
    assert f"[pagoda/{name}] done: {len(ids)} schemas" in r.stderr


@pytest.mark.parametrize("which", ["smollm2", "qwen3"])
def test_walk_with_json_grammar(which, pagoda_bin, builtin_model, corpus, records, request, tmp_path):
    tok = builtin_model if which == "smollm2" else request.getfixturevalue("qwen3")
    g = tmp_path / "json.gbnf"
    g.write_text(JSON_GBNF)
    out = tmp_path / "out"
    r = bench(pagoda_bin, "--tokenizer", tok, "--data", corpus, "--engines", "pagoda", "--no-compare",
              "--gbnf", g, "--ids", ",".join(SMALL), "--out-dir", out)
    assert r.returncode == 0, r.stderr
    rows = lines(next(out.glob("pagoda-*.jsonl")))
    assert sorted(x["id"] for x in rows) == sorted(SMALL)
    for x in rows:
        rec = records[x["id"]]
        n_invalid = sum(1 for t in rec["tests"] if not t["valid"])
        assert x["engine_version"].endswith("gbnf")
        assert x["n_validation_errors"] == 0, x["error"]
        assert x["n_invalidation_errors"] == n_invalid
        assert x["status"] == ("invalidation_error" if n_invalid else "passing")
        # every token of every instance walked: one TBM sample each
        assert x["tbm_summary"]["n"] == x["n_tokens"] > 0
        assert x["error"] == (f"invalid test {[t['valid'] for t in rec['tests']].index(False)} accepted"
                              if n_invalid else None)


def test_timeout_and_crash(pagoda_bin, builtin_model, corpus, tmp_path):
    g = tmp_path / "json.gbnf"
    g.write_text(JSON_GBNF)
    out = tmp_path / "to"
    # a character-level grammar takes milliseconds per mask: 1 ms per schema is never enough
    r = bench(pagoda_bin, "--tokenizer", builtin_model, "--data", corpus, "--engines", "pagoda", "--no-compare",
              "--gbnf", g, "--limit", "3", "--timeout", "0.001", "--out-dir", out)
    assert r.returncode == 0, r.stderr
    rows = lines(next(out.glob("pagoda-*.jsonl")))
    assert [x["status"] for x in rows] == ["timeout"] * 3
    assert all(x["error"] == "over 0.001 s" for x in rows)

    # the worker killed while it walks a schema: that schema is a crash, the next ones run
    out = tmp_path / "crash"
    p = subprocess.Popen([pagoda_bin, "bench", "grammar", "--tokenizer", str(builtin_model), "--data", str(corpus),
                          "--engines", "pagoda", "--no-compare", "--gbnf", str(g), "--limit", "6",
                          "--out-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    res = out / "pagoda-SmolLM2-135M-Instruct.Q4_1.jsonl"
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and p.poll() is None:
        if res.exists() and res.read_text().count("\n") >= 1:
            kids = pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            if kids:
                os.kill(int(kids[0]), 9)
                killed = int(kids[0])
        time.sleep(0.01)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    if killed is None:
        pytest.skip("the run ended before its worker could be killed")
    rows = lines(res)
    st = [x["status"] for x in rows]
    assert len(rows) == 6 and st.count("crash") == 1 and st.count("passing") == 5, st
    c = rows[st.index("crash")]
    assert c["error"] == "engine process died (exit -9)"


def test_bad_input(pagoda_bin, builtin_model, corpus, tmp_path):
    r = bench(pagoda_bin, "--tokenizer", tmp_path / "nope.gguf", "--data", corpus, "--engines", "pagoda")
    assert r.returncode == 1 and "nope.gguf" in r.stderr
    r = bench(pagoda_bin, "--tokenizer", builtin_model, "--engines", "pagoda,outlines")
    assert r.returncode == 2 and "unknown engine 'outlines'" in r.stderr
    r = bench(pagoda_bin, "--engines", "pagoda")
    assert r.returncode == 2 and "--tokenizer" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "schema": {}, "tests": []}\n{"id": "b", "schema": {\n')
    r = bench(pagoda_bin, "--tokenizer", builtin_model, "--data", bad, "--engines", "pagoda")
    assert r.returncode == 1 and "bad.jsonl:2: not JSON" in r.stderr
    bad.write_text('{"id": "a", "tests": []}\n')
    r = bench(pagoda_bin, "--tokenizer", builtin_model, "--data", bad, "--engines", "pagoda")
    assert r.returncode == 1 and "not a MaskBench record" in r.stderr
    bad.write_text('{"id": "a", "schema": {}, "tests": [{"valid": true, "data": "\\ud800"}]}\n')
    r = bench(pagoda_bin, "--tokenizer", builtin_model, "--data", bad, "--engines", "pagoda")
    assert r.returncode == 1 and "lone surrogate" in r.stderr
    r = bench(pagoda_bin, "--tokenizer", builtin_model, "--data", tmp_path / "none.jsonl.gz", "--engines", "pagoda")
    assert r.returncode == 1 and "none.jsonl.gz" in r.stderr

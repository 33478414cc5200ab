"""bench/maskbench/run_reference.py with llguidance on a few MaskBench schemas: the output's shape,
llguidance passing the simple schemas (valid instances accepted token by token, invalid ones
rejected), a refused schema reported as a compile error, mislabelled instances caught as validation /
invalidation errors, and compare.py's table over the result."""
import gzip
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("llguidance", reason="llguidance is not installed (scripts/requirements-bench.txt)")
pytest.importorskip("tokenizers")

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "maskbench" / "run_reference.py"
COMPARE = ROOT / "bench" / "maskbench" / "compare.py"

# simple schemas llguidance passes, most with both valid and invalid instances
SIMPLE = ["BFCL_java_16", "Github_trivial---o83139", "Github_trivial---o91001",
          "Glaiveai2K---calculate_shipping_cost_4b09e153", "Kubernetes---kb_960_Normalized",
          "MCPspec---ListToolsRequest", "Snowplow---sp_74_Normalized", "WashingtonPost---wp_93_Normalized",
          "JsonSchemaStore---solution-filter"]
# uses "not", which llguidance refuses
REFUSED = "Synthesized---draft2019_09_valid_type_id4_subschema1_not_2"

KEYS = {"id": str, "engine": str, "engine_version": str, "tokenizer": str, "features": list, "status": str,
        "n_tests": int, "n_valid": int, "n_tokens": int, "n_validation_errors": int,
        "n_invalidation_errors": int, "tbm_us": list, "tbm_summary": dict}


@pytest.fixture(scope="module")
def qwen3(shared):
    p = shared / "fixtures" / "tokenizers" / "qwen3-hf"
    if not (p / "tokenizer.json").exists():
        pytest.skip(f"no Qwen3 tokenizer at {p}")
    return p


def _run(args, tmp_path, name):
    out = tmp_path / f"{name}.out.jsonl"
    r = subprocess.run([sys.executable, str(RUN), "--engine", "llguidance", "--out", str(out), *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in out.read_text().splitlines()], out


def test_corpus_subset(shared, qwen3, tmp_path):
    data = shared / "data" / "maskbench" / "maskbench-visible.jsonl.gz"
    if not data.exists():
        pytest.skip(f"no MaskBench data at {data}")
    rows, out = _run(["--tokenizer", qwen3, "--data", data, "--ids", ",".join(SIMPLE + [REFUSED])], tmp_path, "sub")
    by = {r["id"]: r for r in rows}
    assert set(by) == set(SIMPLE + [REFUSED])
    expected = {}
    with gzip.open(data, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["id"] in by:
                expected[rec["id"]] = rec
    for r in rows:
        for k, t in KEYS.items():
            assert isinstance(r[k], t), (r["id"], k, r.get(k))
        assert r["engine"] == "llguidance" and r["tokenizer"] == "qwen3-hf"
        assert r["n_tests"] == len(expected[r["id"]]["tests"])
        assert r["n_valid"] == sum(1 for t in expected[r["id"]]["tests"] if t["valid"])
        assert r["features"] == expected[r["id"]]["features"]
        s = r["tbm_summary"]
        assert s["n"] == len(r["tbm_us"])
        if s["n"]:
            assert 0 < s["p50"] <= s["p99"] <= s["max"]
    for i in SIMPLE:
        r = by[i]
        assert r["status"] == "passing", (i, r["error"])
        assert r["ttfm_us"] > 0 and r["n_tokens"] > 0 and r["tbm_us"]
        assert r["n_validation_errors"] == 0 and r["n_invalidation_errors"] == 0
        # every token of the valid instances was walked (one TBM sample each); invalid ones stop early
        assert len(r["tbm_us"]) <= r["n_tokens"]
    assert sum(by[i]["n_tests"] - by[i]["n_valid"] for i in SIMPLE) >= 8  # invalid instances were rejected
    r = by[REFUSED]
    assert r["status"] == "compile_error" and r["error"] and r["ttfm_us"] is None and r["tbm_us"] == []

    table = subprocess.run([sys.executable, str(COMPARE), str(out), str(out)], capture_output=True, text=True,
                           timeout=120)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].count("llguidance") == 2
    passing = next(ln for ln in lines if ln.startswith("| passing |"))
    assert f"| {len(SIMPLE)} (" in passing
    assert next(ln for ln in lines if ln.startswith("| compile errors |")).split("|")[2].strip() == "1"


def test_mislabelled_instances_are_caught(qwen3, tmp_path):
    """The walk can fail: an instance marked valid that is not is a validation error, one marked
    invalid that is valid an invalidation error, and an early end is rejected."""
    recs = [
        {"id": "int_marked_valid", "features": [], "schema": {"type": "integer"},
         "tests": [{"valid": True, "data": 12}, {"valid": True, "data": "abc"}]},
        {"id": "string_marked_invalid", "features": [], "schema": {"type": "string"},
         "tests": [{"valid": False, "data": "x"}]},
        {"id": "object_prefix", "features": [],
         "schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"], "additionalProperties": False},
         "tests": [{"valid": True, "data": {"a": 1, "b": 2}}, {"valid": False, "data": {"a": 1}},
                   {"valid": False, "data": {"a": 1, "b": 2, "c": 3}}, {"valid": False, "data": {"a": "1", "b": 2}}]},
    ]
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows, _ = _run(["--tokenizer", qwen3, "--data", data, "--no-tbm-list"], tmp_path, "mini")
    by = {r["id"]: r for r in rows}
    assert by["int_marked_valid"]["status"] == "validation_error"
    assert by["int_marked_valid"]["n_validation_errors"] == 1
    assert "valid test 1 rejected" in by["int_marked_valid"]["error"]
    assert by["string_marked_invalid"]["status"] == "invalidation_error"
    assert by["string_marked_invalid"]["n_invalidation_errors"] == 1
    assert by["object_prefix"]["status"] == "passing", by["object_prefix"]["error"]
    assert "tbm_us" not in by["object_prefix"] and by["object_prefix"]["tbm_summary"]["n"] > 0


def test_bad_input_is_a_clear_error(qwen3, tmp_path):
    r = subprocess.run([sys.executable, str(RUN), "--engine", "llguidance", "--tokenizer", str(qwen3),
                        "--data", str(tmp_path / "absent.jsonl")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "data not found" in r.stderr
    r = subprocess.run([sys.executable, str(RUN), "--engine", "llguidance", "--tokenizer", str(tmp_path / "nope.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "tokenizer not found" in r.stderr


def test_xgrammar_loads_without_torch(shared, qwen3, tmp_path):
    """XGrammar, installed without its declared torch (scripts/setup.sh), runs the same walk."""
    if importlib.util.find_spec("xgrammar") is None:  # importing it here would need torch
        pytest.skip("xgrammar is not installed (scripts/setup.sh)")
    data = shared / "data" / "maskbench" / "maskbench-visible.jsonl.gz"
    if not data.exists():
        pytest.skip(f"no MaskBench data at {data}")
    out = tmp_path / "xgr.jsonl"
    ids = SIMPLE[:3]
    r = subprocess.run([sys.executable, str(RUN), "--engine", "xgrammar", "--tokenizer", str(qwen3), "--data",
                        str(data), "--ids", ",".join(ids), "--out", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(x["id"] for x in rows) == sorted(ids)
    for x in rows:
        assert x["engine"] == "xgrammar" and x["status"] == "passing", (x["id"], x["error"])
        assert x["ttfm_us"] > 0 and len(x["tbm_us"]) == x["tbm_summary"]["n"] > 0

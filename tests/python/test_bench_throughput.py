"""`pagoda bench throughput`: the offline batched-generation benchmark runs end to end on a real
tiny model and reports one row per (lengths, concurrency) with consistent figures."""
import json


def test_throughput_rows(run_pagoda, shared, tmp_path):
    model = shared / "models" / "pycoder-tiny"
    out = tmp_path / "tp.json"
    r = run_pagoda("bench", "throughput", "-m", model, "--lens", "16/8,24/4", "-c", "1,4", "-r", "2",
                   "--kv-mem", "64M", "--json", out, timeout=120)
    table = [l for l in r.stdout.splitlines() if l.startswith("|") and l.split("|")[1].strip().isdigit()]
    assert len(table) == 4, r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(x["input_len"], x["output_len"], x["concurrency"]) for x in rows] == [
        (16, 8, 1), (16, 8, 4), (24, 4, 1), (24, 4, 4)]
    for x in rows:
        assert x["requests"] == x["concurrency"]
        assert x["seconds"] > 0 and x["output_tokens_per_s"] > 0
        # total counts the prompt tokens too
        assert x["total_tokens_per_s"] > x["output_tokens_per_s"]
        expect = x["requests"] * x["output_len"] / x["seconds"]
        assert abs(x["output_tokens_per_s"] - expect) <= 0.05 * expect + 1e-6


def test_throughput_bad_options(run_pagoda, shared):
    model = shared / "models" / "pycoder-tiny"
    r = run_pagoda("bench", "throughput", "-m", model, "--lens", "16x8", check=False)
    assert r.returncode == 2 and "--lens" in r.stderr
    r = run_pagoda("bench", "throughput", "-m", model, "--kv-mem", "lots", check=False)
    assert r.returncode == 2 and "--kv-mem" in r.stderr

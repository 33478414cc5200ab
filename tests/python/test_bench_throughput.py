"""`pagoda bench throughput`: the offline batched-generation benchmark runs end to end on a real
tiny model and reports one row per (lengths, concurrency) with consistent figures."""
import json


def test_throughput_rows(run_pagoda, shared, tmp_path):
    model = shared / "models" / "pycoder-tiny"
    out = tmp_path / "tp.json"
    svg = tmp_path / "tp.svg"
    r = run_pagoda("bench", "throughput", "-m", model, "--lens", "16/8,24/4", "-c", "1,4", "-r", "2",
                   "--kv-mem", "64M", "--json", out, "--svg", svg, timeout=120)
    plot = svg.read_text()
    assert plot.startswith("<svg") and "16/8 decode" in plot and "24/4 whole run" in plot
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
        # host work per engine step: positive, and less than a whole step can take
        assert 0 < x["host_ms_per_step"] < 1000 * x["seconds"] / x["output_len"]


def test_throughput_sampled(run_pagoda, shared, tmp_path):
    """Requests can sample (seeded per request) instead of decoding greedily."""
    model = shared / "models" / "pycoder-tiny"
    out = tmp_path / "tp.json"
    run_pagoda("bench", "throughput", "-m", model, "--lens", "8/6", "-c", "4", "--kv-mem", "64M",
               "--temperature", "0.8", "--top-p", "0.9", "--top-k", "40", "--json", out, timeout=120)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["requests"] == 4 and row["output_tokens_per_s"] > 0


def test_throughput_bad_options(run_pagoda, shared):
    model = shared / "models" / "pycoder-tiny"
    r = run_pagoda("bench", "throughput", "-m", model, "--lens", "16x8", check=False)
    assert r.returncode == 2 and "--lens" in r.stderr
    r = run_pagoda("bench", "throughput", "-m", model, "--kv-mem", "lots", check=False)
    assert r.returncode == 2 and "--kv-mem" in r.stderr
    r = run_pagoda("bench", "throughput", "-m", model, "--top-p", "0", check=False)
    assert r.returncode == 2 and "--top-p" in r.stderr
    r = run_pagoda("bench", "throughput", "-m", model, "--temperature", "-1", check=False)
    assert r.returncode == 2 and "--temperature" in r.stderr


def test_throughput_dataset(run_pagoda, shared, tmp_path):
    """Prompts from a JSONL dataset: the input column is their mean token count."""
    model = shared / "models" / "pycoder-tiny"
    data = tmp_path / "prompts.jsonl"
    prompts = ["def add(a, b):\n", "import os\n\ndef list_files(path):\n", "class Stack:\n    def __init__(self):\n"]
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts) + "\n")
    out = tmp_path / "tp.json"
    run_pagoda("bench", "throughput", "-m", model, "--dataset", data, "--lens", "0/6", "-c", "3",
               "--kv-mem", "64M", "--json", out, timeout=120)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["requests"] == 3 and row["output_len"] == 6
    # three different prompts of a few tokens each (the BOS of pycoder-tiny included)
    assert 4 <= row["input_len"] <= 16
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nothing": 1}\n')
    r = run_pagoda("bench", "throughput", "-m", model, "--dataset", bad, check=False)
    assert r.returncode == 1 and "prompt" in r.stderr

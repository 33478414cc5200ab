"""pagoda eval humaneval: the execution harness and pass@k, without a model.

Canonical solutions must all pass, empty and wrong completions must all fail, hostile completions
(infinite loop, fork bomb, unbounded allocation, writing outside the sandbox, sleeping forever)
must each be stopped and counted as failed while the rest are evaluated normally, and pass@k must
match the unbiased estimator of Chen et al. (2021).
"""
import gzip
import json
import math
import os
import subprocess
import time

import pytest


@pytest.fixture(scope="module")
def problems(shared):
    path = shared / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return path, [json.loads(line) for line in f if line.strip()]


def run_eval(pagoda_bin, *args, timeout=120):
    return subprocess.run([pagoda_bin, "eval", "humaneval", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_samples(path, rows):
    with open(path, "w") as f:
        for task_id, completion in rows:
            f.write(json.dumps({"task_id": task_id, "completion": completion}) + "\n")


def read_results(path):
    return [json.loads(line) for line in open(path)]


def pass_at_k_reference(n, c, k):
    """The estimator as a ratio of binomials (exact integers), independent of pagoda's product form."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_canonical_solutions_all_pass(pagoda_bin, problems, tmp_path):
    path, probs = problems
    out, summary = tmp_path / "results.jsonl", tmp_path / "summary.json"
    r = run_eval(pagoda_bin, "--canonical", "--problems", path, "--out", out, "--json", summary)
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["problems"] == len(probs) == 164
    assert s["passed"] == 164 and s["pass_at_k"]["pass@1"] == 1.0, [
        (x["task_id"], x["result"]) for x in read_results(out) if not x["passed"]]
    assert "pass@1: 1.000000 (100.00%)" in r.stdout
    res = read_results(out)
    assert len(res) == 164 and all(x["passed"] and x["result"] == "passed" for x in res)
    assert res[0]["task_id"] == "HumanEval/0" and res[0]["completion"] == probs[0]["canonical_solution"]
    print(s["sandbox"])


def test_default_problems_path(pagoda_bin, shared):
    # without --problems the file is found next to the repository (or via $PAGODA_SHARED)
    r = run_eval(pagoda_bin, "--canonical", "--limit", 3)
    assert r.returncode == 0, r.stderr
    assert "3 problems, 3 samples: 3 passed" in r.stdout


@pytest.mark.parametrize("completion", ["", "    return None\n"], ids=["empty", "return-none"])
def test_empty_and_wrong_completions_all_fail(pagoda_bin, problems, tmp_path, completion):
    path, probs = problems
    samples, out, summary = tmp_path / "samples.jsonl", tmp_path / "results.jsonl", tmp_path / "summary.json"
    write_samples(samples, [(p["task_id"], completion) for p in probs])
    r = run_eval(pagoda_bin, "--samples", samples, "--problems", path, "--out", out, "--json", summary)
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["samples"] == 164 and s["passed"] == 0 and s["pass_at_k"]["pass@1"] == 0.0
    res = read_results(out)
    assert all(not x["passed"] and x["result"].startswith("failed") for x in res)
    assert "pass@1: 0.000000 (0.00%)" in r.stdout


def sandbox_processes_left():
    """Processes still running a sandboxed program (all must be gone after the run)."""
    left = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"program.py" in cmd and b"-I" in cmd:
                left.append(pid)
    return left


def test_hostile_completions_are_contained(pagoda_bin, problems, tmp_path):
    path, probs = problems
    escape = tmp_path / "escape.txt"
    hostile = {
        "infinite loop": "    while True:\n        pass\n",
        "fork bomb": "    import os\n    while True:\n        os.fork()\n",
        "escaping fork": "    import os, time\n    for _ in range(8):\n        if os.fork() == 0:\n"
                         "            os.setsid()\n            time.sleep(1000)\n    return None\n",
        "allocation": "    x = []\n    while True:\n        x.append(bytearray(1 << 24))\n",
        "write outside": f"    open({str(escape)!r}, 'w').write('escaped')\n    return None\n",
        "sleep forever": "    import time\n    time.sleep(10 ** 6)\n",
    }
    rows = [(probs[i]["task_id"], code) for i, code in enumerate(hostile.values())]
    # the honest ones around them are still judged correctly
    good = range(len(hostile), len(hostile) + 4)
    rows += [(probs[i]["task_id"], probs[i]["canonical_solution"]) for i in good]
    rows += [(probs[i]["task_id"], "    return None\n") for i in good]
    samples, out, summary = tmp_path / "samples.jsonl", tmp_path / "results.jsonl", tmp_path / "summary.json"
    write_samples(samples, rows)
    t0 = time.monotonic()
    r = run_eval(pagoda_bin, "--samples", samples, "--problems", path, "--timeout", 3, "--jobs", 2, "--out", out,
                 "--json", summary, timeout=90)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    res = read_results(out)
    assert len(res) == len(rows)
    for name, x in zip(hostile, res):
        assert not x["passed"], (name, x["result"])
    by_name = dict(zip(hostile, res))
    assert by_name["infinite loop"]["result"] == "timed out"
    assert by_name["sleep forever"]["result"] == "timed out"
    assert not escape.exists(), "a sandboxed program wrote outside its temp directory"
    n_good = len(good)
    assert [x["passed"] for x in res[len(hostile):]] == [True] * n_good + [False] * n_good
    assert elapsed < 60, elapsed
    assert sandbox_processes_left() == [], "sandboxed processes outlived the run"
    s = json.loads(summary.read_text())
    assert s["passed"] == n_good and s["timed_out"] >= 2


def test_pass_at_k_matches_reference(pagoda_bin, problems, tmp_path):
    path, probs = problems
    n = 10
    passes = {0: 0, 1: 3, 2: 7, 3: 10, 4: 1}  # problem index -> correct samples out of n
    rows = []
    for i, c in passes.items():
        p = probs[i]
        rows += [(p["task_id"], p["canonical_solution"])] * c + [(p["task_id"], "    return None\n")] * (n - c)
    samples, summary = tmp_path / "samples.jsonl", tmp_path / "summary.json"
    write_samples(samples, rows)
    r = run_eval(pagoda_bin, "--samples", samples, "--problems", path, "-k", "1,2,5,10,20", "--json", summary)
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["problems"] == len(passes) and s["samples"] == n * len(passes)
    assert {t: v["passed"] for t, v in s["per_task"].items()} == {probs[i]["task_id"]: c for i, c in passes.items()}
    for k in (1, 2, 5, 10):
        want = sum(pass_at_k_reference(n, c, k) for c in passes.values()) / len(passes)
        assert math.isclose(s["pass_at_k"][f"pass@{k}"], want, rel_tol=1e-9, abs_tol=1e-12), k
    assert "pass@20" not in s["pass_at_k"] and "pass@20: n/a" in r.stdout  # k > n is not estimable
    assert math.isclose(s["pass_at_k"]["pass@1"], sum(passes.values()) / (n * len(passes)))


def test_bad_inputs(pagoda_bin, problems, tmp_path):
    path, _ = problems
    samples = tmp_path / "samples.jsonl"
    write_samples(samples, [("HumanEval/99999", "    return 1\n")])
    r = run_eval(pagoda_bin, "--samples", samples, "--problems", path)
    assert r.returncode == 1 and "unknown task_id 'HumanEval/99999'" in r.stderr
    samples.write_text('{"task_id": "HumanEval/0"\n')
    r = run_eval(pagoda_bin, "--samples", samples, "--problems", path)
    assert r.returncode == 1 and "samples.jsonl:1" in r.stderr
    r = run_eval(pagoda_bin, "--canonical", "--problems", tmp_path / "missing.jsonl")
    assert r.returncode == 1 and "missing.jsonl" in r.stderr
    r = run_eval(pagoda_bin, "--canonical", "--samples", samples)
    assert r.returncode == 2


def test_generation_through_a_server(pagoda_bin, problems, tmp_path):
    """--url: completions from an OpenAI-compatible /v1/completions; a fake server answers each
    prompt with its canonical solution followed by more top-level code, which the client cuts at
    the first stop sequence."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    path, probs = problems
    by_prompt = {p["prompt"]: p["canonical_solution"] for p in probs}
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps({"data": [{"id": "fake-coder"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, req))
            text = by_prompt.get(req["prompt"], "    pass\n") + "\n\ndef unrelated():\n    raise SystemExit(1)\n"
            body = json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        out, summary = tmp_path / "results.jsonl", tmp_path / "summary.json"
        r = run_eval(pagoda_bin, "--url", f"http://127.0.0.1:{srv.server_address[1]}", "--problems", path,
                     "--limit", 6, "-n", 2, "-k", "1,2", "--max-tokens", 300, "--out", out, "--json", summary)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["samples"] == 12 and s["pass_at_k"]["pass@1"] == 1.0 and s["pass_at_k"]["pass@2"] == 1.0
    assert len(seen) == 12 and all(p == "/v1/completions" for p, _ in seen)
    req = seen[0][1]
    assert req["model"] == "fake-coder" and req["max_tokens"] == 300 and req["temperature"] > 0  # n > 1
    assert set(req["stop"]) == {"\nclass", "\ndef", "\n#", "\nif", "\nprint"}
    assert all("unrelated" not in x["completion"] for x in read_results(out))

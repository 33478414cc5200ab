"""pagoda bench serve against a fake OpenAI-compatible server with known timing.

The server streams (SSE) like OpenAI's API: the first token D0 seconds after the request arrives,
then one token every D1 seconds, max_tokens tokens in all, then a usage chunk and [DONE]. So the
truth is TTFT = D0, TPOT = ITL = D1, and the client's figures are checked against it.
"""
import json
import math
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


PROBE_PROMPT = "pagoda bench serve probe"


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, d0, d1, fail_every=0, reject_fields=()):
        super().__init__(("127.0.0.1", 0), Handler)
        self.d0, self.d1, self.fail_every, self.reject_fields = d0, d1, fail_every, reject_fields
        self.lock = threading.Lock()
        self.bodies, self.arrivals, self.probes = [], [], []
        self.in_flight = self.max_in_flight = self.count = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def setup(self):
        super().setup()
        # as real servers do: no Nagle delay on small SSE writes
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        t0 = time.monotonic()
        s = self.server
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path == "/v1/chat/completions"
        prompt = req["messages"][0]["content"] if chat else req["prompt"]
        for field in s.reject_fields:  # as strict OpenAI-compatible servers do
            if field in req:
                self.send_json(400, {"error": {"message": f"Unrecognized request argument supplied: {field}",
                                               "type": "invalid_request_error", "param": field}})
                return
        if prompt == PROBE_PROMPT:  # the client's one warm-up request: not part of the measurements
            s.probes.append(req)
            self.stream(t0, chat, prompt, req["max_tokens"])
            return
        with s.lock:
            s.count += 1
            n = s.count
            s.bodies.append((self.path, req))
            s.arrivals.append(t0)
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            if s.fail_every and n % s.fail_every == 0:
                self.send_error(500, "injected failure")
                return
            self.stream(t0, chat, prompt, req["max_tokens"])
        finally:
            with s.lock:
                s.in_flight -= 1

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, t0, chat, prompt, max_tokens):
        s = self.server
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(max_tokens):
            wait = t0 + s.d0 + i * s.d1 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if chat:
                choice = {"index": 0, "delta": {"content": " tok"}, "finish_reason": None}
            else:
                choice = {"index": 0, "text": " tok", "finish_reason": None}
            self.wfile.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
            self.wfile.flush()
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": max_tokens,
                 "total_tokens": len(prompt.split()) + max_tokens}
        self.wfile.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def fake_server():
    servers = []

    def make(d0, d1, fail_every=0, reject_fields=()):
        srv = FakeServer(d0, d1, fail_every, reject_fields)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def bench(pagoda_bin, *args, timeout=60):
    return subprocess.run([pagoda_bin, "bench", "serve", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def close_to(measured, truth, rel=0.05, abs_ms=3.0):
    return abs(measured - truth) <= rel * truth + abs_ms


def test_latencies_match_known_delays(pagoda_bin, fake_server, tmp_path):
    d0, d1, n_out, conc, n_req = 0.2, 0.02, 20, 4, 16
    srv = fake_server(d0, d1)
    out, report = tmp_path / "out.json", tmp_path / "report.html"
    r = bench(pagoda_bin, "--url", srv.url, "--concurrency", conc, "--num-requests", n_req, "--input-len", 32,
              "--output-len", n_out, "--json", out, "--report", report)
    assert r.returncode == 0, r.stderr
    assert "Serving Benchmark Result" in r.stdout and "Mean TTFT (ms):" in r.stdout and "P99 ITL (ms):" in r.stdout
    res = json.loads(out.read_text())
    assert res["model_id"] == "fake-model"
    assert res["completed"] == n_req and res["failed"] == 0 and len(res["requests"]) == n_req
    assert res["total_output_tokens"] == n_req * n_out
    assert res["total_input_tokens"] == n_req * 32  # the fake server counts words: the prompt has 32
    assert close_to(res["mean_ttft_ms"], d0 * 1e3), res["mean_ttft_ms"]
    assert close_to(res["mean_tpot_ms"], d1 * 1e3), res["mean_tpot_ms"]
    assert close_to(res["mean_itl_ms"], d1 * 1e3), res["mean_itl_ms"]
    assert close_to(res["mean_e2el_ms"], (d0 + (n_out - 1) * d1) * 1e3), res["mean_e2el_ms"]
    # closed loop of 4 clients: 4 waves of requests that each take d0 + (n_out-1) d1
    wave = d0 + (n_out - 1) * d1
    ideal_duration = n_req / conc * wave
    assert ideal_duration <= res["duration"] <= ideal_duration * 1.10 + 0.05, res["duration"]
    assert close_to(res["output_throughput"], n_req * n_out / ideal_duration, rel=0.10, abs_ms=0)
    assert math.isclose(res["output_throughput"], res["total_output_tokens"] / res["duration"], rel_tol=1e-6)
    assert math.isclose(res["request_throughput"], n_req / res["duration"], rel_tol=1e-6)
    assert res["max_in_flight"] == conc and srv.max_in_flight <= conc
    for q in res["requests"]:
        assert q["success"] and q["completion_tokens"] == n_out and len(q["itl_ms"]) == n_out - 1
    # what was sent: streaming with usage, fixed output length
    path, body = srv.bodies[0]
    assert path == "/v1/completions"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == n_out and body["min_tokens"] == n_out and body["ignore_eos"] is True
    assert len(body["prompt"].split()) == 32
    assert len({b["prompt"] for _, b in srv.bodies}) == n_req  # no two prompts alike (no prefix-cache hits)
    assert len(srv.probes) == 1 and srv.probes[0]["min_tokens"] == srv.probes[0]["max_tokens"]
    html = report.read_text()
    assert html.count("<svg") >= 3 and "CDF" in html
    assert "<script" not in html and "<link" not in html and "src=" not in html  # self-contained


def test_poisson_arrivals(pagoda_bin, fake_server, tmp_path):
    rate, n_req = 40.0, 80
    srv = fake_server(0.01, 0.002)
    out = tmp_path / "out.json"
    r = bench(pagoda_bin, "--url", srv.url, "--model", "fake-model", "--request-rate", rate, "--num-requests", n_req,
              "--input-len", 8, "--output-len", 4, "--seed", 7, "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["completed"] == n_req and res["request_rate"] == rate
    starts = sorted(q["start_s"] for q in res["requests"])
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # the span of n-1 exponential gaps: mean (n-1)/rate, sd sqrt(n-1)/rate
    mean, sd = (n_req - 1) / rate, math.sqrt(n_req - 1) / rate
    span = starts[-1] - starts[0]
    assert abs(span - mean) < 4 * sd, span
    # exponential gaps: coefficient of variation about 1 (a fixed interval would give 0)
    m = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - m) ** 2 for g in gaps) / len(gaps)) / m
    assert 0.6 < cv < 1.5, cv
    # the server saw the same arrival process
    srv_span = max(srv.arrivals) - min(srv.arrivals)
    assert abs(srv_span - span) < 0.05
    assert res["duration"] >= span


def test_sweep_markdown_and_report(pagoda_bin, fake_server, tmp_path):
    srv = fake_server(0.02, 0.002)
    md, report = tmp_path / "sweep.md", tmp_path / "sweep.html"
    r = bench(pagoda_bin, "--url", srv.url, "--sweep-concurrency", "1,4", "--sweep-lens", "16/8,32/8",
              "--num-requests", 8, "--markdown", md, "--report", report, "--json", tmp_path / "sweep.json")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in md.read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for col in ("req/s", "output tok/s", "total tok/s", "mean TTFT ms", "mean TPOT ms", "p99 TPOT ms"):
        assert col in header
    rows = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]
    assert [(row["lengths (in/out)"], row["concurrency"]) for row in rows] == [
        ("16/8", "1"), ("16/8", "4"), ("32/8", "1"), ("32/8", "4")]
    for row in rows:
        assert row["requests ok/failed"] == "8/0"
        # short delays: loose bounds (the fake server's own overhead is a few ms on a busy machine)
        assert close_to(float(row["mean TTFT ms"]), 20.0, rel=0.10, abs_ms=10)
        assert close_to(float(row["mean TPOT ms"]), 2.0, rel=0.10, abs_ms=3)
    # 4 clients finish the same 8 requests about 4x as fast as 1 (at least 2.5x here)
    assert float(rows[1]["req/s"]) > 2.5 * float(rows[0]["req/s"])
    assert float(rows[3]["mean in tok"]) == 32.0
    res = json.loads((tmp_path / "sweep.json").read_text())
    assert len(res["runs"]) == 4
    # no run repeats another's prompts (a prefix cache would make the later runs look faster)
    assert len({b["prompt"] for _, b in srv.bodies}) == len(srv.bodies) == 32
    html = report.read_text()
    assert "<svg" in html and "Output throughput" in html and "Time per output token" in html


def test_server_errors_are_counted(pagoda_bin, fake_server, tmp_path):
    srv = fake_server(0.01, 0.002, fail_every=4)
    out = tmp_path / "out.json"
    r = bench(pagoda_bin, "--url", srv.url, "--concurrency", 2, "--num-requests", 8, "--output-len", 4,
              "--input-len", 8, "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["completed"] == 6 and res["failed"] == 2
    errors = [q["error"] for q in res["requests"] if not q["success"]]
    assert len(errors) == 2 and all("HTTP 500" in e for e in errors)
    assert "Failed requests:" in r.stdout


def test_chat_endpoint_and_duration(pagoda_bin, fake_server, tmp_path):
    srv = fake_server(0.03, 0.005)
    out = tmp_path / "out.json"
    r = bench(pagoda_bin, "--url", srv.url + "/v1", "--endpoint", "chat", "--concurrency", 2, "--duration", 1,
              "--input-len", 8, "--output-len", 5, "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    # each request takes 0.03 + 4 * 0.005 = 0.05 s: about 20 per client in 1 s
    assert 20 <= res["completed"] <= 44 and res["failed"] == 0
    assert close_to(res["mean_ttft_ms"], 30.0, abs_ms=10)
    assert all(path == "/v1/chat/completions" for path, _ in srv.bodies)
    assert srv.bodies[0][1]["messages"][0]["role"] == "user"


def test_sampling_options_are_sent(pagoda_bin, fake_server):
    """Greedy by default (as vLLM's benchmark); --temperature / --top-p go into every request."""
    srv = fake_server(0.001, 0.001)
    r = bench(pagoda_bin, "--url", srv.url + "/v1", "--concurrency", 2, "--num-requests", 2, "--input-len", 4, "--output-len", 2)
    assert r.returncode == 0, r.stderr
    assert all(b["temperature"] == 0 and "top_p" not in b for _, b in srv.bodies)
    srv.bodies.clear()
    r = bench(pagoda_bin, "--url", srv.url + "/v1", "--concurrency", 2, "--num-requests", 3, "--input-len", 4, "--output-len", 2,
              "--temperature", 0.7, "--top-p", 0.9)
    assert r.returncode == 0, r.stderr
    assert len(srv.bodies) == 3
    assert all(abs(b["temperature"] - 0.7) < 1e-6 and abs(b["top_p"] - 0.9) < 1e-6 for _, b in srv.bodies)
    r = bench(pagoda_bin, "--url", srv.url + "/v1", "--temperature", 3)
    assert r.returncode == 2 and "--temperature" in r.stderr


def test_server_engine_time_from_metrics(pagoda_bin, fake_server, shared, tmp_path):
    """Against pagoda serve the run also reports the server's engine time per step (its /metrics):
    forward pass and host work, which add up to no more than the run's wall time. A server without
    those counters (the fake one) gets no such figures."""
    from serve_harness import Server
    model = shared / "models" / "pycoder-tiny"
    if not (model / "config.json").exists():
        pytest.skip(f"{model} not found")
    s = Server(pagoda_bin, model, "--kv-mem", "64M", "-t", "2")
    try:
        out = tmp_path / "real.json"
        r = bench(pagoda_bin, "--url", s.url, "--concurrency", 4, "--num-requests", 8, "--input-len", 8,
                  "--output-len", 8, "--temperature", 0.7, "--top-p", 0.9, "--json", out)
        assert r.returncode == 0, r.stderr
        assert "Host work per step (ms):" in r.stdout
        run = json.loads(out.read_text())  # one run: the object itself
        assert run["completed"] == 8 and run["temperature"] == pytest.approx(0.7) and run["top_p"] == pytest.approx(0.9)
        # prefill + 7 decode steps at least; at most one step per generated token and prompt
        assert 8 <= run["server_engine_steps"] <= 8 * 8 + 8
        fwd, host = run["server_forward_ms_per_step"], run["server_host_ms_per_step"]
        assert fwd > 0 and host >= 0
        assert (fwd + host) * run["server_engine_steps"] <= 1000 * run["duration"] * 1.05 + 50
    finally:
        s.stop()
        s.close()
    srv = fake_server(0.001, 0.001)
    out = tmp_path / "fake.json"
    r = bench(pagoda_bin, "--url", srv.url + "/v1", "--concurrency", 2, "--num-requests", 2, "--input-len", 4,
              "--output-len", 2, "--json", out)
    assert r.returncode == 0 and "Host work per step" not in r.stdout
    run = json.loads(out.read_text())
    assert "server_engine_steps" not in run


def test_humaneval_workload(pagoda_bin, fake_server, shared, tmp_path):
    srv = fake_server(0.01, 0.002)
    out = tmp_path / "out.json"
    r = bench(pagoda_bin, "--url", srv.url, "--concurrency", 2, "--num-requests", 3, "--workload", "humaneval",
              "--output-len", 6, "--dataset", shared / "data" / "HumanEval.jsonl.gz", "--json", out)
    assert r.returncode == 0, r.stderr
    # two clients send at once, so the server may see the first two in either order
    prompts = [b["prompt"] for _, b in srv.bodies]
    first = sorted(prompts[:2], key=lambda p: "def separate_paren_groups" in p)
    assert first[0].startswith("from typing import List") and "def has_close_elements" in first[0]
    assert "def separate_paren_groups" in first[1]
    res = json.loads(out.read_text())
    assert res["total_output_tokens"] == 18
    assert res["total_input_tokens"] == sum(len(p.split()) for p in prompts)


def test_server_down(pagoda_bin):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = bench(pagoda_bin, "--url", f"http://127.0.0.1:{port}", "--concurrency", 1, "--num-requests", 2)
    assert r.returncode == 1
    assert "cannot reach the server" in r.stderr and str(port) in r.stderr
    r = bench(pagoda_bin, "--url", "nosuchscheme://x", "--concurrency", 1)
    assert r.returncode == 1 and "cannot reach the server" in r.stderr
    r = bench(pagoda_bin, "--concurrency", 1)
    assert r.returncode == 2 and "--url" in r.stderr


def test_server_that_rejects_min_tokens(pagoda_bin, fake_server, tmp_path):
    # a strict server (pagoda's own, OpenAI's) refuses min_tokens: the probe finds out, and the
    # benchmark sends ignore_eos alone
    srv = fake_server(0.01, 0.002, reject_fields=("min_tokens",))
    out = tmp_path / "out.json"
    r = bench(pagoda_bin, "--url", srv.url, "--concurrency", 2, "--num-requests", 4, "--output-len", 4,
              "--input-len", 8, "--json", out)
    assert r.returncode == 0, r.stderr
    assert "rejects min_tokens" in r.stderr
    res = json.loads(out.read_text())
    assert res["completed"] == 4 and res["ignore_eos"] is True and res["min_tokens"] is False
    assert all(b["ignore_eos"] is True and "min_tokens" not in b for _, b in srv.bodies)
    # --no-ignore-eos sends neither
    srv2 = fake_server(0.01, 0.002, reject_fields=("min_tokens", "ignore_eos"))
    r = bench(pagoda_bin, "--url", srv2.url, "--concurrency", 2, "--num-requests", 2, "--output-len", 4,
              "--no-ignore-eos")
    assert r.returncode == 0, r.stderr
    assert all("ignore_eos" not in b and "min_tokens" not in b for _, b in srv2.bodies)


def test_twin_runs_with_extra_body(pagoda_bin, fake_server, tmp_path):
    """--twin on: each run plain, then with --extra-body merged into its requests, and the ratios."""
    srv = fake_server(0.01, 0.002)
    out = tmp_path / "twin.json"
    extra = {"response_format": {"type": "json_object"}, "temperature": 0.5}
    r = bench(pagoda_bin, "--url", srv.url + "/v1", "--concurrency", 2, "--num-requests", 4, "--input-len", 4,
              "--output-len", 3, "--twin", "on", "--extra-body", json.dumps(extra), "--json", out)
    assert r.returncode == 0, r.stderr
    runs = [b for _, b in srv.bodies if b.get("prompt") != PROBE_PROMPT and PROBE_PROMPT not in str(b.get("messages"))]
    assert len(runs) == 8
    plain = [b for b in runs if "response_format" not in b]
    with_extra = [b for b in runs if b.get("response_format") == {"type": "json_object"}]
    assert len(plain) == 4 and len(with_extra) == 4
    assert all(b["temperature"] == 0.5 for b in with_extra) and all(b["temperature"] == 0 for b in plain)
    assert "Twin: with --extra-body / without" in r.stdout and "Output token throughput:" in r.stdout
    res = json.loads(out.read_text())
    runs_json = res["runs"] if isinstance(res, dict) and "runs" in res else res
    assert [x["extra_body"] for x in runs_json] == [False, True]
    for bad in (["--twin", "on"], ["--extra-body", "[1]"], ["--extra-body", "{"]):
        r = bench(pagoda_bin, "--url", srv.url + "/v1", "--concurrency", 1, *bad)
        assert r.returncode == 2, (bad, r.stderr)

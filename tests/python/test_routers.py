"""Data parallelism with the routers operators already run: two pagoda workers behind
sglang-router (cache_aware), vllm-router (cache_aware, its default) and nginx (consistent hash on
the body, least_conn), driven with the official openai client. Per-worker /metrics say which
worker served what; the prefix-cache hit counters show cache-aware routing keeping a shared
prefix on one worker. Each router case skips with a message when its program is missing
(sglang-router / vllm-router: pip, scripts/requirements-test.txt; nginx: apt, scripts/setup.sh).
The configurations are deploy/routers/ (README.md there)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from serve_harness import Server, metric

openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: sglang-router, vllm-router


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def program(name):
    p = BIN / name
    return str(p) if p.exists() else shutil.which(name)


def start_workers(pagoda_bin, model, n=2):
    return [Server(pagoda_bin, model, "--kv-mem", "64M", "-t", "1") for _ in range(n)]


@pytest.fixture(scope="module")
def workers(pagoda_bin, builtin_model):
    ws = start_workers(pagoda_bin, builtin_model)
    yield ws
    for w in ws:
        w.close()


class Router:
    """A router process on a free port; stdout+stderr to a file shown on failure."""

    def __init__(self, cmd, port, cwd=None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix="router-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)

    def text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()[-6000:]

    def client(self):
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", timeout=120, max_retries=0)

    def wait_ready(self, model, timeout=60):
        """Until a chat request through the router succeeds (workers registered and healthy)."""
        c = self.client()
        deadline, err = time.time() + timeout, None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}:\n{self.text()}")
            try:
                c.chat.completions.create(model=model, max_tokens=1,
                                          messages=[{"role": "user", "content": "ready?"}])
                return
            except Exception as e:  # noqa: BLE001 - not up yet
                err = e
                time.sleep(0.3)
        raise RuntimeError(f"router not ready in {timeout} s ({err}):\n{self.text()}")

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.unlink(self.log.name)


def snapshot(ws):
    out = []
    for w in ws:
        m = w.metrics()
        out.append({"requests": metric(m, "pagoda:request_success_total"),
                    "hits": metric(m, "pagoda:prefix_cache_hits_total")})
    return out


def delta(before, after, key):
    return [a[key] - b[key] for a, b in zip(after, before)]


def flush(ws):
    for w in ws:
        st, _, body = w.post("/flush_cache", None)
        assert st == 200, body


LONG_PREFIX = ("You are a meticulous librarian. The catalogue below lists every book in the east "
               "wing, shelf by shelf, with its author, year and a one-line summary. ") * 6


def exercise(router, model, ws, expect_affinity, expect_spread=True):
    """Chat, completions and a stream through the router; distinct prompts must reach both
    workers when expect_spread (cache_aware sends sequential cache misses to the same worker
    while loads are even, so it is checked with round_robin there); prompts sharing a long prefix
    must stay on one worker when expect_affinity."""
    c = router.client()
    flush(ws)
    before = snapshot(ws)
    r = c.chat.completions.create(model=model, max_tokens=4,
                                  messages=[{"role": "user", "content": "Name a colour."}])
    assert r.choices[0].message.content is not None
    r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=4)
    assert r.choices[0].text is not None
    stream = c.chat.completions.create(model=model, max_tokens=4, stream=True,
                                       messages=[{"role": "user", "content": "Count to three."}])
    assert sum(1 for _ in stream) >= 2
    for i in range(8):  # distinct short prompts: spread over both workers
        c.completions.create(model=model, max_tokens=2,
                             prompt=f"{i * 7919} unrelated topic number {i}: " + "zq"[i % 2] * (5 + i))
    mid = snapshot(ws)
    served = delta(before, mid, "requests")
    assert sum(served) >= 11, served
    if expect_spread:
        assert min(served) >= 1, f"requests per worker {served}\n{router.text()}"
    if not expect_affinity:
        return served
    # a long shared prefix, then different questions: all on the worker that holds the prefix
    for q in ["Which shelf has poetry?", "Who wrote the oldest book?", "List three titles.",
              "Which year is most common?"]:
        c.chat.completions.create(model=model, max_tokens=2, messages=[
            {"role": "system", "content": LONG_PREFIX}, {"role": "user", "content": q}])
    after = snapshot(ws)
    reqs, hits = delta(mid, after, "requests"), delta(mid, after, "hits")
    assert sorted(reqs) == [0, 4], f"shared-prefix requests per worker {reqs}\n{router.text()}"
    hot = reqs.index(4)
    assert hits[hot] >= 3 * 48 and hits[1 - hot] == 0, f"prefix hits per worker {hits}"
    return served


def kill_one(router, model, ws, settle_s):
    """Kills worker 1; after settle_s the router must answer every request from worker 0."""
    c = router.client()
    ws[1].kill()
    failures, t0 = 0, time.time()
    while time.time() - t0 < settle_s:  # what happens meanwhile is the router's business
        try:
            c.completions.create(model=model, prompt="Still there?", max_tokens=1)
        except Exception:  # noqa: BLE001
            failures += 1
        time.sleep(0.2)
    before = ws[0].metrics()
    for i in range(6):
        r = c.completions.create(model=model, prompt=f"After the failure, request {i}:", max_tokens=2)
        assert r.choices
    served = metric(ws[0].metrics(), "pagoda:request_success_total") - metric(before, "pagoda:request_success_total")
    assert served == 6
    return failures


def need(name):
    p = program(name)
    if not p:
        pytest.skip(f"{name} not installed (pip install -r scripts/requirements-test.txt)")
    return p


def sglang_cmd(exe, ws, port, *extra, policy="cache_aware"):
    return [exe, "launch", "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
            "--prometheus-port", str(free_port()), "--prometheus-host", "127.0.0.1", "--log-level", "warn",
            "--worker-urls", *[w.url for w in ws], *extra]


def vllm_cmd(exe, ws, port, *extra, policy="cache_aware"):
    return [exe, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
            "--prometheus-port", str(free_port()), "--prometheus-host", "127.0.0.1", "--log-level", "warning",
            "--worker-urls", *[w.url for w in ws], *extra]


HEALTH_FAST = ["--health-check-interval-secs", "1", "--health-failure-threshold", "1",
               "--health-check-timeout-secs", "2"]


@pytest.mark.parametrize("which", ["sglang-router", "vllm-router"])
@pytest.mark.parametrize("policy", ["cache_aware", "round_robin"])
def test_rust_router(workers, which, policy):
    exe = need(which)
    port = free_port()
    cmd = sglang_cmd if which == "sglang-router" else vllm_cmd
    r = Router(cmd(exe, workers, port, policy=policy), port)
    try:
        r.wait_ready(workers[0].model_name)
        cache_aware = policy == "cache_aware"
        exercise(r, workers[0].model_name, workers, expect_affinity=cache_aware, expect_spread=not cache_aware)
    finally:
        r.close()


def nginx_conf(name, ws, port, prefix):
    text = (ROOT / "deploy" / "routers" / name).read_text()
    text = text.replace("127.0.0.1:8001", f"127.0.0.1:{ws[0].port}").replace("127.0.0.1:8002", f"127.0.0.1:{ws[1].port}")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("worker_processes auto;", "worker_processes 1;")
    if os.geteuid() == 0:  # workers as root: the temporary prefix is ours
        text = "user root;\n" + text
    path = Path(prefix) / "nginx.conf"
    path.write_text(text)
    return path


def start_nginx(name, ws):
    exe = program("nginx") or (shutil.which("nginx", path="/usr/sbin:/sbin"))
    if not exe:
        pytest.skip("nginx not installed (apt-get install nginx; scripts/setup.sh installs it)")
    prefix = tempfile.mkdtemp(prefix="nginx-pagoda-")
    port = free_port()
    conf = nginx_conf(name, ws, port, prefix)
    r = Router([exe, "-p", prefix + "/", "-c", str(conf), "-g", "daemon off;"], port)
    r.prefix = prefix
    return r


def test_nginx_consistent_hash(workers):
    r = start_nginx("nginx-hash.conf", workers)
    try:
        model = workers[0].model_name
        r.wait_ready(model)
        exercise(r, model, workers, expect_affinity=False)
        # the same body again and again: always the worker that cached it
        c = r.client()
        mid = snapshot(workers)
        for _ in range(4):
            c.chat.completions.create(model=model, max_tokens=2, messages=[
                {"role": "system", "content": LONG_PREFIX}, {"role": "user", "content": "Same question."}])
        after = snapshot(workers)
        reqs, hits = delta(mid, after, "requests"), delta(mid, after, "hits")
        assert sorted(reqs) == [0, 4], reqs
        assert hits[reqs.index(4)] >= 3 * 48 and hits[reqs.index(0)] == 0, hits
    finally:
        r.close()
        shutil.rmtree(r.prefix, ignore_errors=True)


def test_nginx_least_conn(workers):
    r = start_nginx("nginx-least-conn.conf", workers)
    try:
        r.wait_ready(workers[0].model_name)
        exercise(r, workers[0].model_name, workers, expect_affinity=False)
    finally:
        r.close()
        shutil.rmtree(r.prefix, ignore_errors=True)


@pytest.mark.parametrize("which", ["sglang-router", "vllm-router", "nginx"])
def test_worker_killed(pagoda_bin, builtin_model, which):
    """A worker dies: after the router's health check notices (1 s interval, one failure; nginx:
    proxy_next_upstream + max_fails), every request is answered by the other."""
    if which == "nginx":
        ws = start_workers(pagoda_bin, builtin_model)
        r = start_nginx("nginx-least-conn.conf", ws)
    else:
        exe = need(which)
        ws = start_workers(pagoda_bin, builtin_model)
        port = free_port()
        cmd = sglang_cmd if which == "sglang-router" else vllm_cmd
        r = Router(cmd(exe, ws, port, *HEALTH_FAST), port)
    try:
        model = ws[0].model_name
        r.wait_ready(model)
        failures = kill_one(r, model, ws, settle_s=4)
        print(f"{which}: {failures} failed requests in the 4 s after the kill")
    finally:
        r.close()
        if which == "nginx":
            shutil.rmtree(r.prefix, ignore_errors=True)
        for w in ws:
            w.close()

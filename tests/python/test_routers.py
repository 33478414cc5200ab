"""Data parallelism with the routers operators already run: two pagoda workers behind
sglang-router (cache_aware), vllm-router (cache_aware, its default) and nginx (consistent hash on
the body, least_conn), driven with the official openai client. Per-worker /metrics say which
worker served what; the prefix-cache hit counters show cache-aware routing keeping a shared
prefix on one worker. Each router case skips with a message when its program is missing
(sglang-router / vllm-router: pip, scripts/requirements-test.txt; nginx: apt, scripts/setup.sh).
The configurations are deploy/routers/ (README.md there)."""
import shutil
import time

import pytest

from router_harness import HEALTH_FAST, Router, free_port, nginx_exe, program, sglang_cmd, vllm_cmd
from router_harness import start_nginx as _start_nginx
from serve_harness import Server, metric

openai = pytest.importorskip("openai")


def start_workers(pagoda_bin, model, n=2):
    return [Server(pagoda_bin, model, "--kv-mem", "64M", "-t", "1") for _ in range(n)]


@pytest.fixture(scope="module")
def workers(pagoda_bin, builtin_model):
    ws = start_workers(pagoda_bin, builtin_model)
    yield ws
    for w in ws:
        w.close()


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


def start_nginx(name, ws):
    if not nginx_exe():
        pytest.skip("nginx not installed (apt-get install nginx; scripts/setup.sh installs it)")
    return _start_nginx(name, ws)


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

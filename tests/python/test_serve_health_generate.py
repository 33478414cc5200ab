"""GET /health_generate (SGLang's router probes it): 200 only when the engine generates a token now,
through the normal engine path; 503 with a JSON error when no token comes within
--health-generate-timeout (here: an engine whose one sequence slot is taken), or when the default
model is not loaded. The probe stays out of the request histograms of /metrics."""
import json
import time

import pytest

from serve_harness import Server, metric, running

openai = pytest.importorskip("openai")

NAME = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    # one sequence per step, so a long request holds the engine's only slot
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "128M", "-t", "2", "--max-seqs", "1",
                       "--health-generate-timeout", "0.5")


def test_live_server_generates(server):
    assert server.post("/v1/completions", {"model": NAME, "prompt": "Hi", "max_tokens": 2})[0] == 200
    before = server.metrics()
    assert metric(before, "pagoda:e2e_request_latency_seconds_count") == 1  # requests are counted there
    st, headers, body = server.get("/health_generate")
    assert st == 200, body
    r = json.loads(body)
    assert r["status"] == "ok" and r["model"] == NAME and 0 <= r["seconds"] < 0.5
    after = server.metrics()
    # one token really went through the engine ...
    assert metric(after, "pagoda:generation_tokens_total") == metric(before, "pagoda:generation_tokens_total") + 1
    # ... and the probe is not a request in the latency histograms
    assert (metric(after, "pagoda:e2e_request_latency_seconds_count") ==
            metric(before, "pagoda:e2e_request_latency_seconds_count"))
    assert server.post("/health_generate", {})[0] == 405


def test_busy_engine_times_out_then_recovers(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stream = c.completions.create(model=NAME, prompt="Once upon a time", max_tokens=2000, temperature=0, stream=True,
                                  extra_body={"ignore_eos": True})
    it = iter(stream)
    next(it)  # the long request runs: the engine's one slot is taken
    t0 = time.time()
    st, _, body = server.get("/health_generate")
    dt = time.time() - t0
    assert st == 503, body
    err = json.loads(body)["error"]
    assert err["code"] == "timeout" and "0.5" in err["message"]
    assert 0.4 <= dt < 5
    next(it)  # the long request was not disturbed
    stream.close()  # the client goes away: the watchdog cancels it
    deadline = time.time() + 20
    while time.time() < deadline:
        st, _, body = server.get("/health_generate")
        if st == 200:
            break
        time.sleep(0.2)
    assert st == 200, body
    assert "past its deadline (/health_generate): cancelling" in server.text()


def test_model_not_loaded(pagoda_bin, builtin_model):
    """a model served on demand (-m NAME=PATH) is not loaded by the probe: 503 until a request loads it"""
    s = Server(pagoda_bin, f"smol={builtin_model}", "--kv-mem", "64M", "-t", "2")
    try:
        st, _, body = s.get("/health_generate")
        assert st == 503 and json.loads(body)["error"]["code"] == "model_not_loaded", body
        assert s.post("/v1/completions", {"model": "smol", "prompt": "Hi", "max_tokens": 1})[0] == 200
        st, _, body = s.get("/health_generate")
        assert st == 200 and json.loads(body)["model"] == "smol", body
        assert s.stop() == 0, s.text()
    finally:
        s.close()


def test_embedding_model(pagoda_bin, builtin_model):
    """a model that only embeds (--task embed) cannot generate: the probe pools its prompt instead"""
    for s in running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2", "--task", "embed"):
        before = s.metrics()
        st, _, body = s.get("/health_generate")
        assert st == 200 and json.loads(body)["status"] == "ok", body
        assert metric(s.metrics(), "pagoda:prompt_tokens_total") > metric(before, "pagoda:prompt_tokens_total")

"""Many models in one `pagoda serve` (src/manager/): routing by the request's "model", loading on
demand, LRU eviction under --memory-budget, a broken file in --models-dir, POST /models/load and
/models/unload, RSS after an unload, per-model /metrics. Real servers, the official `openai` client.

The three models: the built-in SmolLM2 (GGUF with a tokenizer), pycoder-tiny (a Hugging Face
folder) and tiny-llama-f16 (a GGUF without a tokenizer: prompts are token ids); with them two LoRA
adapters on pycoder-tiny (lora_synth.py), whose single-model reference is a server of the base with
the adapter merged into its weights by NumPy."""
import concurrent.futures as cf
import json
import pathlib
import re
import shutil
import time

import pytest

from lora_synth import make_adapter, make_merged
from serve_harness import Server

openai = pytest.importorskip("openai")

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
KV = 16 << 20
KV_ARGS = ("--kv-mem", "16M", "--threads", "1")


@pytest.fixture(scope="module")
def paths(shared):
    p = {"smol": SMOL, "coder": shared / "models" / "pycoder-tiny", "tiny": shared / "fixtures" / "gguf" / "tiny-llama-f16.gguf"}
    for k, v in p.items():
        if not v.exists():
            pytest.skip(f"{v} not found")
    return p


def file_bytes(p):
    p = pathlib.Path(p)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".safetensors", ".gguf"))
    return p.stat().st_size


# the requests: (model, prompt); tiny has no tokenizer, so its prompts are token ids
REQS = [("smol", "The capital of France is"), ("coder", "def add(a, b):"), ("tiny", [1, 5, 9, 3]),
        ("smol", "Once upon a time"), ("coder", "import os\n"), ("tiny", [2, 7, 7, 1, 4]),
        ("coder-attn", "def add(a, b):"), ("coder-mlp", "class Stack:\n")]
ADAPTERS = {"coder-attn": dict(r=8, alpha=16, targets=("q_proj", "k_proj", "v_proj", "o_proj"), seed=1),
            "coder-mlp": dict(r=4, alpha=8, targets=("gate_proj", "up_proj", "down_proj"), seed=2)}


@pytest.fixture(scope="module")
def adapters(paths, tmp_path_factory):
    """{name: (adapter folder, merged model folder)} on pycoder-tiny"""
    tmp = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, spec in ADAPTERS.items():
        deltas = make_adapter(paths["coder"], tmp / name, **spec)
        make_merged(paths["coder"], deltas, tmp / f"merged-{name}")
        out[name] = (tmp / name, tmp / f"merged-{name}")
    return out


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def run(c, model, prompt, stream):
    """Greedy completion: (text, rounded logprobs of the chosen tokens)."""
    kw = dict(model=model, prompt=prompt, max_tokens=10, temperature=0, logprobs=1)
    if not stream:
        r = c.completions.create(**kw)
        return r.choices[0].text, [round(x, 2) for x in r.choices[0].logprobs.token_logprobs]
    text, lps = "", []
    for ch in c.completions.create(stream=True, **kw):
        for choice in ch.choices:
            text += choice.text or ""
            if choice.logprobs and choice.logprobs.token_logprobs:
                lps += [round(x, 2) for x in choice.logprobs.token_logprobs]
    return text, lps


@pytest.fixture(scope="module")
def reference(pagoda_bin, paths, adapters):
    """What a single-model server answers to each request (an adapter's: the merged model's)."""
    ref = {}
    for name, path in list(paths.items()) + [(k, v[1]) for k, v in adapters.items()]:
        s = Server(pagoda_bin, path, "--served-model-name", name, *KV_ARGS)
        try:
            c = client(s)
            for model, prompt in REQS:
                if model == name:
                    ref[(model, str(prompt))] = run(c, model, prompt, stream=False)
        finally:
            s.stop()
    return ref


def multi_args(paths):
    return sum((["-m", f"{k}={v}"] for k, v in paths.items() if k != "smol"), [])


def test_three_models_sixteen_streams(pagoda_bin, paths, adapters, reference):
    lora_args = sum((["--lora", f"{k}={v[0]}@coder"] for k, v in adapters.items()), [])
    s = Server(pagoda_bin, paths["smol"], "--served-model-name", "smol", *multi_args(paths), *lora_args, *KV_ARGS)
    try:
        c = client(s)
        jobs = [REQS[i % len(REQS)] for i in range(16)]
        with cf.ThreadPoolExecutor(16) as ex:
            outs = list(ex.map(lambda j: run(c, j[0], j[1], stream=True), jobs))
        for (model, prompt), out in zip(jobs, outs):
            assert out[0] == reference[(model, str(prompt))][0], (model, prompt, out)
            assert out[1] == pytest.approx(reference[(model, str(prompt))][1], abs=0.02), (model, prompt)
        ids = {m.id for m in c.models.list().data}
        assert ids == {"smol", "coder", "tiny", "coder-attn", "coder-mlp"}
        # the adapters change what the base says (else the check above could not see one unused)
        assert reference[("coder-attn", "def add(a, b):")][0] != reference[("coder", "def add(a, b):")][0]
        # each request's "model" picked its model: the response names it
        r = c.completions.create(model="coder", prompt="x", max_tokens=1, temperature=0)
        assert r.model == "coder"
        # no model: the default one, by its old name
        st, _, body = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert st == 200 and b'"smol"' in body
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            c.completions.create(model="nope", prompt="x", max_tokens=1)
    finally:
        s.stop()


def test_budget_for_two_evicts_and_reloads(pagoda_bin, paths, adapters, reference):
    need = {k: file_bytes(v) + KV for k, v in paths.items()}
    big = sorted(need.values())
    budget = big[1] + big[2] + (2 << 20)  # any two fit, the three do not
    assert sum(big) > budget
    lora_args = sum((["--lora", f"{k}={v[0]}@coder"] for k, v in adapters.items()), [])
    s = Server(pagoda_bin, paths["smol"], "--served-model-name", "smol", *multi_args(paths), *lora_args, *KV_ARGS,
               "--memory-budget", str(budget))
    try:
        c = client(s)
        jobs = [REQS[i % len(REQS)] for i in range(32)]  # adapters too: they come back with their base
        # 16 at a time: models are busy while others need their memory
        with cf.ThreadPoolExecutor(16) as ex:
            outs = list(ex.map(lambda j: run(c, j[0], j[1], stream=True), jobs))
        for (model, prompt), out in zip(jobs, outs):
            assert out[0] == reference[(model, str(prompt))][0], (model, prompt, out)
        log = s.text()
        evictions = re.findall(r"evicting '(\w+)' \(LRU, [0-9.]+ MiB\) to load '(\w+)'", log)
        assert len(evictions) >= 2, log
        st, _, body = s.get("/models")
        assert st == 200
        detail = {m["id"]: m for m in json.loads(body)["data"] if "parent" not in m}  # models, not adapters
        assert sum(m["evictions"] for m in detail.values()) == len(evictions)
        assert sum(m["loads"] for m in detail.values()) >= 3 + 2
        assert sum(1 for m in detail.values() if m["state"] == "loaded") <= 2
        loaded_bytes = sum(m["weight_bytes"] + m["kv_bytes"] + m["adapter_bytes"] for m in detail.values()
                           if m["state"] == "loaded")
        # the adapters' memory is counted with their base (f32 PEFT files: 4 bytes a parameter)
        assert detail["coder"]["adapter_bytes"] > 0
        assert loaded_bytes <= budget
        m = s.metrics()
        assert any(k.startswith("pagoda:model_evictions_total") for k in m), list(m)[:20]
    finally:
        s.stop()


def test_model_bigger_than_budget_is_a_clear_error(pagoda_bin, paths):
    s = Server(pagoda_bin, paths["tiny"], "--served-model-name", "tiny", "-m", f"smol={paths['smol']}", *KV_ARGS,
               "--memory-budget", "60M")
    try:
        c = client(s)
        with pytest.raises(openai.InternalServerError, match="more than the whole memory budget"):
            c.completions.create(model="smol", prompt="x", max_tokens=1)
        assert c.completions.create(model="tiny", prompt=[1, 2], max_tokens=2, temperature=0).usage.completion_tokens == 2
    finally:
        s.stop()


def test_broken_file_in_models_dir(pagoda_bin, paths, tmp_path, reference):
    d = tmp_path / "models"
    d.mkdir()
    data = paths["tiny"].read_bytes()
    (d / "broken.gguf").write_bytes(data[: len(data) // 3])
    shutil.copy(paths["tiny"], d / "tiny.gguf")
    (d / "notes.txt").write_text("not a model")
    s = Server(pagoda_bin, paths["smol"], "--served-model-name", "smol", "--models-dir", d, *KV_ARGS)
    try:
        c = client(s)
        assert {m.id for m in c.models.list().data} == {"smol", "broken", "tiny"}
        for _ in range(2):  # retried on a later request, failing the same way
            with pytest.raises(openai.InternalServerError, match="model 'broken' failed to load"):
                c.completions.create(model="broken", prompt=[1, 2], max_tokens=2)
        assert run(c, "tiny", [1, 5, 9, 3], stream=False)[0] == reference[("tiny", str([1, 5, 9, 3]))][0]
        assert run(c, "smol", "Once upon a time", stream=True)[0] == reference[("smol", "Once upon a time")][0]
        states = {m.id: m.model_extra["state"] for m in c.models.list().data}
        assert states["broken"] == "failed" and states["tiny"] == "loaded" and states["smol"] == "loaded"
        # a model added to the folder later is found by the rescan of GET /v1/models
        shutil.copy(paths["tiny"], d / "later.gguf")
        assert "later" in {m.id for m in c.models.list().data}
    finally:
        s.stop()


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_load_unload_routes_and_rss(pagoda_bin, paths):
    s = Server(pagoda_bin, paths["tiny"], "--served-model-name", "tiny", "-m", f"smol={paths['smol']}", *KV_ARGS)
    try:
        c = client(s)
        c.completions.create(model="tiny", prompt=[1, 2], max_tokens=2)
        # one load/unload cycle first: the first engine thread's malloc arena and the like (about
        # 1 MiB, once per process) are not the model's memory
        assert s.post("/models/load", {"model": "smol"})[0] == 200
        assert s.post("/models/unload", {"model": "smol"})[0] == 200
        before = rss_bytes(s.proc.pid)
        st, _, body = s.post("/models/load", {"model": "smol"})
        assert st == 200 and b'"success": true' in body.replace(b'":true', b'": true'), body
        assert c.models.retrieve("smol").model_extra["state"] == "loaded"
        c.completions.create(model="smol", prompt="Hello there", max_tokens=4, temperature=0)
        loaded = rss_bytes(s.proc.pid)
        assert loaded > before + file_bytes(paths["smol"]) // 2, (before, loaded)
        st, _, body = s.post("/models/unload", {"model": "smol"})
        assert st == 200, body
        assert c.models.retrieve("smol").model_extra["state"] == "available"
        after = rss_bytes(s.proc.pid)
        assert abs(after - before) <= 0.05 * before, (before, loaded, after)
        # it loads again on demand
        assert c.completions.create(model="smol", prompt="Hello there", max_tokens=2).usage.completion_tokens == 2
        assert s.post("/models/load", {"model": "nope"})[0] == 404
        assert s.post("/models/unload", {"model": "nope"})[0] == 404
        assert s.post("/models/load", {"name": "smol"})[0] == 400
        m = s.metrics()

        def sample(name, **labels):
            vals = [v for lab, v in m[name] if all(lab.get(k) == x for k, x in labels.items())]
            assert len(vals) == 1, (name, labels, m.get(name))
            return vals[0]
        assert sample("pagoda:model_loads_total", model_name="smol") == 3
        assert sample("pagoda:model_evictions_total", model_name="smol") == 0
        assert sample("pagoda:model_state", model_name="smol", state="loaded") == 1
        assert sample("pagoda:model_state", model_name="smol", state="available") == 0
        assert sample("pagoda:model_weight_bytes", model_name="smol") > 0
        assert sample("pagoda:model_kv_bytes", model_name="smol") > 0
        assert sample("pagoda:model_load_seconds", model_name="smol") > 0
        assert m["#TYPE"]["pagoda:model_loads_total"] == "counter"
    finally:
        s.stop()


def test_keep_alive_unloads_idle_models(pagoda_bin, paths):
    s = Server(pagoda_bin, paths["tiny"], "--served-model-name", "tiny", "-m", f"coder={paths['coder']}", *KV_ARGS,
               "--keep-alive", "1")
    try:
        c = client(s)
        c.completions.create(model="coder", prompt="x", max_tokens=1)
        st, _, body = s.get("/models")
        coder = {m["id"]: m for m in json.loads(body)["data"]}["coder"]
        assert coder["state"] == "loaded" and coder["expires_at"], coder
        deadline = time.time() + 30
        while time.time() < deadline and c.models.retrieve("coder").model_extra["state"] != "available":
            time.sleep(0.1)
        assert c.models.retrieve("coder").model_extra["state"] == "available", s.text()
        assert "unloading 'coder' (idle" in s.text()
        assert c.completions.create(model="coder", prompt="x", max_tokens=1).usage.completion_tokens == 1
    finally:
        s.stop()


def test_models_config_yaml(pagoda_bin, paths, tmp_path, run_pagoda):
    cfg = tmp_path / "models.yaml"
    cfg.write_text(f"""models:
  - name: coder
    path: {paths['coder']}
    aliases: [py, gpt-4o-mini]
    n_ctx: 256
    kv_mem: 8M
    pinned: true
  - name: tiny
    path: {paths['tiny']}
    keep_alive: 600
""")
    s = Server(pagoda_bin, paths["smol"], "--served-model-name", "smol", "--models-config", cfg, *KV_ARGS)
    try:
        c = client(s)
        assert {m.id for m in c.models.list().data} == {"smol", "coder", "tiny"}
        r = c.completions.create(model="gpt-4o-mini", prompt="def f(", max_tokens=2)
        assert r.model == "coder"
        st, _, body = s.get("/models")
        coder = {m["id"]: m for m in json.loads(body)["data"]}["coder"]
        assert coder["pinned"] and coder["max_model_len"] == 256 and 0 < coder["kv_bytes"] <= 8 << 20, coder
        assert s.post("/models/unload", {"model": "py"})[0] == 409  # pinned
    finally:
        s.stop()
    for text, msg in [("models:\n  - name: x\n    path: a.gguf\n    colour: red\n", "line 4: unknown key 'colour'"),
                      ("models:\n  - name: x\n", "needs a 'path'"),
                      ("models: [a, {b\n", "line ")]:
        cfg.write_text(text)
        r = run_pagoda("serve", "--models-config", cfg, "--port", "0", check=False, timeout=60)
        assert r.returncode != 0 and msg in r.stderr, r.stderr


def test_load_wait_timeout_is_503_with_retry_after(pagoda_bin, paths):
    # a 1 ms wait: loading takes longer than that (a thread, the file, the engine), and a wait past its
    # deadline is answered 503 even if the model came in the meantime (a fast machine once loaded it
    # within the wait thread's 20 ms poll, and the request got 200)
    s = Server(pagoda_bin, paths["tiny"], "--served-model-name", "tiny", "-m", f"smol={paths['smol']}", *KV_ARGS,
               "--model-load-timeout", "0.001")
    try:
        st, h, body = s.post("/v1/completions", {"model": "smol", "prompt": "Hi", "max_tokens": 1})
        assert st == 503 and h["Retry-After"] and b"model 'smol' is loading" in body, (st, body)
        deadline = time.time() + 60
        while st != 200 and time.time() < deadline:  # the load went on: the model comes
            time.sleep(0.05)
            st, h, body = s.post("/v1/completions", {"model": "smol", "prompt": "Hi", "max_tokens": 1})
        assert st == 200, body
    finally:
        s.stop()

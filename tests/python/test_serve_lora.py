"""LoRA adapters served by name (`pagoda serve --lora NAME=PATH`), checked through the official
`openai` client against an independent reference: the same base with the adapter MERGED into its
weights by NumPy (lora_synth.py), served as a plain model by the same process. Requests for the
adapters, for the merged models and for the base run concurrently, so adapter rows and base rows
share batches."""
import concurrent.futures as cf
import json
import threading
import time

import pytest

from lora_synth import make_adapter, make_merged
from serve_harness import Server

openai = pytest.importorskip("openai")

PROMPTS = ["def add(a, b):", "import os\n\ndef list_files(path):", "class Stack:\n    def __init__(self):"]


@pytest.fixture(scope="module")
def server(shared, pagoda_bin, tmp_path_factory):
    base = shared / "models" / "pycoder-tiny"
    if not base.exists():
        pytest.skip(f"{base} not found")
    tmp = tmp_path_factory.mktemp("lora")
    specs = {"attn": dict(r=8, alpha=16, targets=("q_proj", "k_proj", "v_proj", "o_proj"), seed=1),
             "mlp": dict(r=4, alpha=8, targets=("gate_proj", "up_proj", "down_proj"), seed=2, use_rslora=True)}
    args = []
    for name, spec in specs.items():
        deltas = make_adapter(base, tmp / name, **spec)
        make_merged(base, deltas, tmp / f"merged-{name}")
        args += ["--lora", f"{name}={tmp / name}", "-m", f"merged-{name}={tmp / f'merged-{name}'}"]
    args += ["--lora", f"broken={tmp / 'missing-adapter'}", "--enable-runtime-lora"]
    s = Server(pagoda_bin, base, *args, "--kv-mem", "32M", "--threads", "2")
    s.adapter_dir = tmp
    yield s
    s.close()


def complete(client, model, prompt):
    r = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0)
    return r.model, r.choices[0].text


def test_adapters_equal_merged_weights(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    jobs = [(m, p) for p in PROMPTS for m in ("attn", "mlp", "merged-attn", "merged-mlp", server.model_name)]
    with cf.ThreadPoolExecutor(8) as ex:
        out = dict(zip(jobs, ex.map(lambda j: complete(client, *j), jobs)))
    differs = 0
    for p in PROMPTS:
        for name in ("attn", "mlp"):
            model, text = out[(name, p)]
            assert model == name
            assert text == out[(f"merged-{name}", p)][1], (name, p)
            differs += text != out[(server.model_name, p)][1]
    assert differs >= 3, "the adapters barely change the output: the test would not see one not applied"


def test_broken_adapter_is_a_clear_error_and_others_serve(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    with pytest.raises(openai.APIStatusError) as e:
        complete(client, "broken", "x")
    assert "adapter 'broken' failed to load" in str(e.value)
    assert complete(client, "attn", PROMPTS[0])[0] == "attn"
    assert "adapter 'broken'" in server.text() and "adapter 'attn' loaded" in server.text()


def test_models_lists_adapters_with_their_base(server):
    status, _, body = server.get("/v1/models")
    assert status == 200
    by_id = {m["id"]: m for m in json.loads(body)["data"]}
    for name in ("attn", "mlp", "broken"):
        assert by_id[name]["parent"] == server.model_name, by_id[name]
        assert by_id[name]["root"].endswith(name if name != "broken" else "missing-adapter")
    assert by_id["broken"]["state"] == "failed" and "error" in by_id["broken"]
    status, _, body = server.get("/v1/models/mlp")
    assert status == 200 and json.loads(body)["parent"] == server.model_name
    assert server.get("/v1/models/no-such-adapter")[0] == 404


def lora(server, route, **body):
    status, _, out = server.post(f"/v1/{route}_lora_adapter", body, timeout=120)
    return status, out.decode()


def test_runtime_load_and_unload(server):
    """vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter: an adapter loaded while serving
    gives the merged model's tokens; unloaded, its name is gone; errors are clear 4xx."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    path = str(server.adapter_dir / "attn")
    status, text = lora(server, "load", lora_name="attn-live", lora_path=path)
    assert (status, text) == (200, "Success: LoRA adapter 'attn-live' added successfully.")
    want = complete(client, "merged-attn", PROMPTS[1])[1]
    assert complete(client, "attn-live", PROMPTS[1]) == ("attn-live", want)
    assert any(m["id"] == "attn-live" for m in json.loads(server.get("/v1/models")[2])["data"])
    # the same name again: 400 (load_inplace replaces it)
    status, text = lora(server, "load", lora_name="attn-live", lora_path=path)
    assert status == 400 and "taken" in text
    status, text = lora(server, "load", lora_name="attn-live", lora_path=str(server.adapter_dir / "mlp"), load_inplace=True)
    assert status == 200
    assert complete(client, "attn-live", PROMPTS[1])[1] == complete(client, "merged-mlp", PROMPTS[1])[1]
    # a bad path, a model name, an unknown base, bad bodies: clear 4xx, nothing added
    status, text = lora(server, "load", lora_name="nope", lora_path=str(server.adapter_dir / "missing"))
    assert status == 400 and "nope" in text
    assert lora(server, "load", lora_name="merged-attn", lora_path=path)[0] == 400
    assert lora(server, "load", lora_name="x", lora_path=path, base_model_name="no-such-base")[0] == 404
    assert lora(server, "load", lora_name="x")[0] == 400
    assert lora(server, "load", lora_name=7, lora_path=path)[0] == 400
    assert server.post("/v1/load_lora_adapter", b"{not json")[0] == 400
    assert all(m["id"] not in ("nope", "x") for m in json.loads(server.get("/v1/models")[2])["data"])
    # unload: the name is gone, a second unload is 404
    status, text = lora(server, "unload", lora_name="attn-live")
    assert (status, text) == (200, "Success: LoRA adapter 'attn-live' removed successfully.")
    with pytest.raises(openai.NotFoundError):
        complete(client, "attn-live", "x")
    assert lora(server, "unload", lora_name="attn-live")[0] == 404
    # loaded again under the same name, on the base named explicitly
    assert lora(server, "load", lora_name="attn-live", lora_path=path, base_model_name=server.model_name)[0] == 200
    assert complete(client, "attn-live", PROMPTS[1])[1] == want
    assert lora(server, "unload", lora_name="attn-live")[0] == 200


def test_unload_while_streaming_ends_the_stream(server):
    """A request using an adapter that is unloaded ends (with an error), never hangs; the server
    keeps serving the others."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    assert lora(server, "load", lora_name="doomed", lora_path=str(server.adapter_dir / "mlp"))[0] == 200
    got, done = [], threading.Event()

    def consume():
        try:
            stream = client.completions.create(model="doomed", prompt=PROMPTS[0], max_tokens=1000, temperature=1.0,
                                               stream=True, extra_body={"ignore_eos": True})
            for chunk in stream:
                got.append(chunk)
                if len(got) == 4:
                    done.set()
        except openai.APIError as e:
            got.append(e)
        finally:
            done.set()

    t = threading.Thread(target=consume)
    t.start()
    assert done.wait(120)
    t0 = time.time()
    assert lora(server, "unload", lora_name="doomed")[0] == 200
    t.join(60)
    assert not t.is_alive(), "the stream did not end after its adapter was unloaded"
    assert time.time() - t0 < 60
    # the stream ends with the engine's error event, long before its 1,000 tokens
    assert isinstance(got[-1], openai.APIError) and "was unloaded" in str(got[-1]), got[-1]
    assert len(got) < 1000
    assert complete(client, "mlp", PROMPTS[0])[0] == "mlp"


def test_runtime_routes_off_by_default(shared, pagoda_bin):
    base = shared / "models" / "pycoder-tiny"
    if not base.exists():
        pytest.skip(f"{base} not found")
    s = Server(pagoda_bin, base, "--kv-mem", "16M", "--threads", "1")
    try:
        status, _, body = s.post("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/tmp"})
        assert status == 404 and b"--enable-runtime-lora" in body
    finally:
        s.close()

"""`pagoda serve` under tensor parallelism over MPI CPU ranks: `mpirun -np 2 pagoda serve MODEL
--tensor-parallel-size 2` (rank 0 serves HTTP and runs the engine, rank 1 runs its share of every
step) must answer like one process: the same greedy text for completions and chat, streamed and not,
alone and concurrent; the same seeded samples; logprobs and embeddings within float noise; /health,
/health_generate, /v1/models, /metrics and the router endpoints; the same 4xx errors. Configurations
that would put a second engine on the group (several models, LoRA) are refused at
start-up, unloading the one model is refused, shutdown ends every rank in bounded time, a rank that
dies ends the job, one that hangs shows as /health_generate 503, and an idle rank 1 does not spin.

The built-in model (SmolLM2-135M: 9 heads, 3 KV heads) does not split two ways (tensor parallelism
needs the heads divisible by the ranks; test_tensor_parallel.py checks that refusal), so these tests
serve ../shared/models/pycoder-tiny (Llama: 4 heads, 2 KV heads, FFN 704, a tokenizer and a ChatML
chat template)."""
import concurrent.futures
import json
import os
import signal
import subprocess
import time

import pytest

from serve_harness import Server, metric, mpi_launcher, mpi_missing, pid_alive

openai = pytest.importorskip("openai")

NAME = "pycoder-tiny"
PROMPTS = ["def fibonacci(n):\n", "import os\n\ndef main():\n", "class Stack:\n    def __init__(self):\n",
           "# sort a list\n"]
CHAT = [{"role": "user", "content": "Write a function that adds two numbers."}]
# -t 1: each rank one kernel thread (the machine's cores are shared by both ranks and the TP=1 server)
COMMON = ("--kv-mem", "64M", "-t", "1", "--max-seqs", "8")


@pytest.fixture(scope="module")
def model(shared):
    p = shared / "models" / "pycoder-tiny"
    if not (p / "config.json").exists():
        pytest.skip(f"{p} not found")
    return p


@pytest.fixture(scope="module")
def mpi(pagoda_bin):
    why = mpi_missing(pagoda_bin)
    if why:
        pytest.skip(f"{why}: tensor-parallel serve untested")
    return pagoda_bin


def start_tp(pagoda_bin, model, *args):
    return Server(pagoda_bin, model, *COMMON, "--tensor-parallel-size", 2, *args, positional=True,
                  launcher=mpi_launcher(2), n_ranks=2)


@pytest.fixture(scope="module")
def tp(mpi, model):
    s = start_tp(mpi, model)
    try:
        yield s
        assert s.stop() == 0, s.text()  # SIGTERM to rank 0: it drains, its engine stops rank 1, mpirun exits 0
        assert not any(pid_alive(p) for p in s.ranks.values())
    finally:
        s.kill()
        s.close()


@pytest.fixture(scope="module")
def one(pagoda_bin, model):
    s = Server(pagoda_bin, model, *COMMON, positional=True)
    try:
        yield s
        assert s.stop() == 0, s.text()
    finally:
        s.close()


def client(s):
    return openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def c_tp(tp):
    return client(tp)


@pytest.fixture(scope="module")
def c_one(one):
    return client(one)


def test_started_as_tensor_parallel(tp, one):
    assert "tensor parallel over 2 processes" in tp.text()
    assert "tensor parallel" not in one.text()
    st, _, body = tp.get("/get_server_info")
    info = json.loads(body)
    assert st == 200 and info["tp_size"] == 2 and info["served_model_name"] == NAME
    assert json.loads(one.get("/get_server_info")[2])["tp_size"] == 1


def test_completions_greedy_equal(c_tp, c_one):
    for p in PROMPTS:
        kw = dict(model=NAME, prompt=p, max_tokens=32, temperature=0)
        a, b = c_tp.completions.create(**kw), c_one.completions.create(**kw)
        assert a.choices[0].text == b.choices[0].text and a.choices[0].text
        assert a.usage.completion_tokens == b.usage.completion_tokens == 32
        assert a.usage.prompt_tokens == b.usage.prompt_tokens


def test_completions_stream_equal(c_tp, c_one):
    kw = dict(model=NAME, prompt=PROMPTS[0], max_tokens=32, temperature=0)
    ref = c_one.completions.create(**kw).choices[0].text
    text = "".join(c.choices[0].text for c in c_tp.completions.create(**kw, stream=True) if c.choices)
    assert text == ref


def test_chat_equal(c_tp, c_one):
    kw = dict(model=NAME, messages=CHAT, max_tokens=24, temperature=0)
    a, b = c_tp.chat.completions.create(**kw), c_one.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content and a.choices[0].message.content
    assert a.choices[0].finish_reason == b.choices[0].finish_reason
    s = "".join(c.choices[0].delta.content or "" for c in c_tp.chat.completions.create(**kw, stream=True)
                if c.choices)
    assert s == b.choices[0].message.content


def test_concurrent_equal(c_tp, c_one):
    """several requests batched in the same steps on the TP server: each equals its TP=1 answer"""
    jobs = [(p, n) for p in PROMPTS for n in (12, 20)]
    ref = {j: c_one.completions.create(model=NAME, prompt=j[0], max_tokens=j[1], temperature=0).choices[0].text
           for j in jobs}

    def ask(j):
        if j[1] == 20:  # half of them streamed
            return "".join(c.choices[0].text for c in c_tp.completions.create(
                model=NAME, prompt=j[0], max_tokens=j[1], temperature=0, stream=True) if c.choices)
        return c_tp.completions.create(model=NAME, prompt=j[0], max_tokens=j[1], temperature=0).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        got = dict(zip(jobs, ex.map(ask, jobs)))
    assert got == ref


def test_seeded_sampling_and_n_equal(c_tp, c_one):
    kw = dict(model=NAME, prompt=PROMPTS[1], max_tokens=16, temperature=0.9, top_p=0.95, n=3, seed=42)
    a, b = c_tp.completions.create(**kw), c_one.completions.create(**kw)
    ta = sorted((c.index, c.text) for c in a.choices)
    tb = sorted((c.index, c.text) for c in b.choices)
    assert [i for i, _ in ta] == [0, 1, 2]
    assert ta == tb
    assert len({t for _, t in ta}) > 1  # really sampled: the choices differ
    # and the TP server is reproducible by itself
    assert sorted((c.index, c.text) for c in c_tp.completions.create(**kw).choices) == ta


def test_logprobs_close(c_tp, c_one):
    kw = dict(model=NAME, prompt=PROMPTS[2], max_tokens=8, temperature=0, logprobs=3)
    a, b = c_tp.completions.create(**kw).choices[0].logprobs, c_one.completions.create(**kw).choices[0].logprobs
    assert a.tokens == b.tokens
    assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-3
    for ta, tb in zip(a.top_logprobs, b.top_logprobs):
        assert set(ta) == set(tb)


def test_embeddings_close(c_tp, c_one):
    a = c_tp.embeddings.create(model=NAME, input=["def add(a, b):", "hello"]).data
    b = c_one.embeddings.create(model=NAME, input=["def add(a, b):", "hello"]).data
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert len(x.embedding) == len(y.embedding) == 256
        assert max(abs(p - q) for p, q in zip(x.embedding, y.embedding)) < 1e-4


def test_other_apis_equal(tp, one):
    """Anthropic's /v1/messages and OpenAI's /v1/responses go through the same engine"""
    body = {"model": NAME, "max_tokens": 16, "temperature": 0, "messages": CHAT}
    ra, rb = tp.post("/v1/messages", body), one.post("/v1/messages", body)
    assert ra[0] == rb[0] == 200
    assert json.loads(ra[2])["content"] == json.loads(rb[2])["content"]
    body = {"model": NAME, "max_output_tokens": 16, "temperature": 0, "input": "Write a loop."}
    ra, rb = tp.post("/v1/responses", body), one.post("/v1/responses", body)
    assert ra[0] == rb[0] == 200
    assert json.loads(ra[2])["output"][0]["content"] == json.loads(rb[2])["output"][0]["content"]


def test_health_models_metrics(tp, c_tp):
    assert tp.get("/health")[0] == 200
    st, _, body = tp.get("/health_generate")
    assert st == 200, body
    assert json.loads(body)["status"] == "ok"
    assert [m.id for m in c_tp.models.list().data] == [NAME]
    m = tp.metrics()
    assert metric(m, "pagoda:generation_tokens_total") > 0
    assert metric(m, "vllm:num_requests_running") == 0
    assert 0 <= metric(m, "pagoda:kv_cache_usage_perc") <= 1


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_idle_worker_sleeps(tp):
    """an idle server's rank 1 waits for the next step without keeping a core busy (it naps between
    polls): far less than a core over 2 s; a blocking MPI_Bcast would take nearly 2 s of CPU"""
    time.sleep(0.3)  # past the polling window of the last step
    before = cpu_seconds(tp.ranks[1])
    time.sleep(2)
    assert cpu_seconds(tp.ranks[1]) - before < 0.5
    assert tp.get("/health_generate")[0] == 200  # and it still wakes up for a step


def test_errors_still_4xx(tp):
    st, _, body = tp.post("/v1/completions", b"{not json")
    assert st == 400, body
    st, _, body = tp.post("/v1/completions", {"model": "no-such-model", "prompt": "x", "max_tokens": 2})
    assert st == 404 and "no-such-model" in json.loads(body)["error"]["message"]
    st, _, body = tp.post("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 2, "temperature": -1})
    assert st == 400
    # the one model is pinned: unloading it would stop the group, so it is refused
    st, _, body = tp.post("/models/unload", {"model": NAME})
    assert st == 409 and "pinned" in json.loads(body)["error"]["message"]
    st, _, _ = tp.post("/models/load", {"model": "no-such-model"})
    assert st == 404
    # still serving after all that
    st, _, body = tp.post("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 2, "temperature": 0})
    assert st == 200


@pytest.mark.parametrize("args,why", [
    (["--models-dir", "/tmp"], "--models-dir serves several models"),
    (["--lora", "a=/nonexistent"], "LoRA adapters are not supported"),
    (["--enable-runtime-lora"], "LoRA adapters are not supported"),
    (["-m", "other=/nonexistent"], "-m NAME=PATH serves a second model"),
])
def test_refused_at_start(mpi, model, args, why):
    """refused on every rank before MPI starts (no engine is made): one process shows it"""
    r = subprocess.run([mpi, "serve", str(model), "--tensor-parallel-size", "2", *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and why in r.stderr, r.stderr


def test_threads_without_mpirun(pagoda_bin, model, c_one):
    """without mpirun a TP=2 server's ranks are threads of its process: the same greedy text, and
    SIGTERM stops every rank"""
    s = Server(pagoda_bin, model, *COMMON, "--tensor-parallel-size", 2, positional=True)
    try:
        assert "2 ranks as threads of this process" in s.text()
        c = client(s)
        for p in PROMPTS[:2]:
            kw = dict(model=NAME, prompt=p, max_tokens=24, temperature=0)
            assert c.completions.create(**kw).choices[0].text == c_one.completions.create(**kw).choices[0].text
        s.stop()
        assert s.proc.returncode == 0 and "pagoda: stopped" in s.text()
    finally:
        s.close()


def test_refused_with_too_few_ranks(mpi, model):
    r = subprocess.run([*mpi_launcher(2), mpi, "serve", str(model), "--tensor-parallel-size", "4", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "this MPI job has 2 processes" in r.stderr, r.stderr


def test_sigterm_drains_then_all_ranks_exit(mpi, model):
    """SIGTERM to rank 0 while a request streams: the request finishes (drain), then every rank exits
    and mpirun exits 0"""
    s = start_tp(mpi, model, "--grace", 30)
    try:
        c = client(s)
        stream = c.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=400, temperature=0, stream=True,
                                      extra_body={"ignore_eos": True})
        first = next(iter(stream))
        os.kill(s.ranks[0], signal.SIGTERM)
        n = 1 + sum(1 for ch in stream if ch.choices and ch.choices[0].text)
        assert n > 100  # far past the signal: it was drained, not cut
        t0 = time.time()
        s.proc.wait(timeout=30)
        assert s.proc.returncode == 0, s.text()
        assert time.time() - t0 < 30 and not any(pid_alive(p) for p in s.ranks.values())
        assert first.choices and "draining 1 request" in s.text()
    finally:
        s.kill()
        s.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_mpirun_ends_job(mpi, model, sig):
    """mpirun passes SIGTERM (also on SIGINT) on to the ranks and kills what is left after its own
    short grace: the whole job ends within seconds"""
    s = start_tp(mpi, model)
    try:
        assert s.get("/health")[0] == 200
        t0 = time.time()
        s.proc.send_signal(sig)
        s.proc.wait(timeout=30)
        assert time.time() - t0 < 20
        deadline = time.time() + 10
        while any(pid_alive(p) for p in s.ranks.values()) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in s.ranks.values())
    finally:
        s.kill()
        s.close()


def test_worker_death_ends_job(mpi, model):
    """a rank that dies (SIGKILL) does not leave rank 0 serving requests it cannot compute: mpirun
    ends the job, rank 0 included, within seconds"""
    s = start_tp(mpi, model)
    try:
        assert s.get("/health_generate")[0] == 200
        os.kill(s.ranks[1], signal.SIGKILL)
        s.proc.wait(timeout=30)
        assert s.proc.returncode != 0
        deadline = time.time() + 10
        while pid_alive(s.ranks[0]) and time.time() < deadline:
            time.sleep(0.1)
        assert not pid_alive(s.ranks[0])
    finally:
        s.kill()
        s.close()


def test_health_generate_sees_a_stuck_rank(mpi, model):
    """rank 1 stopped (SIGSTOP): /health still says ok, but /health_generate answers 503 within its
    timeout, since no step can finish; once rank 1 runs again, so does generation"""
    s = start_tp(mpi, model, "--health-generate-timeout", 1)
    try:
        assert s.get("/health_generate")[0] == 200
        os.kill(s.ranks[1], signal.SIGSTOP)
        try:
            t0 = time.time()
            st, _, body = s.get("/health_generate")
            dt = time.time() - t0
            assert st == 503 and json.loads(body)["error"]["code"] == "timeout", body
            assert 0.9 <= dt < 10
            assert s.get("/health")[0] == 200
        finally:
            os.kill(s.ranks[1], signal.SIGCONT)
        st, _, body = s.get("/health_generate")
        assert st == 200, body
        assert s.stop() == 0, s.text()
    finally:
        s.kill()
        s.close()


def test_sigterm_with_a_stuck_rank_ends_job(mpi, model):
    """SIGTERM to rank 0 while rank 1 hangs mid-request: the drain cannot finish the request (its step
    waits for rank 1), so after the drain and the cancel wait (about 30 s) rank 0 ends the whole MPI
    job instead of waiting for the engine forever"""
    s = start_tp(mpi, model, "--grace", 1)
    try:
        c = client(s)
        stream = c.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=1000, temperature=0, stream=True,
                                      extra_body={"ignore_eos": True})
        next(iter(stream))
        os.kill(s.ranks[1], signal.SIGSTOP)
        os.kill(s.ranks[0], signal.SIGTERM)
        s.proc.wait(timeout=90)
        assert s.proc.returncode != 0
        assert "the engine is stuck (a tensor-parallel rank does not answer): ending the MPI job" in s.text()
        deadline = time.time() + 10
        while any(pid_alive(p) for p in s.ranks.values()) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in s.ranks.values())
        stream.close()
    finally:
        for p in s.ranks.values():
            if pid_alive(p):
                os.kill(p, signal.SIGCONT)
        s.kill()
        s.close()


@pytest.mark.parametrize("tp_n,pp_n", [(1, 2), (2, 2)])
def test_pipeline_parallel_serve_equal(mpi, model, one, c_one, tp_n, pp_n):
    """`mpirun -np TP*PP pagoda serve --pipeline-parallel-size PP [--tensor-parallel-size TP]`: the
    layers in PP stages (each of TP ranks), stage to stage by MPI point to point; greedy text equal
    to one process, streamed, concurrent and chat; shutdown ends every rank"""
    n = tp_n * pp_n
    s = Server(mpi, model, *COMMON, "--tensor-parallel-size", tp_n, "--pipeline-parallel-size", pp_n,
               "--pp-micro-batches", 2, positional=True, launcher=mpi_launcher(n), n_ranks=n)
    try:
        assert f"{pp_n} pipeline stages over {n} processes" in s.text()
        c = client(s)
        jobs = [(p, m) for p in PROMPTS for m in (10, 18)]
        ref = {j: c_one.completions.create(model=NAME, prompt=j[0], max_tokens=j[1], temperature=0).choices[0].text
               for j in jobs}

        def ask(j):
            return c.completions.create(model=NAME, prompt=j[0], max_tokens=j[1], temperature=0).choices[0].text

        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
            got = dict(zip(jobs, ex.map(ask, jobs)))
        assert got == ref
        kw = dict(model=NAME, prompt=PROMPTS[0], max_tokens=16, temperature=0)
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(**kw, stream=True) if ch.choices)
        assert streamed == c_one.completions.create(**kw).choices[0].text
        kw = dict(model=NAME, messages=CHAT, max_tokens=16, temperature=0)
        assert (c.chat.completions.create(**kw).choices[0].message.content ==
                c_one.chat.completions.create(**kw).choices[0].message.content)
        assert s.stop() == 0, s.text()
        assert not any(pid_alive(p) for p in s.ranks.values())
    finally:
        s.kill()
        s.close()


def test_speculation_under_tensor_parallel(mpi, model, c_one):
    """--speculative ngram on a TP=2 server: drafts verified (counted in /metrics), greedy text equal to
    one process without speculation"""
    s = Server(mpi, model, *COMMON, "--tensor-parallel-size", 2, "--speculative", "ngram", positional=True,
               launcher=mpi_launcher(2), n_ranks=2)
    try:
        c = client(s)
        prompt = "def f(x):\n    return x + 1\n\ndef f(x):\n"
        kw = dict(model=NAME, prompt=prompt, max_tokens=32, temperature=0)
        assert c.completions.create(**kw).choices[0].text == c_one.completions.create(**kw).choices[0].text
        assert metric(s.metrics(), "pagoda:spec_decode_num_drafts_total") > 0
        assert s.stop() == 0, s.text()
    finally:
        s.kill()
        s.close()


def test_mpi_serve_wrapper_drains_on_sigterm(mpi, builtin_model, tmp_path):
    """deploy/pagoda-mpi-serve, the main process of a tensor-parallel container: a SIGTERM to it
    (what docker stop and Kubernetes send) drains the in-flight request and ends every rank, where a
    SIGTERM to mpirun itself kills the job about a second later. The built-in model over 3 ranks (9
    heads): its 200 tokens take seconds, so the request is surely still running at the signal"""
    model = builtin_model
    import pathlib
    import re
    import requests
    wrapper = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "pagoda-mpi-serve"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pagoda").symlink_to(mpi)  # the wrapper runs `pagoda` from PATH, as in the images
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    log = open(tmp_path / "serve.log", "w")
    # --port 0 and the address from the log: a port picked beforehand can be taken by mpirun's own
    # TCP sockets before the server binds it
    proc = subprocess.Popen([str(wrapper), "3", "-m", str(model), "--port", "0", "-t", "1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = None
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            m = re.search(r"serving '[^']*' at (http://\S+?)/ ", (tmp_path / "serve.log").read_text())
            if m:
                url = m.group(1)
                break
            time.sleep(0.1)
        assert url, "not up:\n" + (tmp_path / "serve.log").read_text()
        assert requests.get(url + "/health", timeout=10).status_code == 200
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(requests.post, url + "/v1/completions", timeout=120,
                            json={"prompt": PROMPTS[0], "max_tokens": 200, "ignore_eos": True})
            from serve_harness import parse_prometheus
            while time.time() < deadline + 60:  # until the request runs
                m = parse_prometheus(requests.get(url + "/metrics", timeout=5).text)
                if metric(m, "pagoda:num_requests_running") > 0:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            r = fut.result()
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 200
        assert proc.wait(timeout=60) == 0
        text = (tmp_path / "serve.log").read_text()
        assert "draining 1 request" in text and "stopped" in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_comm_stats_in_metrics(mpi, model):
    """--comm-stats: rank 0's MPI traffic in /metrics (it grows with each step), every rank's printed
    at exit"""
    s = start_tp(mpi, model, "--comm-stats")
    try:
        before = s.metrics()
        r = s.post("/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 8, "ignore_eos": True})
        assert r[0] == 200
        after = s.metrics()
        for what in ("all_reduce", "broadcast"):
            calls = metric(after, f"pagoda:tp_{what}_calls_total")
            assert calls > metric(before, f"pagoda:tp_{what}_calls_total"), what
            assert metric(after, f"pagoda:tp_{what}_bytes_total") > 0
            assert metric(after, f"pagoda:tp_{what}_seconds_total") >= 0
        # 2 all-reduces per layer per step: 8 tokens take at least 8 steps of pycoder-tiny's layers
        n_layer = json.loads((model / "config.json").read_text())["num_hidden_layers"]
        assert metric(after, "pagoda:tp_all_reduce_calls_total") - metric(before, "pagoda:tp_all_reduce_calls_total") \
            >= 2 * n_layer * 8
        s.stop()
        assert len([l for l in s.text().splitlines() if l.startswith("pagoda: comm-stats rank=")]) == 2, s.text()
    finally:
        s.close()

"""Tensor parallelism across processes on the CPU (MPI): `mpirun -np 2 pagoda ... --tensor-parallel-size 2`
splits each layer Megatron style (heads and FFN slices per rank, all-reduce after the output and down
projections) and must give the single-process results: logits within float summation-order noise and
the same greedy tokens. Models the group cannot split are refused with a clear error."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from serve_harness import mpi_missing
from safetensors.numpy import load_file, save_file

MPIRUN = shutil.which("mpirun")
TIMEOUT = 60


@pytest.fixture(scope="module")
def mpi(pagoda_bin):
    why = mpi_missing(pagoda_bin)
    if why:
        pytest.skip(f"{why}: MPI tensor parallelism untested")
    return pagoda_bin


def mpirun(pagoda_bin, *args, n=2, check=True):
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(n), pagoda_bin, *map(str, args),
           "-t", "1", "--tensor-parallel-size", str(n)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r


def both_logits(mpi, run_pagoda, model, ids, tmp_path):
    run_pagoda("logits", "-m", model, "-i", ids, "-o", tmp_path / "one.safetensors", "-t", 1)
    mpirun(mpi, "logits", "-m", model, "-i", ids, "-o", tmp_path / "tp.safetensors")
    return (load_file(str(tmp_path / "one.safetensors"))["logits"],
            load_file(str(tmp_path / "tp.safetensors"))["logits"])


@pytest.fixture(scope="module")
def synth(mpi, tmp_path_factory):
    """tiny-llama (4 heads, 2 KV heads, n_ff 768: splits 2 ways) in a few weight types"""
    d = tmp_path_factory.mktemp("tp_synth")
    out = {}
    for ty in ("q8_0", "f16", "f32", "q4_k"):
        p = d / f"{ty}.gguf"
        subprocess.run([mpi, "synth", "--shape", "tiny-llama", "--type", ty, "--output", str(p)], check=True,
                       capture_output=True, timeout=TIMEOUT)
        out[ty] = p
    rng = np.random.default_rng(0)
    save_file({"input_ids": rng.integers(0, 1024, (2, 20)).astype(np.int32)}, str(d / "ids.safetensors"))
    out["ids"] = d / "ids.safetensors"
    return out


# llama: 4 heads, 2 KV heads, n_ff 128, F32; qwen2: Q/K/V biases (split with their rows); qwen3: q/k
# norms; starcoder2: LayerNorm, GELU MLP, output and down biases (added once, after the all-reduce)
# gpt_bigcode: multi-query attention in a fused Q|K|V weight with its bias (each rank copies its
# query rows and the one K and V head)
@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "starcoder2", "gpt_bigcode"])
def test_logits_hf(mpi, shared, run_pagoda, tmp_path, name):
    fx = shared / "fixtures" / "hf" / name
    g = load_file(str(fx / "golden.safetensors"))
    save_file({"input_ids": g["input_ids"]}, str(tmp_path / "ids.safetensors"))
    one, tp = both_logits(mpi, run_pagoda, fx, tmp_path / "ids.safetensors", tmp_path)
    assert tp.shape == g["logits"].shape
    assert np.abs(tp - one).max() <= 1e-4
    assert np.abs(tp - g["logits"]).max() <= 1e-4


def test_run_greedy_hf_llama(mpi, shared, run_pagoda):
    fx = shared / "fixtures" / "hf" / "llama"
    g = load_file(str(fx / "golden.safetensors"))
    prompt = ",".join(str(int(x)) for x in g["greedy_prompt"][0])
    n = g["greedy_output"].shape[1]
    args = ["run", "-m", fx, "--prompt-ids", prompt, "-n", n, "--ignore-eos"]
    one = run_pagoda(*args, "-t", 1).stdout.split()
    tp = mpirun(mpi, *args).stdout.split()
    assert tp == one
    assert [int(x) for x in tp] == [int(x) for x in g["greedy_output"][0]]


# F16 products read their activations as halves: a summation-order difference of 1e-7 can flip a
# half's rounding downstream, so F16 matches to the F16 path's own noise (about 1e-3 against F32)
@pytest.mark.parametrize("ty,tol", [("q8_0", 1e-4), ("f32", 1e-4), ("f16", 2e-3)])
def test_logits_gguf_synth(mpi, synth, run_pagoda, tmp_path, ty, tol):
    one, tp = both_logits(mpi, run_pagoda, synth[ty], synth["ids"], tmp_path)
    assert tp.shape == one.shape
    assert np.abs(tp - one).max() <= tol


def test_run_greedy_gguf_synth(mpi, synth, run_pagoda):
    args = ["run", "-m", synth["q8_0"], "--prompt-ids", "5,17,300,2,99", "-n", 24, "--ignore-eos"]
    one = run_pagoda(*args, "-t", 1).stdout.split()
    tp = mpirun(mpi, *args).stdout.split()
    assert len(one) == 24 and tp == one


def test_run_speculation_greedy_identical(mpi, shared, run_pagoda):
    """n-gram speculation under tensor parallelism: drafts verified in the split pass (their logits
    columns gathered from the ranks), greedy tokens equal to one process without speculation"""
    args = ["run", "-m", shared / "fixtures" / "hf" / "llama", "--prompt-ids", "5,6,7,8,5,6,7,8,5,6,7", "-n", 40,
            "--ignore-eos"]
    one = run_pagoda(*args, "-t", 1).stdout.split()
    r = mpirun(mpi, *args, "--speculative", "ngram")
    m = re.search(r"speculation: (\d+) drafts verified", r.stderr)
    assert m and int(m.group(1)) > 0, r.stderr
    assert r.stdout.split() == one and len(one) == 40


def test_refuses_heads_not_divisible(mpi, builtin_model):
    # SmolLM2-135M: 9 heads, 3 KV heads
    r = mpirun(mpi, "run", "-m", builtin_model, "--prompt-ids", "1,2,3", "-n", 2, check=False)
    assert r.returncode != 0
    assert ("tensor parallel size 2 must divide the model's attention heads (9), and FFN width (1536), and divide "
            "or be a multiple of its KV heads (3)") in r.stderr


def test_refuses_partial_blocks(mpi, synth, tmp_path):
    # Q4_K blocks hold 256 elements: the output projection's 256 columns do not split 2 ways
    r = mpirun(mpi, "logits", "-m", synth["q4_k"], "-i", synth["ids"], "-o", tmp_path / "o.safetensors",
               check=False)
    assert r.returncode != 0
    assert "attn_output.weight: a shard of 128 columns is not a whole number of q4_k blocks" in r.stderr


@pytest.mark.parametrize("name,n", [("qwen2", 2), ("llama", 2), ("qwen3", 4)])
def test_threads_without_mpirun(pagoda_bin, shared, run_pagoda, tmp_path, name, n):
    """without mpirun the ranks are threads of one process (shared-memory collectives): the same
    logits as one rank within summation-order noise, and as the MPI group's; greedy tokens equal"""
    fx = shared / "fixtures" / "hf" / name
    g = load_file(str(fx / "golden.safetensors"))
    save_file({"input_ids": g["input_ids"]}, str(tmp_path / "ids.safetensors"))
    run_pagoda("logits", "-m", fx, "-i", tmp_path / "ids.safetensors", "-o", tmp_path / "one.safetensors", "-t", 1)
    r = run_pagoda("logits", "-m", fx, "-i", tmp_path / "ids.safetensors", "-o", tmp_path / "th.safetensors", "-t", 1,
                   "--tensor-parallel-size", n, timeout=TIMEOUT)
    assert f"{n} ranks as threads of this process" in r.stderr
    one = load_file(str(tmp_path / "one.safetensors"))["logits"]
    th = load_file(str(tmp_path / "th.safetensors"))["logits"]
    assert np.abs(th - one).max() <= 1e-5
    assert np.abs(th - g["logits"]).max() <= 1e-4
    args = ["run", "-m", fx, "--prompt-ids", "5,6,7,8,5,6,7", "-n", 20, "--ignore-eos", "-t", 1]
    assert run_pagoda(*args, "--tensor-parallel-size", n, timeout=TIMEOUT).stdout.split() == run_pagoda(*args).stdout.split()


def test_threads_fail_together(run_pagoda, builtin_model):
    # a model the group cannot split: every rank says why, none is left waiting
    r = run_pagoda("run", "-m", builtin_model, "--prompt-ids", "1,2,3", "-n", 2, "--tensor-parallel-size", 2,
                   check=False, timeout=TIMEOUT)
    assert r.returncode == 1
    assert "tensor parallel size 2 must divide the model's attention heads (9)" in r.stderr


def test_mpi_job_of_the_wrong_size(mpi, shared, tmp_path):
    # under mpirun the job's processes are the ranks: too few is a clear error, not a hang
    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", mpi, "run", "-m",
                        str(shared / "fixtures" / "hf" / "llama"), "--prompt-ids", "1,2", "-n", "2", "-t", "1",
                        "--tensor-parallel-size", "4"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode != 0
    assert "this MPI job has 2 processes (run it under mpirun -np 4)" in r.stderr


def comm_stats(stderr):
    """{rank: {key: number}} from the `pagoda: comm-stats k=v ...` lines of --comm-stats"""
    out = {}
    for line in stderr.splitlines():
        if line.startswith("pagoda: comm-stats "):
            kv = dict(x.split("=") for x in line.split()[2:])
            out[int(kv["rank"])] = {k: float(v) if "." in v else int(v) for k, v in kv.items()}
    return out


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2), (2, 2)])
def test_comm_stats_counts(mpi, shared, tmp_path, tp, pp):
    # --comm-stats counts exactly what the formula in docs/scaling.md says for one forward pass over
    # B*T tokens: 2 all-reduces per layer of the stage, of [B*T, n_embd] floats, on every
    # tensor-parallel rank; each stage but the last sends the residual stream [B*T, n_embd] to the
    # same tensor-parallel rank of the next; the last stage's ranks send their vocabulary slices of
    # every position's logits to the stage's first rank (vocabulary-parallel head), which sends the
    # whole rows [B*T, n_vocab] to rank 0 when that is another rank
    import json
    fx = shared / "fixtures" / "hf" / "llama"
    cfg = json.loads((fx / "config.json").read_text())
    E, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    B, T = 2, 20
    save_file({"input_ids": np.arange(B * T, dtype=np.int32).reshape(B, T) % V}, str(tmp_path / "ids.safetensors"))
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(tp * pp), mpi, "logits", "-m", str(fx),
           "-i", str(tmp_path / "ids.safetensors"), "-o", str(tmp_path / "o.safetensors"), "-t", "1",
           "--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp), "--comm-stats"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    st = comm_stats(r.stderr)
    assert sorted(st) == list(range(tp * pp)), r.stderr
    rows, resid, logits = B * T, B * T * E * 4, B * T * V * 4
    send = {k: 0 for k in st}
    recv = {k: 0 for k in st}
    head = (pp - 1) * tp
    for rank in st:
        stage, t = divmod(rank, tp)
        if stage < pp - 1:
            send[rank] += resid
            recv[rank + tp] += resid
        if stage == pp - 1 and t > 0:
            cols = V * (t + 1) // tp - V * t // tp
            send[rank] += rows * cols * 4
            recv[head] += rows * cols * 4
    if head != 0:
        send[head] += logits
        recv[0] += logits
    L_stage = L // pp
    for rank, s in st.items():
        assert s["size"] == tp * pp and s["pp"] == pp
        assert s["all_reduce_calls"] == (2 * L_stage if tp > 1 else 0)
        assert s["all_reduce_bytes"] == (2 * L_stage * B * T * E * 4 if tp > 1 else 0)
        # the KV block count at start, the step's header and plan, the stop
        assert s["bcast_calls"] == 4
        assert s["bcast_bytes"] == st[0]["bcast_bytes"]
        assert (s["send_bytes"], s["recv_bytes"]) == (send[rank], recv[rank]), rank


def test_comm_stats_one_process(run_pagoda, shared, tmp_path):
    # without a group the flag still answers: nothing was communicated
    fx = shared / "fixtures" / "hf" / "llama"
    r = run_pagoda("run", "-m", fx, "--prompt-ids", "1,2,3", "-n", 2, "-t", 1, "--comm-stats")
    st = comm_stats(r.stderr)
    assert list(st) == [0] and st[0]["size"] == 1
    assert st[0]["all_reduce_calls"] == st[0]["bcast_bytes"] == st[0]["send_bytes"] == 0


def mqa_variant(fx, tmp_path):
    """the llama fixture made multi-query: one KV head (the first of K and V's rows), config to match"""
    import json
    d = tmp_path / "llama-mqa"
    d.mkdir()
    cfg = json.loads((fx / "config.json").read_text())
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    cfg["num_key_value_heads"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    w = load_file(str(fx / "model.safetensors"))
    for k in list(w):
        if k.endswith(("k_proj.weight", "v_proj.weight")):
            w[k] = np.ascontiguousarray(w[k][:hd])
    save_file(w, str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("n,kind", [(4, "gqa"), (2, "mqa"), (4, "mqa"), (4, "gpt_bigcode")])
def test_kv_heads_replicated(mpi, shared, run_pagoda, tmp_path, n, kind):
    """fewer KV heads than ranks (the llama fixture's 2 KV heads over 4 ranks; a multi-query variant
    over 2 and 4): each rank holds the one KV head its query heads read; logits and greedy tokens
    equal one process's"""
    fx = shared / "fixtures" / "hf" / ("gpt_bigcode" if kind == "gpt_bigcode" else "llama")
    model = mqa_variant(fx, tmp_path) if kind == "mqa" else fx
    g = load_file(str(fx / "golden.safetensors"))
    save_file({"input_ids": g["input_ids"]}, str(tmp_path / "ids.safetensors"))
    run_pagoda("logits", "-m", model, "-i", tmp_path / "ids.safetensors", "-o", tmp_path / "one.safetensors", "-t", 1)
    mpirun(mpi, "logits", "-m", model, "-i", tmp_path / "ids.safetensors", "-o", tmp_path / "tp.safetensors", n=n)
    one = load_file(str(tmp_path / "one.safetensors"))["logits"]
    tp = load_file(str(tmp_path / "tp.safetensors"))["logits"]
    assert tp.shape == one.shape and np.abs(tp - one).max() <= 1e-5
    if kind != "mqa":
        assert np.abs(tp - g["logits"]).max() <= 1e-4
    args = ["run", "-m", model, "--prompt-ids", "5,17,30,2,99,7", "-n", 24, "--ignore-eos"]
    ref = run_pagoda(*args, "-t", 1).stdout.split()
    assert len(ref) == 24 and mpirun(mpi, *args, n=n).stdout.split() == ref

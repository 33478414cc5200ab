"""Pipeline parallelism across processes on the CPU (MPI): `mpirun -np P pagoda ... --pipeline-parallel-size P`
cuts the layers into P contiguous stages (the residual stream goes from stage to stage by point-to-point
messages, the last stage's logits back to rank 0), and composes with tensor parallelism (`-np TP*PP`,
stage-major ranks, the all-reduce within each stage). It must give the single-process results: logits
within 1e-5 (a pipeline alone does the same arithmetic in the same order: bit-identical) and the same greedy
tokens. Sizes the job or the model cannot take are refused with a clear error."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from serve_harness import mpi_missing
from safetensors.numpy import load_file, save_file

MPIRUN = shutil.which("mpirun")
TIMEOUT = 60
HF = ["llama", "llama3", "llama_bf16", "mistral", "qwen2", "qwen3", "starcoder2", "gpt_bigcode"]
# every fixture splits 2 ways under tensor parallelism too (gpt_bigcode: its one KV head on both ranks)
HF_TP = HF


@pytest.fixture(scope="module")
def mpi(pagoda_bin):
    why = mpi_missing(pagoda_bin)
    if why:
        pytest.skip(f"{why}: MPI pipeline parallelism untested")
    return pagoda_bin


def mpirun(pagoda_bin, *args, pp=2, tp=1, check=True):
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(tp * pp), pagoda_bin, *map(str, args),
           "-t", "1", "--pipeline-parallel-size", str(pp)]
    if tp > 1:
        cmd += ["--tensor-parallel-size", str(tp)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r


def logits(mpi, run_pagoda, model, ids, tmp_path, layouts):
    """one process's logits, then each (pp, tp[, micro-batches]) layout's"""
    run_pagoda("logits", "-m", model, "-i", ids, "-o", tmp_path / "one.safetensors", "-t", 1)
    out = [load_file(str(tmp_path / "one.safetensors"))["logits"]]
    for pp, tp, *mb in layouts:
        o = tmp_path / f"pp{pp}tp{tp}mb{mb}.safetensors"
        extra = ["--pp-micro-batches", mb[0]] if mb else []
        mpirun(mpi, "logits", "-m", model, "-i", ids, "-o", o, *extra, pp=pp, tp=tp)
        out.append(load_file(str(o))["logits"])
    return out


@pytest.mark.parametrize("name", HF)
def test_logits_hf(mpi, shared, run_pagoda, tmp_path, name):
    fx = shared / "fixtures" / "hf" / name
    g = load_file(str(fx / "golden.safetensors"))
    save_file({"input_ids": g["input_ids"]}, str(tmp_path / "ids.safetensors"))
    # the fixtures' 2 rows of 24 tokens: one step of 48 tokens, whole by default (too small to cut)
    # or in 2 micro-batches of one row each
    layouts = [(2, 1), (2, 1, 2)] + ([(2, 2, 2)] if name in HF_TP else [])
    one, *par = logits(mpi, run_pagoda, fx, tmp_path / "ids.safetensors", tmp_path, layouts)
    assert np.array_equal(par[0], one)  # PP=2: the same products in the same order
    assert np.array_equal(par[1], one)  # and per row the same in micro-batches
    for x in par:
        assert x.shape == g["logits"].shape
        assert np.abs(x - one).max() <= 1e-5
        assert np.abs(x - g["logits"]).max() <= 1e-4


@pytest.mark.parametrize("pp,tp", [(2, 1), (2, 2)])
def test_run_greedy_hf_llama(mpi, shared, run_pagoda, pp, tp):
    fx = shared / "fixtures" / "hf" / "llama"
    g = load_file(str(fx / "golden.safetensors"))
    prompt = ",".join(str(int(x)) for x in g["greedy_prompt"][0])
    n = g["greedy_output"].shape[1]
    args = ["run", "-m", fx, "--prompt-ids", prompt, "-n", n, "--ignore-eos"]
    one = run_pagoda(*args, "-t", 1).stdout.split()
    par = mpirun(mpi, *args, pp=pp, tp=tp).stdout.split()
    assert par == one
    assert [int(x) for x in par] == [int(x) for x in g["greedy_output"][0]]


@pytest.fixture(scope="module")
def synth(mpi, tmp_path_factory):
    """tiny-llama (2 layers) and tiny-llama-deep (10 layers: 3 stages of 4, 3 and 3), F32 and Q8_0; 3 rows
    of 48 tokens: a 144-token step, which PP=2 and PP=3 cut into 2 micro-batches by default (64 tokens
    at least each)"""
    d = tmp_path_factory.mktemp("pp_synth")
    out = {}
    for shape, ty in (("tiny-llama", "f32"), ("tiny-llama-deep", "f32"), ("tiny-llama-deep", "q8_0")):
        p = d / f"{shape}-{ty}.gguf"
        subprocess.run([mpi, "synth", "--shape", shape, "--type", ty, "--output", str(p)], check=True,
                       capture_output=True, timeout=TIMEOUT)
        out[f"{shape}-{ty}"] = p
    rng = np.random.default_rng(0)
    save_file({"input_ids": rng.integers(0, 1024, (3, 48)).astype(np.int32)}, str(d / "ids.safetensors"))
    save_file({"input_ids": rng.integers(0, 1024, (1, 96)).astype(np.int32)}, str(d / "ids1.safetensors"))
    out["ids"], out["ids1"] = d / "ids.safetensors", d / "ids1.safetensors"
    return out


@pytest.mark.parametrize("model", ["tiny-llama-f32", "tiny-llama-deep-f32"])
def test_logits_gguf_synth(mpi, synth, run_pagoda, tmp_path, model):
    pp = 3 if "deep" in model else 2
    one, *par = logits(mpi, run_pagoda, synth[model], synth["ids"], tmp_path, [(pp, 1), (pp, 1, 1), (pp, 1, 3),
                                                                               (2, 2), (2, 2, 3)])
    for x in par:
        assert x.shape == one.shape
        assert np.abs(x - one).max() <= 1e-5


def test_logits_one_sequence_in_pieces(mpi, synth, run_pagoda, tmp_path):
    # one 96-token row: fewer sequences than micro-batches, so the cuts fall inside it (a later
    # piece reads the earlier one's K/V on each stage)
    one, *par = logits(mpi, run_pagoda, synth["tiny-llama-deep-f32"], synth["ids1"], tmp_path,
                       [(3, 1, 3), (2, 1, 4), (2, 2, 2)])
    for x in par:
        assert x.shape == one.shape
        assert np.abs(x - one).max() <= 1e-5


def test_logits_gguf_synth_q8_0(mpi, synth, run_pagoda, tmp_path):
    # Q8_0 products quantize their activations to int8, so tensor parallelism's summation order moves
    # the logits by its own noise (about 1e-2 over 10 layers); the pipeline adds none to it
    one, pp, pp_whole, tp, tp_pp = logits(mpi, run_pagoda, synth["tiny-llama-deep-q8_0"], synth["ids"], tmp_path,
                                          [(3, 1), (3, 1, 1), (1, 2), (2, 2, 1)])
    assert np.array_equal(pp, one) and np.array_equal(pp_whole, one)
    assert np.array_equal(tp_pp, tp)


@pytest.mark.parametrize("pp,tp,micro", [(3, 1, 0), (2, 2, 0), (3, 1, 3)])
def test_run_greedy_gguf_synth(mpi, synth, run_pagoda, pp, tp, micro):
    # micro 3: the 5-token prompt goes through the stages in 3 pieces
    args = ["run", "-m", synth["tiny-llama-deep-q8_0"], "--prompt-ids", "5,17,300,2,99", "-n", 24, "--ignore-eos"]
    one = run_pagoda(*args, "-t", 1).stdout.split()
    extra = ["--pp-micro-batches", micro] if micro else []
    par = mpirun(mpi, *args, *extra, pp=pp, tp=tp).stdout.split()
    assert len(one) == 24 and par == one


def test_refuses_more_stages_than_layers(mpi, shared):
    r = mpirun(mpi, "run", "-m", shared / "fixtures" / "hf" / "llama", "--prompt-ids", "1,2,3", "-n", 2, pp=3,
               check=False)
    assert r.returncode != 0
    assert "pipeline parallel size 3 is more than the model's 2 layers" in r.stderr


def test_needs_the_processes(mpi, shared):
    llama = str(shared / "fixtures" / "hf" / "llama")
    args = ["run", "-m", llama, "--prompt-ids", "1,2", "-n", "2", "-t", "1"]
    # without mpirun the stages are threads of one process: the same tokens as one rank
    one = subprocess.run([mpi, *args], capture_output=True, text=True, timeout=TIMEOUT)
    r = subprocess.run([mpi, *args, "-pp", "2"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and "2 ranks as threads of this process" in r.stderr, r.stderr
    assert r.stdout.split() == one.stdout.split() and len(one.stdout.split()) == 2
    # TP 2 x PP 2 needs 4 processes, not 2
    r = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", mpi, *args,
                        "--pipeline-parallel-size", "2", "--tensor-parallel-size", "2"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode != 0
    assert "this MPI job has 2 processes (run it under mpirun -np 4)" in r.stderr


def test_refuses_gpu(mpi, shared):
    llama = shared / "fixtures" / "hf" / "llama"
    r = mpirun(mpi, "run", "-m", llama, "--prompt-ids", "1,2,3", "-n", 2, "--gpu-layers", 1, check=False)
    assert r.returncode != 0
    assert "pipeline parallel runs on the CPU only" in r.stderr


def test_speculation_greedy_identical(mpi, run_pagoda, builtin_model):
    """n-gram speculation over stages: drafts verified in the pipelined pass, greedy text equal to one
    process without speculation"""
    prompt = "def add(a, b):\n    return a + b\n\ndef add(a, b):\n"
    args = ("run", "-m", builtin_model, "--prompt", prompt, "-n", 48, "--temperature", 0)
    ref = run_pagoda(*args, "-t", 1)
    r = mpirun(mpi, *args, "--speculative", "ngram")
    m = re.search(r"speculation: (\d+) drafts verified", r.stderr)
    assert m and int(m.group(1)) > 0, r.stderr
    assert r.stdout == ref.stdout


def parse_mix(stdout):
    rows = {}
    for line in stdout.splitlines():
        key, *vals = line.split()
        rows[key] = np.array([float(v) for v in vals]) if key.startswith("e") else [int(v) for v in vals]
    return rows


@pytest.mark.parametrize("pp,tp,micro", [(2, 1, 2), (2, 2, 2)])
def test_embeddings_and_generation_in_one_step(mpi, shared, pp, tp, micro):
    # embedding requests (hidden-state rows from the last stage) batched with generation (logits
    # rows), in micro-batches: rank 0 gets both kinds of rows back in the step's order; a request
    # with two choices copies a shared KV block (broadcast: every stage copies its own layers)
    helper = os.path.join(os.path.dirname(mpi), "parallel_mix")
    if not os.path.exists(helper):
        pytest.skip(f"{helper} not built")
    model = str(shared / "fixtures" / "hf" / "llama")
    one = subprocess.run([helper, model, "1", "1", "0"], capture_output=True, text=True, timeout=TIMEOUT, check=True)
    par = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(tp * pp), helper, model, str(tp),
                          str(pp), str(micro)], capture_output=True, text=True, timeout=TIMEOUT)
    assert par.returncode == 0, par.stderr
    a, b = parse_mix(one.stdout), parse_mix(par.stdout)
    assert sorted(a) == sorted(b) == ["e0", "e1", "g2", "g3", "h3"]
    for k in ("e0", "e1"):
        assert np.abs(a[k] - b[k]).max() <= 1e-5
    assert a["g2"] == b["g2"] and a["g3"] == b["g3"] and len(a["g2"]) == 8
    assert a["h3"] == b["h3"] == a["g3"]  # two greedy choices over a copied KV block


def test_builtin_model_text_and_chat(mpi, builtin_model, run_pagoda):
    # SmolLM2-135M (Q4_1, 30 layers, 9 heads: tensor parallelism cannot split it 2 ways, stages can): greedy
    # text in 3 stages, and a two-turn chat in 2 stages whose second turn reuses the first's KV
    # blocks from the prefix cache (block ids are rank 0's, each stage holds its layers' K/V)
    args = ["run", "-m", builtin_model, "-p", "The capital of France is", "-n", 16]
    one = run_pagoda(*args, "-t", 1).stdout
    assert one.strip() and mpirun(mpi, *args, pp=3).stdout == one
    chat = ["run", "-m", str(builtin_model), "--chat", "-n", "12", "-t", "1"]
    turns = "Hi! What is 2+2?\nAnd 3+3?\n"
    one = subprocess.run([mpi, *chat], input=turns, capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    par = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", mpi, *chat, "-pp", "2"],
                         input=turns, capture_output=True, text=True, timeout=TIMEOUT)
    assert par.returncode == 0, par.stderr
    assert one.strip() and par.stdout == one

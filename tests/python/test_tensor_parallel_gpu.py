"""Tensor parallelism on GPUs: one device per MPI process, the two sums of each layer through NCCL
(libnccl.so.2 loaded at run time). Without a GPU (CI) what can run here runs: the build reports the
NCCL it loads, and GPU tensor parallelism fails fast with the reason instead of hanging a job. With
one GPU, the NCCL code path as a group of one (`--cuda-nccl on`) gives the same logits as the GPU
alone; with two, `... --device cuda --tensor-parallel-size 2` matches one GPU, the ranks as threads of
one process and as MPI processes."""
import ctypes
import re
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from test_tensor_parallel import TIMEOUT, mpi, mpirun  # noqa: F401 (mpi is a fixture)


def version_info(run_pagoda):
    out = run_pagoda("--version").stdout
    return dict(l.split(": ", 1) for l in out.splitlines()[1:])


def cuda_devices(info):
    m = re.match(r"built, (\d+) device", info.get("cuda", ""))
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def info(run_pagoda):
    return version_info(run_pagoda)


@pytest.fixture(scope="module")
def cuda_built(info):
    if not info.get("cuda", "").startswith("built"):
        pytest.skip("pagoda was built without CUDA: GPU tensor parallelism not compiled here")
    return info


def libnccl_version():
    for name in ("libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = ctypes.c_int()
        if lib.ncclGetVersion(ctypes.byref(v)) == 0:
            return v.value
    return 0


def test_version_reports_the_nccl_it_loads(cuda_built):
    v = libnccl_version()
    if not v:
        assert cuda_built["nccl"].startswith("not available ("), cuda_built
        pytest.skip("no libnccl.so.2 on this machine: only the 'not available' report is checked")
    assert cuda_built["nccl"].startswith(f"{v // 10000}.{v // 100 % 100}.{v % 100} "), (v, cuda_built)


def ids_file(shared, tmp_path, name="llama"):
    g = load_file(str(shared / "fixtures" / "hf" / name / "golden.safetensors"))
    p = tmp_path / "ids.safetensors"
    save_file({"input_ids": g["input_ids"]}, str(p))
    return p


def test_hybrid_layers_refused(mpi, shared, tmp_path):
    # CPU and GPU layers are not split together: refused before any device is touched
    fx = shared / "fixtures" / "hf" / "llama"
    r = mpirun(mpi, "logits", "-m", fx, "-i", ids_file(shared, tmp_path), "-o", tmp_path / "o.safetensors",
               "--gpu-layers", 1, check=False)
    assert r.returncode != 0
    assert "tensor parallel on GPUs: every layer on the GPU (--gpu-layers -1), not 1 of" in r.stderr


def test_gpu_pipeline_refused(mpi, shared, tmp_path):
    fx = shared / "fixtures" / "hf" / "llama"
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", mpi, "logits", "-m", str(fx), "-i",
           str(ids_file(shared, tmp_path)), "-o", str(tmp_path / "o.safetensors"), "--device", "cuda",
           "--pipeline-parallel-size", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode != 0
    assert "pipeline parallel runs on the CPU only for now (no GPU layers)" in r.stderr


def test_without_a_gpu_fails_fast(mpi, cuda_built, shared, tmp_path, run_pagoda):
    if cuda_devices(cuda_built):
        pytest.skip("a GPU answers here: the GPU tests below run instead")
    fx = shared / "fixtures" / "hf" / "llama"
    ids = ids_file(shared, tmp_path)
    r = run_pagoda("logits", "-m", fx, "-i", ids, "-o", tmp_path / "o.safetensors", "--cuda-nccl", "on", check=False,
                   timeout=TIMEOUT)
    assert r.returncode == 1 and "no usable CUDA device" in r.stderr, r.stderr
    # every rank fails (none is left waiting for the NCCL group) and the job ends within the timeout
    r = mpirun(mpi, "logits", "-m", fx, "-i", ids, "-o", tmp_path / "o.safetensors", "--device", "cuda", check=False)
    assert r.returncode != 0 and "no usable CUDA device" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def gpu(cuda_built):
    if not cuda_devices(cuda_built):
        pytest.skip("no CUDA device answers here: the NCCL path is compiled but not run")
    if not cuda_built["nccl"][0].isdigit():
        pytest.skip(f"NCCL {cuda_built['nccl']}")
    return cuda_devices(cuda_built)


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3"])
def test_nccl_group_of_one_matches_the_gpu_alone(gpu, shared, run_pagoda, tmp_path, name):
    fx = shared / "fixtures" / "hf" / name
    ids = ids_file(shared, tmp_path, name)
    run_pagoda("logits", "-m", fx, "-i", ids, "-o", tmp_path / "alone.safetensors", "--device", "cuda")
    run_pagoda("logits", "-m", fx, "-i", ids, "-o", tmp_path / "nccl.safetensors", "--device", "cuda",
               "--cuda-nccl", "on")
    a = load_file(str(tmp_path / "alone.safetensors"))["logits"]
    b = load_file(str(tmp_path / "nccl.safetensors"))["logits"]
    # a sum over one device leaves the values as they are: the same logits, bit for bit
    assert np.array_equal(a, b)
    g = load_file(str(fx / "golden.safetensors"))["logits"]
    assert np.abs(b - g).max() <= 1e-3


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_tp2_on_two_gpus_matches_one(gpu, mpi, shared, run_pagoda, tmp_path, name):
    if gpu < 2:
        pytest.skip(f"{gpu} CUDA device here; TP=2 on GPUs needs two")
    fx = shared / "fixtures" / "hf" / name
    ids = ids_file(shared, tmp_path, name)
    run_pagoda("logits", "-m", fx, "-i", ids, "-o", tmp_path / "one.safetensors", "--device", "cuda")
    mpirun(mpi, "logits", "-m", fx, "-i", ids, "-o", tmp_path / "tp.safetensors", "--device", "cuda")
    # the ranks as threads of one process, one GPU each (no mpirun)
    run_pagoda("logits", "-m", fx, "-i", ids, "-o", tmp_path / "th.safetensors", "--device", "cuda",
               "--tensor-parallel-size", 2)
    one = load_file(str(tmp_path / "one.safetensors"))["logits"]
    for f in ("tp", "th"):
        tp = load_file(str(tmp_path / f"{f}.safetensors"))["logits"]
        assert np.abs(tp - one).max() <= 1e-4, f

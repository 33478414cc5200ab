#!/usr/bin/env bash
# Old build against new build on a GPU, alternated in one run: the GPU tests of the new build, then
# greedy tokens (must be identical) and pp/tg plus batched-generation figures of both, A B A B.
# Expects .devcarry/{old,new}/bin (old: pagoda; new: pagoda, test_cuda_ops, test_backend,
# test_golden, test_engine, all built with CUDA), .devcarry/lib (their shared libraries beyond
# glibc/CUDA) and .devcarry/shared (fixtures/hf, fixtures/gguf, models/pycoder-tiny, DESIGN.md), as
# scripts/gpu-pack.sh lays them out, packed into .devpack/devcarry.tar.xz. Output under $OUT
# (default gpu-results/). GPU_AB_SHAPES picks the synthetic models (shape:type ...).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/gpu-results}
mkdir -p "$out"
c=$root/.devcarry
if [ -f .devpack/devcarry.tar.xz ] && [ ! -d "$c/new" ]; then mkdir -p "$c" && tar -C "$c" -xJf .devpack/devcarry.tar.xz; fi
export LD_LIBRARY_PATH=$c/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PAGODA_SHARED=$c/shared
mkdir -p /work && [ -e /work/main ] || ln -s "$root" /work/main # the tests look for their data where they were built
models=/tmp/pagoda-models
mkdir -p "$models"
stage() { echo; echo "=== $* ($(date +%T))"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for t in ${GPU_AB_TESTS:-test_cuda_ops test_backend test_golden test_engine}; do
    stage "new: $t"
    PAGODA_BIN=$c/new/bin "$c/new/bin/$t" > "$out/$t.txt" 2>&1; rc=$?
    grep -iE "fail|cuda|passed|skip" "$out/$t.txt" | tail -25; echo "exit $rc"
done
stage "tokens, old vs new (greedy and seeded sampling; all on the GPU and hybrid)"
pyc=$c/shared/models/pycoder-tiny
for place in "--device cuda" "--gpu-layers 2" "--gpu-layers 1"; do
    for samp in "--temp 0" "--temp 0.8 --top-p 0.95 --seed 3"; do
        for v in old new; do
            "$c/$v/bin/pagoda" run -m "$pyc" $place $samp -p "def fibonacci(n):" -n 96 > "$out/tok-$v.txt" 2>/dev/null
        done
        cmp -s "$out/tok-old.txt" "$out/tok-new.txt" && r=identical || r=DIFFERENT
        echo "$place $samp: $r ($(wc -c < "$out/tok-new.txt") bytes)"
    done
done
rm -f "$out"/tok-*.txt
for shape in ${GPU_AB_SHAPES:-tinyllama-1.1b:q4_0 tinyllama-1.1b:f16 llama-2-7b:q4_0}; do
    s=${shape%%:*} t=${shape##*:} f=$models/$s-$t.gguf
    [ -f "$f" ] || "$c/new/bin/pagoda" synth --shape "$s" --type "$t" -o "$f" 2>&1 | tail -1
    for round in 1 2; do
        for v in old new; do
            stage "$v round $round: bench $s $t"
            "$c/$v/bin/pagoda" bench -m "$f" --device cuda -p 512 -n 128 -r 3 2>&1 | grep -E "pp|tg" | tail -4
            "$c/$v/bin/pagoda" bench throughput -m "$f" --device cuda --lens 128/128 -c 1,8,64 2>&1 | grep -vE "^\s*$" | tail -6
        done
    done
done

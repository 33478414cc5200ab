#!/usr/bin/env bash
# Old build against new build on a GPU, alternated in one run: the GPU tests of the new build, then
# greedy tokens (must be identical) and pp/tg plus batched-generation figures of both, A B A B.
# Expects .devcarry/{old,new}/bin (pagoda + tests) and .devcarry/shared (scripts/gpu-pack.sh
# layout). Output under $OUT (default gpu-results/).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/gpu-results}
mkdir -p "$out"
c=$root/.devcarry
if [ -f .devpack/devcarry.tar.xz ] && [ ! -d "$c/new" ]; then mkdir -p "$c" && tar -C "$c" -xJf .devpack/devcarry.tar.xz; fi
export LD_LIBRARY_PATH=$c/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PAGODA_SHARED=$c/shared
models=/tmp/pagoda-models
mkdir -p "$models"
stage() { echo; echo "=== $* ($(date +%T))"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for t in ${GPU_AB_TESTS:-test_cuda_ops test_golden test_engine}; do
    stage "new: $t"
    PAGODA_BIN=$c/new/bin "$c/new/bin/$t" > "$out/$t.txt" 2>&1; rc=$?
    grep -iE "fail|cuda|passed|skip" "$out/$t.txt" | tail -25; echo "exit $rc"
done
stage "greedy tokens, old vs new"
pyc=$c/shared/models/pycoder-tiny
for v in old new; do
    "$c/$v/bin/pagoda" run -m "$pyc" --device cuda -p "def fibonacci(n):" -n 96 --temp 0 > "$out/greedy-$v.txt" 2>/dev/null
    "$c/$v/bin/pagoda" run -m "$pyc" --gpu-layers 2 -p "def fibonacci(n):" -n 96 --temp 0 > "$out/greedy-hybrid-$v.txt" 2>/dev/null
done
cmp "$out/greedy-old.txt" "$out/greedy-new.txt" && echo "cuda greedy: identical ($(wc -c < "$out/greedy-new.txt") bytes)"
cmp "$out/greedy-hybrid-old.txt" "$out/greedy-hybrid-new.txt" && echo "hybrid greedy: identical ($(wc -c < "$out/greedy-hybrid-new.txt") bytes)"
for shape in ${GPU_AB_SHAPES:-tinyllama-1.1b:q4_0 tinyllama-1.1b:f16 llama-2-7b:q4_0}; do
    s=${shape%%:*} t=${shape##*:} f=$models/$s-$t.gguf
    [ -f "$f" ] || "$c/new/bin/pagoda" synth --shape "$s" --type "$t" -o "$f" 2>&1 | tail -1
    for round in 1 2; do
        for v in old new; do
            stage "$v round $round: bench $s $t"
            "$c/$v/bin/pagoda" bench -m "$f" --device cuda -p 512 -n 128 -r 3 --json "$out/bench-$s-$t-$v-$round.json" 2>&1 | grep -E "pp|tg" | tail -4
            "$c/$v/bin/pagoda" bench throughput -m "$f" --device cuda --lens 128/128 -c 1,8,64 \
                --json "$out/throughput-$s-$t-$v-$round.json" 2>&1 | grep -vE "^\s*$" | tail -6
        done
    done
done

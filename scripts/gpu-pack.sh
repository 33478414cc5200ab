#!/usr/bin/env bash
# Builds pagoda with the CUDA backend here and packs what a GPU machine needs to run the GPU
# checks and benchmarks (scripts/gpu-check.sh) into .devcarry/: the binaries, the shared
# libraries they use beyond glibc, the test fixtures from ../shared, and HumanEval.
# Usage: scripts/gpu-pack.sh [build dir] (default build-gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build-gpu}
shared=${PAGODA_SHARED:-../shared}
cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=Release -DPAGODA_CUDA=ON -DPAGODA_CUDA_ARCH=90 >/dev/null
cmake --build "$b" -j"$(nproc)" --target pagoda_cli test_cuda_ops test_cuda_matmul test_golden test_engine test_backend
rm -rf .devcarry && mkdir -p .devcarry/bin .devcarry/lib .devcarry/shared/fixtures .devcarry/shared/models .devcarry/shared/data
for t in pagoda test_cuda_ops test_cuda_matmul test_golden test_engine test_backend; do
    cp "$b/$t" .devcarry/bin/ && strip .devcarry/bin/$t
done
# libraries beyond glibc and the CUDA driver (the GPU machine has its own of those)
ldd .devcarry/bin/* | awk '/=> \//{print $3}' | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libcuda|libcublas|libcublasLt|libstdc\+\+|libgcc_s)\.so' |
    while read -r l; do cp -L "$l" .devcarry/lib/; done
cp "$shared/DESIGN.md" .devcarry/shared/
cp -r "$shared/fixtures/hf" "$shared/fixtures/gguf" .devcarry/shared/fixtures/
mkdir -p .devcarry/shared/fixtures/quant # HF quantized checkpoints (dequantized to f16 on the GPU): int4 and int8
cp -r "$shared/fixtures/quant/gptq_4bit_g32" "$shared/fixtures/quant/w8a8_int8_ct" .devcarry/shared/fixtures/quant/
cp -r "$shared/models/pycoder-tiny" .devcarry/shared/models/
cp "$shared/data/HumanEval.jsonl.gz" .devcarry/shared/data/ 2>/dev/null || true
# the built-in model's tokenizer without its weights, for the synthetic StarCoder served with text prompts
if [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] && [ -x .venv/bin/python ]; then
    .venv/bin/python scripts/vocab_only_gguf.py models/SmolLM2-135M-Instruct.Q4_1.gguf .devcarry/vocab-smollm2.gguf
fi
# one compressed file travels (the device tool carries at most 64 MiB)
mkdir -p .devpack && tar -C .devcarry -cf - . | xz -T0 -6 > .devpack/devcarry.tar.xz
du -sh .devcarry .devcarry/* .devpack/devcarry.tar.xz | sort -h

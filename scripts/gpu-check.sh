#!/usr/bin/env bash
# Runs on a machine with an NVIDIA GPU, from the repository root, over what scripts/gpu-pack.sh
# packed into .devcarry/: GPU parity tests, then the speed benchmarks, then the serving benchmark.
# Usage: scripts/gpu-check.sh [info] [tests = kernels + parity] [tp] [quant] [spec] [bench] [serve] [structured] ...
# (results under $OUT or ./gpu-results). Env: PAGODA_BENCH_TYPES (q4_0 f16), PAGODA_RATES (10 30),
# PAGODA_SAMPLED_RATES (none: serving runs with T 0.2 / top-p 0.95), PAGODA_DURATION (30), PAGODA_MAX_SEQS (384).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/gpu-results}
mkdir -p "$out"
ulimit -n 65536 2>/dev/null || true # thousands of HTTP connections in the serving benchmark
c=$root/.devcarry
if [ -f .devpack/devcarry.tar.xz ] && [ ! -d "$c/bin" ]; then mkdir -p "$c" && tar -C "$c" -xJf .devpack/devcarry.tar.xz; fi
export LD_LIBRARY_PATH=$c/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PAGODA_SHARED=$c/shared PAGODA_BIN=$c/bin
# the tests find tests/golden through the path they were built at
mkdir -p /work && [ -e /work/main ] || ln -s "$root" /work/main
bin=$c/bin
models=${PAGODA_GPU_MODELS:-/tmp/pagoda-models}
mkdir -p "$models"
stage() { echo; echo "=== $* ($(date +%T))"; }

synth() { # shape type file [extra args]
    [ -f "$models/$3" ] || "$bin/pagoda" synth --shape "$1" --type "$2" -o "$models/$3" "${@:4}" 2>&1 | tail -1
}

for what in "${@:-tests}"; do
case $what in
info)
    stage info
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    ;;
tests|kernels)
    stage "kernel tests"
    for t in ${PAGODA_KERNEL_TESTS:-test_cuda_ops test_cuda_matmul test_backend}; do
        echo "--- $t"; "$bin/$t" 2>&1 | tee "$out/$t.txt" | tail -60; echo "exit ${PIPESTATUS[0]}"
    done
    ;;&
tests|parity)
    stage "golden: GPU vs transformers / llama.cpp"
    "$bin/test_golden" 2>&1 | grep -A200 "== cuda" | tee "$out/test_golden_cuda.txt" | tail -60; echo "exit ${PIPESTATUS[0]}"
    stage "engine on the GPU"
    "$bin/test_engine" 2>&1 | tee "$out/test_engine.txt" | tail -30; echo "exit ${PIPESTATUS[0]}"
    ;;
tp)
    # tensor parallelism's NCCL path (libnccl.so.2 loaded at run time): on one GPU as a group of one
    # (--cuda-nccl on), whose logits must equal the GPU alone's byte for byte; with two GPUs and
    # mpirun, TP=2 against one GPU (the exact command is printed where there is only one GPU)
    stage "NCCL: $("$bin/pagoda" --version | grep -E '^(cuda|nccl):' | tr '\n' ' ')"
    for name in llama qwen2 qwen3 starcoder2; do
        fx=$c/shared/fixtures/hf/$name
        python3 -c "from safetensors.numpy import load_file, save_file; save_file({'input_ids': load_file('$fx/golden.safetensors')['input_ids']}, '$out/ids-$name.safetensors')" 2>/dev/null ||
            { echo "no python3 safetensors: tp stage skipped"; break; }
        "$bin/pagoda" logits -m "$fx" -i "$out/ids-$name.safetensors" -o "$out/alone-$name.safetensors" --device cuda 2>&1 | tail -1
        "$bin/pagoda" logits -m "$fx" -i "$out/ids-$name.safetensors" -o "$out/nccl-$name.safetensors" --device cuda --cuda-nccl on 2>&1 | tail -1
        if cmp -s "$out/alone-$name.safetensors" "$out/nccl-$name.safetensors"; then echo "$name: NCCL group of one == GPU alone (byte-identical logits)"
        else echo "$name: NCCL group of one DIFFERS from the GPU alone"; fi
        # TP=2: the ranks as threads of one process (2 GPUs, no mpirun), then as MPI processes
        tp2="$bin/pagoda logits -m $fx -i $out/ids-$name.safetensors -o $out/tp2-$name.safetensors --device cuda --tensor-parallel-size 2"
        mp2="mpirun --allow-run-as-root -np 2 $bin/pagoda logits -m $fx -i $out/ids-$name.safetensors -o $out/mp2-$name.safetensors --device cuda --tensor-parallel-size 2"
        if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
            $tp2 2>&1 | tail -2
            command -v mpirun >/dev/null && $mp2 2>&1 | tail -2
            for f in tp2 mp2; do
                [ -f "$out/$f-$name.safetensors" ] || continue
                python3 -c "from safetensors.numpy import load_file; import numpy as np; a=load_file('$out/alone-$name.safetensors')['logits']; b=load_file('$out/$f-$name.safetensors')['logits']; d=float(np.abs(a-b).max()); print('$name $f: TP=2 vs one GPU max |diff|', d, 'ok' if d <= 1e-4 else 'FAIL')"
            done
        else
            echo "$name: one GPU here; on two: $tp2   (or: $mp2)"
        fi
    done
    ;;
quant)
    # GPTQ / compressed-tensors checkpoints on the GPU (dequantized to f16 at load) against the CPU
    # with float activations, the same dequantized values: within f16 rounding of the weights
    stage "HF quantized checkpoints: GPU vs CPU"
    for d in "$c"/shared/fixtures/quant/*/; do
        name=$(basename "$d")
        python3 -c "from safetensors.numpy import load_file, save_file; save_file({'input_ids': load_file('$d/golden.safetensors')['input_ids']}, '$out/qids-$name.safetensors')" 2>/dev/null ||
            { echo "no python3 safetensors: quant stage skipped"; break; }
        "$bin/pagoda" logits -m "$d" -i "$out/qids-$name.safetensors" -o "$out/qcpu-$name.safetensors" --quant-activations float 2>&1 | tail -1
        "$bin/pagoda" logits -m "$d" -i "$out/qids-$name.safetensors" -o "$out/qgpu-$name.safetensors" --device cuda 2>&1 | tail -1
        python3 -c "from safetensors.numpy import load_file; import numpy as np; a=load_file('$out/qcpu-$name.safetensors')['logits']; b=load_file('$out/qgpu-$name.safetensors')['logits']; d=np.abs(a-b); ok=d.max()<=5e-2 and d.mean()<=5e-3 and (a.argmax(-1)==b.argmax(-1)).mean()>=0.95; print('$name: GPU vs CPU max', d.max(), 'mean', d.mean(), 'ok' if ok else 'FAIL')"
    done
    ;;
spec)
    # speculative decoding on the GPU: greedy output identical with and without n-gram drafts (a
    # fixed 4 drafts per step, so verification really runs), then decode speed at batch 1 on the
    # 7B shape with HumanEval prompts (random weights: few drafts accepted, so this measures what
    # verification costs; the editing workload's gain needs real weights)
    stage "speculation: greedy identity on the GPU"
    for name in llama qwen2 qwen3; do
        fx=$c/shared/fixtures/hf/$name
        a=$("$bin/pagoda" run -m "$fx" --prompt-ids 5,6,7,8,9,5,6,7,8,9,5,6,7 -n 64 --ignore-eos --device cuda 2>/dev/null)
        b=$("$bin/pagoda" run -m "$fx" --prompt-ids 5,6,7,8,9,5,6,7,8,9,5,6,7 -n 64 --ignore-eos --device cuda \
              --speculative ngram --num-speculative-tokens 4 --spec-k fixed 2>"$out/spec-$name.log")
        if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "$name: identical ($(grep -o 'speculation: [0-9]* drafts verified[^;]*' "$out/spec-$name.log"))"
        else echo "$name: DIFFERENT or failed"; fi
    done
    synth llama-2-7b q4_0 llama2-7b-q4_0-smolvocab.gguf --vocab-from "$c/vocab-smollm2.gguf"
    for s in none ngram; do
        stage "bench throughput, 7B q4_0, HumanEval prompts, batch 1, speculative $s"
        "$bin/pagoda" bench throughput -m "$models/llama2-7b-q4_0-smolvocab.gguf" --device cuda --dataset "$c/shared/data/HumanEval.jsonl.gz" \
            --lens 128/128 -c 1 --speculative $s --json "$out/spec-7b-$s.json" 2>&1 | grep -v "^\s*$" | tail -8
    done
    ;;
bench)
    stage "synthetic Llama-2-7B"
    for t in ${PAGODA_BENCH_TYPES:-q4_0 f16}; do synth llama-2-7b $t llama2-7b-$t.gguf; done
    for t in ${PAGODA_BENCH_TYPES:-q4_0 f16}; do
        stage "pp512 / tg128, llama-2-7b $t"
        "$bin/pagoda" bench -m "$models/llama2-7b-$t.gguf" --device cuda -p 512 -n 128 -r 3 --json "$out/bench-llama2-7b-$t.json" 2>&1 | grep -v "^bench: threads"
        stage "batched generation 128/128, llama-2-7b $t"
        "$bin/pagoda" bench throughput -m "$models/llama2-7b-$t.gguf" --device cuda --lens 128/128 -c 1,8,32,64,128 \
            --json "$out/throughput-llama2-7b-$t.json" --svg "$out/throughput-llama2-7b-$t.svg" 2>&1 | grep -v "^\s*$"
        stage "batched generation 128/128 sampled (T 0.8, top-p 0.95: logits to the host), llama-2-7b $t"
        "$bin/pagoda" bench throughput -m "$models/llama2-7b-$t.gguf" --device cuda --lens 128/128 -c 64,128 \
            --temperature 0.8 --top-p 0.95 --json "$out/throughput-sampled-llama2-7b-$t.json" 2>&1 | grep -v "^\s*$"
    done
    ;;
serve)
    stage "synthetic StarCoder-15B f16 with the SmolLM2 tokenizer (same 49152 vocab)"
    synth starcoder-15b f16 starcoder-15b-f16.gguf --vocab-from "$c/vocab-smollm2.gguf"
    "$bin/pagoda" serve -m "$models/starcoder-15b-f16.gguf" --device cuda --port 8099 --max-seqs ${PAGODA_MAX_SEQS:-384} --max-connections 4096 -v > "$out/serve.log" 2>&1 &
    srv=$!
    for i in $(seq 1 240); do LD_LIBRARY_PATH= curl -sf localhost:8099/health >/dev/null && break; sleep 1; done
    for rate in ${PAGODA_RATES:-10 30}; do
        stage "bench serve: humaneval prompts, 375 out, $rate req/s"
        "$bin/pagoda" bench serve --url http://localhost:8099 --workload humaneval --dataset "$c/shared/data/HumanEval.jsonl.gz" --output-len 375 \
            --request-rate "$rate" --duration ${PAGODA_DURATION:-30} --json "$out/serve-starcoder-$rate.json" 2>&1 | grep -v "^\s*$" | tail -40
    done
    for rate in ${PAGODA_SAMPLED_RATES:-}; do
        stage "bench serve sampled (T 0.2, top-p 0.95, as HumanEval pass@k runs): $rate req/s"
        "$bin/pagoda" bench serve --url http://localhost:8099 --workload humaneval --dataset "$c/shared/data/HumanEval.jsonl.gz" --output-len 375 \
            --temperature 0.2 --top-p 0.95 --request-rate "$rate" --duration ${PAGODA_DURATION:-30} \
            --json "$out/serve-starcoder-sampled-$rate.json" 2>&1 | grep -v "^\s*$" | tail -40
    done
    kill -TERM $srv; wait $srv
    tail -5 "$out/serve.log"
    ;;
structured)
    # grammar masks on the GPU path (masked on the host after the logits come back): outputs checked
    # by scripts/structured-check.py (standard library only), and the cost in throughput (twin runs)
    stage "structured output on the GPU: synthetic Llama-2-7B q4_0 with the SmolLM2 vocabulary"
    synth llama-2-7b q4_0 llama2-7b-q4_0-smolvocab.gguf --vocab-from "$c/vocab-smollm2.gguf"
    "$bin/pagoda" serve -m "$models/llama2-7b-q4_0-smolvocab.gguf" --device cuda --port 8098 -v > "$out/serve-structured.log" 2>&1 &
    srv=$!
    for i in $(seq 1 240); do LD_LIBRARY_PATH= curl -sf localhost:8098/health >/dev/null && break; sleep 1; done
    python3 scripts/structured-check.py --url http://localhost:8098 -n 16 2>&1 | tee "$out/structured-check.txt"
    echo "exit ${PIPESTATUS[0]}"
    stage "bench serve twin: 32 sequences, json_schema vs free"
    body='{"structured_outputs": {"json": {"type": "array", "minItems": 40, "items": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string", "maxLength": 12}}, "required": ["id", "name"]}}}}'
    "$bin/pagoda" bench serve --url http://localhost:8098 --concurrency 32 --num-requests 96 --input-len 64 --output-len 128 \
        --temperature 1 --twin on --extra-body "$body" --json "$out/structured-twin.json" 2>&1 | sed -n '/Twin/,$p'
    kill -TERM $srv; wait $srv
    ;;
esac
done

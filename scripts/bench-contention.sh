#!/usr/bin/env bash
# Two servers sharing the cores: how much slower each gets than alone. Ideal is the number of
# servers (2x when both are busy on the same cores); fork/join teams that spin at barriers make
# it far worse. Runs `pagoda bench serve` (closed loop, C clients) against server A alone, then
# against A and B at once, for each build given, and prints the ratios.
# usage: scripts/bench-contention.sh [-t THREADS] [-c CONCURRENCY] [-n REQUESTS] PAGODA [PAGODA...]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc) conc=4 nreq=16 out=128
while getopts "t:c:n:" o; do
    case $o in t) threads=$OPTARG ;; c) conc=$OPTARG ;; n) nreq=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { sed -n 2,6p "$0"; exit 2; }
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "no $model: run scripts/setup.sh" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return; sleep 0.1; done; exit 1; }
# seconds of one bench serve run (its wall time)
run() {
    local t0 t1
    t0=$(date +%s.%N)
    "$1" bench serve --url "http://127.0.0.1:$2" --concurrency "$conc" --num-requests "$nreq" \
        --input-len 64 --output-len "$out" >"$tmp/bench.$2.log" 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

printf '| build | threads/server | clients/server | alone s | both at once s (A, B) | slowdown (ideal 2) |\n|---|---|---|---|---|---|\n'
for bin in "$@"; do
    "$bin" serve -m "$model" --port 18091 --kv-mem 128M -t "$threads" >"$tmp/a.log" 2>&1 &
    a=$!
    "$bin" serve -m "$model" --port 18092 --kv-mem 128M -t "$threads" >"$tmp/b.log" 2>&1 &
    b=$!
    wait_up 18091
    wait_up 18092
    run "$bin" 18091 >/dev/null # warm-up
    alone=$(run "$bin" 18091)
    run "$bin" 18092 >"$tmp/tb" &
    tb=$!
    ta=$(run "$bin" 18091)
    wait $tb
    tb=$(cat "$tmp/tb")
    worst=$(echo "if ($ta > $tb) $ta else $tb" | bc -l)
    printf '| %s | %s | %s | %.2f | %.2f, %.2f | %.2fx |\n' "$bin" "$threads" "$conc" "$alone" "$ta" "$tb" \
        "$(echo "$worst / $alone" | bc -l)"
    kill $a $b
    wait $a $b 2>/dev/null || true
done

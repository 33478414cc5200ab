#!/usr/bin/env bash
# Runs every test: the release build under CTest (unit, golden, Python cross-checks), the unit
# tests again under ASan/UBSan, and each libFuzzer target for a short run.
# Expects scripts/setup.sh to have run (packages, .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
py="$PWD/.venv/bin/python"
[ -x "$py" ] || py=$(command -v python3)
jobs=$(nproc)
fuzz_seconds=${PAGODA_FUZZ_SECONDS:-20}

echo "== release build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPYTHON3="$py" >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== ASan/UBSan build, unit tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAGODA_SANITIZE=ON -DPAGODA_CUDA=OFF -DPYTHON3="$py" >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j"$jobs" -R '^test_' -E 'test_golden_slow'

echo "== fuzz targets (${fuzz_seconds}s each)"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAGODA_FUZZ=ON \
    -DPAGODA_SANITIZE=ON -DPAGODA_CUDA=OFF -DPYTHON3="$py" -DPAGODA_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
cmake --build build-fuzz -j"$jobs" --target $(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')
ctest --test-dir build-fuzz --output-on-failure -R '^fuzz_'
echo "== all tests passed"

#!/usr/bin/env bash
# Sets up a fresh Debian machine: system packages, a Python venv for tests and tools,
# the release build in build/, and the built-in model in models/.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config libjansson-dev libpcre2-dev libomp-dev clang libclang-rt-dev
      libmicrohttpd-dev libcurl4-openssl-dev libyaml-dev chromium libjs-marked libjs-highlight.js curl
      python3 python3-venv python3-pip ca-certificates nginx libopenmpi-dev openmpi-bin
      golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev)
# (go + sprig + yaml.v3: tests/helpers/helm_render renders the Helm chart for its schema tests)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
# reference grammar engines for bench/maskbench; xgrammar without its declared torch/triton (see the file)
.venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements-bench.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "xgrammar==0.2.9"

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPYTHON3="$PWD/.venv/bin/python" >/dev/null
cmake --build build -j"$(nproc)"
PATH="$PWD/.venv/bin:$PATH" ./scripts/fetch-model.sh

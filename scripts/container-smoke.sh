#!/usr/bin/env bash
# Builds deploy/Dockerfile (the CPU image) with buildah, with no container daemon and no registry:
# where debian:bookworm-slim cannot be pulled, a Debian bookworm made with debootstrap from the
# Debian mirror stands in for it. Then runs the image's `pagoda serve` on the built-in model and
# checks /health and that a greedy chat answer equals the one of the pagoda built here (./build).
# Usage (root, from anywhere): scripts/container-smoke.sh [MODEL.gguf] [PORT]
# Needs: apt-get install buildah debootstrap. Takes ~10 minutes on 2 cores (the image compiles pagoda).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
model=${1:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
port=${2:-8391}
B="buildah --storage-driver vfs"
command -v buildah >/dev/null || { echo "needs buildah (apt-get install buildah debootstrap)"; exit 2; }
if ! $B inspect --type image docker.io/library/debian:bookworm-slim >/dev/null 2>&1 &&
   ! $B pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
    echo "== no registry: a debootstrap bookworm stands in for debian:bookworm-slim"
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    ctr=$($B from scratch)
    cp -a "$rootfs"/. "$($B mount "$ctr")"/
    $B umount "$ctr" >/dev/null
    $B commit -q "$ctr" docker.io/library/debian:bookworm-slim >/dev/null
    $B rm "$ctr" >/dev/null
    rm -rf "$rootfs"
fi
echo "== build (a clean clone of HEAD as the context)"
ctx=$(mktemp -d)
git clone -q "$root" "$ctx/src"
(cd "$ctx/src" && $B bud --isolation chroot --pull=never -q -f deploy/Dockerfile -t pagoda:cpu .)
rm -rf "$ctx"
echo "== run"
ctr=$($B from pagoda:cpu)
trap '$B rm "$ctr" >/dev/null 2>&1 || true' EXIT
$B run --isolation chroot "$ctr" -- pagoda --version
$B run --isolation chroot -v "$model:/models/model.gguf:ro" "$ctr" -- \
    pagoda serve --model /models/model.gguf --host 0.0.0.0 --port "$port" -t 1 > /tmp/container-serve.log 2>&1 &
"$root/build/pagoda" serve --model "$model" --port $((port + 1)) -t 1 > /tmp/host-serve.log 2>&1 &
for i in $(seq 1 120); do
    curl -sf "localhost:$port/health" >/dev/null && curl -sf "localhost:$((port + 1))/health" >/dev/null && break
    sleep 1
done
body='{"messages":[{"role":"user","content":"Write a Python function that adds two numbers."}],"max_tokens":40,"temperature":0}'
a=$(curl -sf "localhost:$port/v1/chat/completions" -H 'content-type: application/json' -d "$body")
b=$(curl -sf "localhost:$((port + 1))/v1/chat/completions" -H 'content-type: application/json' -d "$body")
pkill -TERM -f "port $port" || true
pkill -TERM -f "port $((port + 1))" || true
wait || true
ca=$(printf '%s' "$a" | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])')
cb=$(printf '%s' "$b" | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])')
printf 'container: %q\nhost:      %q\n' "$ca" "$cb"
[ -n "$ca" ] && [ "$ca" = "$cb" ] && echo "OK: the image serves, greedy output equal to this build's" || { echo "FAIL"; exit 1; }

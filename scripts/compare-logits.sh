#!/usr/bin/env bash
# Bit-identity check between two pagoda builds: `pagoda logits` on every HF and GGUF fixture in
# ../shared/fixtures (their own input_ids), outputs compared byte for byte.
# usage: scripts/compare-logits.sh OLD_PAGODA NEW_PAGODA [extra pagoda-logits options]
set -euo pipefail
old=$1 new=$2
shift 2
extra=("$@")
shared=${PAGODA_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
same=0 differ=0
check() { # model input
    local name; name=$(echo "$1" | tr '/' '_')
    "$old" logits -m "$1" -i "$2" -o "$tmp/old.st" ${extra[@]+"${extra[@]}"} >/dev/null 2>&1 || { echo "OLD FAILED $1"; differ=$((differ + 1)); return; }
    "$new" logits -m "$1" -i "$2" -o "$tmp/new.st" ${extra[@]+"${extra[@]}"} >/dev/null 2>&1 || { echo "NEW FAILED $1"; differ=$((differ + 1)); return; }
    if cmp -s "$tmp/old.st" "$tmp/new.st"; then echo "identical  $1"; same=$((same + 1));
    else echo "DIFFERENT  $1"; differ=$((differ + 1)); fi
}
for d in "$shared"/fixtures/hf/*/; do
    [ -f "$d/golden.safetensors" ] && check "$d" "$d/golden.safetensors"
done
for g in "$shared"/fixtures/gguf/*.gguf; do
    check "$g" "${g%.gguf}.golden.safetensors"
done
echo "$same identical, $differ different"
[ "$differ" -eq 0 ]

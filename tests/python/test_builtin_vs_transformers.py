"""The built-in model (SmolLM2-135M-Instruct, Q4_1 GGUF) against Hugging Face transformers on the
same dequantized weights. transformers loads the GGUF and dequantizes it to float32; pagoda runs
(a) an F32 GGUF made by dequantizing every tensor with gguf-py: must match to float32 precision;
(b) the Q4_1 file itself, where pagoda (like llama.cpp) quantizes activations to 8 bits (Q8_1), so
    it differs by that quantization noise; the bound states it.
Needs torch + transformers + accelerate (about 5 GB, not installed by scripts/setup.sh); skipped
otherwise."""
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch", reason="torch not installed: pip install torch transformers accelerate")
transformers = pytest.importorskip("transformers", reason="transformers not installed")
pytest.importorskip("accelerate", reason="accelerate not installed (transformers needs it for GGUF)")
gguf = pytest.importorskip("gguf")


def dequantize_to_f32(src, dst):
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_builtin_model_matches_transformers(builtin_model, pagoda_bin, tmp_path):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(builtin_model.parent), gguf_file=builtin_model.name, dtype=torch.float32)
    ids = np.random.default_rng(0).integers(0, 49152, size=(2, 32)).astype(np.int32)
    ids[:, 0] = 1  # BOS
    with torch.no_grad():
        ref = model(torch.tensor(ids).long()).logits.numpy()
    save_file({"input_ids": ids}, str(tmp_path / "ids.safetensors"))

    f32 = tmp_path / "smollm2-f32.gguf"
    dequantize_to_f32(builtin_model, f32)
    for path, name in ((f32, "f32"), (builtin_model, "q4_1")):
        out = tmp_path / f"{name}.safetensors"
        subprocess.run([pagoda_bin, "logits", "-m", str(path), "-i", str(tmp_path / "ids.safetensors"), "-o", str(out)],
                       check=True)
        got = load_file(str(out))["logits"]
        d = np.abs(got - ref)
        agree = (got.argmax(-1) == ref.argmax(-1)).mean()
        print(f"{name}: max {d.max():.3g} mean {d.mean():.3g} (logit std {ref.std():.2f}) argmax agreement {agree:.3f}")
        if name == "f32":
            assert d.max() <= 5e-4
        else:
            # 8-bit activations over 30 layers: measured mean 0.24 with logit std 4.3, 94% argmax agreement
            assert d.mean() <= 0.4 and agree >= 0.85

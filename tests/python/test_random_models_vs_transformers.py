"""Models the fixtures do not cover, made on the spot with transformers (random weights): attention
and MLP biases with sharded safetensors, sliding windows shorter than the sequence (mistral,
starcoder2), qwen3 with head_dim != n_embd / n_head and tied embeddings, gpt_bigcode with
multi_query=false (multi-head attention: c_attn rows interleaved per head) at several head counts.
pagoda's logits must match transformers' float32 logits. Needs torch + transformers; skipped
otherwise."""
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch", reason="torch not installed: pip install torch transformers")
transformers = pytest.importorskip("transformers", reason="transformers not installed")

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, max_position_embeddings=128)
CASES = {
    "llama_bias_sharded": lambda: transformers.LlamaConfig(**SMALL, num_hidden_layers=3, num_attention_heads=8,
                                                           num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                                                           rope_theta=5000.0),
    "mistral_window": lambda: transformers.MistralConfig(**SMALL, num_hidden_layers=2, num_attention_heads=4,
                                                         num_key_value_heads=1, sliding_window=8),
    "qwen3_head_dim": lambda: transformers.Qwen3Config(**SMALL, num_hidden_layers=2, num_attention_heads=4,
                                                       num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    "starcoder2_window": lambda: transformers.Starcoder2Config(**SMALL, num_hidden_layers=2, num_attention_heads=4,
                                                               num_key_value_heads=2, sliding_window=8),
}
# gpt_bigcode without multi-query: n_head k/v heads; head counts and widths the fixtures do not have
for _h, _e in ((2, 32), (3, 72), (4, 64), (8, 64)):
    CASES[f"gpt_bigcode_mha_h{_h}"] = (lambda h, e: lambda: transformers.GPTBigCodeConfig(
        vocab_size=300, n_positions=128, n_embd=e, n_layer=2, n_head=h, n_inner=96, multi_query=False))(_h, _e)
# stored as bf16 (2-byte rows reordered): the reference computes in float32 over the same bf16 weights
CASES["gpt_bigcode_mha_h4_bf16"] = CASES["gpt_bigcode_mha_h4"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_random_model_matches_transformers(pagoda_bin, tmp_path, name):
    torch.manual_seed(0)
    cfg = CASES[name]()
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.08)
            if name.endswith("_bf16"):
                p.copy_(p.bfloat16().float())
    stored = model.to(torch.bfloat16) if name.endswith("_bf16") else model
    stored.save_pretrained(tmp_path / "m", max_shard_size="100KB" if "sharded" in name else "50MB")
    model = model.float()
    ids = np.random.default_rng(1).integers(0, 300, size=(2, 30)).astype(np.int32)
    with torch.no_grad():
        ref = model(torch.tensor(ids).long()).logits.numpy()
    save_file({"input_ids": ids}, str(tmp_path / "ids.safetensors"))
    subprocess.run([pagoda_bin, "logits", "-m", str(tmp_path / "m"), "-i", str(tmp_path / "ids.safetensors"),
                    "-o", str(tmp_path / "out.safetensors")], check=True)
    got = load_file(str(tmp_path / "out.safetensors"))["logits"]
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))

"""Makes tests/golden/llama_bf16_f32compute.safetensors: Hugging Face transformers logits for
../shared/fixtures/hf/llama_bf16 with the bf16 weights upcast to float32 (float32 compute).

Why: the shared golden for that model was computed in bf16 and its logits are rounded to bf16
(every value is bf16-representable; ulp 2^-6 at |x| = 2), so no float32 engine can meet 1e-3 on
it — transformers itself on CPU is 0.031 (bf16) / 0.035 (float32) away. This file checks the
bf16 weight path at float32 precision against the same independent reference.
Usage: python make_llama_bf16_golden.py ../shared/fixtures/hf/llama_bf16 OUT.safetensors"""
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file, save_file

src, out = sys.argv[1], sys.argv[2]
g = load_file(src + "/golden.safetensors")
model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
ids = torch.tensor(g["input_ids"]).long()
with torch.no_grad():
    logits = model(ids).logits.float().numpy()
    prompt = ids[:1, :8]
    gen = model.generate(prompt, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0)
save_file({"input_ids": g["input_ids"], "logits": logits.astype(np.float32),
           "greedy_prompt": prompt.numpy().astype(np.int32),
           "greedy_output": gen[:, 8:].numpy().astype(np.int32)}, out,
          metadata={"transformers": transformers.__version__, "torch": torch.__version__, "compute": "float32"})
print("wrote", out, "max |logits - bf16 golden| =", float(np.abs(logits - g["logits"]).max()))

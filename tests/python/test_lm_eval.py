"""lm-evaluation-harness against `pagoda serve`: its `local-completions` model runs a
loglikelihood (multiple-choice) task and a generate_until task over a few lines of local data
(tests/python/lm_eval_tiny, no download), with prompts sent as token lists in batches (several
prompts per request, echo + logprobs, max_tokens 1). Every loglikelihood lm-eval computes from
the server's prompt logprobs must equal the one computed from `pagoda logits` (the raw logits of
the same token ids) to 1e-4, and is_greedy must agree. The tokenizer lm-eval needs is a Hugging
Face tokenizer.json built here from the GGUF's vocabulary (offline); its ids are checked against
`pagoda tokenize` on the task's texts. `local-chat-completions` runs the generate_until task too."""
import json
import os
import pathlib

import numpy as np
import pytest

from serve_harness import running

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
lm_eval = pytest.importorskip("lm_eval")
tokenizers = pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from lm_eval.models.openai_completions import LocalCompletionsAPI  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

NAME = "SmolLM2-135M-Instruct.Q4_1"
HERE = pathlib.Path(__file__).resolve().parent / "lm_eval_tiny"


def _strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def hf_tokenizer_from_gguf(gguf_path, out):
    """tokenizer.json + tokenizer_config.json for the GGUF's byte-level BPE (SmolLM2: digits split
    one by one, then GPT-2's byte-level pre-tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    r = gguf.GGUFReader(str(gguf_path))
    toks, merges = _strings(r, "tokenizer.ggml.tokens"), _strings(r, "tokenizer.ggml.merges")
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    eos = int(r.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, ty in zip(toks, types) if ty == 3])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": toks[eos], "add_bos_token": False,
        "model_max_length": 2048}))
    return out


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "256M", "-t", "2")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, builtin_model):
    d = tmp_path_factory.mktemp("lm_eval")
    hf_tokenizer_from_gguf(builtin_model, d / "tokenizer")
    tasks = d / "tasks"
    tasks.mkdir()
    for name in ("pagoda_tiny_mc.yaml", "pagoda_tiny_gen.yaml"):
        (tasks / name).write_text((HERE / name).read_text().replace("DATA_DIR", str(HERE)))
    os.environ["HF_DATASETS_CACHE"] = str(d / "hf_datasets")
    return d


def pagoda_ids(run_pagoda, model, text):
    return [int(x) for x in run_pagoda("tokenize", "-m", model, "--ids", text).stdout.split()]


def reference_loglikelihoods(run_pagoda, model, tmp, seqs):
    """(sum of log p(continuation | context), is_greedy) per (context ids, continuation ids), from
    the raw logits `pagoda logits` writes for the token ids (rows padded at the end: each row is
    its own causal sequence from position 0, so padding changes nothing before it)."""
    T = max(len(c) + len(k) for c, k in seqs)
    ids = np.zeros((len(seqs), T), dtype=np.int32)
    for i, (c, k) in enumerate(seqs):
        ids[i, :len(c) + len(k)] = c + k
    safetensors_numpy.save_file({"input_ids": ids}, str(tmp / "ids.safetensors"))
    run_pagoda("logits", "-m", model, "-i", tmp / "ids.safetensors", "-o", tmp / "logits.safetensors", "-t", "2")
    logits = safetensors_numpy.load_file(str(tmp / "logits.safetensors"))["logits"].astype(np.float64)
    out = []
    for i, (c, k) in enumerate(seqs):
        ll, greedy = 0.0, True
        for j, tok in enumerate(k):
            row = logits[i, len(c) + j - 1]
            m = row.max()
            ll += row[tok] - (m + np.log(np.exp(row - m).sum()))
            greedy = greedy and int(row.argmax()) == tok
        out.append((ll, greedy))
    return out


def test_loglikelihood_task_matches_pagoda_logits(server, workdir, run_pagoda, builtin_model):
    lm = LocalCompletionsAPI(base_url=server.url + "/v1/completions", model=NAME, tokenizer_backend="huggingface",
                             tokenizer=str(workdir / "tokenizer"), tokenized_requests=True, batch_size=4,
                             max_retries=1, timeout=300)
    # the tokenizer lm-eval uses agrees with the server's on the task's texts
    for line in (HERE / "mc.jsonl").read_text().splitlines():
        doc = json.loads(line)
        for ch in doc["choices"]:
            text = doc["question"] + ch
            assert lm.tok_encode(text) == pagoda_ids(run_pagoda, builtin_model, text), text
    n_before = server.text().count("POST /v1/completions")
    res = lm_eval.simple_evaluate(model=lm, tasks=["pagoda_tiny_mc"], task_manager=TaskManager(
        include_path=str(workdir / "tasks")), log_samples=True, limit=None)
    # 14 continuations in batches of 4 token lists: 4 requests
    assert server.text().count("POST /v1/completions") - n_before == 4
    samples = res["samples"]["pagoda_tiny_mc"]
    assert len(samples) == 5
    seqs, got = [], []
    for s in samples:
        for (context, continuation), resp in zip(s["arguments"], s["resps"]):
            ctx_ids, cont_ids = lm._encode_pair(context, continuation)
            seqs.append((ctx_ids, cont_ids))
            got.append(tuple(resp[0]))
    assert len(seqs) == 14
    ref = reference_loglikelihoods(run_pagoda, builtin_model, workdir, seqs)
    worst = max(abs(g[0] - r[0]) for g, r in zip(got, ref))
    print(f"lm-eval loglikelihoods vs pagoda logits: {len(seqs)} continuations, max |diff| = {worst:.3g}")
    for (g_ll, g_greedy), (r_ll, r_greedy) in zip(got, ref):
        assert abs(g_ll - r_ll) < 1e-4, (g_ll, r_ll)
        assert bool(g_greedy) == r_greedy
    acc = res["results"]["pagoda_tiny_mc"]["acc,none"]
    assert 0 <= acc <= 1


def test_generate_until_task(server, workdir):
    lm = LocalCompletionsAPI(base_url=server.url + "/v1/completions", model=NAME, tokenizer_backend="huggingface",
                             tokenizer=str(workdir / "tokenizer"), tokenized_requests=False, batch_size=3,
                             max_retries=1, timeout=300)
    res = lm_eval.simple_evaluate(model=lm, tasks=["pagoda_tiny_gen"], task_manager=TaskManager(
        include_path=str(workdir / "tasks")), log_samples=True)
    samples = res["samples"]["pagoda_tiny_gen"]
    assert len(samples) == 3
    # greedy: the same text as the server gives for the prompt alone
    status, _, data = server.request("POST", "/v1/completions", {
        "model": NAME, "prompt": "1, 2, 3, 4,", "max_tokens": 8, "temperature": 0, "stop": [",", "\n", "."]})
    assert status == 200
    first = [s for s in samples if s["doc"]["question"] == "1, 2, 3, 4,"][0]
    assert first["resps"][0][0] == json.loads(data)["choices"][0]["text"]
    assert res["results"]["pagoda_tiny_gen"]["exact_match,none"] >= 1 / 3  # " 5" at least


def test_generate_until_chat(server, workdir):
    from lm_eval.models.openai_completions import LocalChatCompletion
    lm = LocalChatCompletion(base_url=server.url + "/v1/chat/completions", model=NAME, tokenizer_backend=None,
                             tokenized_requests=False, batch_size=1, max_retries=1, timeout=300)
    res = lm_eval.simple_evaluate(model=lm, tasks=["pagoda_tiny_gen"], task_manager=TaskManager(
        include_path=str(workdir / "tasks")), log_samples=True, apply_chat_template=True)
    samples = res["samples"]["pagoda_tiny_gen"]
    assert len(samples) == 3 and all(isinstance(s["resps"][0][0], str) for s in samples)

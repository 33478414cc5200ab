"""`pagoda serve --speculative ngram` and `--speculative draft:PATH` (also with the draft's head cut to
the first token ids, `--spec-draft-vocab`) with the official openai client:
greedy completions (streamed and not, several at once) equal those of a server without
speculation, a request can opt out (`"speculative": false` in the body), drafts show in /metrics
(pagoda: and vLLM's spec_decode names), and a bad draft model is refused at start-up.
`--speculative grammar`: structured-output requests (json_schema) draft the text their grammar
forces (keys, punctuation): the same JSON as without speculation, alone and batched, greedy, and
valid against the schema when sampled."""
import json
import concurrent.futures as cf
import subprocess

import pytest

from serve_harness import metric, running

openai = pytest.importorskip("openai")

NAME = "SmolLM2-135M-Instruct.Q4_1"
CODE = ("def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n"
        "def fact(n):\n    r = 1\n    for i in range(2, n + 1):\n        r *= i\n    return r\n")
PROMPTS = [CODE + "\n# the same two functions again:\n" + CODE[:20],
           "Repeat after me: the quick brown fox jumps over the lazy dog. Again: the quick",
           CODE + "\ndef fib2(n):\n"]


def complete(srv, prompt, stream=False, **extra):
    c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x")
    kw = dict(model=NAME, prompt=prompt, max_tokens=48, temperature=0, extra_body={"ignore_eos": True, **extra})
    if not stream:
        return c.completions.create(**kw).choices[0].text
    return "".join(ch.choices[0].text for ch in c.completions.create(stream=True, **kw) if ch.choices)


@pytest.fixture(scope="module")
def reference(pagoda_bin, builtin_model):
    gen = running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2")
    srv = next(gen)
    try:
        return [complete(srv, p) for p in PROMPTS]
    finally:
        gen.close()


@pytest.mark.parametrize("method", ["ngram", "draft", "draft-vocab"])
def test_speculative_server_same_output(pagoda_bin, builtin_model, reference, method):
    spec = "ngram" if method == "ngram" else f"draft:{builtin_model}"
    # draft-vocab: the draft scores only token ids below 2048 (a truncated head; the target's
    # tokens above it are never drafted, so many drafts fail): still the same text
    extra = ("--spec-draft-vocab", "2048") if method == "draft-vocab" else ()
    for srv in running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2", "--speculative", spec,
                       "--num-speculative-tokens", "5", "--spec-max-seqs", "8", *extra):
        assert [complete(srv, p) for p in PROMPTS] == reference
        assert [complete(srv, p, stream=True) for p in PROMPTS] == reference
        with cf.ThreadPoolExecutor(6) as ex:  # batched: drafts of several sequences in one step
            assert list(ex.map(lambda p: complete(srv, p), PROMPTS * 2)) == reference * 2
        m = srv.metrics()
        drafts, acc = metric(m, "pagoda:spec_decode_num_drafts_total"), metric(m, "pagoda:spec_decode_num_accepted_tokens_total")
        prop = metric(m, "pagoda:spec_decode_num_draft_tokens_total")
        assert drafts > 0 and 0 < acc <= prop, (drafts, acc, prop)
        assert metric(m, "vllm:spec_decode_num_accepted_tokens_total") == acc
        # opting out: the same text, no drafts for it
        assert complete(srv, PROMPTS[0], speculative=False) == reference[0]
        assert metric(srv.metrics(), "pagoda:spec_decode_num_drafts_total") == drafts
        status, _, body = srv.post("/v1/completions", {"model": NAME, "prompt": "x", "speculative": "yes"})
        assert status == 400 and b"speculative" in body


def test_bad_draft_model_refused(pagoda_bin, builtin_model, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    r = subprocess.run([pagoda_bin, "run", "-m", builtin_model, "-p", "hi", "-n", "4", "--speculative", f"draft:{bad}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "bad.gguf" in r.stderr, r.stderr
    r = subprocess.run([pagoda_bin, "run", "-m", builtin_model, "-p", "hi", "-n", "4", "--speculative", "sometimes"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--speculative" in r.stderr


PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "email_address": {"type": "string", "maxLength": 30}, "is_active_member": {"type": "boolean"},
    "favourite_language": {"type": "string", "enum": ["python", "javascript", "rust"]}},
    "required": ["name", "age", "email_address", "is_active_member", "favourite_language"], "additionalProperties": False}
ASKS = ["Invent a person as JSON.", "A retired teacher who likes Python.", "Make up a customer record."]


def structured(srv, prompt, **kw):
    c = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x")
    kw.setdefault("temperature", 0)
    r = c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": prompt}], max_tokens=160,
                                  response_format={"type": "json_schema",
                                                   "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
                                  **kw)
    return r.choices[0].message.content


@pytest.mark.parametrize("method", ["grammar", "ngram"])
def test_grammar_forced_drafts_same_json(pagoda_bin, builtin_model, method):
    jsonschema = pytest.importorskip("jsonschema")
    gen = running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2")
    srv = next(gen)
    try:
        want = [structured(srv, p) for p in ASKS]
    finally:
        gen.close()
    for p, w in zip(ASKS, want):
        jsonschema.validate(json.loads(w), PERSON)
    for srv in running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2", "--speculative", method,
                       "--spec-max-seqs", "8"):
        assert [structured(srv, p) for p in ASKS] == want
        with cf.ThreadPoolExecutor(3) as ex:  # batched: forced drafts of several sequences in one step
            assert list(ex.map(lambda p: structured(srv, p), ASKS)) == want
        m = srv.metrics()
        prop, acc = metric(m, "pagoda:spec_decode_num_draft_tokens_total"), metric(m, "pagoda:spec_decode_num_accepted_tokens_total")
        assert 0 < acc <= prop, (acc, prop)
        # sampled: still the schema's JSON (a rejected draft leaves a token the mask allowed)
        for seed in range(3):
            jsonschema.validate(json.loads(structured(srv, ASKS[0], temperature=1.0, seed=seed)), PERSON)

"""POST /tokenize and /detokenize of `pagoda serve` in both shapes clients send: llama-server's
({"content", "add_special", "with_pieces"} -> {"tokens"}; {"tokens"} -> {"content"}) and vLLM's
({"model", "prompt" | "messages", ...} -> {"count", "max_model_len", "tokens"}; {"model", "tokens"}
-> {"prompt"}). Ids are checked against a Hugging Face `tokenizers` reference built from the
built-in model's vocabulary; bad input gets a 4xx in OpenAI's error shape, never a 5xx. Real
clients over real sockets: requests and httpx."""
import json

import httpx
import pytest
import requests

from serve_harness import running
from test_prompt_injection import CONVERSATIONS, chatml
from test_tokenizer_vs_hf import smollm2_reference

TEXTS = [
    "Hello world",
    "  leading spaces, trailing  ",
    "café naïve Привет 世界 🦙 👩‍💻 １２３",
    "numbers 1234567 and 3.14159",
    "<|im_start|>user\nhi<|im_end|>\n",            # special-token text: parsed as special tokens
    "def f(x):\n\treturn x*2  # code\n\n",
    "",
]


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model):
    yield from running(pagoda_bin, builtin_model, "--kv-mem", "64M", "-t", "2")


@pytest.fixture(scope="module")
def ref(builtin_model):
    pytest.importorskip("tokenizers")
    return smollm2_reference(builtin_model)


def post(server, path, body, **kw):
    return requests.post(server.url + path, json=body, timeout=60, **kw)


def max_model_len(server):
    return requests.get(server.url + "/v1/models", timeout=30).json()["data"][0]["max_model_len"]


def test_llama_server_shape_matches_hf(server, ref):
    for text in TEXTS:
        r = post(server, "/tokenize", {"content": text})
        assert r.status_code == 200, r.text
        assert r.json() == {"tokens": ref.encode(text, add_special_tokens=False).ids}, text
    # special-token text became the special token: one id, the vocabulary's <|im_start|>
    ids = post(server, "/tokenize", {"content": "<|im_start|>"}).json()["tokens"]
    assert ids == [ref.token_to_id("<|im_start|>")]
    # parse_special false: the same text as plain text
    plain = post(server, "/tokenize", {"content": "<|im_start|>", "parse_special": False}).json()["tokens"]
    assert len(plain) > 1 and ref.token_to_id("<|im_start|>") not in plain


def test_llama_server_mixed_content(server, ref):
    """llama-server's "content" may mix text and token ids: text is tokenized, ids kept, in order."""
    hello, world = (ref.encode(t, add_special_tokens=False).ids for t in ("Hello", " world 🦙"))
    end = ref.token_to_id("<|im_end|>")
    r = post(server, "/tokenize", {"content": ["Hello", end, " world 🦙", 7, 8]})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == hello + [end] + world + [7, 8]
    r = post(server, "/tokenize", {"content": [end, "Hello"], "with_pieces": True})
    assert [t["piece"] for t in r.json()["tokens"]] == ["<|im_end|>", "Hello"]
    assert post(server, "/tokenize", {"content": []}).json() == {"tokens": []}


def test_add_special(server, ref):
    plain = post(server, "/tokenize", {"content": "Hello"}).json()["tokens"]
    special = post(server, "/tokenize", {"content": "Hello", "add_special": True}).json()["tokens"]
    # SmolLM2 adds no BOS of its own: the same ids (a model that does would get [bos] + plain)
    assert special[-len(plain):] == plain and len(special) - len(plain) in (0, 1)


def test_with_pieces(server, ref):
    for text in TEXTS:
        r = post(server, "/tokenize", {"content": text, "with_pieces": True})
        assert r.status_code == 200, r.text
        items = r.json()["tokens"]
        assert [t["id"] for t in items] == ref.encode(text, add_special_tokens=False).ids
        # each piece is the token's text: a string when it is valid UTF-8, else its bytes (as
        # llama-server); together they are the text
        raw = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in (t["piece"] for t in items))
        assert raw == text.encode(), text
    # an emoji split over byte tokens: at least one piece is a byte list
    items = post(server, "/tokenize", {"content": "🦙", "with_pieces": True}).json()["tokens"]
    assert any(isinstance(t["piece"], list) for t in items), items


def test_vllm_shape_matches_hf(server, ref):
    mml = max_model_len(server)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for text in TEXTS:
            r = c.post("/tokenize", json={"model": server.model_name, "prompt": text})
            assert r.status_code == 200, r.text
            want = ref.encode(text, add_special_tokens=False).ids
            assert r.json() == {"count": len(want), "max_model_len": mml, "tokens": want}, text
        r = c.post("/tokenize", json={"prompt": "Hello world", "add_special_tokens": False, "return_token_strs": True})
        enc = ref.encode("Hello world", add_special_tokens=False)
        assert r.json()["tokens"] == enc.ids and r.json()["token_strs"] == enc.tokens  # "Ġworld": the vocabulary's


def test_vllm_messages_match_template_and_chat(server, ref):
    for conv in CONVERSATIONS:
        r = post(server, "/tokenize", {"model": server.model_name, "messages": conv})
        assert r.status_code == 200, r.text
        want = ref.encode(chatml(conv), add_special_tokens=False).ids
        assert r.json()["tokens"] == want and r.json()["count"] == len(want), conv
        r = post(server, "/tokenize", {"messages": conv, "add_generation_prompt": False})
        assert r.json()["tokens"] == ref.encode(chatml(conv, gen=False), add_special_tokens=False).ids
    # the count is what a chat completion of the same messages is billed for
    conv = CONVERSATIONS[1]
    n = post(server, "/tokenize", {"messages": conv}).json()["count"]
    usage = post(server, "/v1/chat/completions", {"messages": conv, "max_tokens": 1}).json()["usage"]
    assert usage["prompt_tokens"] == n


def test_vllm_messages_with_tools(server):
    """vLLM's chat tokenize takes "tools": the count is the prompt of a chat completion with them."""
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    with_tools = post(server, "/tokenize", {"messages": msgs, "tools": tools,
                                            "chat_template_kwargs": {"enable_thinking": False}})
    assert with_tools.status_code == 200, with_tools.text
    usage = post(server, "/v1/chat/completions", {"messages": msgs, "tools": tools, "max_tokens": 1}).json()["usage"]
    assert usage["prompt_tokens"] == with_tools.json()["count"]
    r = post(server, "/tokenize", {"prompt": "x", "tools": tools})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    r = post(server, "/tokenize", {"messages": msgs, "tools": [{"type": "function"}]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("tools[0]"), r.text


def test_detokenize_both_shapes(server, ref):
    for text in TEXTS:
        ids = ref.encode(text, add_special_tokens=False).ids
        r = post(server, "/detokenize", {"tokens": ids})
        assert r.status_code == 200, r.text
        assert r.json()["content"] == ref.decode(ids, skip_special_tokens=False) == text
        r = post(server, "/detokenize", {"model": server.model_name, "tokens": ids})
        assert r.json() == {"prompt": text}
    # ids that end inside a character: the broken bytes become U+FFFD, as Hugging Face decodes them
    ids = ref.encode("🦙", add_special_tokens=False).ids
    r = post(server, "/detokenize", {"tokens": ids[:1]})
    assert r.status_code == 200 and r.json()["content"] == ref.decode(ids[:1]), r.text
    assert post(server, "/detokenize", {"tokens": []}).json()["content"] == ""


def test_round_trip(server):
    for text in TEXTS:
        ids = post(server, "/tokenize", {"content": text}).json()["tokens"]
        assert post(server, "/detokenize", {"tokens": ids}).json()["content"] == text


def test_unknown_model_is_404(server):
    for path, body in (("/tokenize", {"model": "gpt-17", "prompt": "x"}), ("/detokenize", {"model": "gpt-17", "tokens": [1]})):
        r = post(server, path, body)
        assert r.status_code == 404 and "gpt-17" in r.json()["error"]["message"]


BAD = [
    ("content-type", "/tokenize", {"content": 5}, "content"),
    ("prompt-type", "/tokenize", {"prompt": ["a"]}, "prompt"),
    ("content-element-type", "/tokenize", {"content": ["a", 1.5]}, "content[1]"),
    ("content-element-object", "/tokenize", {"content": [{"a": 1}]}, "content[0]"),
    ("content-id-out-of-vocab", "/tokenize", {"content": ["a", 49152]}, "content[1]"),
    ("content-id-negative", "/tokenize", {"content": [-3]}, "content[0]"),
    ("add-special-type", "/tokenize", {"content": "x", "add_special": "yes"}, "add_special"),
    ("with-pieces-type", "/tokenize", {"content": "x", "with_pieces": 1}, "with_pieces"),
    ("both-shapes", "/tokenize", {"content": "x", "prompt": "y"}, "content"),
    ("nothing", "/tokenize", {"add_special": True}, None),
    ("messages-type", "/tokenize", {"messages": "hi"}, "messages"),
    ("messages-no-role", "/tokenize", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("model-type", "/tokenize", {"prompt": "x", "model": 3}, "model"),
    ("tokens-missing", "/detokenize", {"model": "x"}, "tokens"),
    ("tokens-type", "/detokenize", {"tokens": "1,2"}, "tokens"),
    ("token-real", "/detokenize", {"tokens": [1, 2.5]}, "tokens[1]"),
    ("token-string", "/detokenize", {"tokens": ["1"]}, "tokens[0]"),
    ("token-negative", "/detokenize", {"tokens": [-1]}, "tokens[0]"),
    ("token-vocab-size", "/detokenize", {"tokens": [0, 49152]}, "tokens[1]"),
    ("token-huge", "/detokenize", {"tokens": [2 ** 40]}, "tokens[0]"),
    ("token-beyond-int64", "/detokenize", {"tokens": [2 ** 70]}, None),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_400(server, case):
    _, path, body, param = case
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    if param:
        assert err["param"] == param, err


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
def test_hostile_bodies(server, path):
    cases = [
        (b'{"content": "caf\xe9 \xff"}', 400),   # invalid UTF-8
        (b'{"tokens": [1, 2', 400),                # not JSON
        (b"[1, 2, 3]", 400),                       # not an object
        (b"", 400),                                # empty
        (b'{"content": "a", "content": "b"}', 400),  # duplicate keys
        (json.dumps({"content": "x" * (10 << 20), "tokens": [1]}).encode(), 413),  # 10 MB
    ]
    for body, status in cases:
        r = requests.post(server.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=120)
        assert r.status_code == status, (body[:40], r.status_code, r.text[:200])
        assert "error" in r.json()
    assert requests.get(server.url + path, timeout=30).status_code == 405
    assert requests.get(server.url + "/health", timeout=30).status_code == 200  # still serving


def test_unknown_field_ignored_with_warning(server):
    r = post(server, "/tokenize", {"content": "x", "frobnicate_tok": 1})
    assert r.status_code == 200
    assert "ignored unknown field(s): frobnicate_tok" in server.text()

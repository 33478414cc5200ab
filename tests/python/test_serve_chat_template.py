"""Chat template overrides (vLLM's --chat-template; `chat_template` per model in --models-config):
the prompt a chat request becomes must be the template rendered by Python's jinja2 (an
independent renderer) and tokenized, for the default model from a file and for a configured model
from inline text, while a model without an override keeps its own; a template that does not parse
or name a file stops the server with a clear message."""
import json
import subprocess

import pytest

from serve_harness import Server

jinja2 = pytest.importorskip("jinja2")

TEMPLATE = ("{% for m in messages %}<<{{ m.role }}>>{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}<<assistant>>{% endif %}")
INLINE = "{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}{% endfor %}[ANSWER]"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}]


def render(template, messages):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers' apply_chat_template
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def prompt_ids(server, model, messages):
    st, _, body = server.post("/tokenize", {"model": model, "messages": messages})
    assert st == 200, body
    return json.loads(body)["tokens"]


def text_ids(server, text):
    st, _, body = server.post("/tokenize", {"content": text, "add_special": False, "parse_special": False})
    assert st == 200, body
    return json.loads(body)["tokens"]


@pytest.fixture(scope="module")
def server(pagoda_bin, builtin_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tmpl")
    (tmp / "t.jinja").write_text(TEMPLATE)
    cfg = tmp / "models.yaml"
    cfg.write_text("models:\n"
                   f"  - name: inline\n    path: {builtin_model}\n    chat_template: {json.dumps(INLINE)}\n"
                   f"  - name: own\n    path: {builtin_model}\n")
    s = Server(pagoda_bin, builtin_model, "--served-model-name", "smol", "--chat-template", tmp / "t.jinja",
               "--models-config", cfg, "--kv-mem", "16M", "--threads", "1")
    yield s
    s.close()


def test_file_template_for_the_default_model(server):
    want = render(TEMPLATE, MESSAGES)
    assert want.startswith("<<system>>Be brief.\n<<user>>")
    assert prompt_ids(server, "smol", MESSAGES) == text_ids(server, want)
    # and a chat request runs on it: its prompt is that many tokens
    st, _, body = server.post("/v1/chat/completions", {"model": "smol", "messages": MESSAGES, "max_tokens": 2})
    assert st == 200, body
    assert json.loads(body)["usage"]["prompt_tokens"] == len(text_ids(server, want))


def test_inline_template_from_the_config(server):
    want = render(INLINE, MESSAGES)
    assert want == "[SYSTEM] Be brief.[USER] Name a prime.[ANSWER]"
    assert prompt_ids(server, "inline", MESSAGES) == text_ids(server, want)


def test_other_models_keep_their_own(server):
    ids = prompt_ids(server, "own", MESSAGES)
    assert ids != prompt_ids(server, "smol", MESSAGES) and ids != prompt_ids(server, "inline", MESSAGES)
    st, _, body = server.post("/tokenize", {"content": "<|im_start|>", "add_special": False, "parse_special": True})
    assert json.loads(body)["tokens"][0] in ids  # SmolLM2's own ChatML template


@pytest.mark.parametrize("arg, words", [("{% for m in messages %}{{ m.content ", "unexpected end"),
                                        ("/no/such/template.jinja", "no such file")])
def test_bad_template_stops_the_server(pagoda_bin, builtin_model, arg, words):
    p = subprocess.run([str(pagoda_bin), "serve", str(builtin_model), "--port", "0", "--chat-template", arg],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "chat template" in p.stderr and words in p.stderr, p.stderr

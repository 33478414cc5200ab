#!/usr/bin/env python3
"""Makes tests/golden/chat_templates.json: chat template inputs and the text Hugging Face renders.

Run with a Python that has transformers + jinja2 (+ gguf for the SmolLM2 template):
    python tests/golden/make_chat_template_golden.py [../shared] [models/SmolLM2-135M-Instruct.Q4_1.gguf]

Qwen3 cases go through AutoTokenizer.apply_chat_template(tokenize=False) on
../shared/fixtures/tokenizers/qwen3-hf. ChatML (SmolLM2, read from the GGUF) and Llama-3 cases are
rendered with transformers' own compiled jinja environment (the one apply_chat_template uses:
ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
strftime_now, HF's tojson). Each case stores the template, the inputs and the expected text.
"""
import json
import os
import sys

from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared")
GGUF = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

LLAMA3 = (
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "    {%- if loop.index0 == 0 and message['role'] != 'system' and false %}{%- endif %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)
# The well-known Meta-Llama-3-8B-Instruct template, verbatim.
LLAMA3_HF = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Zürich"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "number"}, "b": {"type": "number", "default": 1.5}},
            "required": ["a"]}}},
]

SYS_USER = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello! How are you?"}]
MULTI = [{"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": "2+2 equals 4."},
         {"role": "user", "content": "And 3+3?\nAnswer briefly."}]
TOOL_CONV = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "Weather in Paris, and 2+3?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
        {"type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
    {"role": "tool", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
    {"role": "tool", "content": "5"},
]
THINK = [
    {"role": "user", "content": "Think: is 17 prime?"},
    {"role": "assistant", "content": "<think>\nCheck divisors up to 4.\n</think>\n\nYes, 17 is prime."},
    {"role": "user", "content": "And 21?"},
    {"role": "assistant", "content": "No.", "reasoning_content": "21 = 3 * 7."},
]


def main():
    cases = []
    tok = AutoTokenizer.from_pretrained(os.path.join(SHARED, "fixtures", "tokenizers", "qwen3-hf"))
    qwen = tok.chat_template

    def qcase(name, messages, tools=None, agp=False, extra=None):
        extra = extra or {}
        text = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=agp,
                                       tokenize=False, **extra)
        cases.append({"name": name, "template": "qwen3", "messages": messages, "tools": tools,
                      "add_generation_prompt": agp, "bos_token": tok.bos_token,
                      "eos_token": tok.eos_token, "extra": extra or None, "expected": text})

    qcase("qwen3_system_user", SYS_USER, agp=True)
    qcase("qwen3_multi_turn", MULTI, agp=True)
    qcase("qwen3_multi_turn_no_prompt", MULTI, agp=False)
    qcase("qwen3_tools", TOOL_CONV, tools=TOOLS, agp=True)
    qcase("qwen3_tools_only_user", [{"role": "user", "content": "hi"}], tools=TOOLS, agp=True)
    qcase("qwen3_think", THINK, agp=False)
    qcase("qwen3_think_prompt", THINK[:3], agp=True)
    qcase("qwen3_no_thinking", SYS_USER, agp=True, extra={"enable_thinking": False})
    qcase("qwen3_thinking_true", MULTI, agp=True, extra={"enable_thinking": True})

    try:
        from gguf import GGUFReader
        r = GGUFReader(GGUF)
        f = r.fields["tokenizer.chat_template"]
        chatml = bytes(f.parts[f.data[0]]).decode("utf-8")
    except Exception as e:  # no gguf-py or model: fall back to the same template text
        print("note: using built-in ChatML template:", e, file=sys.stderr)
        chatml = CHATML

    def jcase(name, tname, tmpl, messages, agp, bos, eos, extra=None):
        t = _compile_jinja_template(tmpl)
        text = t.render(messages=messages, tools=None, add_generation_prompt=agp,
                        bos_token=bos, eos_token=eos, **(extra or {}))
        cases.append({"name": name, "template": tname, "messages": messages, "tools": None,
                      "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos,
                      "extra": extra, "expected": text})

    for tname, tmpl, bos, eos in (("chatml", chatml, "<|im_start|>", "<|im_end|>"),
                                  ("llama3", LLAMA3_HF, "<|begin_of_text|>", "<|eot_id|>"),
                                  ("llama3_ws", LLAMA3, "<|begin_of_text|>", "<|eot_id|>")):
        jcase(tname + "_user", tname, tmpl, [{"role": "user", "content": "  Hi there  "}], True, bos, eos)
        jcase(tname + "_multi", tname, tmpl, SYS_USER + [{"role": "assistant", "content": "Fine, thanks."},
                                                         {"role": "user", "content": "Tell me a joke."}],
              False, bos, eos)

    out = {"templates": {"qwen3": qwen, "chatml": chatml, "llama3": LLAMA3_HF, "llama3_ws": LLAMA3},
           "cases": cases}
    path = os.path.join(HERE, "chat_templates.json")
    with open(path, "w", encoding="utf-8") as fp:
        json.dump(out, fp, ensure_ascii=False, indent=1)
        fp.write("\n")
    print("wrote", path, len(cases), "cases")


if __name__ == "__main__":
    main()

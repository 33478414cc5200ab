"""pagoda's tokenizer against the Hugging Face `tokenizers` library on varied text.

References: pycoder-tiny's and Qwen3's tokenizer.json (Tokenizer.from_file), and the built-in
SmolLM2 GGUF, whose reference is built from the GGUF's own vocab + merges with the same
pre-tokenizer SmolLM2's tokenizer.json uses (Digits(individual) + ByteLevel)."""
import os
import pathlib
import random
import subprocess

import pytest

tokenizers = pytest.importorskip("tokenizers")

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEP = "\n__ggml_vocab_test__\n"


def _binary():
    b = pathlib.Path(os.environ.get("PAGODA_BUILD", ROOT / "build")) / "test_tokenizer"
    if not b.exists():
        pytest.skip(f"test_tokenizer not built at {b}")
    return b


def _texts():
    rng = random.Random(1234)
    out = []
    for src in sorted((ROOT / "src").rglob("*.c"))[:20]:
        lines = src.read_text(errors="replace").splitlines()
        for i in range(0, min(len(lines), 200), 10):
            out.append("\n".join(lines[i:i + rng.randint(1, 6)]))
    words = ["hello", "world", "The", "quick", "brown", "fox", "don't", "I'll", "WE'RE", "naïve", "café",
             "Привет", "мир", "こんにちは", "世界", "안녕하세요", "مرحبا", "שלום", "🙂", "🦙", "👩‍💻", "🇫🇷",
             "3.14159", "1234567", "0x1F", "１２３", "٣٤٥", "<|endoftext|>", "def", "return", "{}", "();", "=>",
             "\t", "  ", "   ", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "...", "!!!", "—", "’s", "'s"]
    for _ in range(300):
        n = rng.randint(1, 25)
        s = ""
        for _ in range(n):
            s += rng.choice(words)
            s += rng.choice(["", " ", " ", "  ", "\n", "\t", ",", ". "])
        out.append(s)
    out += ["", " ", "    ", "\n\n\n", "a" * 500, "1" * 50, " " * 100 + "x", "\t\t\tif (x) {\n\t\t\t\treturn 0;\n\t\t\t}"]
    return out


# HF's encode matches special-token text even with add_special_tokens=False: compare with
# pagoda's parse_special=True.
def _pagoda_encode(model, texts, tmp_path):
    f = tmp_path / "cases.txt"
    f.write_text(SEP.join(texts), encoding="utf-8")
    r = subprocess.run([str(_binary()), "encode-special", str(model), str(f)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")[:len(texts)]
    return [[int(x) for x in ln.split()] for ln in lines]


def _compare(ref, model, tmp_path):
    texts = _texts()
    got = _pagoda_encode(model, texts, tmp_path)
    bad = []
    for t, g in zip(texts, got):
        e = ref.encode(t, add_special_tokens=False).ids
        if e != g:
            bad.append((t, g, e))
    assert not bad, f"{len(bad)}/{len(texts)} differ; first: {bad[0]!r}"


def test_pycoder_tiny(shared, tmp_path):
    d = shared / "models" / "pycoder-tiny"
    if not (d / "tokenizer.json").exists():
        pytest.skip("pycoder-tiny not in shared")
    _compare(tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")), d, tmp_path)


def test_qwen3(shared, tmp_path):
    d = shared / "fixtures" / "tokenizers" / "qwen3-hf"
    if not (d / "tokenizer.json").exists():
        pytest.skip("qwen3-hf not in shared")
    _compare(tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")), d, tmp_path)


def smollm2_reference(builtin_model):
    """The built-in model's tokenizer as a Hugging Face `tokenizers` object, built from the GGUF's
    vocabulary and merges (SmolLM2's pre-tokenizer: digits split, then byte-level), with its
    special tokens and a byte-level decoder. Also used by test_serve_tokenize.py."""
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(builtin_model))

    def strs(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    assert bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"
    toks = strs("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strs("tokenizer.ggml.merges")]
    ft = r.fields["tokenizer.ggml.token_type"]
    types = [int(ft.parts[i][0]) for i in ft.data]
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    ref = Tokenizer(models.BPE({t: i for i, t in enumerate(toks)}, merges))
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    ref.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(toks, types) if ty == 3])
    ref.decoder = decoders.ByteLevel()
    return ref


def test_smollm2_gguf(builtin_model, tmp_path):
    _compare(smollm2_reference(builtin_model), builtin_model, tmp_path)


LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
VARIANTS = {
    "merges_as_strings": lambda j: j["model"].update(merges=[" ".join(m) for m in j["model"]["merges"]]),
    "digits_then_bytelevel": lambda j: j.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}),
    "split_regex_llama3": lambda j: j.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}),
    "bytelevel_prefix_space": lambda j: j["pre_tokenizer"].update(add_prefix_space=True),
    "ignore_merges": lambda j: j["model"].update(ignore_merges=True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tokenizer_json_variants(shared, tmp_path, variant):
    """pycoder-tiny's vocabulary under other tokenizer.json configurations seen in real models."""
    import json
    src = shared / "models" / "pycoder-tiny" / "tokenizer.json"
    if not src.exists():
        pytest.skip("pycoder-tiny not in shared")
    j = json.loads(src.read_text())
    VARIANTS[variant](j)
    d = tmp_path / "tok"
    d.mkdir()
    (d / "tokenizer.json").write_text(json.dumps(j))
    _compare(tokenizers.Tokenizer.from_file(str(d / "tokenizer.json")), d, tmp_path)

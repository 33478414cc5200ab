"""Pre-tokenizer families against the Hugging Face `tokenizers` library.

One byte-level BPE vocabulary is trained here with `tokenizers` (merges across digits, punctuation,
CJK and whitespace, so a wrong split shows up as different ids). For each family, the tokenizer.json
gets that family's pre_tokenizer as its Hugging Face tokenizer.json writes it, and the reference is
`tokenizers` itself encoding a varied corpus. pagoda is checked twice per family: reading the
tokenizer.json (the general pre_tokenizer interpreter) and reading a vocab-only GGUF with
tokenizer.ggml.pre = the family's name (the table of families llama.cpp names)."""
import json
import os
import pathlib
import random
import subprocess

import pytest

tokenizers = pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEP = "\n__ggml_vocab_test__\n"


def _binary():
    b = pathlib.Path(os.environ.get("PAGODA_BUILD", ROOT / "build")) / "test_tokenizer"
    if not b.exists():
        pytest.skip(f"test_tokenizer not built at {b}")
    return b


def split(regex, behavior="Isolated", invert=False):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": behavior, "invert": invert}


def bytelevel(use_regex, prefix=False):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": use_regex}


def seq(*p):
    return {"type": "Sequence", "pretokenizers": list(p)}


DIGITS1 = {"type": "Digits", "individual_digits": True}
DIGITS = {"type": "Digits", "individual_digits": False}
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
          r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CJK = "[一-龥ࠀ-一가-퟿]+"
BLOOM = " ?[^(\\s|[.,!?…。，、।۔،])]+"  # Oniguruma: [.,!?…] nested in the negated class
DS_LETTERS = "\\s?[A-Za-z\U000000b5\U000000c0-\U000000d6\U000000d8-\U000000f6\U000000f8-\U000001ba\U000001bc-\U000001bf\U000001c4-\U00000293\U00000295-\U000002af\U00000370-\U00000373\U00000376\U00000377\U0000037b-\U0000037d\U0000037f\U00000386\U00000388-\U0000038a\U0000038c\U0000038e-\U000003a1\U000003a3-\U000003f5\U000003f7-\U00000481\U0000048a-\U0000052f\U00000531-\U00000556\U000010a0-\U000010c5\U000013a0-\U000013f5\U000013f8-\U000013fd\U00001c90-\U00001cba\U00001cbd-\U00001cbf\U00001d00-\U00001d2b\U00001d6b-\U00001d77\U00001d79-\U00001d9a\U00001e00-\U00001f15\U00001f18-\U00001f1d\U00001f20-\U00001f45\U00001f48-\U00001f4d\U00001f50-\U00001f57\U00001f59\U00001f5b\U00001f5d\U00001f5f-\U00001f7d\U00001f80-\U00001fb4\U00001fb6-\U00001fbc\U00001fbe\U00001fc2-\U00001fc4\U00001fc6-\U00001fcc\U00001fd0-\U00001fd3\U00001fd6-\U00001fdb\U00001fe0-\U00001fec\U00001ff2-\U00001ff4\U00001ff6-\U00001ffc\U00002102\U00002107\U0000210a-\U00002113\U00002115\U00002119-\U0000211d\U00002124\U00002126\U00002128\U0000212a-\U0000212d\U0000212f-\U00002134\U00002139\U0000213c-\U0000213f\U00002145-\U00002149\U0000214e\U00002183\U00002184\U00002c00-\U00002c7b\U00002c7e-\U00002ce4\U00002ceb-\U00002cee\U00002cf2\U00002cf3\U0000a640-\U0000a66d\U0000a680-\U0000a69b\U0000a722-\U0000a76f\U0000a771-\U0000a787\U0000a78b-\U0000a78e\U0000ab70-\U0000abbf\U0000fb00-\U0000fb06\U0000fb13-\U0000fb17\U0000ff21-\U0000ff3a\U0000ff41-\U0000ff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+"  # as \x{..} ranges, not NFC-normalizable text
DS3 = ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
       "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")

# family name (tokenizer.ggml.pre) -> (pre_tokenizer as the family's tokenizer.json has it, ignore_merges)
FAMILIES = {
    "gpt-2": (bytelevel(True), False),
    "starcoder": (seq(DIGITS1, bytelevel(True)), False),
    "command-r": (seq(DIGITS1, bytelevel(True)), False),
    "exaone": (seq(DIGITS1, bytelevel(True)), False),
    "llama-bpe": (seq(split(LLAMA3), bytelevel(False)), True),
    "dbrx": (seq(split(LLAMA3), bytelevel(False)), False),
    "smaug-bpe": (seq(split(LLAMA3), bytelevel(False)), False),
    "chatglm-bpe": (seq(split(LLAMA3), bytelevel(False)), False),
    "qwen2": (seq(split(QWEN2), bytelevel(False)), False),
    "stablelm2": (seq(split(QWEN2), bytelevel(False)), False),
    "deepseek-coder": (seq(split("[\r\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"), split(CJK), DIGITS1,
                           bytelevel(False)), False),
    "deepseek-llm": (seq(split("[\r\n]"), split(DS_LETTERS), split("\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"), split("\\s+$"),
                         split(CJK), DIGITS, bytelevel(False)), False),
    "deepseek-v3": (seq(split("\\p{N}{1,3}"), split("[一-龥぀-ゟ゠-ヿ]+"), split(DS3), bytelevel(False)), False),
    "falcon": (seq({"type": "Punctuation", "behavior": "Contiguous"}, bytelevel(True), DIGITS,
                   split("[0-9][0-9][0-9]")), False),
    "bloom": (seq(split(BLOOM), bytelevel(False)), False),
    "poro-chat": (seq(split(BLOOM), bytelevel(False)), False),
    "gpt3-finnish": (seq(split(BLOOM), bytelevel(False)), False),
    "viking": (seq(split(BLOOM), DIGITS1, bytelevel(False)), False),
    "tekken": (seq(split(TEKKEN), bytelevel(False)), True),
    "gpt-4o": (seq(split(GPT4O), bytelevel(False)), False),
    "chameleon": (seq(split("<sentinel:[0-9]+>"), split("(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z"),
                      split("([\\t\\n]|    |  )"), DIGITS1, {"type": "Punctuation", "behavior": "Isolated"},
                      bytelevel(True)), False),
}

# General constructs (tokenizer.json only): behaviors, invert, ByteLevel mid-sequence, prefix space.
CONSTRUCTS = {
    "merged_with_previous": seq(split("\\p{P}", "MergedWithPrevious"), bytelevel(True)),
    "merged_with_next": seq(split("\\s", "MergedWithNext"), bytelevel(False)),
    "contiguous": seq(split("\\p{N}", "Contiguous"), bytelevel(False)),
    "removed_inverted": seq(split("\\S+|\\s", "Removed", invert=True), bytelevel(False)),
    "isolated_inverted": seq(split("\\p{L}+", "Isolated", invert=True), bytelevel(False)),
    "lookahead_empty_matches": seq(split("(?=\\p{N})"), bytelevel(False)),
    "digits_after_bytelevel": seq(bytelevel(True), DIGITS1),
    "split_after_bytelevel": seq(bytelevel(False), split("\\p{L}+|\\p{N}+")),
    "prefix_space_per_piece": seq(split("[,.]"), bytelevel(False, prefix=True)),
    "punctuation_merged_next": seq({"type": "Punctuation", "behavior": "MergedWithNext"}, bytelevel(True)),
    "whitespace_split": seq({"type": "WhitespaceSplit"}, bytelevel(False)),
    "whitespace": seq({"type": "Whitespace"}, bytelevel(False)),
    "string_pattern": seq({"type": "Split", "pattern": {"String": "::"}, "behavior": "Isolated", "invert": False},
                          bytelevel(True)),
}


def _texts():
    rng = random.Random(7)
    out = []
    for src in sorted((ROOT / "src").rglob("*.c"))[:12]:
        lines = src.read_text(errors="replace").splitlines()
        for i in range(0, min(len(lines), 150), 15):
            out.append("\n".join(lines[i:i + rng.randint(1, 6)]))
    words = ["hello", "World", "The", "HTTPServer", "camelCase", "don't", "I'll", "WE'RE", "naïve", "café", "Ελλάδα",
             "Привет", "мир", "こんにちは", "世界", "中文字符", "안녕하세요", "مرحبا", "שלום", "हिन्दी।", "🙂", "🦙",
             "👩‍💻", "3.14159", "1234567", "0x1F", "１２３", "٣٤٥", "²³", "$100", "a+b=c", "x<=y", "^~|`", "def",
             "return", "{}", "();", "=>", "<sentinel:12>", "IMGIMGABZ", "\t", "  ", "   ", "    ", "\n", "\n\n",
             "\r\n", " \n ", "\u00a0", "\u3000", "...", "!!!", "?!", "—", "’s", "'s", "，", "。", "…", "،"]
    for _ in range(250):
        s = ""
        for _ in range(rng.randint(1, 20)):
            s += rng.choice(words) + rng.choice(["", " ", " ", "  ", "\n", "\t", ",", ". ", "'"])
        out.append(s)
    out += [" ", "    ", "\n\n\n", "a" * 300, "1" * 40, " " * 50 + "x", "x" + " " * 7, "\t\tif (x) {\n\t\t\treturn 0;\n\t\t}"]
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A byte-level BPE trained on the corpus: tokenizer.json dict, tokens and merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex("\\s+\\S+|\\S+|\\s+"), "isolated")
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=4000, initial_alphabet=alphabet, show_progress=False)
    # train on byte-level mapped text so every piece is representable
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    corpus = ["".join(p for p, _ in bl.pre_tokenize_str(t)) for t in _texts() * 3]
    tok.train_from_iterator(corpus, trainer)
    j = json.loads(tok.to_str())
    j["normalizer"] = None
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    vocab = j["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    assert len(merges) > 1000
    return j, vocab, merges


def _encode(model, texts, tmp_path):
    f = tmp_path / "cases.txt"
    f.write_text(SEP.join(texts), encoding="utf-8")
    r = subprocess.run([str(_binary()), "encode", str(model), str(f)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [[int(x) for x in ln.split()] for ln in r.stdout.split("\n")[:len(texts)]]


def _tokenizer_json(base, pre, ignore_merges, d):
    j = json.loads(json.dumps(base[0]))
    j["pre_tokenizer"] = pre
    j["model"]["ignore_merges"] = ignore_merges
    d.mkdir()
    (d / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    return tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))


def _check(ref, model, tmp_path, what):
    texts = _texts()
    got = _encode(model, texts, tmp_path)
    bad = [(t, g, ref.encode(t, add_special_tokens=False).ids) for t, g in zip(texts, got)]
    bad = [b for b in bad if b[1] != b[2]]
    assert not bad, f"{what}: {len(bad)}/{len(texts)} texts differ; first: {bad[0]!r}"


def _vocab_gguf(base, pre_name, path):
    _, vocab, merges = base
    toks = [None] * len(vocab)
    for t, i in vocab.items():
        toks[i] = t
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_name)
    w.add_token_list(toks)
    w.add_token_types([1] * len(toks))
    w.add_token_merges(merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_tokenizer_json(base, tmp_path, family):
    pre, im = FAMILIES[family]
    ref = _tokenizer_json(base, pre, im, tmp_path / "tok")
    _check(ref, tmp_path / "tok", tmp_path, f"{family} (tokenizer.json)")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_gguf(base, tmp_path, family):
    pre, im = FAMILIES[family]
    ref = _tokenizer_json(base, pre, im, tmp_path / "tok")
    g = tmp_path / f"vocab-{family}.gguf"
    _vocab_gguf(base, family, g)
    _check(ref, g, tmp_path, f"{family} (GGUF tokenizer.ggml.pre)")


@pytest.mark.parametrize("name", sorted(CONSTRUCTS))
def test_construct(base, tmp_path, name):
    ref = _tokenizer_json(base, CONSTRUCTS[name], False, tmp_path / "tok")
    _check(ref, tmp_path / "tok", tmp_path, name)


def test_wrong_split_is_caught(base, tmp_path):
    """The corpus and vocabulary tell splits apart: falcon's ids differ from gpt-2's."""
    ref = _tokenizer_json(base, FAMILIES["falcon"][0], False, tmp_path / "tok")
    g = tmp_path / "vocab-gpt2.gguf"
    _vocab_gguf(base, "gpt-2", g)
    texts = _texts()
    got = _encode(g, texts, tmp_path)
    assert sum(g_ != ref.encode(t, add_special_tokens=False).ids for t, g_ in zip(texts, got)) > 10

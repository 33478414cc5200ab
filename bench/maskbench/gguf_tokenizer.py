"""A Hugging Face tokenizer.json from a GGUF's tokenizer metadata, with transformers' GGUF support.

transformers' own GGUF loaders read the file through torch; this reads the metadata with the `gguf`
package instead and hands it to transformers' GGUF tokenizer converter, so no torch is needed.
The result is cached (keyed by the GGUF's path, size and mtime) under a build/tmp folder.

One fix-up: the converter gives a byte-level BPE vocabulary a generic decoder (ByteFallback, Fuse,
Replace, ByteLevel) that grammar engines read as a sentencepiece byte-fallback vocabulary; when the
pre-tokenizer is ByteLevel, the decoder is set to plain ByteLevel, which is what it means.
"""
import hashlib
import json
import os
import pathlib


def _converter():
    try:  # transformers >= 5
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (GGUF_TOKENIZER_MAPPING,
                                                                           convert_gguf_tokenizer)
    except ImportError:  # transformers 4.x
        from transformers.integrations.ggml import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer
    return GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer


def _field_value(field):
    return field.contents()


def gguf_metadata(path):
    """(architecture, {transformers tokenizer key: value}, eos_token_id) from a GGUF file."""
    import gguf
    mapping, _ = _converter()
    reader = gguf.GGUFReader(str(path))
    tok = {}
    arch = None
    eos = None
    for key, field in reader.fields.items():
        if key == "general.architecture":
            arch = _field_value(field)
        if key == "tokenizer.ggml.eos_token_id":
            eos = int(_field_value(field))
        if not key.startswith("tokenizer."):
            continue
        name = mapping["tokenizer"].get(key[len("tokenizer."):])
        if name:
            tok[name] = _field_value(field)
    if arch is None or "tokens" not in tok:
        raise ValueError(f"{path}: no tokenizer metadata (general.architecture / tokenizer.ggml.tokens)")
    return arch, tok, eos


def tokenizer_json_from_gguf(gguf_path, cache_dir):
    """Path of a tokenizer.json built from gguf_path (cached in cache_dir)."""
    gguf_path = pathlib.Path(gguf_path).resolve()
    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = pathlib.Path(cache_dir) / f"{gguf_path.stem}-{key}.tokenizer.json"
    if out.exists():
        return out
    arch, tok, eos = gguf_metadata(gguf_path)
    _, convert = _converter()
    backend, _ = convert(arch, tok)
    spec = json.loads(backend.to_str())
    pre = spec.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if any(p.get("type") == "ByteLevel" for p in pres):
        spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                           "use_regex": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    # the end-of-text token the GGUF names, beside the tokenizer.json (which has no field for it)
    meta = out.with_name(out.name.replace(".tokenizer.json", ".eos.json"))
    meta.write_text(json.dumps({"eos_token_id": eos}))
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(spec, ensure_ascii=False))
    tmp.replace(out)
    return out


def eos_of_cached(tokenizer_json):
    """The eos id recorded beside a tokenizer.json made by tokenizer_json_from_gguf, or None."""
    meta = pathlib.Path(str(tokenizer_json).replace(".tokenizer.json", ".eos.json"))
    if meta.exists():
        return json.loads(meta.read_text()).get("eos_token_id")
    return None

#!/usr/bin/env python3
"""Writes small seed inputs for tests/fuzz/fuzz_gguf and fuzz_safetensors (run from anywhere).
GGUF seeds are built by hand with struct so every value type and a few tensor layouts appear;
safetensors seeds use the same layout the Python library writes."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def kv(key, t, payload):
    return s(key) + struct.pack("<I", t) + payload


def gguf_file(version, kvs, tensors, align=32):
    """tensors: (name, dtype, ne, nbytes); data placed at aligned offsets."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    off, infos = 0, b""
    for name, dtype, ne, nbytes in tensors:
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", dtype, off)
        off += (nbytes + align - 1) // align * align
    out += infos
    out += b"\0" * (-len(out) % align)
    for i, (_, _, _, nbytes) in enumerate(tensors):
        out += bytes((i * 31 + j) & 0xFF for j in range(nbytes)) + b"\0" * (-nbytes % align)
    return out


def gguf_seeds():
    scalars = [
        kv("general.architecture", 8, s("llama")),
        kv("a.u8", 0, b"\x07"), kv("a.i8", 1, b"\xfe"), kv("a.u16", 2, struct.pack("<H", 300)),
        kv("a.i16", 3, struct.pack("<h", -300)), kv("a.u32", 4, struct.pack("<I", 7)),
        kv("a.i32", 5, struct.pack("<i", -7)), kv("a.f32", 6, struct.pack("<f", 1e-5)),
        kv("a.bool", 7, b"\x01"), kv("a.u64", 10, struct.pack("<Q", 1 << 40)),
        kv("a.i64", 11, struct.pack("<q", -(1 << 40))), kv("a.f64", 12, struct.pack("<d", 0.5)),
        kv("arr.i32", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, -2, 3)),
        kv("arr.str", 9, struct.pack("<IQ", 8, 3) + s("a") + s("") + s("tok")),
    ]
    yield "all_types.gguf", gguf_file(3, scalars, [("w", 0, [4, 2], 32)])
    yield "quant.gguf", gguf_file(3, [kv("general.alignment", 4, struct.pack("<I", 64))],
                                  [("q4", 2, [32, 2], 36), ("q8", 8, [64], 68), ("k", 12, [256], 144),
                                   ("norm", 1, [3, 1, 1, 2], 12)], align=64)
    yield "v2_vocab.gguf", gguf_file(2, [kv("tokenizer.ggml.tokens", 9,
                                            struct.pack("<IQ", 8, 4) + s("<s>") + s("a") + s("b") + s("ab"))], [])
    yield "empty_tensor.gguf", gguf_file(3, [], [("z", 0, [0, 4], 0), ("one", 28, [1], 8)])


def st_file(tensors, meta=None):
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_seeds():
    yield "basic.safetensors", st_file([("a", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                        ("b", "BF16", [3], b"\x80\x3f" * 3), ("c", "I64", [], struct.pack("<q", 9))],
                                       {"format": "pt"})
    yield "dtypes.safetensors", st_file([("u8", "U8", [3], b"abc"), ("bool", "BOOL", [1], b"\x01"),
                                         ("e", "F16", [0, 5], b""), ("f4", "F4", [2], b"\x12"),
                                         ("i16", "I16", [1, 1, 1, 1, 1, 1, 1, 1], b"\x01\x00")])
    yield "empty.safetensors", st_file([])


def main():
    for sub, seeds in (("fuzz_gguf", gguf_seeds()), ("fuzz_safetensors", st_seeds())):
        d = os.path.join(HERE, "corpus", sub)
        os.makedirs(d, exist_ok=True)
        for name, blob in seeds:
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a GGUF holding only a model's tokenizer.* metadata (no tensors): a few MB that can
travel where the model's weights cannot, e.g. for `pagoda synth --vocab-from`.
Usage: vocab_only_gguf.py SOURCE.gguf OUT.gguf"""
import sys

import gguf
from gguf import GGUFReader, GGUFValueType


def field_value(f):
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        et = f.types[1]
        vals = [f.parts[i] for i in f.data]
        if et == GGUFValueType.STRING:
            return et, [bytes(v).decode("utf-8", errors="surrogateescape") for v in vals]
        return et, [v.tolist()[0] for v in vals]
    v = f.parts[f.data[0]]
    if t == GGUFValueType.STRING:
        return t, bytes(v).decode("utf-8")
    return t, v.tolist()[0]


def main():
    src, out = sys.argv[1], sys.argv[2]
    r = GGUFReader(src)
    w = gguf.GGUFWriter(out, arch="llama")
    n = 0
    for name, f in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t, v = field_value(f)
        if f.types[0] == GGUFValueType.ARRAY:
            w.add_array(name, v)
        elif t == GGUFValueType.STRING:
            w.add_string(name, v)
        elif t == GGUFValueType.BOOL:
            w.add_bool(name, bool(v))
        elif t in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
            w.add_float32(name, float(v))
        elif t in (GGUFValueType.INT32, GGUFValueType.INT64, GGUFValueType.INT8, GGUFValueType.INT16):
            w.add_int32(name, int(v))
        else:
            w.add_uint32(name, int(v))
        n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out}: {n} tokenizer keys from {src}")


if __name__ == "__main__":
    main()

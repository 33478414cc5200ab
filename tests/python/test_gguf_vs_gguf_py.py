"""Cross-checks pagoda's GGUF reader against gguf-py's GGUFReader on every .gguf fixture.

pagoda's side comes from `test_gguf --dump FILE` (built in $PAGODA_BUILD): keys, value types,
scalar values, array element types/lengths/CRC32 of contents, tensor names/types/shapes/offsets/sizes/CRC32.
"""
import os
import glob
import struct
import subprocess
import zlib

import pytest

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

BUILD = os.environ.get("PAGODA_BUILD", "")
DUMP = os.path.join(BUILD, "test_gguf")
SHARED = os.environ.get("PAGODA_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
FILES = sorted(glob.glob(os.path.join(SHARED, "fixtures", "**", "*.gguf"), recursive=True))

if not BUILD or not os.access(DUMP, os.X_OK):
    pytest.skip("PAGODA_BUILD does not hold the test_gguf dump program", allow_module_level=True)
if not FILES:
    pytest.skip("no .gguf fixtures under PAGODA_SHARED", allow_module_level=True)

T = gguf.GGUFValueType
TYPE_NAMES = {
    T.UINT8: "uint8", T.INT8: "int8", T.UINT16: "uint16", T.INT16: "int16", T.UINT32: "uint32",
    T.INT32: "int32", T.FLOAT32: "float32", T.BOOL: "bool", T.STRING: "string", T.ARRAY: "array",
    T.UINT64: "uint64", T.INT64: "int64", T.FLOAT64: "float64",
}


def pagoda_dump(path):
    out = subprocess.run([DUMP, "--dump", path], check=True, capture_output=True).stdout.decode("utf-8")
    head, kvs, tensors = {}, {}, []
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == "kv":
            kvs[parts[1]] = parts[2:]
        elif parts[0] == "tensor":
            tensors.append(parts[1:])
        else:
            k, v = line.split(" ")
            head[k] = int(v)
    return head, kvs, tensors


def expected_kv(field):
    vtype = field.types[0]
    if vtype == T.ARRAY:
        etype = field.types[1] if len(field.types) > 1 else T.UINT8
        crc = 0
        if etype == T.STRING:
            for i in field.data:
                s = bytes(field.parts[i])
                crc = zlib.crc32(struct.pack("<Q", len(s)) + s, crc)
        else:
            crc = zlib.crc32(b"".join(field.parts[i].tobytes() for i in field.data))
        return ["array", TYPE_NAMES[etype], str(len(field.data)), "%08x" % crc]
    part = field.parts[field.data[0]]
    if vtype == T.STRING:
        return ["string", bytes(part).hex()]
    if vtype in (T.FLOAT32, T.FLOAT64):
        return [TYPE_NAMES[vtype], float(part[0])]
    return [TYPE_NAMES[vtype], str(int(part[0]))]


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_matches_gguf_py(path):
    head, kvs, tensors = pagoda_dump(path)
    r = gguf.GGUFReader(path)

    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert head["version"] == int(r.fields["GGUF.version"].parts[-1][0])
    assert head["n_kv"] == len(fields)
    assert list(kvs) == list(fields), "key order differs"
    for key, field in fields.items():
        want, got = expected_kv(field), kvs[key]
        if want[0] in ("float32", "float64"):
            assert got[0] == want[0] and float(got[1]) == pytest.approx(want[1], rel=0, abs=0), key
        else:
            assert got == want, key

    assert head["n_tensors"] == len(r.tensors)
    if r.tensors:
        assert head["data_offset"] == r.data_offset
    for got, t in zip(tensors, r.tensors):
        name, dtype, n_dims, ne, offset, size, crc = got
        assert name == t.name
        assert int(dtype) == int(t.tensor_type), name
        assert int(n_dims) == len(t.shape), name
        assert [int(x) for x in ne.split(",")] == [int(x) for x in t.shape], name
        assert int(offset) == t.data_offset - r.data_offset, name
        assert int(size) == t.n_bytes, name
        assert crc == "%08x" % zlib.crc32(np.ascontiguousarray(t.data).tobytes()), name

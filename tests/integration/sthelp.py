"""Minimal safetensors reader/writer for the tests (numpy only), written
from the format's description, independent of the C code under test."""
import json
import struct

import numpy as np


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + hlen
    tensors = {}
    for name, info in header.items():
        # F32, or I64 for a sparse table's NAME.keys.
        assert info["dtype"] in ("F32", "I64"), info
        b, e = info["data_offsets"]
        dt = "<f4" if info["dtype"] == "F32" else "<i8"
        arr = np.frombuffer(blob[base + b:base + e], dtype=dt).reshape(info["shape"])
        tensors[name] = arr.copy()
    return tensors, meta


def write(path, tensors, meta=None):
    header, off, chunks = {}, 0, []
    if meta:
        header["__metadata__"] = meta
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [off, off + len(data)]}
        off += len(data)
        chunks.append(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))

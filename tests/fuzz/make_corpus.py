#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/.

Small valid inputs and near-valid ones (one field wrong, cut short, one
byte too many), a few KiB per target.  Run from anywhere with any Python 3
(standard library only); the files are committed, so this only needs
re-running when a format changes:

    python3 tests/fuzz/make_corpus.py

Every byte is spelled out from the format descriptions in common/ps_wire.h,
common/ps_layout.h, common/ps_safetensors.h, worker/wkr_data.h and
worker/wkr_data_sparse.h, not produced by the code under test.
"""
import gzip
import json
import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# ---- wire -----------------------------------------------------------------
MAGIC, VERSION = 0x514D5350, 6
REGISTER, INIT, ACK, ERROR, PUSH, PULL, PULL_REPLY, SHUTDOWN, STATS, STATS_REPLY = range(1, 11)
ROWS_PUSH, ROWS_PULL, ROWS_REPLY, TABLES = range(11, 15)


def hdr(typ, sender=0, request=0, step=0, chunk=0, offset=0, count=0, samples=0,
        payload=0, base=0, magic=MAGIC, version=VERSION, flags=0, reserved=0):
    """The 64-byte header, field by field as ps_wire.h lays it out."""
    return struct.pack("<IHBBIIQIIQIIQQ", magic, version, typ, flags, sender, request, step,
                       chunk, reserved, offset, count, samples, payload, base)


def layout(tensors):
    """REGISTER payload: u32 count; per tensor u8 len, name, u8 ndim, u64 dims."""
    out = struct.pack("<I", len(tensors))
    for name, dims in tensors:
        b = name if isinstance(name, bytes) else name.encode()
        out += struct.pack("<B", len(b)) + b + struct.pack("<B", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
    return out


def tables(decls):
    """TABLES payload (common/ps_keys.h): u32 count; per table u8 len, name,
    u32 dim, u8 init, u32 bound (float32 bits), u64 seed."""
    out = struct.pack("<I", len(decls))
    for name, dim, init, bound, seed in decls:
        b = name if isinstance(name, bytes) else name.encode()
        out += struct.pack("<B", len(b)) + b + struct.pack("<IBfQ", dim, init, bound, seed)
    return out


def keys(*k):
    return struct.pack("<%dQ" % len(k), *k)


def msg(typ, payload=b"", **kw):
    kw.setdefault("payload", len(payload))
    return hdr(typ, **kw) + payload


def floats(*v):
    return struct.pack("<%df" % len(v), *v)


def wire_seeds():
    mlp = layout([("fc1.weight", [4, 3]), ("fc1.bias", [4]), ("fc2.weight", [2, 4]),
                  ("fc2.bias", [2])])
    stats = struct.pack("<6Q", 3, 7, 12, 1, 5, 900)
    return {
        "register": msg(REGISTER, mlp, sender=0, request=1),
        "register_one": msg(REGISTER, layout([("w", [1, 1, 1, 2])])),
        "register_empty": msg(REGISTER, layout([])),
        "init": msg(INIT, floats(0.5, -1.0, 2.0), chunk=1, offset=12, count=3, request=2),
        "push": msg(PUSH, floats(0.25, 0.125), step=4, chunk=0, count=2, samples=32, base=3,
                    sender=1),
        "push_skip": msg(PUSH, floats(0.0), step=4, count=1, samples=8, base=4, flags=1),
        "pull": msg(PULL, step=5, chunk=2, sender=1, request=9),
        "pull_reply": msg(PULL_REPLY, floats(1.0), step=5, chunk=2, count=1),
        # shared memory (flag 0x08): the elements are not in the frame
        "push_shm": msg(PUSH, step=4, chunk=0, count=2, samples=32, base=3, sender=1, flags=8),
        "push_shm_f16": msg(PUSH, step=4, count=2, samples=8, flags=8 | 2),
        "pull_reply_shm": msg(PULL_REPLY, step=5, chunk=2, count=1, flags=8),
        "bad_shm_payload": msg(PUSH, floats(1.0), count=1, flags=8),
        "ack": msg(ACK, request=9),
        "error": msg(ERROR, b"chunk 7 out of range"),
        "shutdown": msg(SHUTDOWN, sender=1),
        "stats": msg(STATS, sender=0),
        "stats_reply": msg(STATS_REPLY, stats),
        "rows_push": msg(ROWS_PUSH, keys(5, 1 << 40) + floats(0.5, -1.0, 2.0, 0.25), step=3,
                         chunk=0, offset=2, count=2, samples=4, sender=1),
        "rows_push_empty": msg(ROWS_PUSH, step=3, chunk=1, offset=8, samples=4),
        "rows_push_skip": msg(ROWS_PUSH, keys(9) + floats(0.0), step=2, offset=1, count=1,
                              flags=1),
        "rows_pull": msg(ROWS_PULL, keys(1, 2, 3), step=4, chunk=0, offset=4, count=3,
                         request=11),
        "rows_reply": msg(ROWS_REPLY, floats(1.0, 2.0), step=4, offset=1, count=2, request=11),
        "tables": msg(TABLES, tables([("emb.weight", 16, 1, 0.01, 7), ("fc1.weight", 1, 0, 0.0,
                                                                         0)])),
        "tables_none": msg(TABLES, tables([])),
        # near-valid: one thing wrong each
        "rows_push_dim0": msg(ROWS_PUSH, keys(5) + floats(1.0), offset=0, count=1),
        "rows_push_dim_big": msg(ROWS_PUSH, keys(5), offset=65537, count=1),
        "rows_push_short": msg(ROWS_PUSH, keys(5, 6) + floats(1.0, 2.0, 3.0), offset=2, count=2),
        "rows_push_f16": msg(ROWS_PUSH, keys(5) + floats(1.0), offset=1, count=1, flags=2),
        "rows_pull_empty": msg(ROWS_PULL, offset=1),
        "rows_pull_rows": msg(ROWS_PULL, keys(1) + floats(1.0), offset=1, count=1),
        "rows_reply_keys": msg(ROWS_REPLY, keys(1) + floats(1.0), offset=1, count=1),
        "tables_dup": msg(TABLES, tables([("a", 2, 0, 0.0, 0), ("a", 2, 0, 0.0, 0)])),
        "tables_bad_init": msg(TABLES, tables([("a", 2, 2, 0.0, 0)])),
        "tables_zeros_seed": msg(TABLES, tables([("a", 2, 0, 0.0, 5)])),
        "tables_nan_bound": msg(TABLES, tables([("a", 2, 1, float("nan"), 5)])),
        "tables_dim0": msg(TABLES, tables([("a", 0, 0, 0.0, 0)])),
        "tables_trailing": msg(TABLES, tables([("a", 2, 0, 0.0, 0)]) + b"\0"),
        "tables_cut": msg(TABLES, tables([("emb", 2, 1, 0.5, 1)])[:-3]),
        "tables_nul_name": msg(TABLES, tables([(b"e\0b", 2, 0, 0.0, 0)])),
        "bad_magic": msg(PULL, magic=0x514D5351),
        "bad_version": msg(PULL, version=1),
        "bad_type": msg(15),
        "bad_flags": msg(ACK, flags=1),
        "bad_push_flags": msg(PUSH, floats(1.0), count=1, flags=2),
        "bad_reserved": msg(ACK, reserved=2),
        "push_count_mismatch": msg(PUSH, floats(1.0, 2.0), count=3),
        "payload_len_mismatch": hdr(PULL_REPLY, count=2, payload=8) + floats(1.0),
        "short_header": hdr(ACK)[:40],
        "register_trailing": msg(REGISTER, layout([("b", [3])]) + b"\0"),
        "register_bad_name": msg(REGISTER, layout([("a b", [3])])),
        "register_dup": msg(REGISTER, layout([("a", [3]), ("a", [2])])),
        "register_zero_dim": msg(REGISTER, layout([("a", [0])])),
        "register_cut": msg(REGISTER, layout([("fc1.weight", [4, 3])])[:-3]),
        # found by fuzz_wire: a NUL inside a name the length byte counts
        "register_nul_name": msg(REGISTER, layout([(b"fc1.weig\0t", [4, 3])])),
    }


# ---- LIBSVM and CSV -----------------------------------------------------
def libsvm_seeds():
    return {
        "basic": b"0 1:0.5 3:-1.25\n1 2:2 3:0.75\n2 1:1e-3\n1 4:8\n",
        "comments": b"# svmlight\n\n1 1:1 2:2 # trailing comment\n0 2:-0.5\n",
        "crlf": b"1 1:0.5\r\n0 2:0.25\r\n",
        "regression": b"0.5 1:1\n-2.25 2:1\n3 1:0.5 2:0.5\n",
        "no_features": b"0\n1\n",
        "bad_order": b"0 3:1 2:1\n1 1:1\n",
        "index_zero": b"0 0:1\n1 1:1\n",
        "bad_value": b"0 1:x\n1 1:1\n",
        "negative_label": b"-1 1:1\n1 1:2\n",
        "float_label": b"0.5 1:1\n1 1:2\n",
        "nan": b"0 1:nan\n1 1:1\n",
        "one_class": b"0 1:1\n0 2:1\n",
        "no_newline": b"0 1:1\n1 2:2",
        "nul_byte": b"0 1:1\n1 2:\x002\n",
    }


def csv_seeds():
    return {
        "basic": b"0,0.5,1.5\n1,-2,0.25\n2,1e-3,4\n1,0,0\n",
        "header": b"label,a,b\n0,1,2\n1,3,4\n",
        "comments": b"# data\n\n0,1,2\n1,3,4\n",
        "crlf": b"0,1,2\r\n1,3,4\r\n",
        "regression": b"0.5,1,2\n-1.5,3,4\n",
        "ragged": b"0,1,2\n1,3\n",
        "bad_number": b"0,1,x\n1,2,3\n",
        "label_only": b"0\n1\n",
        "empty_field": b"0,,2\n1,3,4\n",
        "inf": b"0,inf,2\n1,3,4\n",
        "negative_label": b"-1,1,2\n1,3,4\n",
        "spaces": b"0, 1 ,2\n1,3 ,4 \n",
    }


def libsvm64_seeds():
    """LIBSVM with 64-bit indices, labels 0/1 or -1/+1 (worker/wkr_data_sparse.h)."""
    return {
        "basic": b"1 1:0.5 7:-1.25\n0 2:2 3:0.75\n-1 1:1e-3\n+1 4:8\n",
        "wide": b"1 4294967296:1 9223372036854775807:0.5\n0 123456789012:2\n",
        "comments": b"# svmlight\n\n1 1:1 2:2 # trailing comment\n0 2:-0.5\n",
        "crlf": b"1 1:0.5\r\n0 2:0.25\r\n",
        "no_features": b"0\n1\n1 3:1\n",
        "tabs": b"1\t1:1\t2:2\n0 5:1\n",
        "index_2_63": b"1 9223372036854775808:1\n0 1:1\n",
        "index_2_64": b"1 18446744073709551616:1\n",
        "index_minus": b"1 -1:1\n",
        "bad_order": b"0 3:1 3:1\n1 1:1\n",
        "index_zero": b"0 0:1\n1 1:1\n",
        "bad_value": b"0 1:x\n1 1:1\n",
        "bad_label": b"2 1:1\n1 1:2\n",
        "nan": b"0 1:nan\n1 1:1\n",
        "no_newline": b"0 1:1\n1 2:2",
        "nul_byte": b"0 1:1\n1 2:\x002\n",
    }


def criteo_line(label, ints, cats):
    """label, 13 integers, 26 categoricals (8 hex digits), tab-separated."""
    return "\t".join([label] + ints + cats).encode() + b"\n"


def criteo_seeds():
    ints = [str(i) for i in range(13)]
    cats = ["%08x" % (0x68fd1e64 + 17 * i) for i in range(26)]
    sparse = [""] * 13, [""] * 26
    row1 = criteo_line("1", ints, cats)
    row0 = criteo_line("0", ["-1", "", "5"] + [""] * 10, cats[:5] + [""] * 20 + ["FFFFFFFF"])
    return {
        "basic": row1 + row0 + criteo_line("0", *sparse),
        "missing": criteo_line("1", *sparse) + criteo_line("0", *sparse),
        "big_int": criteo_line("1", ["9223372036854775807"] + ints[1:], cats),
        "int_overflow": criteo_line("1", ["9223372036854775808"] + ints[1:], cats),
        "crlf": row1.replace(b"\n", b"\r\n") + row0,
        "no_newline": row1 + row0.rstrip(b"\n"),
        "blank_lines": b"\n" + row1 + b"  \n" + row0,
        "few_fields": b"1\t2\t3\n",
        "many_fields": row1.rstrip(b"\n") + b"\textra\n",
        "bad_label": criteo_line("2", ints, cats),
        "bad_int": criteo_line("1", ["1.5"] + ints[1:], cats),
        "short_hex": criteo_line("1", ints, ["abc"] + cats[1:]),
        "bad_hex": criteo_line("1", ints, ["0000000g"] + cats[1:]),
        "nul_byte": row1 + b"0\t\x00\n",
    }


# ---- IDX: images to go with the fixed labels file (3 samples) ----------
def idx_images(count, rows, cols, pixels=None, magic=0x803):
    if pixels is None:
        pixels = bytes((i * 37) % 256 for i in range(count * rows * cols))
    return struct.pack(">IIII", magic, count, rows, cols) + pixels


def idx_seeds():
    good = idx_images(3, 2, 3)
    return {
        "valid": good,
        "valid_gz": gzip.compress(good, mtime=0),
        "valid_1x1": idx_images(3, 1, 1, b"\x00\x80\xff"),
        "truncated": good[:-2],
        "truncated_gz": gzip.compress(good, mtime=0)[:-5],
        "extra_byte": good + b"\x00",
        "count_mismatch": idx_images(2, 2, 3),
        "labels_magic": idx_images(3, 2, 3, magic=0x801),
        "zero_rows": idx_images(3, 0, 3, b""),
        "header_only": good[:16],
        "short_header": good[:10],
    }


# ---- safetensors --------------------------------------------------------
def st_file(header, data=b"", pad=True, hlen=None):
    """8-byte LE header length, the JSON header (space-padded to 8), data."""
    h = header.encode() if isinstance(header, str) else header
    if pad:
        h += b" " * (-len(h) % 8)
    n = len(h) if hlen is None else hlen
    return struct.pack("<Q", n) + h + data


def st_json(tensors, meta=None):
    d = {}
    if meta is not None:
        d["__metadata__"] = meta
    at = 0
    for name, shape in tensors:
        n = 4
        for s in shape:
            n *= s
        d[name] = {"dtype": "F32", "shape": shape, "data_offsets": [at, at + n]}
        at += n
    return json.dumps(d, separators=(",", ":")), at


def safetensors_seeds():
    hj, n = st_json([("fc1.weight", [2, 3]), ("fc1.bias", [2])], {"step": "10", "lr": "0.1"})
    data = floats(*[i * 0.5 for i in range(n // 4)])
    sj, sn = st_json([("s", [])])
    zj, _ = st_json([("z", [0, 5]), ("a", [1])])
    return {
        "valid": st_file(hj, data),
        "scalar": st_file(sj, floats(3.0)),
        "zero_size": st_file(zj, floats(1.0)),
        "empty": st_file("{}"),
        "metadata_only": st_file('{"__metadata__":{"k":"v"}}'),
        "escapes": st_file('{"a\\u00e9\\n\\"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                           floats(1.0)),
        "gap": st_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', floats(1, 2)),
        "overlap": st_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                           '"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', floats(1, 2)),
        "dtype_f16": st_file('{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}',
                             floats(1.0)),
        "shape_mismatch": st_file('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
                                  floats(1, 2)),
        "duplicate_key": st_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                 '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
                                 floats(1, 2)),
        "hlen_past_end": st_file(hj, data, hlen=4096),
        "truncated": st_file(hj, data)[:-3],
        "bad_json": st_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]'),
        "five_dims": st_file('{"a":{"dtype":"F32","shape":[1,1,1,1,1],"data_offsets":[0,4]}}',
                             floats(1.0)),
        "short": b"\x08\x00\x00",
        # a sparse table as --save writes it: I64 keys first, then F32 rows
        "table_i64": st_file('{"__metadata__":{"sparse_tables":"[\\"e\\"]"},'
                             '"e.keys":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},'
                             '"e":{"dtype":"F32","shape":[2,1],"data_offsets":[16,24]}}',
                             struct.pack("<2q", 3, 1 << 40) + floats(0.5, -1.0)),
        "i64_span_f32": st_file('{"k":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}}',
                                floats(1, 2)),
    }


def write(target, seeds):
    d = os.path.join(ROOT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    total = sum(len(v) for v in seeds.values())
    print("%-12s %2d seeds, %5d bytes" % (target, len(seeds), total))


def main():
    write("wire", wire_seeds())
    write("libsvm", libsvm_seeds())
    write("csv", csv_seeds())
    write("idx", idx_seeds())
    write("safetensors", safetensors_seeds())
    write("libsvm64", libsvm64_seeds())
    write("criteo", criteo_seeds())


if __name__ == "__main__":
    main()

"""Independent checks of the run artefacts: a PNG that decodes and shows a
picture, and a Chrome trace that parses and has events from every rank.

    check_outputs.py png FILE
    check_outputs.py trace FILE NRANKS NAME...
Exit 0 when the check passes; prints what it found."""
import json
import struct
import sys
import zlib


def check_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        print("not a PNG")
        return 1
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    # Non-trivial: big enough, and many distinct byte values in the pixels
    # (a blank or single-colour image has a handful).
    distinct = len(set(raw))
    print("PNG %dx%d, %d bytes of pixels, %d distinct byte values" % (w, h, len(raw), distinct))
    return 0 if w >= 400 and h >= 300 and distinct >= 32 else 1


def check_trace(path, nranks, names):
    doc = json.load(open(path))
    ev = doc["traceEvents"]
    pids = {e["pid"] for e in ev if e.get("ph") == "X"}
    seen = {e["name"] for e in ev if e.get("ph") == "X"}
    labels = {e["pid"]: e["args"]["name"] for e in ev if e.get("ph") == "M"}
    print("%d events, ranks with events %s, names %s, processes %s"
          % (len(ev), sorted(pids), sorted(seen), labels))
    ok = pids == set(range(nranks)) and set(names) <= seen and len(labels) == nranks
    for e in ev:
        if e.get("ph") == "X" and not (e["dur"] >= 0 and e["ts"] > 0):
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "png":
        sys.exit(check_png(sys.argv[2]))
    sys.exit(check_trace(sys.argv[2], int(sys.argv[3]), sys.argv[4:]))

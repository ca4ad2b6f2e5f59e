#!/usr/bin/env python3
"""`topksae batch-tokens` end to end, with the Python standard library only (no numpy): npy-pair and
safetensors inputs, int32 and int64, the output file's header and rows, and the errors a user can
cause (bad offsets, context_size < 2, missing --offsets). Usage: batch_tokens_test.py PATH/TO/topksae"""
import json
import os
import struct
import subprocess
import sys
import tempfile

TOPKSAE = sys.argv[1]


def npy_bytes(values, code):  # 1-D little-endian array, npy 1.0
    fmt = {"<i4": "i", "<i8": "q"}[code]
    d = "{'descr': '%s', 'fortran_order': False, 'shape': (%d,), }" % (code, len(values))
    d += " " * ((64 - (10 + len(d) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + struct.pack("<%d%s" % (len(values), fmt), *values)


def safetensors_bytes(tensors):  # name -> (values, "I32"/"I64")
    header, data = {}, b""
    for name, (values, dt) in tensors.items():
        raw = struct.pack("<%d%s" % (len(values), {"I32": "i", "I64": "q"}[dt]), *values)
        header[name] = {"dtype": dt, "shape": [len(values)], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def read_npy_i32_2d(path):
    b = open(path, "rb").read()
    assert b[:8] == b"\x93NUMPY\x01\x00", b[:8]
    hl = struct.unpack("<H", b[8:10])[0]
    assert (10 + hl) % 64 == 0, "header not padded to 64 bytes"
    hdr = b[10:10 + hl].decode()
    assert "'descr': '<i4'" in hdr and "'fortran_order': False" in hdr, hdr
    shape = eval(hdr)["shape"]
    body = b[10 + hl:]
    vals = struct.unpack("<%di" % (len(body) // 4), body)
    assert len(vals) == shape[0] * shape[1], (shape, len(vals))
    return [list(vals[r * shape[1]:(r + 1) * shape[1]]) for r in range(shape[0])]


def run(args, ok=True):
    p = subprocess.run([TOPKSAE, "batch-tokens", *args], capture_output=True, text=True)
    if ok and p.returncode != 0:
        sys.exit(f"FAIL: batch-tokens {args} exited {p.returncode}: {p.stderr}")
    if not ok and p.returncode == 0:
        sys.exit(f"FAIL: batch-tokens {args} should have failed")
    return p


failures = 0
def expect(got, want, what):
    global failures
    if got != want:
        failures += 1
        print(f"FAIL {what}: got {got}, want {want}")
    else:
        print(f"ok   {what}")


with tempfile.TemporaryDirectory() as d:
    j = lambda n: os.path.join(d, n)
    toks = [1, 10, 11, 12, 13, 14, 15, 16, 17, 1, 20]
    offs = [0, 3, 9, 11]
    open(j("t32.npy"), "wb").write(npy_bytes(toks, "<i4"))
    open(j("t64.npy"), "wb").write(npy_bytes(toks, "<i8"))
    open(j("o64.npy"), "wb").write(npy_bytes(offs, "<i8"))
    open(j("o32.npy"), "wb").write(npy_bytes(offs, "<i4"))
    open(j("in.safetensors"), "wb").write(safetensors_bytes({"tokens": (toks, "I64"), "offsets": (offs, "I32")}))
    want = [[1, 10, 11, 12, 13], [1, 14, 15, 16, 17]]  # BOS kept once, trailing [1, 20] dropped
    run(["--tokens", j("t32.npy"), "--offsets", j("o64.npy"), "--context-size", "5", "--bos", "1", "--out", j("a.npy")])
    expect(read_npy_i32_2d(j("a.npy")), want, "npy pair int32/int64, concatenating, --bos")
    run(["--tokens", j("t64.npy"), "--offsets", j("o32.npy"), "--context-size", "5", "--bos", "1", "--out", j("b.npy")])
    expect(read_npy_i32_2d(j("b.npy")), want, "npy pair int64/int32")
    run(["--tokens", j("in.safetensors"), "--context-size", "5", "--bos", "1", "--out", j("c.npy")])
    expect(read_npy_i32_2d(j("c.npy")), want, "safetensors tokens + offsets")
    run(["--tokens", j("t32.npy"), "--offsets", j("o64.npy"), "--context-size", "4", "--bos", "1", "--no-concat",
         "--out", j("d.npy")])
    # [1, 10, 11] starts with the BOS but is shorter than 4: dropped; [1, 20] too short: dropped
    expect(read_npy_i32_2d(j("d.npy")), [[1, 12, 13, 14]], "--no-concat, BOS as begin-sequence")
    run(["--tokens", j("t32.npy"), "--offsets", j("o64.npy"), "--context-size", "6", "--separator", "0",
         "--begin-sequence", "2", "--out", j("e.npy")])
    expect(read_npy_i32_2d(j("e.npy")), [[2, 1, 10, 11, 0, 2], [12, 13, 14, 15, 16, 17]],
           "separator 0 is a real id, begin-sequence, prefix cut to the space left")
    run(["--tokens", j("t32.npy"), "--offsets", j("o64.npy"), "--context-size", "50", "--out", j("f.npy")])
    expect(read_npy_i32_2d(j("f.npy")), [], "nothing long enough: an empty [0, 50] array")

    # Errors a user can cause: a message naming the problem, exit status 1, no output file.
    for name, offs_bad, ctx, msg in [("decreasing", [0, 9, 3, 11], 5, "non-decreasing"),
                                     ("out of range", [0, 3, 12], 5, "out of range"),
                                     ("not covering", [0, 3, 9], 5, "last document offset"),
                                     ("context 1", offs, 1, "context_size")]:
        open(j("bad.npy"), "wb").write(npy_bytes(offs_bad, "<i8"))
        p = run(["--tokens", j("t32.npy"), "--offsets", j("bad.npy"), "--context-size", str(ctx), "--out", j("x.npy")],
                ok=False)
        expect((p.returncode, msg in p.stderr, os.path.exists(j("x.npy"))), (1, True, False), f"error: {name}")
    p = run(["--tokens", j("t32.npy"), "--context-size", "5", "--out", j("x.npy")], ok=False)
    expect("--offsets" in p.stderr, True, "error: npy tokens without --offsets")

sys.exit(f"{failures} check(s) failed" if failures else 0)

"""What the command-line test scripts share (cli_test.py, device_test.py; Python standard library only):
the binary under test (argv[1]), running it, failing, and an npy writer independent of the engine's."""
import os
import struct
import subprocess
import sys

BIN = sys.argv[1]
ENV = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TERM="dumb")


def run(*args, expect=0, timeout=240, preexec=None):
    """Runs `topksae ARGS`; exits with the output unless the exit status is `expect` (None: any)."""
    p = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout,
                       preexec_fn=preexec)
    out = p.stdout + p.stderr
    if expect is not None and p.returncode != expect:
        sys.exit(f"FAIL: topksae {' '.join(map(str, args))}\nexit {p.returncode}, expected {expect}\n{out}")
    return out


def fail_unless(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def write_npy(path, shape, values, descr="<f4"):
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else ""))
    pad = 64 - (10 + len(hdr) + 1) % 64
    hdr = (hdr + " " * pad + "\n").encode()
    fmt = {"<f4": "f", "<f2": "e", "<i4": "i"}[descr]
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr)
        f.write(struct.pack("<%d%s" % (len(values), fmt), *values))

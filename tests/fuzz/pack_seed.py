#!/usr/bin/env python3
"""Packs files into one fuzz input for the directory targets (tests/fuzz/fuzz_files.h).

usage: pack_seed.py OUT FILE...   (a FILE of "-" is an empty part)
Every part but the last: a 2-byte little-endian length, then the bytes (at most 65535); the last:
the rest of the input.
"""
import struct
import sys


def main():
    out, files = sys.argv[1], sys.argv[2:]
    blob = b""
    for i, name in enumerate(files):
        data = b"" if name == "-" else open(name, "rb").read()
        if i + 1 < len(files):
            data = data[:0xffff]
            blob += struct.pack("<H", len(data)) + data
        else:
            blob += data
    with open(out, "wb") as f:
        f.write(blob)


if __name__ == "__main__":
    main()

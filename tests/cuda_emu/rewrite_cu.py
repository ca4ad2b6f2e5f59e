#!/usr/bin/env python3
"""Rewrites a kernels/*.cu file into C++ for the CUDA emulation (tests/cuda_emu/README.md).

  name<targs>?<<<grid, block[, smem[, stream]]>>>(args)
    -> ::cuda_emu::launch(::cuda_emu::make_cfg(grid, block, smem, stream), "name<targs>", BOUND, name<targs>, args)
  extern __shared__ T name[];
    -> T* const name = reinterpret_cast<T*>(::cuda_emu::dynamic_smem());
  __shared__ T a[N], b;   (static storage, kernel.h)
    -> the same + ::cuda_emu::shared_decl(&a, sizeof(a)); ... (filled with garbage once per block)

BOUND is the kernel's __launch_bounds__ expression (the launch fails, as on a GPU, when the block
is larger), or 1024. Line numbers are kept (a `#line 1 "<source>"` first, and every newline of the
source is kept), so compiler messages and __FILE__/__LINE__ name the .cu file.
Usage: rewrite_cu.py <in.cu> <out.cpp>
"""
import os
import re
import sys

IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*(?:\s*::\s*[A-Za-z_][A-Za-z_0-9]*)*$")


def fail(path, text, pos, msg):
    line = text.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: rewrite_cu.py: {msg}")


def skip_literal(text, i):
    """If text[i] opens a string/char literal or a comment, the index after it; else None."""
    c = text[i]
    if c in "\"'":
        j = i + 1
        while j < len(text) and text[j] != c:
            j += 2 if text[j] == "\\" else 1
        return j + 1
    if text.startswith("//", i):
        j = text.find("\n", i)
        return len(text) if j < 0 else j
    if text.startswith("/*", i):
        j = text.find("*/", i + 2)
        return len(text) if j < 0 else j + 2
    return None


def mask_comments(text):
    """text with its comments and string/char literals blanked (newlines kept): the regexes below
    must not match inside them."""
    out = list(text)
    j = 0
    while j < len(text):
        e = skip_literal(text, j)
        if e is None:
            j += 1
            continue
        for q in range(j, min(e, len(text))):
            if out[q] != "\n":
                out[q] = " "
        j = e
    return "".join(out)


def sub_code(pattern, repl, text):
    """re.sub outside comments and literals."""
    masked = mask_comments(text)
    parts, last = [], 0
    for m in re.finditer(pattern, masked):
        parts.append(text[last:m.start()])
        parts.append(repl(re.match(pattern, text[m.start():m.end()])))
        last = m.end()
    parts.append(text[last:])
    return "".join(parts)


def match_close(text, i, open_c, close_c, path):
    """text[i] == open_c: the index of its matching close_c (nesting (), [], {} counted)."""
    depth = 0
    j = i
    while j < len(text):
        s = skip_literal(text, j)
        if s is not None:
            j = s
            continue
        c = text[j]
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    fail(path, text, i, f"no matching '{close_c}'")


def kernel_start(text, end, path):
    """text[:end] ends with a kernel name, maybe with template arguments: where it starts."""
    j = end
    while j > 0 and text[j - 1].isspace():
        j -= 1
    if j > 0 and text[j - 1] == ">":  # template arguments: back to the matching '<'
        depth = 0
        k = j - 1
        while k >= 0:
            if text[k] == ">":
                depth += 1
            elif text[k] == "<":
                depth -= 1
                if depth == 0:
                    break
            k -= 1
        if k < 0:
            fail(path, text, end, "unbalanced template arguments before <<<")
        j = k
        while j > 0 and text[j - 1].isspace():
            j -= 1
    k = j
    while k > 0 and (text[k - 1].isalnum() or text[k - 1] in "_:"):
        k -= 1
    if k == j or not IDENT.match(text[k:j]):
        fail(path, text, end, "no kernel name before <<<")
    return k, text[k:j]


def launch_bounds(text):
    """{kernel name: __launch_bounds__ expression} for the kernels of the file."""
    out = {}
    for m in re.finditer(r"__launch_bounds__\s*\(", mask_comments(text)):
        close = match_close(text, m.end() - 1, "(", ")", "?")
        expr = text[m.end():close].split(",")[0].strip()
        n = re.match(r"\s*([A-Za-z_][A-Za-z_0-9]*)\s*\(", text[close + 1:])
        if n:
            out[n.group(1)] = expr
    return out


def split_top(s):
    """s split at the commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "[(<{":
            depth += 1
        elif c in "])>}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def poison_shared(m):
    """`__shared__ T a[..], b;` -> the same, then a call per variable that fills it with garbage
    when the first thread of a block reaches it (shared memory starts undefined on a GPU)."""
    decl = m.group(1)
    calls = []
    for part in split_top(decl):
        n = re.search(r"([A-Za-z_][A-Za-z_0-9]*)\s*(?:\[.*)?$", part.strip(), re.S)
        if not n:
            return m.group(0)
        calls.append(f" ::cuda_emu::shared_decl(&{n.group(1)}, sizeof({n.group(1)}));")
    return f"__shared__ {decl};" + "".join(calls)


def rewrite(text, path):
    bounds = launch_bounds(text)
    text = sub_code(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([^;\[\]]*?)\s*([A-Za-z_][A-Za-z_0-9]*)\s*\[\s*\]\s*;",
                  lambda m: f"{m.group(1)}* const {m.group(2)} = reinterpret_cast<{m.group(1)}*>(::cuda_emu::dynamic_smem());",
                  text)
    text = sub_code(r"__shared__\s+([^;{}()]*?);", poison_shared, text)
    out = []
    i = 0  # text[:i] is done: out holds its rewrite
    j = 0
    while j < len(text):
        s = skip_literal(text, j)
        if s is not None:
            j = s
            continue
        if not text.startswith("<<<", j):
            j += 1
            continue
        # text[start:j] is the kernel; out already holds text[:i] with i <= start
        start, name = kernel_start(text, j, path)
        if start < i:
            fail(path, text, j, "overlapping launches")
        cfg_end = text.find(">>>", j + 3)
        if cfg_end < 0:
            fail(path, text, j, "no >>> after <<<")
        cfg = text[j + 3:cfg_end]
        k = cfg_end + 3
        ws_after = ""
        while k < len(text) and text[k].isspace():
            ws_after += text[k]
            k += 1
        if k >= len(text) or text[k] != "(":
            fail(path, text, j, "no argument list after >>>")
        close = match_close(text, k, "(", ")", path)
        args = text[k + 1:close]
        kernel_expr = text[start:j].rstrip()
        base = re.sub(r"\s+", "", name.split("::")[-1])
        bound = f"int({bounds[base]})" if base in bounds else "1024"
        label = re.sub(r"\s+", " ", kernel_expr).replace('"', '\\"')
        sep = ", " if args.strip() else ""
        out.append(text[i:start])
        out.append(f"::cuda_emu::launch(::cuda_emu::make_cfg({cfg}),{ws_after}\"{label}\", {bound}, {kernel_expr}"
                   f"{text[start + len(kernel_expr):j].replace(chr(10), chr(10))}{sep}{args})")
        i = j = close + 1
    out.append(text[i:])
    return "".join(out)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    body = rewrite(text, src)
    assert body.count("\n") == text.count("\n"), "the rewrite must keep every line"
    result = f'#line 1 "{os.path.abspath(src)}"\n' + body
    tmp = dst + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(result)
    os.replace(tmp, dst)


if __name__ == "__main__":
    main()

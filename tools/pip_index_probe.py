#!/usr/bin/env python3
"""Can the package index that pip is configured with be reached? (Python standard library only.)

usage: pip_index_probe.py [PYTHON]   (PYTHON: the interpreter whose pip configuration counts)
Exit 0: the index answered over HTTP (any status below 500: it is there, whatever it holds).
Exit 2: it could not be reached (no route, DNS, refused, timeout, TLS, 5xx); the reason is printed.
Exit 1: the index URL could not be found out (pip missing or changed): not a reason to skip.
tools/test.d/50-interop.sh skips the interop step only on exit 2; any later install failure fails.
The index URL is pip's own: PIP_INDEX_URL, else index-url from `pip config list` (install. before
global.), else pip's built-in default.
"""
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request



def pip_default(python):
    """pip's built-in index (no host name written here: the one pip itself would use)."""
    code = "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def configured(python):
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"], os.environ.get("PIP_CERT")
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    values = dict(re.findall(r"^([^=\s]+)='(.*)'$", out, flags=re.M))
    url = values.get("install.index-url") or values.get("global.index-url") or pip_default(python)
    cert = os.environ.get("PIP_CERT") or values.get("install.cert") or values.get("global.cert")
    return url, cert


def main():
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    url, cert = configured(python)
    if not url:
        print(f"pip_index_probe: cannot tell which index {python} -m pip uses")
        return 1
    ctx = ssl.create_default_context(cafile=cert if cert and os.path.exists(cert) else None)
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "topksae-index-probe"})
    try:
        with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"pip_index_probe: {url} cannot be reached: {getattr(e, 'reason', e)}")
        return 2
    if status >= 500:
        print(f"pip_index_probe: {url} answered HTTP {status}")
        return 2
    print(f"pip_index_probe: {url} answered HTTP {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

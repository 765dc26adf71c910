#!/usr/bin/env python
"""The measured bad input: an unauthenticated POST /v1/packages declaring 400 MB, the client
sending as fast as it can, against a server process built like every service (serve.run, the
small app of tests/common/test_limits.py). Prints the server's VmRSS before and after, how
much the client got to send before the server closed, and the answer's status line.

Run by hand (never collected by pytest), from the repository root:

    uv run --frozen python bench/limits.py
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common.test_limits import SERVER, post_head  # noqa: E402

from support.net import LOOPBACK, free_port  # noqa: E402

DECLARED = 400_000_000


def main() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, LOOPBACK, str(port), "t0ken", "10"])

    def rss_mib() -> int:
        with open(f"/proc/{server.pid}/status") as f:
            return int(next(x for x in f if x.startswith("VmRSS:")).split()[1]) // 1024

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        before = rss_mib()
        sock = socket.create_connection((LOOPBACK, port), timeout=20)
        started = time.monotonic()
        sock.sendall(post_head(DECLARED, None))
        sent, stopped_by, chunk = 0, "nothing", b"[" * (1 << 20)
        try:
            while sent < DECLARED:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError as exc:
            stopped_by = type(exc).__name__
        try:
            status = sock.recv(4096).split(b"\r\n", 1)[0].decode()
        except OSError as exc:
            status = f"no answer read ({type(exc).__name__})"
        seconds = time.monotonic() - started
        print(
            f"VmRSS {before} -> {rss_mib()} MiB; the client sent {sent / 2**20:.0f} MiB of "
            f"{DECLARED / 2**20:.0f} MiB, stopped by {stopped_by}, in {seconds:.2f} s; {status}"
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()

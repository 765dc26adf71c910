"""What a service refuses before reading it, over a real socket to a real server process.

The server is a small app served by `serve.run`, as every service is: the same gate, protocol
and settings (a token, a 64 KiB body limit, a 2 s read timeout). Measured before: an
unauthenticated 400 MB POST took a packager from 160 to 557 MiB and got no answer in 20 s.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dicomiso_common.limits import BodyGate
from support.net import LOOPBACK, free_port

TOKEN = "s3cret"
READ_TIMEOUT = 2.0
DECLARED = 400_000_000  # the measured body

SERVER = """
import sys
from fastapi import Depends, FastAPI
from pydantic import BaseModel, SecretStr
from dicomiso_common import serve
from dicomiso_common.auth import bearer_guard
from dicomiso_common.problems import add_problem_handlers
from dicomiso_common.settings import CommonSettings

settings = CommonSettings(
    http_host=sys.argv[1], http_port=int(sys.argv[2]), api_token=SecretStr(sys.argv[3]),
    http_read_timeout=float(sys.argv[4]),
)
app = FastAPI()
add_problem_handlers(app)

class Body(BaseModel):
    accession_numbers: list[str]

@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}

@app.post("/v1/packages", dependencies=[Depends(bearer_guard(settings))])
def create(body: Body) -> dict[str, int]:
    return {"accessions": len(body.accession_numbers)}

serve.run(app, settings)
"""


@dataclass
class Server:
    port: int
    pid: int

    def connect(self) -> socket.socket:
        return socket.create_connection((LOOPBACK, self.port), timeout=10)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            line = next(x for x in f if x.startswith("VmRSS:"))
        return int(line.split()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, LOOPBACK, str(port), TOKEN, str(READ_TIMEOUT)]
    )
    srv = Server(port, proc.pid)
    deadline = time.monotonic() + 30
    while True:
        try:
            status, _, _ = answer(srv.connect(), b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            if status == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    yield srv
    proc.terminate()
    proc.wait(timeout=20)


def answer(sock: socket.socket, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data`, then read one response until the server closes or it is complete."""
    with sock:
        sock.sendall(data)
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
            head, sep, body = got.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if sep and length and len(body) >= length[0]:
                break
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    pairs = (line.split(": ", 1) for line in lines[1:])
    headers = {name.lower(): value for name, value in pairs}
    return int(lines[0].split()[1]), headers, body


def post_head(length: int | None, token: str | None) -> bytes:
    lines = ["POST /v1/packages HTTP/1.1", "Host: t", "Content-Type: application/json"]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True once the server has closed the connection (EOF or reset) before the deadline."""
    readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_unauthenticated_huge_body_is_401_before_it_is_read(server: Server) -> None:
    """The measured case: 400 MB declared, 256 KiB sent, a 401 and a close; memory flat."""
    before = server.rss_kib()
    for token in (None, "wrong"):
        status, headers, body = answer(
            server.connect(), post_head(DECLARED, token) + b"[" * 256 * 1024
        )
        assert status == 401
        assert headers["connection"] == "close"
        assert headers["www-authenticate"] == "Bearer"
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == 401
    assert server.rss_kib() - before < 50 * 1024


def test_authenticated_oversize_body_is_413_before_it_is_read(server: Server) -> None:
    before = server.rss_kib()
    status, headers, body = answer(server.connect(), post_head(DECLARED, TOKEN) + b"[" * 1024)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["detail"] == "the body limit is 65536 bytes"
    assert server.rss_kib() - before < 50 * 1024


def test_chunked_body_growing_past_the_limit_is_413(server: Server) -> None:
    chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"  # 16 KiB each, never the last one
    status, headers, body = answer(server.connect(), post_head(None, TOKEN) + chunk * 5)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["title"] == "Content too large"


def test_a_body_within_the_limit_reaches_the_route(server: Server) -> None:
    """Read by the gate, then handed on whole: by length and chunked."""
    data = json.dumps({"accession_numbers": ["A1", "A2"]}).encode()
    status, _, body = answer(server.connect(), post_head(len(data), TOKEN) + data)
    assert (status, json.loads(body)) == (200, {"accessions": 2})
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    status, _, body = answer(server.connect(), post_head(None, TOKEN) + chunked)
    assert (status, json.loads(body)) == (200, {"accessions": 2})


def test_a_body_slower_than_the_read_timeout_is_408(server: Server) -> None:
    status, headers, body = answer(server.connect(), post_head(100, TOKEN) + b'{"acc')
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body)["title"] == "Request timeout"


@pytest.mark.parametrize("after_a_request", [False, True])
def test_headers_sent_byte_by_byte_are_cut_off(server: Server, after_a_request: bool) -> None:
    """Slowloris: a header line a byte at a time, never finished, on a new connection and on
    one kept alive after a request; the server closes it within its read timeout."""
    with server.connect() as sock:
        if after_a_request:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        trickle = b"POST /v1/packages HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 10_000
        deadline = time.monotonic() + READ_TIMEOUT + 15
        closed = False
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(sock, min(deadline, time.monotonic() + 0.2)):
                closed = True
                break
            assert time.monotonic() < deadline, "the server kept a slow client"
        assert closed


def test_oversized_headers_are_400(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    status, headers, _ = answer(server.connect(), head)
    assert status == 400
    assert headers["connection"] == "close"


def test_a_route_can_have_a_larger_limit() -> None:
    app = FastAPI()

    @app.post("/v1/uploads/{name}")
    @app.post("/v1/small")
    async def echo() -> dict[str, str]:
        return {"ok": "yes"}

    gate = BodyGate(app, b"", max_body=1024, read_timeout=5, limits={"/v1/uploads/": 4096})
    client = TestClient(gate)
    assert client.post("/v1/uploads/x", content=b"x" * 4000).status_code == 200
    assert client.post("/v1/uploads/x", content=b"x" * 5000).status_code == 413
    assert client.post("/v1/small", content=b"x" * 2000).status_code == 413

"""An HTTP proxy in front of the S3 endpoint that refuses chosen requests, as a real S3 would
(403 AccessDenied), and passes everything else through unchanged; it logs every request."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from support.net import LOOPBACK

Refuse = Callable[[str, str], bool]  # (method, path with query) -> refuse?
_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>refused by the test</Message></Error>"
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class S3Fault:
    """`with S3Fault(upstream, refuse) as proxy: ... proxy.url ...`; `refused` counts hits,
    `requests` lists every (method, path) that reached the proxy, in order."""

    def __init__(self, upstream: str, refuse: Refuse = lambda _method, _path: False) -> None:
        target = urlsplit(upstream)
        host, port = target.hostname or LOOPBACK, target.port
        self.refused = 0
        self.requests: list[tuple[str, str]] = []
        fault = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fault.requests.append((self.command, self.path))
                if refuse(self.command, self.path):
                    fault.refused += 1
                    self.send_response(403)
                    self.send_header("content-type", "application/xml")
                    self.send_header("content-length", str(len(_DENIED)))
                    self.end_headers()
                    self.wfile.write(_DENIED)
                    return
                conn = http.client.HTTPConnection(host, port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response_only(reply.status)  # upstream's Date and Server pass
                head = self.command == "HEAD"
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> S3Fault:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

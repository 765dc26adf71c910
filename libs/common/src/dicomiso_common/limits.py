"""What every service refuses before reading it: bodies without a valid token, bodies over a
limit, and clients too slow to finish their headers or body (docs/architecture.md, "Limits").

FastAPI reads a request's whole body before it runs the route's dependencies, so the bearer
guard alone let an unauthenticated 400 MB POST into memory. `BodyGate` wraps the app in
`serve.server`, in front of FastAPI: it answers 401 or 413 without reading a body byte, with
`Connection: close` so that uvicorn drops the connection instead of draining the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import PROBLEM_JSON, DicomisoError

if TYPE_CHECKING:
    from .auth import Authenticator

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # request line and headers of one request


class BodyGate:
    """Plain ASGI middleware in front of every service's app.

    A request that announces a body (Content-Length > 0 or Transfer-Encoding) must carry the
    service token or a valid JWT (when auth is on; every route that takes a body is guarded;
    `auth.Authenticator` decides, and the route's guard reuses its verdict) and fit
    the limit of its route: the longest matching prefix in `limits`, else `max_body`. The body
    is then read here, at most that many bytes within `read_timeout` seconds, and handed on
    whole. Requests without a body pass untouched; the routes' guard checks their token.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: bytes | Authenticator,
        max_body: int,
        read_timeout: float,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        from .auth import Authenticator  # auth imports the audit trail and the store

        self.app = app
        self.auth = Authenticator(token) if isinstance(token, bytes) else token
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.limits = sorted((limits or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        return next((n for prefix, n in self.limits if path.startswith(prefix)), self.max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        length = headers.get(b"content-length")
        if headers.get(b"transfer-encoding") is None and (length is None or length == b"0"):
            await self.app(scope, receive, send)
            return
        if self.auth.required:
            text = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
            client = scope["client"][0] if scope.get("client") else None
            try:
                principal = await run_in_threadpool(self.auth.authenticate, text, client)
            except DicomisoError as exc:  # Unauthorized, or the IdP unreachable (503)
                extra = {k.lower(): v for k, v in (exc.headers or {}).items()}
                await _refuse(send, scope, exc.status, exc.title, str(exc), extra)
                return
            scope.setdefault("state", {})["principal"] = principal
        limit = self.limit_for(scope["path"])
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _refuse(send, scope, 413, "Content too large", f"the body limit is {limit} bytes")
            return
        body = bytearray()
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if len(body) > limit:
                        detail = f"the body limit is {limit} bytes"
                        await _refuse(send, scope, 413, "Content too large", detail)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"the body did not arrive within {self.read_timeout:g} s"
            await _refuse(send, scope, 408, "Request timeout", detail)
            return
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read once, then the connection's own messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(
    send: Send,
    scope: Scope,
    status: int,
    title: str,
    detail: str,
    extra: dict[str, str] | None = None,
) -> None:
    """A problem+json answer that closes the connection (the rest of the body is never read)."""
    log.info("refused", extra={"method": scope["method"], "status": status, "reason": detail})
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    headers = {
        "content-type": PROBLEM_JSON,
        "content-length": str(len(body)),
        "connection": "close",
        **(extra or {}),
    }
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SlowClientGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a header size cap.

    uvicorn arms its keep-alive timer only after a response, and any byte cancels it: a client
    that sends its headers a byte at a time, or never a first request, holds the connection
    for ever. Here the request line and headers must be complete within `header_timeout`
    seconds of the connection (or of the previous response) and `MAX_HEADER_BYTES` bytes,
    else the connection is closed.
    """

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes: int = 0  # received while the headers are incomplete
    _head_bytes: int = 0  # of the request line and headers parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._header_timer is not None
        if waiting:
            self._header_bytes += len(data)
        super().data_received(data)
        if waiting and self._header_timer is not None and self._header_bytes > MAX_HEADER_BYTES:
            self._disarm()
            if not self.transport.is_closing():
                self.send_400_response("Request headers too large.")

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        """Headers that arrived whole in one read: httptools turns this error into a 400."""
        self._head_bytes += n
        if self._head_bytes > MAX_HEADER_BYTES:
            raise ValueError("request headers too large")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its headers are complete already
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("closed a connection whose request headers did not arrive in time")
            self.transport.close()


def protocol(header_timeout: float) -> type[SlowClientGuard]:
    """The protocol class for uvicorn's `http=`, with this header deadline."""
    return type("SlowClientGuard", (SlowClientGuard,), {"header_timeout": header_timeout})

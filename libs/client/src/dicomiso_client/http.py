"""The one HTTP boundary of the clients: transport errors and problem+json answers become ours.

A service that calls another (the packager calls lookup and the retriever) lets these errors
propagate: a 404 or 409 from lookup is the caller's 404 or 409, an unreachable service is a
503 naming which one, and a refused token is a 502 (our configuration, not the caller's fault).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Self

import httpx

from dicomiso_common.errors import (
    Conflict,
    DicomisoError,
    InvalidInput,
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)


class UpstreamError(DicomisoError):
    """Another service answered, but not in a way we can pass on (auth, 5xx, garbage)."""

    status = 502
    title = "Upstream service error"


class ServiceUnreachable(Unavailable):
    """The service did not answer at all (down, wrong URL, timeout)."""

    title = "Service unreachable"


_PASSED_ON: dict[int, type[DicomisoError]] = {
    400: InvalidInput,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
}


def detail_of(response: httpx.Response) -> str:
    """The problem+json `detail` of an answer, or its status line."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return f"HTTP {response.status_code}"


class ServiceClient:
    """A small synchronous client for one of our services: base URL, bearer token, timeouts."""

    service = "service"

    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Plain HTTP needs no CA bundle: loading certifi's took ~0.1 s of every CLI call. The
        # context given instead trusts no CA, so a TLS connection (there is none: no redirects
        # are followed) would fail closed, never go unverified.
        plain = self.base_url.lower().startswith("http://")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
            trust_env=False,
            verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if plain else True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        """Send one request; anything but an expected status raises one of our errors."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceUnreachable(f"{self.service} at {self.base_url} timed out") from exc
        except httpx.TransportError as exc:
            raise ServiceUnreachable(
                f"{self.service} unreachable at {self.base_url} ({type(exc).__name__})"
            ) from exc
        if response.status_code in expect:
            return response
        detail = detail_of(response)
        passed_on = _PASSED_ON.get(response.status_code)
        if passed_on is not None:
            raise passed_on(detail)
        if response.status_code in (401, 403):
            raise UpstreamError(f"{self.service} refused our token (DICOMISO_CALL_TOKEN)")
        if response.status_code in (502, 503, 504):
            raise Unavailable(f"{self.service}: {detail}")
        raise UpstreamError(f"{self.service} answered {response.status_code}: {detail}")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(f"{self.service} gave an answer that is not JSON") from exc

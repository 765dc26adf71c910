"""Bearer-token auth for service APIs (DICOMISO_API_TOKEN; empty = off, local use only)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from fastapi import Request

from .errors import Unauthorized
from .settings import CommonSettings

log = logging.getLogger(__name__)


def bearer_guard(settings: CommonSettings) -> Callable[[Request], None]:
    """Return a FastAPI dependency that checks `Authorization: Bearer <token>`.

    The comparison is constant-time. With no token configured every call passes, which is
    logged once as a warning so that it is never the silent state of a deployment.
    """
    expected = settings.api_token.get_secret_value().encode()
    if not expected:
        log.warning("DICOMISO_API_TOKEN is empty: API authentication is off (local use only)")

    def check(request: Request) -> None:
        if not expected:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token")
        if not hmac.compare_digest(token.strip().encode(), expected):
            raise Unauthorized("invalid bearer token")

    return check

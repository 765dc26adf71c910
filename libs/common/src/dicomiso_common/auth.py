"""Bearer-token auth for service APIs (DICOMISO_API_TOKEN; empty = off, local use only)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import Request

from .errors import Unauthorized
from .limits import token_problem
from .settings import CommonSettings

log = logging.getLogger(__name__)


def bearer_guard(settings: CommonSettings) -> Callable[[Request], None]:
    """Return a FastAPI dependency that checks `Authorization: Bearer <token>`.

    The comparison is constant-time. A request with a body met the same check already, before
    its body was read (`limits.BodyGate`). With no token configured every call passes, which is
    logged once as a warning so that it is never the silent state of a deployment.
    """
    expected = settings.api_token.get_secret_value().encode()
    if not expected:
        log.warning("DICOMISO_API_TOKEN is empty: API authentication is off (local use only)")

    def check(request: Request) -> None:
        if not expected:
            return
        reason = token_problem(request.headers.get("authorization", ""), expected)
        if reason:
            raise Unauthorized(reason)

    return check

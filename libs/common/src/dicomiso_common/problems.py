"""The FastAPI side of the error hierarchy: every error a service raises, every validation
error and every unknown route answered as application/problem+json (RFC 9457).

Kept apart from `errors` so that the clients, which raise the same classes, never import
FastAPI.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import PROBLEM_JSON, DicomisoError

log = logging.getLogger(__name__)


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """Build an RFC 9457 problem response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status, media_type=PROBLEM_JSON)


def _validation_detail(exc: RequestValidationError) -> str:
    """Summarise pydantic errors without echoing the rejected values into logs."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def add_problem_handlers(app: FastAPI) -> None:
    """Map our errors, validation errors and unknown routes to problem+json."""

    @app.exception_handler(DicomisoError)
    async def _ours(_: Request, exc: DicomisoError) -> JSONResponse:
        response = problem(exc.status, exc.title, str(exc) or exc.title)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "Invalid input", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail), str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"path": request.url.path, "error": type(exc).__name__},
        )
        return problem(500, "Internal error", "unexpected error; see the service log")

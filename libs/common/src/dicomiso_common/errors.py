"""One error hierarchy for every service, mapped once to application/problem+json.

Foreign errors (botocore, pynetdicom statuses, pymysql) are translated into these at the
boundary where they occur, so routes never build HTTP responses by hand.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class DicomisoError(Exception):
    """Base of every error the services raise on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    headers: dict[str, str] | None = None


class InvalidInput(DicomisoError):
    """A request value failed validation; nothing was started."""

    status = 422
    title = "Invalid input"


class NotFound(DicomisoError):
    status = 404
    title = "Not found"


class Conflict(DicomisoError):
    status = 409
    title = "Conflict"


class Unauthorized(DicomisoError):
    status = 401
    title = "Unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Unavailable(DicomisoError):
    """A dependency (S3, PACS, database) cannot be reached right now."""

    status = 503
    title = "Service unavailable"
    headers = {"Retry-After": "5"}


class StoreError(Unavailable):
    """The S3 endpoint failed or could not be reached."""

    title = "Object store unavailable"


class ObjectMissing(DicomisoError):
    """An object the caller expected in the bucket is not there."""

    status = 404
    title = "Object not found"


class PreconditionFailed(DicomisoError):
    """A conditional write lost a race (S3 answered 412)."""

    status = 409
    title = "Concurrent update"


class DicomError(DicomisoError):
    """A DICOM peer refused, aborted or answered with a failure status."""

    status = 502
    title = "DICOM peer error"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


def _problem_doc(description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


# For APIRouter(responses=...): documents the problem+json errors every /v1 route can give.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem_doc("Missing or invalid bearer token"),
    404: _problem_doc("No such resource"),
    422: _problem_doc("Invalid input; nothing was started"),
    503: _problem_doc("A dependency (S3, PACS, database) is unavailable; retry later"),
}


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

"""One error hierarchy for every service; `problems` maps it once to application/problem+json.

Foreign errors (botocore, pynetdicom statuses, pymysql) are translated into these at the
boundary where they occur, so routes never build HTTP responses by hand. This module imports
pydantic only, never FastAPI: the HTTP clients and the `dicom-iso` command line raise these
classes too, and must start without loading a web framework (tests/common/test_imports.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

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


class Forbidden(DicomisoError):
    """The caller is known but lacks the role the route needs."""

    status = 403
    title = "Forbidden"


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
    403: _problem_doc("The caller lacks the role this route needs"),
    404: _problem_doc("No such resource"),
    422: _problem_doc("Invalid input; nothing was started"),
    503: _problem_doc("A dependency (S3, PACS, database) is unavailable; retry later"),
}

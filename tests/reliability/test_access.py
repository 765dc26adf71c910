"""Access: every route of every app needs its own service's bearer token, except the open
probes, the OpenAPI docs and the packager's data-free staff page (issue 10, "Access").

Presigned-link expiry is covered by tests/common/test_presign_verified.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from reliability.hostile_support import SERVICES, Wired

OPEN = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
PAGE = {"/", "/static/{name}"}  # the packager's staff page: no data in it
SAMPLE = {"job_id": "0" * 32, "accession": "MR.001", "name": "app.js"}


def _routes(wired: Wired, service: str) -> list[tuple[str, str]]:
    """(method, path template): the OpenAPI paths plus the app's plain routes.

    (FastAPI 0.165 nests included routers in `_IncludedRouter`, so app.routes alone does not
    list them; the OpenAPI document does, and the open routes are in app.routes.)
    """
    app = wired.apps[service]
    out = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    for route in app.routes:
        methods, path = getattr(route, "methods", None), getattr(route, "path", None)
        if methods and isinstance(path, str):
            out |= {(m, path) for m in methods if m != "HEAD"}
    return sorted(out)


def _url(template: str) -> str:
    path = template
    for key, value in SAMPLE.items():
        path = path.replace("{" + key + "}", value)
    return path + ("?accession_number=MR.001" if template == "/mkiso" else "")


def test_openapi_documents_every_guarded_route(wired: Wired) -> None:
    for service in SERVICES:
        with wired.client(service, token=None) as client:
            documented = client.get("/openapi.json").json()["paths"]
        for method, path in _routes(wired, service):
            if path not in OPEN and path not in PAGE:
                assert method.lower() in documented.get(path, {}), (service, method, path)


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer",
        "Basic aGk6aGk=",
        "Bearer wrong",
        "bearer other-service",
        "Token {own}",
        "Bearer {own}x",
    ],
)
def test_every_data_route_refuses_a_missing_or_wrong_token(wired: Wired, auth: str | None) -> None:
    checked = 0
    for service in SERVICES:
        other = wired.tokens["packager" if service != "packager" else "lookup"]
        value = (
            auth.replace("{own}", wired.tokens[service]).replace("other-service", other)
            if auth
            else None
        )
        headers = {"Authorization": value} if value is not None else {}
        with wired.client(service, token=None) as client:
            for method, path in _routes(wired, service):
                if path in OPEN or path in PAGE:
                    continue
                response = client.request(method, _url(path), headers=headers, json={})
                assert response.status_code == 401, (service, method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.headers["content-type"].startswith("application/problem+json")
                checked += 1
    assert checked >= 20


def test_routes_are_found(wired: Wired) -> None:
    assert sum(len(_routes(wired, s)) for s in SERVICES) >= 25


def test_a_token_of_one_service_is_refused_by_another(wired: Wired) -> None:
    """The packager's token is not the backend token and the reverse (different settings)."""
    body: dict[str, Any] = {"accession_numbers": ["MR.001"]}
    with wired.client("lookup", token=wired.tokens["packager"]) as client:
        assert client.post("/v1/accessions:resolve", json=body).status_code == 401
    with wired.client("packager", token=wired.tokens["lookup"]) as client:
        assert client.post("/v1/previews", json=body).status_code == 401
    with wired.client("lookup") as client:  # its own token works
        assert client.post("/v1/accessions:resolve", json=body).status_code == 200


def test_open_routes_and_the_page_hold_no_data(wired: Wired) -> None:
    for service in SERVICES:
        with wired.client(service, token=None) as client:
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                response = client.get(path)
                assert response.status_code in (200, 503), (service, path)
                for secret in ("MR.001", "Budi", "RM000001", wired.tokens[service]):
                    assert secret not in response.text, (service, path, secret)
    with wired.client("packager", token=None) as client:
        for path in ("/", "/static/app.js", "/static/app.css", "/mkiso?accession_number=MR.001"):
            response = client.get(path, headers={"accept": "text/html"})
            assert response.status_code == 200, path
            for secret in ("Budi", "Santoso", "RM000001", "REG-10", wired.tokens["packager"]):
                assert secret not in response.text, (path, secret)
        assert client.get("/static/../app.py").status_code == 404

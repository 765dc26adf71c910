"""Problem+json errors, bearer auth and the ops endpoints, on a small app over real HTTP."""

from __future__ import annotations

import json
import logging

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from dicomiso_common.auth import bearer_guard
from dicomiso_common.errors import InvalidInput, StoreError
from dicomiso_common.logs import JsonFormatter
from dicomiso_common.ops import add_ops_routes
from dicomiso_common.problems import add_problem_handlers
from dicomiso_common.settings import CommonSettings


def _app(token: str = "s3cret", ready: bool = True) -> FastAPI:
    app = FastAPI()
    add_problem_handlers(app)

    def s3_check() -> None:
        if not ready:
            raise StoreError("S3 endpoint unreachable: EndpointConnectionError")

    add_ops_routes(app, "demo", {"s3": s3_check})
    guard = bearer_guard(CommonSettings(api_token=SecretStr(token)))

    @app.get("/v1/thing/{value}", dependencies=[Depends(guard)])
    def thing(value: str) -> dict[str, str]:
        if value == "bad":
            raise InvalidInput("value is bad")
        if value == "boom":
            raise RuntimeError("secret detail")
        return {"value": value}

    return app


def test_missing_or_wrong_token_is_401_problem() -> None:
    client = TestClient(_app())
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
        r = client.get("/v1/thing/x", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == "Bearer"
    ok = client.get("/v1/thing/x", headers={"Authorization": "Bearer s3cret"})
    assert ok.json() == {"value": "x"}


def test_errors_are_problem_json_and_500s_hide_details() -> None:
    client = TestClient(_app(token=""), raise_server_exceptions=False)
    bad = client.get("/v1/thing/bad")
    assert bad.status_code == 422 and bad.json()["detail"] == "value is bad"
    boom = client.get("/v1/thing/boom")
    assert boom.status_code == 500 and "secret" not in boom.text
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_ops_endpoints_need_no_token_and_report_readiness() -> None:
    client = TestClient(_app())
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.get("/v1/thing/x")
    metrics = client.get("/metrics").text
    assert 'dicomiso_http_requests_total{method="GET",route="/v1/thing/{value}"' in metrics
    down = TestClient(_app(ready=False)).get("/readyz")
    assert down.status_code == 503 and "s3" in down.json()["checks"]


def test_log_lines_are_json_with_extra_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "move finished", None, None)
    record.job_id = "abc"
    record.instances = 3
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "move finished" and line["job_id"] == "abc"
    assert line["instances"] == 3 and line["level"] == "info"

"""Operational endpoints every service serves: /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from .errors import DicomisoError, problem

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], None]
_QUIET = {"/healthz", "/readyz", "/metrics"}  # probes every few seconds: not worth a line


class Metrics:
    """A registry per app, so tests can build several apps in one process."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dicomiso_http_requests_total", "HTTP requests",
                                ["service", "method", "route", "status"], registry=self.registry)
        self.latency = Histogram("dicomiso_http_request_seconds", "HTTP request latency",
                                 ["service", "route"], registry=self.registry)
        self.service = service


def add_ops_routes(app: FastAPI, service: str, checks: dict[str, ReadyCheck]) -> Metrics:
    """Serve liveness, readiness (each check must not raise) and Prometheus metrics."""
    metrics = Metrics(service)

    @app.middleware("http")
    async def _count(request: Request,
                     call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        seconds = time.perf_counter() - started
        metrics.requests.labels(service, request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(service, route).observe(seconds)
        if route not in _QUIET:  # the route template, never the path: paths hold accessions
            log.info("request", extra={"method": request.method, "route": route,
                                       "status": response.status_code,
                                       "ms": round(seconds * 1000, 1)})
        return response

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: every dependency answers")
    async def readyz() -> JSONResponse:
        failed: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await run_in_threadpool(check)
            except DicomisoError as exc:
                failed[name] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a readiness probe reports, never crashes
                failed[name] = type(exc).__name__
        if failed:
            log.warning("not ready", extra={"failed": sorted(failed)})
            return problem(503, "Not ready", "; ".join(f"{k}: {v}" for k, v in failed.items()),
                           checks=failed)
        return JSONResponse({"status": "ready", "checks": sorted(checks)})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics

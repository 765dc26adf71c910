"""Operational endpoints every service serves: /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import DicomisoError
from .problems import problem

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], None]
_QUIET = {"/healthz", "/readyz", "/metrics"}  # probes every few seconds: not worth a line


class Metrics:
    """A registry per app, so tests can build several apps in one process."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dicomiso_http_requests_total",
            "HTTP requests",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dicomiso_http_request_seconds",
            "HTTP request latency",
            ["service", "route"],
            registry=self.registry,
        )
        self.service = service


class _Observe:
    """Plain ASGI middleware: request metrics and one log line per request.

    (Starlette's `@app.middleware("http")` costs a task and a stream per request; this does
    not. Measured in docs/benchmarks.md, Lookup.) The line names the route template, never
    the path: paths hold accession numbers.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            m = self.metrics
            m.requests.labels(m.service, scope["method"], route, str(status)).inc()
            m.latency.labels(m.service, route).observe(seconds)
            if route not in _QUIET:
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 1),
                    },
                )


def add_ops_routes(app: FastAPI, service: str, checks: dict[str, ReadyCheck]) -> Metrics:
    """Serve liveness, readiness (each check must not raise) and Prometheus metrics."""
    metrics = Metrics(service)

    app.add_middleware(_Observe, metrics=metrics)

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
            return problem(
                503, "Not ready", "; ".join(f"{k}: {v}" for k, v in failed.items()), checks=failed
            )
        return JSONResponse({"status": "ready", "checks": sorted(checks)})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics

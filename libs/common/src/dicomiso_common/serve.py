"""How every service runs its HTTP server: one uvicorn configuration for all four.

uvicorn's access log is off: it logs request paths, and ours carry accession numbers
(`/v1/accessions/{accession}`). `ops.add_ops_routes` logs each request by its route template
instead (`/v1/accessions/{accession}`, status, milliseconds).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from .auth import Authenticator
from .limits import BodyGate, protocol
from .settings import CommonSettings

log = logging.getLogger(__name__)

S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S]) -> S:
    """Read a service's DICOMISO_* settings; a bad one stops start-up with a one-line reason.

    The values are not repeated (one may be a secret), only the variable and the problem.
    """
    try:
        return cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"DICOMISO_{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise SystemExit(f"invalid configuration: {problems}") from None


def server(app: FastAPI, settings: CommonSettings) -> uvicorn.Server:
    """A uvicorn server for the app on DICOMISO_HTTP_HOST:DICOMISO_HTTP_PORT.

    In front of the app, `limits.BodyGate` refuses bodies without a valid token (checked by the
    app's `app.state.auth`, the same `auth.Authenticator` as its routes') or over the limit
    (a route that needs more names it in `app.state.body_limits`, path prefix to bytes) and
    bodies slower than DICOMISO_HTTP_READ_TIMEOUT; `limits.protocol` closes connections
    whose headers are slower than that. Idle keep-alive connections close after 5 s.
    """
    gate = BodyGate(
        app,
        token=getattr(app.state, "auth", None) or Authenticator.from_settings(settings),
        max_body=settings.max_body_bytes,
        read_timeout=settings.http_read_timeout,
        limits=getattr(app.state, "body_limits", None),
    )
    config = uvicorn.Config(
        gate,
        host=settings.http_host,
        port=settings.http_port,
        http=protocol(settings.http_read_timeout),
        timeout_keep_alive=5,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    return uvicorn.Server(config)


def run(app: FastAPI, settings: CommonSettings) -> None:
    """Serve until SIGTERM/SIGINT; then exit without waiting for busy job threads.

    The lifespan's `Jobs.shutdown` has told the job threads to stop and handed their records
    over. One still inside a long step (an ISO write, a C-MOVE) would be joined by the
    interpreter at exit, past `docker stop`'s 10 s and into a SIGKILL: it is left behind.
    """
    server(app, settings).run()
    deadline = time.monotonic() + 1.0
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    for thread in (t for t in others if not t.daemon):
        thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t.name for t in others if not t.daemon and t.is_alive()]
    if busy:
        log.warning(
            "exiting with busy job threads; their jobs are handed over",
            extra={"threads": len(busy)},
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

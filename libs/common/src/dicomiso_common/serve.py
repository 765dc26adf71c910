"""How every service runs its HTTP server: one uvicorn configuration for all four.

uvicorn's access log is off: it logs request paths, and ours carry accession numbers
(`/v1/accessions/{accession}`). `ops.add_ops_routes` logs each request by its route template
instead (`/v1/accessions/{accession}`, status, milliseconds).
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from .settings import CommonSettings


def server(app: FastAPI, settings: CommonSettings) -> uvicorn.Server:
    """A uvicorn server for the app on DICOMISO_HTTP_HOST:DICOMISO_HTTP_PORT."""
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    return uvicorn.Server(config)


def run(app: FastAPI, settings: CommonSettings) -> None:
    server(app, settings).run()

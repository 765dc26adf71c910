"""The lookup service (`dicomiso-lookup`): accession number -> patient."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dicomiso_common import serve
from dicomiso_common.auth import bearer_guard
from dicomiso_common.dicom import configure
from dicomiso_common.logs import configure_logging
from dicomiso_common.ops import ReadyCheck, add_ops_routes
from dicomiso_common.problems import add_problem_handlers
from dicomiso_common.serve import load_settings

from .his import His
from .routes import Resolver, make_router
from .settings import LookupSettings

log = logging.getLogger(__name__)


def create_app(settings: LookupSettings | None = None) -> FastAPI:
    """Wire the lookup service; without DICOMISO_HIS_URL names come from the PACS."""
    configure()  # pydicom and pynetdicom, once per process
    settings = settings or LookupSettings()
    his = His(settings) if settings.his_url is not None else None
    if his is None:
        log.warning("DICOMISO_HIS_URL is not set: patient names come from the PACS (C-FIND)")
    resolver = Resolver(settings, his)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if his is not None:
            his.close()

    app = FastAPI(
        title="dicom-iso lookup",
        version="0.1.0",
        lifespan=lifespan,
        description="Accession number -> patient (HIS database, or the PACS).",
    )
    app.state.settings, app.state.resolver = settings, resolver
    add_problem_handlers(app)
    checks: dict[str, ReadyCheck] = {"his": his.ping} if his is not None else {}
    add_ops_routes(app, "lookup", checks)
    guard = bearer_guard(settings, service="lookup")  # no bucket: alerts go to the log
    app.state.auth = guard.auth  # BodyGate (serve.server) checks bodies' tokens with it
    app.include_router(make_router(resolver, guard))
    return app


def main() -> None:
    """Entry point `dicomiso-lookup`: configuration only from DICOMISO_* variables."""
    settings = load_settings(LookupSettings)
    configure_logging(settings.log_level, "lookup")
    serve.run(create_app(settings), settings)

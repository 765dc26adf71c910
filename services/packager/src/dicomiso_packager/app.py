"""The packager service (`dicomiso-packager`): accession numbers in, a disc image link out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dicomiso_common import audit_syslog
from dicomiso_common.auth import bearer_guard
from dicomiso_common.dicom import configure
from dicomiso_common.jobs import Jobs, records_prefix
from dicomiso_common.lifecycle import ensure_lifecycle
from dicomiso_common.logs import configure_logging
from dicomiso_common.ops import add_ops_routes
from dicomiso_common.problems import add_problem_handlers
from dicomiso_common.serve import load_settings
from dicomiso_common.serve import run as serve_run
from dicomiso_common.store import Store

from . import online, signin, viewer, web
from .malloc import limit_arenas
from .packaging import Packaging
from .routes import make_router
from .settings import PackagerSettings

log = logging.getLogger(__name__)

PACKAGES_PREFIX = "packages/"
KIND = "package"


def lifecycle_rules(settings: PackagerSettings) -> dict[str, int]:
    """What the packager writes that expires: images, and its job records."""
    return {
        PACKAGES_PREFIX: settings.package_expiry_days,
        records_prefix(KIND): settings.job_expiry_days,
    }


def create_app(settings: PackagerSettings | None = None, store: Store | None = None) -> FastAPI:
    """Wire the packager; the job sweeper runs for the app's lifetime."""
    configure()  # pydicom and pynetdicom, once per process
    settings = settings or PackagerSettings()
    viewer.viewer_source(settings)  # fail at start-up, not with every disc, when it is missing
    if settings.view_online:
        online.template()  # and so without the bundle the online pages need
    store = store or Store.from_settings(settings)
    packaging = Packaging(settings, store)
    jobs = Jobs(store, KIND, settings, packaging.run, packaging.is_current)
    shipper = audit_syslog.from_settings(settings, store)  # DICOMISO_AUDIT_SYSLOG_URL

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ensure_lifecycle(store, settings, lifecycle_rules(settings))
        jobs.start_sweeper()
        if shipper is not None:
            shipper.start()  # ships only while it holds the deployment's lease
        try:
            yield
        finally:
            if shipper is not None:
                shipper.stop()
            jobs.shutdown()

    app = FastAPI(
        title="dicom-iso packager",
        version="0.1.0",
        lifespan=lifespan,
        description="Builds DICOM media images (ISO 9660 + DICOMDIR + IHE PDI, or "
        "ZIP) of one patient's studies and hands out presigned links.",
    )
    app.state.settings, app.state.store, app.state.jobs = settings, store, jobs
    app.state.audit_shipper = shipper
    add_problem_handlers(app)
    add_ops_routes(app, "packager", {"s3": store.ping})
    guard = bearer_guard(settings, store, "packager")
    app.state.auth = guard.auth  # BodyGate (serve.server) checks bodies' tokens with it
    signin.include(app, settings, store, guard.auth)  # the page's sign-in, with OIDC
    app.include_router(make_router(jobs, packaging, settings, store, guard))
    web.include(app, jobs, packaging, settings, store, guard)
    return app


def main() -> None:
    """Entry point `dicomiso-packager`: configuration only from DICOMISO_* variables."""
    settings = load_settings(PackagerSettings)
    configure_logging(settings.log_level, "packager")
    limit_arenas(settings.malloc_arenas)  # before any thread starts
    serve_run(create_app(settings), settings)

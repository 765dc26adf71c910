"""The retriever service: FastAPI app + Storage SCP in one process (`dicomiso-retriever`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dicomiso_common import audit_syslog, serve
from dicomiso_common.auth import bearer_guard
from dicomiso_common.dicom import configure
from dicomiso_common.jobs import Jobs, records_prefix
from dicomiso_common.lifecycle import ensure_lifecycle
from dicomiso_common.logs import configure_logging
from dicomiso_common.ops import add_ops_routes
from dicomiso_common.problems import add_problem_handlers
from dicomiso_common.serve import load_settings
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store

from .leases import LeaseBook
from .retrieval import Retrieval
from .routes import make_router
from .scp import StorageSCP
from .settings import RetrieverSettings

log = logging.getLogger(__name__)

KIND = "retrieve"


def lifecycle_rules(settings: CommonSettings) -> dict[str, int]:
    """What the retriever writes that expires: its job records (studies stay)."""
    return {records_prefix(KIND): settings.job_expiry_days}


def create_app(settings: RetrieverSettings | None = None, store: Store | None = None) -> FastAPI:
    """Wire the retriever; the SCP and the job sweeper run for the app's lifetime."""
    configure()  # pydicom and pynetdicom, once per process
    settings = settings or RetrieverSettings()
    store = store or Store.from_settings(settings)
    leases = LeaseBook(store, settings.job_stale_after)
    scp = StorageSCP(settings, store, leases)
    retrieval = Retrieval(settings, store, scp, leases)
    jobs = Jobs(store, KIND, settings, retrieval.run, retrieval.is_current)
    shipper = audit_syslog.from_settings(settings, store)  # DICOMISO_AUDIT_SYSLOG_URL

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ensure_lifecycle(store, settings, lifecycle_rules(settings))
        scp.start()
        jobs.start_sweeper()
        if shipper is not None:
            shipper.start()  # ships only while it holds the deployment's lease
        try:
            yield
        finally:
            if shipper is not None:
                shipper.stop()
            jobs.shutdown()
            scp.stop()

    app = FastAPI(
        title="dicom-iso retriever",
        version="0.1.0",
        lifespan=lifespan,
        description="Finds studies by accession number (C-FIND), pulls them "
        "(C-MOVE into our Storage SCP, or C-GET) into the bucket.",
    )
    app.state.settings, app.state.store, app.state.scp, app.state.jobs = settings, store, scp, jobs
    app.state.retrieval = retrieval
    app.state.audit_shipper = shipper
    add_problem_handlers(app)

    add_ops_routes(app, "retriever", {"s3": store.ping, "scp": scp.check_listening})
    guard = bearer_guard(settings, store, "retriever")
    app.state.auth = guard.auth  # BodyGate (serve.server) checks bodies' tokens with it
    app.include_router(make_router(jobs, settings.retrieve_method, guard, settings, store))
    return app


def main() -> None:
    """Entry point `dicomiso-retriever`: configuration only from DICOMISO_* variables."""
    settings = load_settings(RetrieverSettings)
    configure_logging(settings.log_level, "retriever")
    serve.run(create_app(settings), settings)

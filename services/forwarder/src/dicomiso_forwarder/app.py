"""The forwarder service (`dicomiso-forwarder`): studies from the bucket to peer PACS."""

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

from .commitment import CommitmentScp
from .forward import RESULTS_PREFIX, Forwarding
from .routes import make_router
from .settings import ForwarderSettings

log = logging.getLogger(__name__)

KIND = "forward"


def lifecycle_rules(settings: CommonSettings) -> dict[str, int]:
    """What the forwarder writes that expires: its job records and their per-instance results."""
    return {
        records_prefix(KIND): settings.job_expiry_days,
        RESULTS_PREFIX: settings.job_expiry_days,
    }


def create_app(settings: ForwarderSettings | None = None, store: Store | None = None) -> FastAPI:
    """Wire the forwarder; the job sweeper runs for the app's lifetime."""
    configure()  # pydicom and pynetdicom, once per process
    settings = settings or ForwarderSettings()
    store = store or Store.from_settings(settings)
    forwarding = Forwarding(settings, store)
    jobs = Jobs(store, KIND, settings, forwarding.run)
    shipper = audit_syslog.from_settings(settings, store)  # DICOMISO_AUDIT_SYSLOG_URL
    scp = CommitmentScp(settings, store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ensure_lifecycle(store, settings, lifecycle_rules(settings))
        if settings.commitment_wanted and settings.commitment_port:
            scp.start()  # N-EVENT-REPORTs on a new association land on any replica
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
        title="dicom-iso forwarder",
        version="0.1.0",
        lifespan=lifespan,
        description="C-STOREs studies from the bucket to configured peer PACS.",
    )
    app.state.settings, app.state.store, app.state.jobs = settings, store, jobs
    app.state.audit_shipper = shipper
    app.state.commitment_scp = scp
    add_problem_handlers(app)
    add_ops_routes(app, "forwarder", {"s3": store.ping})
    guard = bearer_guard(settings, store, "forwarder")
    app.state.auth = guard.auth  # BodyGate (serve.server) checks bodies' tokens with it
    app.include_router(make_router(jobs, settings, store, guard))
    return app


def main() -> None:
    """Entry point `dicomiso-forwarder`: configuration only from DICOMISO_* variables."""
    settings = load_settings(ForwarderSettings)
    configure_logging(settings.log_level, "forwarder")
    serve.run(create_app(settings), settings)

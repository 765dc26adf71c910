"""Clients of the job-running services: start a job, read it, wait for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dicomiso_common.errors import Unavailable

from .http import ServiceClient, UpstreamError
from .models import JobView

Progress = Callable[[JobView], None]


class JobClient(ServiceClient):
    """A service whose POST starts a job at `collection` and whose GET reads it."""

    collection = "/v1/jobs"

    def start(self, body: dict[str, Any]) -> JobView:
        data = self.json("POST", self.collection, json=body, expect=(202,))
        return JobView.model_validate({"state": "queued", **data})

    def status(self, job_id: str, *, wait: float = 0.0) -> JobView:
        """The job's view; with `wait` > 0 the service may hold the answer up to that long,
        until the job's state or phase changes (a long poll: GET ...?wait=S)."""
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return JobView.model_validate(
            self.json("GET", f"{self.collection}/{job_id}", params=params)
        )

    def wait(
        self,
        job_id: str,
        *,
        timeout: float,
        poll: float = 1.0,
        on_progress: Progress | None = None,
        outage: float = 60.0,
        long_poll: float = 10.0,
    ) -> JobView:
        """Poll until the job ends and return its last view.

        Each status request asks the service to hold its answer up to `long_poll` seconds
        until the job changes, so an ended job is seen when it ends, not up to `poll` seconds
        later. An answer that came back sooner than `poll` with nothing changed (a job run by
        another replica, or a service that does not hold answers) is followed by the rest of
        `poll` asleep, so no caller ever asks more often than every `poll` seconds for nothing.

        A service that restarts (rolling update) is waited for up to `outage` seconds: the
        job lives in the bucket, so the next replica answers for it.

        Raises:
            Unavailable: the service stayed away longer than `outage`.
            UpstreamError: the job did not end within `timeout`.
        """
        deadline = time.monotonic() + timeout
        away_since: float | None = None
        last: tuple[str, str | None] | None = None
        while True:
            asked = time.monotonic()
            # held well inside the read timeout, and never past the caller's deadline
            hold = max(0.0, min(long_poll, self.timeout / 2, deadline - asked))
            try:
                view = self.status(job_id, wait=hold)
                away_since = None
            except Unavailable:
                now = time.monotonic()
                away_since = away_since or now
                if now - away_since > outage:
                    raise
                view = None
            if view is not None:
                if on_progress is not None:
                    on_progress(view)
                if view.done:
                    return view
            if time.monotonic() > deadline:
                raise UpstreamError(
                    f"{self.service} job {job_id} did not finish in {timeout:.0f} s"
                )
            seen = (view.state, view.phase) if view is not None else None
            if seen is None or seen == last:
                time.sleep(max(0.0, poll - (time.monotonic() - asked)))
            last = seen


class RetrieverClient(JobClient):
    service = "retriever"
    collection = "/v1/retrievals"

    def retrieve(self, accession_numbers: list[str], method: str | None = None) -> JobView:
        body: dict[str, Any] = {"accession_numbers": accession_numbers}
        if method:
            body["method"] = method
        return self.start(body)

    def studies(self, accession_number: str) -> list[dict[str, Any]]:
        """The PACS's study-level answers for one accession (a C-FIND, nothing moved)."""
        found: list[dict[str, Any]] = self.json(
            "GET", "/v1/studies", params={"accession_number": accession_number}
        )
        return found


class ForwarderClient(JobClient):
    service = "forwarder"
    collection = "/v1/forwards"


class PackagerClient(JobClient):
    service = "packager"
    collection = "/v1/packages"

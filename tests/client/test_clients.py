"""The clients' one HTTP boundary, against a real server: each answer becomes the right error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from dicomiso_client import LookupClient, RetrieverClient, ServiceUnreachable, UpstreamError
from dicomiso_common.errors import Conflict, InvalidInput, NotFound, Unavailable
from dicomiso_common.settings import CommonSettings
from support.net import free_port
from support.servers import serving


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse(
        {"title": "t", "status": status, "detail": detail},
        status,
        media_type="application/problem+json",
    )


@pytest.fixture
def fake_service() -> Iterator[str]:
    """A real HTTP server answering the way our services do, one route per case."""
    app = FastAPI()
    polls: list[int] = []

    @app.get("/v1/accessions/{case}")
    def accession(case: str) -> Any:
        codes = {"gone": 404, "mixed": 409, "bad": 422, "token": 401, "down": 503, "boom": 500}
        if case in codes:
            return _problem(codes[case], f"case {case}")
        return {
            "accession_number": case,
            "patient_id": "P1",
            "source": "his",
            "patient_name": {"original": "Doe^Jane", "display": "Jane Doe"},
        }

    @app.post("/v1/retrievals", status_code=202)
    def start() -> dict[str, str]:
        return {"id": "a" * 32, "state": "queued", "status_url": "x"}

    @app.get("/v1/retrievals/{job_id}")
    def status(job_id: str) -> Any:
        polls.append(1)
        if len(polls) == 1:
            return _problem(503, "restarting")  # a replica going away mid-wait
        state = "running" if len(polls) < 3 else "succeeded"
        return {"id": job_id, "state": state, "counts": {"received": len(polls)}}

    settings = CommonSettings(http_port=free_port())
    with serving(app, settings) as url:
        yield url


def test_answers_become_our_errors(fake_service: str) -> None:
    with LookupClient(fake_service, "tok") as lookup:
        assert lookup.accession("MR.1").patient_name.display == "Jane Doe"
        for case, error in [
            ("gone", NotFound),
            ("mixed", Conflict),
            ("bad", InvalidInput),
            ("token", UpstreamError),
            ("down", Unavailable),
            ("boom", UpstreamError),
        ]:
            with pytest.raises(error) as raised:
                lookup.accession(case)
            assert error is UpstreamError or f"case {case}" in str(raised.value)


def test_a_service_that_is_not_there_is_named(fake_service: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with LookupClient(url) as lookup, pytest.raises(ServiceUnreachable) as raised:
        lookup.accession("MR.1")
    assert raised.value.status == 503 and f"lookup unreachable at {url}" in str(raised.value)


def test_wait_rides_out_a_restart_and_reports_progress(fake_service: str) -> None:
    seen: list[int] = []
    with RetrieverClient(fake_service) as retriever:
        job = retriever.retrieve(["MR.1"])
        view = retriever.wait(
            job.id, timeout=10, poll=0.05, on_progress=lambda v: seen.append(v.counts["received"])
        )
    assert view.state == "succeeded" and view.done
    assert seen == [2, 3]


def test_wait_long_polls_and_paces_answers_that_changed_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each status request asks for `?wait=`; an answer that changed neither state nor phase
    is followed by the rest of `poll` asleep, a changed one by the next request at once."""
    answers = [("running", "retrieve"), ("running", "retrieve"), ("running", "build")]
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("wait"))
        state, phase = answers.pop(0) if answers else ("succeeded", "done")
        return httpx.Response(200, json={"id": "a" * 32, "state": state, "phase": phase})

    slept: list[float] = []
    monkeypatch.setattr("dicomiso_client.jobs.time.sleep", slept.append)
    with RetrieverClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler)) as client:
        view = client.wait("a" * 32, timeout=60, poll=0.5, long_poll=7)
    assert view.state == "succeeded"
    assert asked == ["7", "7", "7", "7"]
    assert len(slept) == 1 and 0 < slept[0] <= 0.5  # only after the unchanged second answer

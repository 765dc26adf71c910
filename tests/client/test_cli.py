"""The `dicom-iso` CLI against services served over real HTTP: output, errors, exit codes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from dicomiso_client.cli import app
from dicomiso_common.settings import CommonSettings
from dicomiso_lookup.app import create_app as create_lookup
from dicomiso_lookup.settings import LookupSettings
from support.mariadb import his_database
from support.net import free_port
from support.servers import serving

IMAGE = b"ISO-IMAGE-BYTES" * 1000
FAST = {"DICOMISO_POLL_INTERVAL": "0.05"}


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**FAST, **env})


def one_error_line(result: Result) -> str:
    """stderr holds exactly one line, starting with "error: "; return it."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def lookup_url() -> Iterator[str]:
    """The real lookup service over HTTP, reading the seeded HIS in the real MariaDB."""
    with his_database() as db:
        settings = LookupSettings(http_port=free_port(), his_url=SecretStr(db.url()),
                                  his_accession_db=db.accession_db, his_patient_db=db.patient_db)
        with serving(create_lookup(settings), settings) as url:
            yield url


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"title": "t", "status": status, "detail": detail}, status,
                        media_type="application/problem+json")


@pytest.fixture(scope="module")
def jobs_url() -> Iterator[str]:
    """A packager and retriever answering as ours do: jobs that run for two polls, then end.

    An accession "MIXED" is refused with 409, "FAIL" makes a job that fails; a succeeded
    package links to an image served here with a Content-Disposition, as S3 serves it.
    """
    fake = FastAPI()
    polls: dict[str, int] = {}
    port = free_port()

    @fake.post("/v1/{kind}", status_code=202)
    def start(kind: str, body: dict[str, Any]) -> Any:
        accessions = body["accession_numbers"]
        if "MIXED" in accessions:
            return _problem(409, "the accession numbers belong to 2 patients")
        job_id = ("f" if "FAIL" in accessions else "a") + kind[:1] * 31
        return {"id": job_id, "state": "queued", "status_url": f"/v1/{kind}/{job_id}"}

    @fake.get("/v1/{kind}/{job_id}")
    def status(kind: str, job_id: str) -> dict[str, Any]:
        polls[job_id] = polls.get(job_id, 0) + 1
        done = polls[job_id] > 2
        state = ("failed" if job_id.startswith("f") else "succeeded") if done else "running"
        view: dict[str, Any] = {"id": job_id, "state": state, "phase": "retrieve",
                                "counts": {"expected": 4, "received": min(polls[job_id], 4)},
                                "error": "PACS ABPACS refused association" if
                                state == "failed" else None}
        if state == "succeeded" and kind == "packages":
            view |= {"download_url": f"http://127.0.0.1:{port}/bucket/x?X-Amz-Signature=s",
                     "filename": "Doe-ACC1.iso", "size": len(IMAGE),
                     "sha256": hashlib.sha256(IMAGE).hexdigest()}
        return view

    @fake.get("/bucket/x")
    def image() -> Response:
        return Response(IMAGE, media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="JaneDoe-ACC1.iso"'})

    settings = CommonSettings(http_port=port)
    with serving(fake, settings) as url:
        yield url


def test_lookup_json_is_one_document(lookup_url: str) -> None:
    """--json: the patient as JSON on stdout, nothing on stderr, exit 0."""
    result = run("lookup", "MR.001", "--json", "--lookup-url", lookup_url)
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["accessions"][0]["patient_name"]["display"] == "Budi Santoso"


def test_lookup_of_two_patients_says_so(lookup_url: str) -> None:
    result = run("lookup", "MR.001,CT.100", DICOMISO_LOOKUP_URL=lookup_url)
    assert result.exit_code == 0
    assert "more than one patient" in result.stdout


def test_unknown_and_invalid_accessions_are_one_line_and_exit_2(lookup_url: str) -> None:
    """404 and 422 from the real lookup: the service's detail on one line, exit 2."""
    for accession, word in (("XX.404", "not in the his"), ("BAD*", "accession")):
        result = run("lookup", accession, "--lookup-url", lookup_url)
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert line.startswith("error: lookup: ") and word in line.lower()
        assert "Traceback" not in result.output


def test_a_stopped_stack_is_one_line_naming_the_service_and_exit_3() -> None:
    """Nothing listens: every command names its service and URL once, and exits 3."""
    url = f"http://127.0.0.1:{free_port()}"
    for command, service in (("package", "packager"), ("retrieve", "retriever"),
                             ("lookup", "lookup")):
        result = run(command, "ACC1", **{f"DICOMISO_{service.upper()}_URL": url})
        assert result.exit_code == 3
        assert one_error_line(result) == (f"error: {service} unreachable at {url} "
                                          "(ConnectError) — is the stack running? (dicom-iso dev)")
    result = run("--json", "status", "a" * 32, "--service", "forwarder",
                 "--forwarder-url", url)
    assert result.exit_code == 3 and json.loads(result.stdout)["exit_code"] == 3
    assert "forwarder unreachable" in one_error_line(result)


def test_mixed_patients_are_refused_with_exit_2(jobs_url: str) -> None:
    result = run("package", "ACC1,MIXED", "--packager-url", jobs_url)
    assert result.exit_code == 2
    assert one_error_line(result) == "error: packager: the accession numbers belong to 2 " \
                                     "patients"


def test_package_download_saves_the_disc_under_its_served_name(jobs_url: str,
                                                               tmp_path: Path) -> None:
    """--download DIR: waits, streams the image, names it from Content-Disposition."""
    result = run("package", "ACC1", "--download", str(tmp_path), "--json",
                 "--packager-url", jobs_url)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    saved = tmp_path / "JaneDoe-ACC1.iso"
    assert doc["state"] == "succeeded" and doc["saved_to"] == str(saved)
    assert saved.read_bytes() == IMAGE and sorted(tmp_path.iterdir()) == [saved]


def test_a_failed_job_is_exit_1_with_its_reason(jobs_url: str) -> None:
    result = run("retrieve", "FAIL", "--wait", "--method", "get", "--retriever-url", jobs_url)
    assert result.exit_code == 1
    assert one_error_line(result).endswith("failed: PACS ABPACS refused association")
    started = run("retrieve", "ACC1", "--retriever-url", jobs_url, "--json")
    assert started.exit_code == 0 and json.loads(started.stdout)["state"] == "queued"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("package", " , ").exit_code == 2
    assert run("package", "ACC1", "--format", "tar").exit_code == 2
    assert run("package", "ACC1", "--download", str(tmp_path / "no" / "x.iso")).exit_code == 2
    assert run("verify", str(tmp_path / "absent.iso")).exit_code == 2

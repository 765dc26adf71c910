"""The `dicom-iso` CLI against services served over real HTTP: output, errors, exit codes."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from packager import conftest as real_stack
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from dicomiso_common.audit import event_key
from dicomiso_common.settings import CommonSettings
from dicomiso_forwarder.app import create_app as create_forwarder
from dicomiso_forwarder.settings import ForwarderSettings
from dicomiso_lookup.app import create_app as create_lookup
from dicomiso_lookup.settings import LookupSettings
from dicomiso_packager.app import create_app as create_packager
from dicomiso_tools.cli import app
from support.mariadb import add_patient, his_database
from support.net import free_port
from support.servers import serving

IMAGE = b"ISO-IMAGE-BYTES" * 1000
# The packager's real stack (lookup + MariaDB HIS, retriever + Orthanc, moto S3, SMTP sink).
make_stack, smtp_sink = real_stack.make_stack, real_stack.smtp_sink
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
        settings = LookupSettings(
            http_port=free_port(),
            his_url=SecretStr(db.url()),
            his_accession_db=db.accession_db,
            his_patient_db=db.patient_db,
        )
        with serving(create_lookup(settings), settings) as url:
            yield url


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse(
        {"title": "t", "status": status, "detail": detail},
        status,
        media_type="application/problem+json",
    )


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
        view: dict[str, Any] = {
            "id": job_id,
            "state": state,
            "phase": "retrieve",
            "counts": {"expected": 4, "received": min(polls[job_id], 4)},
            "error": "PACS ABPACS refused association" if state == "failed" else None,
        }
        if state == "succeeded" and kind == "packages":
            view |= {
                "download_url": f"http://127.0.0.1:{port}/bucket/x?X-Amz-Signature=s",
                "view_url": f"http://127.0.0.1:{port}/bucket/view.html?X-Amz-Signature=v",
                "filename": "Doe-ACC1.iso",
                "size": len(IMAGE),
                "sha256": hashlib.sha256(IMAGE).hexdigest(),
            }
        return view

    @fake.get("/bucket/x")
    def image() -> Response:
        return Response(
            IMAGE,
            media_type="application/octet-stream",
            headers={"Content-Disposition": 'attachment; filename="JaneDoe-ACC1.iso"'},
        )

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
    """Two patients cannot make one disc: said, and exit 2 like the packager's refusal."""
    result = run("lookup", "MR.001,CT.100", DICOMISO_LOOKUP_URL=lookup_url)
    assert result.exit_code == 2
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
    for command, service in (
        ("package", "packager"),
        ("retrieve", "retriever"),
        ("lookup", "lookup"),
    ):
        result = run(command, "ACC1", **{f"DICOMISO_{service.upper()}_URL": url})
        assert result.exit_code == 3
        assert one_error_line(result) == (
            f"error: {service} unreachable at {url} "
            "(ConnectError) — is the stack running? (dicom-iso dev)"
        )
    result = run("--json", "status", "a" * 32, "--service", "forwarder", "--forwarder-url", url)
    assert result.exit_code == 3 and json.loads(result.stdout)["exit_code"] == 3
    assert "forwarder unreachable" in one_error_line(result)


def test_mixed_patients_are_refused_with_exit_2(jobs_url: str) -> None:
    result = run("package", "ACC1,MIXED", "--packager-url", jobs_url)
    assert result.exit_code == 2
    assert one_error_line(result) == "error: packager: the accession numbers belong to 2 patients"


def test_package_download_saves_the_disc_under_its_served_name(
    jobs_url: str, tmp_path: Path
) -> None:
    """--download DIR: waits, streams the image, names it from Content-Disposition."""
    result = run(
        "package", "ACC1", "--download", str(tmp_path), "--json", "--packager-url", jobs_url
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    saved = tmp_path / "JaneDoe-ACC1.iso"
    assert doc["state"] == "succeeded" and doc["saved_to"] == str(saved)
    assert saved.read_bytes() == IMAGE and sorted(tmp_path.iterdir()) == [saved]


def test_package_wait_shows_the_link_and_the_online_page(jobs_url: str) -> None:
    """--wait: the download link and the view_url, in the text and in --json."""
    text = run("package", "ACC1", "--wait", "--packager-url", jobs_url)
    assert text.exit_code == 0, text.output
    assert "/bucket/x?X-Amz-Signature=s" in text.stdout
    assert "view online: http://127.0.0.1:" in text.stdout and "/bucket/view.html?" in text.stdout
    doc = json.loads(run("package", "ACC2", "--wait", "--json", "--packager-url", jobs_url).stdout)
    assert doc["view_url"].endswith("/bucket/view.html?X-Amz-Signature=v")
    status = run("status", doc["id"], "--packager-url", jobs_url)
    assert "view online: " in status.stdout


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


@pytest.mark.parametrize(
    "command", ["", "package", "retrieve", "forward", "status", "lookup", "audit", "verify", "dev"]
)
def test_help_shows_no_type_for_flags(command: str) -> None:
    """An on/off flag (--json, --wait, --no-his, --help) takes no value: its help line names
    no type, while options that take one still show it (<str>, <iso|zip>)."""
    result = run(*([command] if command else []), "--help", COLUMNS="200", NO_COLOR="1")
    assert result.exit_code == 0, result.output
    assert "--help" in result.output and ("--json" in result.output or command == "dev")
    assert "<bool>" not in result.output
    flag_lines = [
        line for line in result.output.splitlines() if re.search(r"--(json|help)\b", line)
    ]
    assert flag_lines and not any("<" in line for line in flag_lines), flag_lines
    if command == "package":
        assert "<iso|zip>" in result.output


# -- audit: every action of a real stack, listed by `dicom-iso audit` --------------------------


def test_audit_lists_every_action_of_a_real_stack_oldest_first(
    make_stack: Any,
    smtp_sink: Any,
    orthanc: Any,
    study_factory: Any,
    s3_bucket: Any,
    tmp_path: Path,
) -> None:
    """Package (request and outcome), each way of issuing a link, both e-mails and a forward
    (packager and forwarder) leave an event naming the proxy's user, the job and the
    accession number (never in a key, never the patient); the CLI lists them oldest first,
    for a duration and for an ISO date."""
    study = study_factory(patient_name="Wulandari^Sari", patient_id="RM-AUDIT-1")
    orthanc.upload(study.files)
    s3 = {"s3_endpoint_url": s3_bucket.endpoint_url, "s3_bucket": s3_bucket.name}
    token, user = "stack-token", {"X-Forwarded-User": "clerk.ani"}
    stack = make_stack(
        api_token=token,
        user_header="X-Forwarded-User",
        forwarder_url=f"http://127.0.0.1:{free_port()}",
        smtp_url=f"smtp://relay-user:relay-secret@127.0.0.1:{smtp_sink.port}",
        smtp_ca_file=smtp_sink.ca_file,
    )
    add_patient(stack.his, "RM-AUDIT-1", "Sari Wulandari", [study.accession])
    stack.packager.headers.update({"Authorization": f"Bearer {token}", **user})
    forwarder_settings = ForwarderSettings(
        **s3,
        http_port=int(stack.settings.forwarder_url.rsplit(":", 1)[1]),
        api_token=token,
        retriever_url=stack.retriever_url,
        job_heartbeat=0.5,
        replica_id="audit-forwarder",
        peers={"pacs": {"aet": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}},
    )
    served = stack.settings.model_copy(update={"http_port": free_port()})
    with (
        serving(create_forwarder(forwarder_settings), forwarder_settings),
        serving(create_packager(served), served) as packager_url,
    ):
        done = stack.run({"accession_numbers": [study.accession], "email": "sari@example.org"})
        assert done["state"] == "succeeded", done
        job = done["id"]
        time.sleep(0.5)  # the outcome events are written as the job ends
        before = stack.keys("audit/")
        for _ in range(3):  # reading a finished package (its links too) writes nothing
            shown = stack.packager.get(f"/v1/packages/{job}").json()
            assert shown["download_url"] == done["download_url"]
        assert stack.keys("audit/") == before
        download = stack.packager.get(f"/v1/packages/{job}/download", follow_redirects=False)
        assert download.status_code == 307
        assert stack.packager.post(f"/v1/packages/{job}/link").status_code == 200
        mailed = stack.packager.post(
            f"/v1/packages/{job}/email", json={"email": "sari@example.org"}
        )
        assert mailed.status_code == 200, mailed.text
        fwd = stack.packager.post(
            "/v1/forwards", json={"accession_numbers": [study.accession], "destination": "pacs"}
        )
        assert fwd.status_code == 202, fwd.text
        deadline = time.monotonic() + 60
        while (
            stack.packager.get(f"/v1/forwards/{fwd.json()['id']}").json()["state"]
            not in ("succeeded", "failed")
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        time.sleep(0.5)  # the outcome event is written as the job ends

        env = {"DICOMISO_PACKAGER_URL": packager_url, "DICOMISO_API_TOKEN": token}
        listed = run("audit", "--since", "1h", "--json", **env)
        text = run("audit", "--since", f"{datetime.now(UTC):%Y-%m-%d}", **env)
        refused = run(
            "audit", "--since", "1h", DICOMISO_PACKAGER_URL=packager_url, DICOMISO_API_TOKEN="wrong"
        )
        bad = run("audit", "--since", "soon", **env)

    assert listed.exit_code == 0, listed.output
    events = json.loads(listed.stdout)["events"]
    seen = {(e["service"], e["action"], e["outcome"], e.get("via")) for e in events}
    assert seen >= {
        ("packager", "package", "requested", None),
        ("packager", "package", "succeeded", None),
        ("packager", "email", "sent", "package"),
        ("packager", "link", "issued", "build"),
        ("packager", "link", "issued", "download"),
        ("packager", "link", "issued", "page"),
        ("packager", "email", "requested", None),
        ("packager", "email", "sent", None),
        ("packager", "forward", "requested", None),
        ("forwarder", "forward", "requested", None),
        ("forwarder", "forward", "succeeded", None),
    }, seen
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    requested = [
        e for e in events if e["outcome"] in ("requested", "issued") and e.get("via") != "build"
    ]
    assert {e["user"] for e in requested if e["service"] == "packager"} == {"clerk.ani"}
    assert {e["user"] for e in events if e["outcome"] == "succeeded"} == {"system (job)"}
    assert all(e.get("job_id") for e in events)
    assert all(
        study.accession in (e.get("accession_numbers") or [])
        for e in events
        if e["action"] in ("package", "forward") and e["outcome"] == "requested"
    )
    raw = json.dumps(events)
    assert "Wulandari" not in raw and "Sari Wulandari" not in raw and "PixelData" not in raw
    keys = [o.key for o in stack.store.list("audit/")]
    listed_keys = {event_key(datetime.fromisoformat(e["at"]), e["id"]) for e in events}
    # The refused call (wrong token) came after the listing and left a Security Alert.
    later = [stack.store.get_json(k)[0] for k in keys if k not in listed_keys]
    assert [(e["action"], e["outcome"]) for e in later] == [("security-alert", "refused")], later
    assert len(keys) == len(events) + 1
    assert all(re.fullmatch(r"audit/\d{4}/\d\d/\d\d/[0-9a-f]{32}\.json", k) for k in keys)
    assert text.exit_code == 0, text.output
    assert len(text.stdout.splitlines()) == len(events)
    assert "package succeeded user=system (job)" in text.stdout
    assert refused.exit_code == 1 and "refused our token" in one_error_line(refused)
    assert bad.exit_code == 2 and "--since" in one_error_line(bad)

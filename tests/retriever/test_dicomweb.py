"""Retrieval by DICOMweb (QIDO-RS + WADO-RS) from a real Orthanc with its DICOMweb plugin.

Good answers come from Orthanc itself; answers Orthanc cannot be made to give (another
boundary, a body cut short, a part of another study, another accession in QIDO, a 503) come
from `CraftedArchive`, which forwards to the same Orthanc and rewrites only what the case needs.
Whatever goes wrong, the job fails with a reason, no manifest is written, and no credential
appears in the job's error or in any log record.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomiso_common.dicom import manifest_key
from dicomiso_common.errors import DicomError
from dicomiso_common.instances import open_instances
from dicomiso_common.manifests import load_manifest
from dicomiso_common.serve import load_settings
from dicomiso_retriever import dicomweb
from dicomiso_retriever.settings import RetrieverSettings
from support.dicomweb import (
    Answer,
    CraftedArchive,
    boundary_of,
    is_wado,
    multipart,
    parts_of,
    qido_with_accession,
    self_signed_pem,
    shipped_study,
)
from support.orthanc import Orthanc
from support.stored import stored_sops


def _stored_bytes(retriever: Any, study_uid: str) -> list[bytes]:
    """The study's instances as its manifest points at them (ranges of segments)."""
    manifest = load_manifest(retriever.store, study_uid)
    return [body.read() for _, body in open_instances(retriever.store, manifest.instances)]


TOKEN = "tok-7f3c9e1d2b"  # synthetic; must never show in an error or a log
PASSWORD = "pw-51ab0c77e4"


@pytest.fixture(scope="module")
def web_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc with the DICOMweb plugin, no authentication, for this module."""
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc-dicomweb"), dicomweb=True)
    pacs.start()
    yield pacs
    pacs.kill()


def _dicomweb(make_retriever: Any, pacs: Any, url: str, **overrides: Any) -> Any:
    return make_retriever(
        pacs=pacs,
        register=False,
        retrieve_method="dicomweb",
        pacs_dicomweb_url=url,
        **overrides,
    )


def _failed_cleanly(retriever: Any, status: dict[str, Any], study_uid: str, *words: str) -> None:
    """Failed, saying why; no manifest; no credential in the error."""
    assert status["state"] == "failed", status
    error = status["error"] or ""
    for word in words:
        assert word in error, error
    assert TOKEN not in error and PASSWORD not in error
    assert not retriever.store.exists(manifest_key(study_uid))


def test_study_arrives_byte_equal_without_any_dicom_association(
    make_retriever: Any, web_pacs: Orthanc, study_factory: Any
) -> None:
    """QIDO-RS finds the study, WADO-RS brings each instance as the archive stores it (the same
    bytes), the manifest is the SCP's; Orthanc sees no C-FIND and no C-MOVE at all."""
    study = study_factory()
    web_pacs.upload(study.files)
    retriever = _dicomweb(make_retriever, web_pacs, web_pacs.dicomweb_url)
    web_pacs.mark()

    status = retriever.run({"accession_numbers": [study.accession]})

    assert status["state"] == "succeeded", status
    n = len(study.files)
    assert status["counts"]["received"] == status["counts"]["expected"] == n
    assert status["result"]["method"] == "dicomweb"
    ours = set(_stored_bytes(retriever, study.study_uid))
    for instance_id in web_pacs.instance_ids_of_study(study.study_uid):
        assert web_pacs.instance_file(instance_id) in ours
    manifest, _ = retriever.store.get_json(manifest_key(study.study_uid))
    assert manifest["instance_count"] == n and manifest["method"] == "dicomweb"
    assert {i["sop_uid"] for i in manifest["instances"]} == set(study.sop_uids)
    assert web_pacs.count("association") == 0
    found = retriever.client.get("/v1/studies", params={"accession_number": study.accession})
    assert found.status_code == 200, found.text
    assert [(s["study_uid"], s["instances"]) for s in found.json()] == [(study.study_uid, n)]
    assert web_pacs.count("association") == 0  # the preview asked QIDO-RS too


def test_pydicom_shipped_encodings_come_back_byte_equal(
    make_retriever: Any, web_pacs: Orthanc, tmp_path: Path
) -> None:
    """Big endian, deflated, JPEG, JPEG-LS, JPEG 2000, RLE, SR, waveform: each file is stored
    in the bucket byte for byte as it was written (transfer-syntax=*, nothing transcoded)."""
    study = shipped_study(tmp_path, "SHIPPED1")
    web_pacs.upload(study.files)
    retriever = _dicomweb(make_retriever, web_pacs, web_pacs.dicomweb_url)

    status = retriever.run({"study_uids": [study.study_uid]})

    assert status["state"] == "succeeded", status
    stored = set(_stored_bytes(retriever, study.study_uid))
    assert len(stored) == len(study.files)
    assert {f.read_bytes() for f in study.files} == stored


def test_basic_credentials_from_a_mounted_file(
    make_retriever: Any, orthanc_factory: Any, study_factory: Any, tmp_path: Path
) -> None:
    """The password is read from DICOMISO_PACS_DICOMWEB_PASSWORD_FILE; with it the study
    arrives, with a wrong one the job fails on 401 saying which setting to check."""
    pacs: Orthanc = orthanc_factory(
        dicomweb=True,
        extra_config={"AuthenticationEnabled": True, "RegisteredUsers": {"clerk": PASSWORD}},
    )
    study = study_factory(ct=2, mr=1)
    pacs.upload(study.files)
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    good = _dicomweb(
        make_retriever,
        pacs,
        pacs.dicomweb_url,
        pacs_dicomweb_username="clerk",
        pacs_dicomweb_password_file=secret,
    )
    assert good.run({"accession_numbers": [study.accession]})["state"] == "succeeded"

    other = study_factory(ct=1)
    pacs.upload(other.files)
    secret.write_text("wrong-" + PASSWORD)
    status = good.run({"accession_numbers": [other.accession]})
    _failed_cleanly(good, status, other.study_uid, "HTTP 401", "credentials")
    assert ("wrong-" + PASSWORD) not in (status["error"] or "")


def test_bearer_token_refused_is_a_clear_failure_without_the_token(
    make_retriever: Any,
    orthanc_factory: Any,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bearer token the archive forbids (403) fails the job; the token is in no log record
    (DEBUG included) and not in the error. The right token retrieves the study."""
    pacs: Orthanc = orthanc_factory(dicomweb=True, start=False)
    script = pacs.work_dir / "bearer.lua"
    pacs.work_dir.mkdir(parents=True, exist_ok=True)
    script.write_text(
        "function IncomingHttpRequestFilter(method, uri, ip, username, headers)\n"
        "  local auth = headers['authorization']\n"
        "  if auth ~= nil then\n"
        f"    return auth == 'Bearer {TOKEN}'\n"
        "  end\n"
        "  return true\n"
        "end\n"
    )
    pacs.extra_config["LuaScripts"] = [str(script)]
    pacs.start()
    study = study_factory(ct=2)
    pacs.upload(study.files)

    caplog.set_level(logging.DEBUG)
    wrong = _dicomweb(make_retriever, pacs, pacs.dicomweb_url, pacs_dicomweb_token="not-" + TOKEN)
    status = wrong.run({"accession_numbers": [study.accession]})
    _failed_cleanly(wrong, status, study.study_uid, "HTTP 403")
    assert TOKEN not in caplog.text

    right = _dicomweb(make_retriever, pacs, pacs.dicomweb_url, pacs_dicomweb_token=TOKEN)
    assert right.run({"study_uids": [study.study_uid]})["state"] == "succeeded"
    assert TOKEN not in caplog.text


def test_tls_is_verified_and_a_ca_file_makes_the_archive_trusted(
    make_retriever: Any, web_pacs: Orthanc, study_factory: Any, tmp_path: Path
) -> None:
    """HTTPS with a certificate no system CA signed: refused by default (the job says which
    setting to use), accepted with DICOMISO_PACS_DICOMWEB_CA_FILE naming its CA. TLS ends in
    CraftedArchive, which forwards unchanged (Orthanc's own TLS crashes, support/orthanc.py)."""
    pem = self_signed_pem(tmp_path)
    study = study_factory(ct=2)
    web_pacs.upload(study.files)
    with CraftedArchive(web_pacs.dicomweb_url, tls_pem=pem) as archive:
        assert archive.url.startswith("https://")
        untrusting = _dicomweb(make_retriever, web_pacs, archive.url)
        status = untrusting.run({"accession_numbers": [study.accession]})
        _failed_cleanly(untrusting, status, study.study_uid, "TLS certificate not trusted")
        assert "CA_FILE" in status["error"]

        trusting = _dicomweb(make_retriever, web_pacs, archive.url, pacs_dicomweb_ca_file=pem)
        assert trusting.run({"study_uids": [study.study_uid]})["state"] == "succeeded"


@pytest.fixture
def crafted(web_pacs: Orthanc) -> Iterator[CraftedArchive]:
    with CraftedArchive(web_pacs.dicomweb_url) as archive:
        yield archive


def _run_crafted(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study: Any,
    caplog: pytest.LogCaptureFixture,
) -> tuple[Any, dict[str, Any]]:
    caplog.set_level(logging.DEBUG)
    retriever = _dicomweb(make_retriever, web_pacs, crafted.url, pacs_dicomweb_token=TOKEN)
    status = retriever.run({"accession_numbers": [study.accession]})
    assert TOKEN not in caplog.text
    assert crafted.requests and all(
        h.get("Authorization") == f"Bearer {TOKEN}" for _, h in crafted.requests
    )
    return retriever, status


def test_wrong_boundary_fails_the_job(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Content-Type announces a boundary the body does not use: no part is read."""
    study = study_factory(ct=2, mr=1)
    web_pacs.upload(study.files)

    def craft(path: str, answer: Answer) -> Answer:
        if is_wado(path):
            ctype = answer.headers["content-type"].replace(boundary_of(answer).decode(), "other")
            return Answer(answer.status, {"content-type": ctype}, answer.body)
        return answer

    crafted.craft = craft
    retriever, status = _run_crafted(make_retriever, web_pacs, crafted, study, caplog)
    _failed_cleanly(retriever, status, study.study_uid, "malformed multipart", "boundary")
    assert stored_sops(retriever.store, study.study_uid) == set()


def test_truncated_part_fails_the_job(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A body cut in the middle of its second part (HTTP framing intact): the first part may
    be stored, but the study is not called complete."""
    study = study_factory(ct=3)
    web_pacs.upload(study.files)

    def craft(path: str, answer: Answer) -> Answer:
        if is_wado(path):
            parts = parts_of(answer)
            cut = (
                len(multipart(parts[:1], boundary_of(answer)))
                - len(b"--" + boundary_of(answer) + b"--\r\n")
                + len(parts[1]) // 2
            )
            return Answer(answer.status, answer.headers, answer.body[:cut])
        return answer

    crafted.craft = craft
    retriever, status = _run_crafted(make_retriever, web_pacs, crafted, study, caplog)
    _failed_cleanly(retriever, status, study.study_uid, "truncated", "after 1 instance")


def test_part_of_another_study_fails_the_job(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The archive slips an instance of another study into the body: refused by the SCP's
    check, not stored under either study, and the job fails."""
    study = study_factory(ct=2)
    intruder = study_factory(ct=1)
    web_pacs.upload(study.files + intruder.files)

    def craft(path: str, answer: Answer) -> Answer:
        if is_wado(path) and study.study_uid in path:
            other = crafted.fetch(
                path.replace(study.study_uid, intruder.study_uid),
                {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            )
            parts = parts_of(answer)[:1] + parts_of(other) + parts_of(answer)[1:]
            return Answer(answer.status, answer.headers, multipart(parts, boundary_of(answer)))
        return answer

    crafted.craft = craft
    retriever, status = _run_crafted(make_retriever, web_pacs, crafted, study, caplog)
    _failed_cleanly(retriever, status, study.study_uid, "part 2", "another study")
    assert stored_sops(retriever.store, intruder.study_uid) == set()


def test_qido_answer_with_another_accession_fails_the_job(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An archive that matches loosely answers a study of another accession: the job fails
    before anything is fetched (no WADO-RS request at all)."""
    study = study_factory(ct=1)
    web_pacs.upload(study.files)

    def craft(path: str, answer: Answer) -> Answer:
        if path.startswith("/dicom-web/studies?"):
            return qido_with_accession(answer, study.accession + "X")
        return answer

    crafted.craft = craft
    retriever, status = _run_crafted(make_retriever, web_pacs, crafted, study, caplog)
    _failed_cleanly(retriever, status, study.study_uid, "does not match the query")
    assert not any(is_wado(p) for p, _ in crafted.requests)
    assert not retriever.store.exists(f"accessions/{study.accession}.json")


@pytest.mark.parametrize("code", [500, 503])
def test_server_error_from_the_archive_fails_the_job(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
    code: int,
) -> None:
    """A 5xx on the study retrieval: the job fails naming the status."""
    study = study_factory(ct=1)
    web_pacs.upload(study.files)

    def craft(path: str, answer: Answer) -> Answer:
        if is_wado(path):
            return Answer(code, {"content-type": "text/plain"}, b"archive overloaded")
        return answer

    crafted.craft = craft
    retriever, status = _run_crafted(make_retriever, web_pacs, crafted, study, caplog)
    _failed_cleanly(retriever, status, study.study_uid, f"HTTP {code}")


def test_a_well_formed_body_missing_an_instance_is_incomplete(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every part is fine but one instance is left out: NumberOfStudyRelatedInstances says so,
    and the study is not called complete."""
    study = study_factory(ct=3)
    web_pacs.upload(study.files)

    def craft(path: str, answer: Answer) -> Answer:
        if is_wado(path):
            parts = parts_of(answer)[:-1]
            return Answer(answer.status, answer.headers, multipart(parts, boundary_of(answer)))
        return answer

    crafted.craft = craft
    retriever, status = _run_crafted(make_retriever, web_pacs, crafted, study, caplog)
    n = len(study.files)
    _failed_cleanly(retriever, status, study.study_uid, f"{n - 1} of {n} instances arrived")


def test_without_a_study_count_the_qido_instance_list_decides(
    make_retriever: Any,
    web_pacs: Orthanc,
    crafted: CraftedArchive,
    study_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An archive whose study answers lack NumberOfStudyRelatedInstances: the retriever lists
    the study's instances by QIDO-RS and expects exactly those."""
    study = study_factory(ct=2, mr=1)
    web_pacs.upload(study.files)

    def craft(path: str, answer: Answer) -> Answer:
        if path.startswith("/dicom-web/studies?"):
            studies = json.loads(answer.body)
            for item in studies:
                item.pop("00201208", None)
            return Answer(answer.status, answer.headers, json.dumps(studies).encode())
        return answer

    crafted.craft = craft
    retriever, status = _run_crafted(make_retriever, web_pacs, crafted, study, caplog)
    assert status["state"] == "succeeded", status
    completeness = status["result"]["studies"][0]["completeness"]
    assert completeness == {
        "expected": len(study.files),
        "from": "SOPInstanceUIDs listed by QIDO-RS",
    }
    assert any("/instances?" in p for p, _ in crafted.requests)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"retrieve_method": "dicomweb"}, "needs DICOMISO_PACS_DICOMWEB_URL"),
        ({"pacs_dicomweb_url": f"http://clerk:{PASSWORD}@127.0.0.1:1/dw"}, "must not carry"),
        ({"pacs_dicomweb_url": "ftp://127.0.0.1/dw"}, "must start with http"),
        ({"pacs_dicomweb_username": "clerk"}, "go together"),
        (
            {
                "pacs_dicomweb_username": "clerk",
                "pacs_dicomweb_password": PASSWORD,
                "pacs_dicomweb_token": TOKEN,
            },
            "not both",
        ),
    ],
)
def test_settings_refuse_an_incoherent_dicomweb_setup(
    values: dict[str, Any], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service does not start with a setup that would fail at the first job; the reason
    it prints (serve.load_settings) names the problem and never echoes a secret."""
    for name, value in values.items():
        monkeypatch.setenv(f"DICOMISO_{name.upper()}", value)
    with pytest.raises(SystemExit) as caught:
        load_settings(RetrieverSettings)
    assert says in str(caught.value)
    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)


READ_AHEAD = 4  # dicomweb._QUEUED_PARTS: parts the reader may queue ahead of the checks


def _spooled(where: Path) -> list[Path]:
    return sorted(where.glob("wado-*.part"))


def test_the_body_is_read_while_a_part_is_being_checked(
    web_pacs: Orthanc,
    study_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the first part's check has not returned, the reader thread goes on spooling
    the next parts (bounded by the queue); all are checked in order, none is left on disk."""
    study = study_factory(ct=8)
    web_pacs.upload(study.files)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    settings = RetrieverSettings(pacs_dicomweb_url=web_pacs.dicomweb_url)
    hit = dicomweb.find_by_study_uid(settings, study.study_uid)[0]
    ahead: list[int] = []

    def accept(path: Path) -> str | None:
        if not ahead:  # the first part: wait until the reader has spooled more of them
            deadline = time.monotonic() + 20
            while len(_spooled(spool)) <= READ_AHEAD and time.monotonic() < deadline:
                time.sleep(0.02)
        ahead.append(len(_spooled(spool)))
        return None

    result = dicomweb.retrieve_study(settings, hit, accept, lambda _: None)
    assert result.completed == len(study.files) and result.status == 0
    assert ahead[0] > READ_AHEAD  # the queue's parts + the one being checked
    assert _spooled(spool) == []


def test_a_refused_part_stops_the_reader_and_removes_what_it_spooled(
    web_pacs: Orthanc,
    study_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check of part 1 refuses while the reader has queued more: the retrieval fails,
    the reader thread ends, and no spool file of a part read ahead stays behind."""
    study = study_factory(ct=8)
    web_pacs.upload(study.files)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    settings = RetrieverSettings(pacs_dicomweb_url=web_pacs.dicomweb_url)
    hit = dicomweb.find_by_study_uid(settings, study.study_uid)[0]

    def accept(path: Path) -> str | None:
        deadline = time.monotonic() + 20
        while len(_spooled(spool)) <= READ_AHEAD and time.monotonic() < deadline:
            time.sleep(0.02)
        return "instance of another study"

    with pytest.raises(DicomError, match="part 1 of WADO-RS .* refused"):
        dicomweb.retrieve_study(settings, hit, accept, lambda _: None)
    assert _spooled(spool) == []
    assert not [t for t in threading.enumerate() if t.name == "wado-reader"]

"""Accession numbers in, a disc image behind a presigned link out: the whole path, for real.

Orthanc holds the studies, the retriever C-MOVEs them into the moto server's bucket, lookup
reads the patient from MariaDB, the packager builds the image; the link is fetched over HTTP
and the image is opened with pycdlib, isoinfo and xorriso and checked with dciodvfy,
dcentvfy and dcmdump.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pydicom
import pytest

from support.dicomcmp import same_dataset
from support.discs import dcentvfy, dciodvfy_errors, dcmdump, download, read_iso, read_zip
from support.mariadb import add_patient
from support.stored import stored_keys


def _orthanc_copies(orthanc: Any, study_uid: str) -> dict[str, bytes]:
    copies = {}
    for orthanc_id in orthanc.instance_ids_of_study(study_uid):
        data = orthanc.instance_file(orthanc_id)
        copies[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = (
            data
        )
    return copies


def test_one_accession_becomes_a_valid_disc_behind_a_link(
    make_stack: Any, any_pacs: Any, study_factory: Any, s3_bucket: Any, tmp_path: Path
) -> None:
    """Every instance is on the disc, equal to the PACS copy and byte-exact to the bucket's;
    the DICOMDIR passes dciodvfy, dcentvfy and dcmdump; README.TXT and INDEX.HTM are there;
    the link is signed for the public endpoint, expires as asked, and names no patient."""
    study = study_factory(patient_name="Santoso^Budi", patient_id="RM-E2E-1")
    any_pacs.upload(study.files)
    # The public endpoint differs from the internal one (here: another name for loopback).
    public = s3_bucket.endpoint_url.replace("127.0.0.1", "localhost")
    stack = make_stack(pacs=any_pacs, s3_public_url=public)
    add_patient(stack.his, "RM-E2E-1", "Budi Santoso", [study.accession])

    status = stack.run({"accession_numbers": [study.accession], "expires_in": 3600})

    assert status["state"] == "succeeded", status
    assert status["filename"] == f"{study.accession}.iso"
    url = status["download_url"]
    assert url.startswith(f"{public}/")
    assert "Budi" not in url and "Santoso" not in url and study.accession not in url
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["3600"]
    image = tmp_path / "disc.iso"
    response = download(url, image)
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="{study.accession}.iso"'
    assert image.stat().st_size == status["size"]
    assert hashlib.sha256(image.read_bytes()).hexdigest() == status["sha256"]

    tree = read_iso(image)
    assert {"DICOMDIR", "README.TXT", "INDEX.HTM"} <= set(tree.files)
    referenced = tree.referenced()
    pacs = _orthanc_copies(any_pacs, study.study_uid)
    assert set(referenced) == set(pacs) == set(study.sop_uids)
    manifest, _ = stack.store.get_json(f"studies/{study.study_uid}/manifest.json")
    sha = {i["sop_uid"]: i["sha256"] for i in manifest["instances"]}
    for sop, path in referenced.items():
        ours = tree.files[path]
        assert hashlib.sha256(ours).hexdigest() == sha[sop], path  # byte-exact from the bucket
        assert same_dataset(ours, pacs[sop]) == [], path

    root = tree.extract(tmp_path / "disc")
    assert dciodvfy_errors(root / "DICOMDIR") == []
    checked = dcentvfy(root / "DICOMDIR")
    assert checked.returncode == 0 and "Error" not in checked.stdout + checked.stderr, (
        checked.stdout + checked.stderr
    )
    assert dcmdump(root / "DICOMDIR").returncode == 0
    rules = stack.store.client.get_bucket_lifecycle_configuration(Bucket=s3_bucket.name)
    assert {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules["Rules"]} == {
        "packages/": stack.settings.package_expiry_days,
        "jobs/package/": stack.settings.job_expiry_days,
        "jobs/retrieve/": stack.settings.job_expiry_days,  # the stack's retriever, same bucket
    }

    listing = subprocess.run(
        ["isoinfo", "-i", str(image), "-f"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "/DICOMDIR;1" in listing or "/DICOMDIR.;1" in listing, listing[:5]
    xorriso = subprocess.run(
        ["xorriso", "-indev", str(image), "-find", "/", "-type", "f"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert xorriso.count("'/DICOM/") == len(study.files)


def test_download_route_redirects_to_a_fresh_link_and_same_request_is_same_package(
    make_stack: Any, orthanc: Any, study_factory: Any
) -> None:
    study = study_factory(
        ct=2,
        mr=1,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id="RM-E2E-2",
    )
    orthanc.upload(study.files)
    stack = make_stack()
    add_patient(stack.his, "RM-E2E-2", "Siti Aminah", [study.accession])

    first = stack.post({"accession_numbers": [study.accession]})
    status = stack.wait(first.json()["id"])
    again = stack.post({"accession_numbers": [study.accession]})

    assert status["state"] == "succeeded", status
    assert again.json()["id"] == first.json()["id"] and again.json()["state"] == "succeeded"
    redirect = stack.packager.get(f"/v1/packages/{status['id']}/download", follow_redirects=False)
    assert redirect.status_code == 307
    assert httpx.get(redirect.headers["location"], trust_env=False).content[:0] == b""
    legacy = stack.packager.get(
        f"/mkiso?accession_number={study.accession}", follow_redirects=False
    )
    assert legacy.status_code == 303
    assert legacy.headers["location"].endswith(f"/v1/packages/{status['id']}/download")
    assert len([k for k in stack.keys("packages/") if k.endswith(".iso")]) == 1

    # Removed by the bucket's lifecycle: no link to a missing image, a 404 with the reason.
    for key in stack.keys(f"packages/{status['id']}/"):
        stack.store.delete(key)
    for gone in (
        stack.packager.get(f"/v1/packages/{status['id']}/download", follow_redirects=False),
        stack.packager.post(f"/v1/packages/{status['id']}/link"),
    ):
        assert gone.status_code == 404, gone.text
        assert "expired" in gone.json()["detail"]


def test_two_accessions_of_one_patient_make_one_disc_named_after_the_patient(
    make_stack: Any,
    orthanc: Any,
    study_factory: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both studies on one disc, one PATIENT record; the legacy file name; and nothing of
    the patient in any log line of lookup, retriever or packager at INFO or above."""
    a = study_factory(
        ct=2,
        mr=1,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_multiframe=False,
        patient_id="RM-E2E-3",
        accession="MR.3001",
    )
    b = study_factory(
        ct=1,
        mr=1,
        with_sr=True,
        with_ko=False,
        with_pr=False,
        with_multiframe=False,
        patient_id="RM-E2E-3",
        accession="CT.3002",
        seed=7,
    )
    orthanc.upload(a.files + b.files)
    stack = make_stack()
    add_patient(stack.his, "RM-E2E-3", "Núñez Budi", [a.accession, b.accession])

    with caplog.at_level(logging.INFO):
        status = stack.run({"accession_numbers": [a.accession, b.accession]})

    assert status["state"] == "succeeded", status
    assert status["filename"] == "NunezBudi-MR3001CT3002.iso"
    # werkzeug is the moto server's own access log (the stand-in S3, not our code); that it
    # shows accessions/{accession}.json keys is the known cost of that key layout.
    logged = "\n".join(
        r.getMessage() + str(r.__dict__)
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name != "werkzeug"
    )
    for secret in ("Núñez", "Nunez", "RM-E2E-3", "MR.3001", "CT.3002", a.patient_name):
        assert secret not in logged, secret
    download(status["download_url"], tmp_path / "two.iso")
    tree = read_iso(tmp_path / "two.iso")
    assert set(tree.referenced()) == set(a.sop_uids) | set(b.sop_uids)
    records = tree.dicomdir().DirectoryRecordSequence
    assert [r.DirectoryRecordType for r in records].count("PATIENT") == 1
    assert [r.DirectoryRecordType for r in records].count("STUDY") == 2


def test_two_patients_are_refused_before_anything_is_retrieved(
    make_stack: Any, orthanc: Any, study_factory: Any
) -> None:
    a = study_factory(
        ct=1,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        patient_id="RM-E2E-4A",
    )
    b = study_factory(
        ct=1,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        patient_id="RM-E2E-4B",
    )
    orthanc.upload(a.files + b.files)
    stack = make_stack()
    add_patient(stack.his, "RM-E2E-4A", "Ani Lestari", [a.accession])
    add_patient(stack.his, "RM-E2E-4B", "Joko Widodo", [b.accession])
    orthanc.mark()

    response = stack.post({"accession_numbers": [a.accession, b.accession]})

    assert response.status_code == 409
    assert "2 different patients" in response.json()["detail"]
    assert "Ani" not in response.text and "Joko" not in response.text
    assert orthanc.move_requests() == 0 and orthanc.find_requests() == 0
    assert stack.keys("jobs/") == [] and stored_keys(stack.store) == []
    # The refusal itself is on the record (issue 18), without the patients' names.
    events = [stack.store.get_json(k)[0] for k in stack.keys("audit/")]
    refused = [e for e in events if e["action"] == "package" and e["outcome"] == "refused"]
    assert len(refused) == 1, events
    assert refused[0]["accession_numbers"] == [a.accession, b.accession]
    assert "2 different patients" in refused[0]["reason"]
    assert "Ani" not in json.dumps(events) and "Joko" not in json.dumps(events)


def test_zip_holds_the_same_tree(
    make_stack: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    study = study_factory(
        ct=2, mr=1, with_ko=False, with_pr=False, with_multiframe=False, patient_id="RM-E2E-5"
    )
    orthanc.upload(study.files)
    stack = make_stack()
    add_patient(stack.his, "RM-E2E-5", "Rina Wati", [study.accession])

    status = stack.run({"accession_numbers": [study.accession], "format": "zip"})

    assert status["state"] == "succeeded", status
    assert status["filename"] == f"{study.accession}.zip"
    download(status["download_url"], tmp_path / "disc.zip")
    tree = read_zip(tmp_path / "disc.zip")
    assert {"DICOMDIR", "README.TXT", "INDEX.HTM"} <= set(tree.files)
    assert set(tree.referenced()) == set(study.sop_uids)
    root = tree.extract(tmp_path / "zip")
    assert dciodvfy_errors(root / "DICOMDIR") == []


def test_a_viewer_goes_in_its_own_directory_with_its_own_names(
    make_stack: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    """Level 1 names for the viewer in the primary volume, its real names in Joliet."""
    viewer = tmp_path / "viewer"
    (viewer / "lib").mkdir(parents=True)
    (viewer / "Start Viewer.exe").write_bytes(b"MZ-synthetic")
    (viewer / "lib" / "imaging-core.dll").write_bytes(b"dll" * 100)
    study = study_factory(
        ct=1,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id="RM-E2E-6",
    )
    orthanc.upload(study.files)
    stack = make_stack(viewer_dir=viewer)
    add_patient(stack.his, "RM-E2E-6", "Tono Hadi", [study.accession])

    status = stack.run({"accession_numbers": [study.accession]})

    assert status["state"] == "succeeded", status
    download(status["download_url"], tmp_path / "v.iso")
    tree = read_iso(tmp_path / "v.iso")
    assert sorted(p for p in tree.files if p.startswith("VIEWER/")) == [
        "VIEWER/D0000001/F0000001.DLL",
        "VIEWER/F0000000.EXE",
    ]
    joliet = subprocess.run(
        ["isoinfo", "-J", "-i", str(tmp_path / "v.iso"), "-f"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "/VIEWER/Start Viewer.exe" in joliet and "/VIEWER/lib/imaging-core.dll" in joliet
    assert not any(p.startswith(("DICOM/VIEWER", "IHE_PDI/VIEWER")) for p in tree.files)

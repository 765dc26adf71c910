"""The link by e-mail through a real SMTP relay, and compressed studies on a CD profile."""

from __future__ import annotations

import io
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

from dicomiso_packager import handout, i18n
from support.dcmtk import dcmtk_bin, dcmtk_env
from support.discs import download, read_iso
from support.mariadb import add_patient
from support.net import free_port


def _small(study_factory: Any, patient_id: str, **kwargs: Any) -> Any:
    return study_factory(
        ct=2,
        mr=1,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id=patient_id,
        **kwargs,
    )


def test_the_link_arrives_by_mail_without_patient_data_in_the_subject(
    make_stack: Any, orthanc: Any, study_factory: Any, smtp_sink: Any
) -> None:
    """STARTTLS, then login, then the message: link, expiry, sender; subject names nobody."""
    study = _small(study_factory, "RM-M-1", patient_name="Wijaya^Kartika")
    orthanc.upload(study.files)
    stack = make_stack(
        smtp_url=f"smtp://relay-user:relay-secret@127.0.0.1:{smtp_sink.port}",
        smtp_ca_file=smtp_sink.ca_file,
        mail_from="discs@hospital.test",
        institution_contact="Radiology desk, +00 0000",
    )
    add_patient(stack.his, "RM-M-1", "Kartika Wijaya", [study.accession])

    status = stack.run({"accession_numbers": [study.accession], "email": "kartika@patients.test"})

    assert status["state"] == "succeeded", status
    assert status["email"]["state"] == "sent", status["email"]
    assert smtp_sink.logins  # authenticated, which the sink allows only after STARTTLS
    [msg] = smtp_sink.messages
    subject, body = str(msg["Subject"]), msg.get_content()
    assert msg["To"] == "kartika@patients.test" and msg["From"] == "discs@hospital.test"
    for identifier in ("Kartika", "Wijaya", "RM-M-1", study.accession):
        assert identifier not in subject
    assert "Synthetic General Hospital" in subject and "Synthetic General Hospital" in body
    assert status["download_url"] in body
    expires_at = datetime.fromisoformat(status["expires_at"])
    assert i18n.when(expires_at, "en") in body  # 5 December 2026, 01:33 UTC
    # The online page comes first; its link names nobody either.
    assert status["view_url"] in body and body.index(status["view_url"]) < body.index(
        status["download_url"]
    )
    assert "view your images online" in body and "Radiology desk, +00 0000" in body
    # The hand-out's words, every one of them (issue 18: the e-mail carries the same words).
    said = handout.words(stack.settings, "en", expires_at)
    for text in [said["intro"], said["gives"], *said["steps"], said["expiry"], said["privacy"]]:
        assert " ".join(text.split()) in " ".join(body.split()), text
    for identifier in ("Kartika", "Wijaya", "RM-M-1", study.accession):
        assert identifier not in status["view_url"]

    # Mailed again from the staff page: fresh links, the page re-signed.
    time.sleep(1.1)  # signatures are per second: a new X-Amz-Date
    again = stack.packager.post(
        f"/v1/packages/{status['id']}/email",
        json={"email": "kartika@patients.test", "language": "id"},
    )
    assert again.status_code == 200, again.text
    second = smtp_sink.messages[1].get_content()
    # In Bahasa Indonesia when the page asks for it: subject, the hand-out's words, the date.
    assert str(smtp_sink.messages[1]["Subject"]).startswith("Gambar medis Anda dari")
    said = handout.words(stack.settings, "id", datetime.fromisoformat(again.json()["expires_at"]))
    for text in [said["intro"], said["gives"], *said["steps"], said["expiry"], said["privacy"]]:
        assert " ".join(text.split()) in " ".join(second.split()), text
    assert re.search(
        r"\d{1,2} (Januari|Februari|Maret|April|Mei|Juni|Juli|Agustus|September"
        r"|Oktober|November|Desember) \d{4}, \d{2}\.\d{2} UTC",
        second,
    ), second
    [view_url] = [w for w in second.split() if "/view.html?" in w]
    assert view_url != status["view_url"] and status["id"] in view_url


def test_a_mail_that_cannot_be_sent_is_reported_and_the_package_stands(
    make_stack: Any, orthanc: Any, study_factory: Any
) -> None:
    study = _small(study_factory, "RM-M-2")
    orthanc.upload(study.files)
    stack = make_stack(smtp_url=f"smtp://127.0.0.1:{free_port()}", smtp_timeout=3)
    add_patient(stack.his, "RM-M-2", "Putri Ayu", [study.accession])

    status = stack.run({"accession_numbers": [study.accession], "email": "putri@patients.test"})

    assert status["state"] == "succeeded", status
    assert status["email"]["state"] == "failed"
    assert "unreachable" in status["email"]["error"]
    assert status["download_url"]


def _compressed(study: Any, tmp: Path) -> list[Path]:
    """JPEG Lossless copies of the CT (dcmtk dcmcjpeg) and JPEG 2000 lossless of the MR."""
    out = []
    for inst in study.instances:
        target = tmp / f"{inst.sop_instance_uid}.dcm"
        if inst.kind == "ct":
            subprocess.run(
                [dcmtk_bin("dcmcjpeg"), str(inst.path), str(target)], check=True, env=dcmtk_env()
            )
        elif inst.kind == "mr":
            ds = pydicom.dcmread(inst.path)
            ds.compress(JPEG2000Lossless, generate_instance_uid=False)
            ds.save_as(target, enforce_file_format=True)
        else:
            continue
        out.append(target)
    return out


def test_compressed_study_on_the_cd_profile_is_transcoded_losslessly(
    make_stack: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    """STD-GEN-CD takes Explicit VR LE only: JPEG Lossless and JPEG 2000 instances are
    decompressed, their pixels equal to the source's, and the result says which; dcmtk's
    dcmmkdir with the General Purpose CD profile accepts the disc."""
    study = _small(study_factory, "RM-M-3")
    files = _compressed(study, tmp_path)
    syntaxes = {
        str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files
    }
    assert syntaxes == {JPEGLosslessSV1, JPEG2000Lossless}
    orthanc.upload(files)
    stack = make_stack()
    add_patient(stack.his, "RM-M-3", "Bayu Nugroho", [study.accession])

    status = stack.run({"accession_numbers": [study.accession], "profile": "STD-GEN-CD"})

    assert status["state"] == "succeeded", status
    uploaded = sorted(f.name.removesuffix(".dcm") for f in files)
    assert status["result"]["transcoded"] == uploaded
    assert status["counts"]["transcoded"] == len(uploaded)
    download(status["download_url"], tmp_path / "cd.iso")
    tree = read_iso(tmp_path / "cd.iso")
    source = {i.sop_instance_uid: pydicom.dcmread(i.path) for i in study.instances}
    for sop, path in tree.referenced().items():
        ds = pydicom.dcmread(io.BytesIO(tree.files[path]))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert (ds.pixel_array == source[sop].pixel_array).all(), path
    root = tree.extract(tmp_path / "cd")
    (root / "DICOMDIR").unlink()
    check = subprocess.run(
        [
            dcmtk_bin("dcmmkdir"),
            "-Pgp",
            "+r",
            "+id",
            str(root),
            "+D",
            str(tmp_path / "DICOMDIR.dcmtk"),
            "DICOM",
        ],
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        check=False,
        cwd=root,
    )
    assert check.returncode == 0, check.stderr

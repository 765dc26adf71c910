"""Failures in the middle: the package ends `failed` with the cause, and nothing under
packages/ looks complete."""

from __future__ import annotations

from typing import Any

import pytest

from support.mariadb import add_patient
from support.s3fault import S3Fault


def _small_study(study_factory: Any, patient_id: str, **kwargs: Any) -> Any:
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


def test_failed_retrieval_fails_the_package_with_its_cause(make_stack: Any) -> None:
    """The HIS knows the accession, the PACS does not: the retriever's reason is passed on."""
    stack = make_stack()
    add_patient(stack.his, "RM-F-1", "Agus Salim", ["NOTINPACS.1"])

    status = stack.run({"accession_numbers": ["NOTINPACS.1"]})

    assert status["state"] == "failed"
    assert status["error"] == "retrieval failed: no study found for accession NOTINPACS.1"
    assert status["download_url"] is None
    assert stack.keys("packages/") == []


def test_unknown_accession_is_404_and_starts_nothing(make_stack: Any) -> None:
    stack = make_stack()
    response = stack.post({"accession_numbers": ["NOSUCH.404"]})
    assert response.status_code == 404
    assert "NOSUCH.404" in response.json()["detail"]
    assert stack.keys("jobs/") == []


def test_bad_requests_are_422_and_start_nothing(make_stack: Any) -> None:
    stack = make_stack()
    bad: list[dict[str, Any]] = [
        {"accession_numbers": ["*"]},
        {"accession_numbers": [""]},
        {"accession_numbers": []},
        {"accession_numbers": ["A1"], "expires_in": 604_801},
        {"accession_numbers": ["A1"], "profile": "STD-XABC-CD"},
        {"accession_numbers": ["A1"], "format": "tar"},
        {"accession_numbers": ["A1"], "email": "not an address"},
        {"accession_numbers": ["A1"], "host": "127.0.0.1"},
    ]
    for body in bad:
        response = stack.post(body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert stack.packager.get("/mkiso?accession_number=A%2A").status_code == 422
    too_many = stack.packager.get("/mkiso?accession_number=" + ",".join(["A1"] * 51))
    assert too_many.status_code == 422, too_many.text
    assert "50" in too_many.json()["detail"]
    assert stack.keys("jobs/") == []


def test_s3_refusing_the_upload_fails_the_package_and_leaves_nothing(
    make_stack: Any, orthanc: Any, study_factory: Any, s3_bucket: Any
) -> None:
    """A single PUT of the image is refused: failed with the S3 error, no image object."""
    study = _small_study(study_factory, "RM-F-2")
    orthanc.upload(study.files)

    def refuse(method: str, path: str) -> bool:
        return method == "PUT" and "/packages/" in path and ".json" not in path

    with S3Fault(s3_bucket.endpoint_url, refuse) as proxy:
        stack = make_stack(s3_endpoint_url=proxy.url)
        add_patient(stack.his, "RM-F-2", "Dian Sastro", [study.accession])
        status = stack.run({"accession_numbers": [study.accession]})

    assert status["state"] == "failed"
    assert "AccessDenied" in status["error"] and "uploading packages/" in status["error"]
    assert proxy.refused >= 1
    assert stack.keys("packages/") == []


@pytest.mark.parametrize("refused", ["view.html", ".json"])
def test_a_package_without_its_online_page_or_manifest_is_failed_and_removed(
    make_stack: Any, orthanc: Any, study_factory: Any, s3_bucket: Any, refused: str
) -> None:
    """Both images are uploaded, then the page (or the package manifest) is refused: the
    package fails and neither image, nor the page, is left under packages/."""
    study = _small_study(study_factory, f"RM-F-V{len(refused)}")
    orthanc.upload(study.files)

    def refuse(method: str, path: str) -> bool:
        return method == "PUT" and "/packages/" in path and refused in path.split("?")[0]

    with S3Fault(s3_bucket.endpoint_url, refuse) as proxy:
        stack = make_stack(s3_endpoint_url=proxy.url)
        add_patient(stack.his, f"RM-F-V{len(refused)}", "Dian Sastro", [study.accession])
        status = stack.run({"accession_numbers": [study.accession]})

    assert status["state"] == "failed"
    assert "AccessDenied" in status["error"] and refused in status["error"]
    assert proxy.refused >= 1
    assert stack.keys("packages/") == []


def test_s3_refusing_a_part_mid_multipart_aborts_the_upload(
    make_stack: Any, orthanc: Any, study_factory: Any, s3_bucket: Any
) -> None:
    """Part 2 of a multipart upload is refused: no object, and no upload left dangling."""
    study = study_factory(
        ct=40,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id="RM-F-3",
        rows=256,
        cols=256,
    )
    orthanc.upload(study.files)

    def refuse(method: str, path: str) -> bool:
        return method == "PUT" and "/packages/" in path and "partNumber=2" in path

    with S3Fault(s3_bucket.endpoint_url, refuse) as proxy:
        stack = make_stack(
            s3_endpoint_url=proxy.url,
            s3_multipart_threshold=5 * 1024 * 1024,
            s3_multipart_chunk=5 * 1024 * 1024,
        )
        add_patient(stack.his, "RM-F-3", "Eko Prasetyo", [study.accession])
        status = stack.run({"accession_numbers": [study.accession]})

    assert status["state"] == "failed", status
    assert "AccessDenied" in status["error"]
    assert proxy.refused >= 1
    assert stack.keys("packages/") == []
    uploads = s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name)
    assert uploads.get("Uploads", []) == []

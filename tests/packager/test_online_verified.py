"""The online page's signatures against an S3 endpoint that checks them (LocalStack).

The whole stack (lookup, retriever with Orthanc, the packager) runs with LocalStack's S3 as
its bucket instead of moto, signatures checked (S3_SKIP_SIGNATURE_VALIDATION=0), links signed
for a public name (localhost) other than the services' (127.0.0.1). moto would accept a
tampered or expired URL; LocalStack refuses both.
"""

from __future__ import annotations

import calendar
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from dicomiso_packager.online import view_key
from support import localstack
from support.localstack import VerifyingS3
from support.mariadb import add_patient
from support.online import instance_range, instance_urls, page_instances, study_json


@pytest.fixture(scope="module")
def verifying_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifyingS3]:
    with localstack.verifying_s3(tmp_path_factory.mktemp("localstack")) as s3:
        yield s3


class _Bucket:
    """The shape of conftest's S3Bucket, on LocalStack."""

    def __init__(self, endpoint_url: str, name: str, client: Any) -> None:
        self.endpoint_url, self.name, self.client = endpoint_url, name, client


@pytest.fixture
def s3_bucket(verifying_s3: VerifyingS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Bucket]:
    """Overrides conftest's moto bucket for this module: a fresh LocalStack bucket, and the
    services' credentials set to the secret LocalStack verifies with."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", localstack.VERIFIED_SECRET)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # forget the credentials read before
    client = boto3.client(
        "s3",
        endpoint_url=verifying_s3.endpoint_url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, proxies={}),
    )
    name = f"dicom-iso-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    yield _Bucket(verifying_s3.endpoint_url, name, client)
    client.close()


def _flip_signature(url: str) -> str:
    at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=") + 10
    return url[:at] + ("1" if url[at] == "0" else "0") + url[at + 1 :]


def _expires(url: str) -> float:
    query = parse_qs(urlsplit(url).query)
    signed = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    return signed + int(query["X-Amz-Expires"][0])


def test_view_url_and_its_instance_urls_are_checked_by_the_endpoint(
    make_stack: Any,
    orthanc: Any,
    study_factory: Any,
    verifying_s3: VerifyingS3,
    s3_bucket: _Bucket,
    tmp_path: Path,
) -> None:
    """The view_url and every URL in the page work; a tampered view_url, an expired one and
    a tampered instance URL are 403; a new link re-signs the page and all of it still works."""
    study = study_factory(
        patient_id="RM-ONL-LS",
        ct=2,
        mr=1,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )
    orthanc.upload(study.files)
    stack = make_stack(s3_public_url=verifying_s3.public_url)
    add_patient(stack.his, "RM-ONL-LS", "Wulan Sari", [study.accession])

    status = stack.run({"accession_numbers": [study.accession], "expires_in": 3600})

    assert status["state"] == "succeeded", status
    view_url = status["view_url"]
    assert view_url.startswith(f"{verifying_s3.public_url}/{s3_bucket.name}/packages/")
    with httpx.Client(trust_env=False, timeout=30) as http:
        page = http.get(view_url)
        assert page.status_code == 200, page.text[:300]
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "private, no-store"
        data = study_json(page.text)
        urls = instance_urls(data)
        instances = page_instances(data)
        assert len(instances) == len(study.files)
        assert all(i.get("offset") is not None for i in instances)  # ranges of segments
        for instance in instances:  # a ranged GET of a presigned URL, as the viewer fetches
            got = http.get(instance["url"], headers=instance_range(instance))
            assert got.status_code == 206 and len(got.content) == instance["size"]
            assert got.content[128:132] == b"DICM"
            assert abs(_expires(instance["url"]) - _expires(view_url)) <= 5  # expire together
        downloads = [d["url"] for d in data["page"]["downloads"]]
        assert [http.get(u).status_code for u in downloads] == [200, 200]

        # Tampered: one signature character, or the signed path of another object.
        for bad in (
            _flip_signature(view_url),
            view_url.replace("/view.html?", f"/{status['id']}.iso?"),
            _flip_signature(urls[0]),
            urls[0].replace(urlsplit(urls[0]).path, urlsplit(view_url).path),
        ):
            refused = http.get(bad)
            assert refused.status_code == 403, bad
            assert "SignatureDoesNotMatch" in refused.text
        # Expired: the page's key signed for 2 s, asked for after that.
        short = stack.store.presign_get(view_key(status["id"]), 2)
        assert http.get(short).status_code == 200
        time.sleep(max(0.0, _expires(short) - time.time()) + 1.1)
        expired = http.get(short)
        assert expired.status_code == 403 and "Request has expired" in expired.text

        # A new link re-writes the page with fresh signatures; the old link shows them too.
        time.sleep(1.1)  # a new X-Amz-Date
        fresh = stack.packager.post(f"/v1/packages/{status['id']}/link")
        assert fresh.status_code == 200, fresh.text
        new = fresh.json()
        assert new["view_url"] != view_url and new["expires_at"] > status["expires_at"]
        again = study_json(http.get(view_url).text)
        assert instance_urls(again) != urls
        assert study_json(http.get(new["view_url"]).text) == again
        assert all(http.get(u).status_code == 200 for u in instance_urls(again))
        assert http.get(new["download_url"]).status_code == 200

"""Presigned links against an S3 endpoint that really checks SigV4 query signatures.

moto's server checks neither signatures nor expiry, so there a tampered or expired link still
downloads. LocalStack's S3 provider does check both when S3_SKIP_SIGNATURE_VALIDATION=0. It runs
here as a plain process on 127.0.0.1 (no Docker) from its own venv, because LocalStack needs
Python 3.13 and pins its own boto3: tests/common/PRESIGN_ENDPOINT.md has the install commands.

LocalStack verifies links for access keys it does not know with the secret "test", so these tests
sign with that secret instead of conftest's "testing" (and prove that "testing" is refused).
"""

from __future__ import annotations

import calendar
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import MAX_LINK_TTL, Store
from support import localstack
from support.localstack import VerifyingS3
from support.net import LOOPBACK

VERIFIED_SECRET = localstack.VERIFIED_SECRET
KEY = "packages/p1/p1.iso"
OTHER_KEY = "packages/p2/p2.iso"


@pytest.fixture(scope="module")
def verifying_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifyingS3]:
    """LocalStack's S3 alone, on a free loopback port, with signature checks on."""
    with localstack.verifying_s3(tmp_path_factory.mktemp("localstack")) as s3:
        yield s3


def _store(s3: VerifyingS3, bucket: str, monkeypatch: pytest.MonkeyPatch, secret: str) -> Store:
    """A Store built as the services build it, whose links are signed with `secret`."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    # boto3's default session keeps the credentials it first read: start a fresh one
    # (monkeypatch puts the suite's session back afterwards).
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return Store.from_settings(
        CommonSettings(
            s3_endpoint_url=s3.endpoint_url, s3_bucket=bucket, s3_public_url=s3.public_url
        )
    )


@pytest.fixture
def store(verifying_s3: VerifyingS3, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A fresh bucket holding two small packages."""
    store = _store(verifying_s3, f"dicom-iso-{uuid.uuid4().hex[:20]}", monkeypatch, VERIFIED_SECRET)
    store.ensure_bucket()
    store.put_bytes(KEY, b"iso-bytes-1")
    store.put_bytes(OTHER_KEY, b"iso-bytes-2")
    return store


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def _error_code(resp: httpx.Response) -> str:
    return resp.text.split("<Code>", 1)[-1].split("</Code>", 1)[0]


def test_correct_link_downloads_from_the_public_host(
    store: Store, http: httpx.Client, verifying_s3: VerifyingS3
) -> None:
    url = store.presign_get(KEY, 3600)

    assert url.startswith(f"{verifying_s3.public_url}/")
    resp = http.get(url)
    assert resp.status_code == 200
    assert resp.content == b"iso-bytes-1"


def test_a_link_of_exactly_seven_days_downloads_and_a_longer_one_cannot_be_made(
    store: Store, http: httpx.Client
) -> None:
    assert http.get(store.presign_get(KEY, MAX_LINK_TTL)).status_code == 200
    with pytest.raises(ValueError):
        store.presign_get(KEY, MAX_LINK_TTL + 1)
    with pytest.raises(ValueError):
        store.presign_get(KEY, 0)


def _flip_one_signature_char(url: str) -> str:
    start = url.index("X-Amz-Signature=") + len("X-Amz-Signature=") + 10
    return url[:start] + ("1" if url[start] == "0" else "0") + url[start + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_flip_one_signature_char, id="signature-one-char"),
        pytest.param(lambda url: url.replace(KEY, OTHER_KEY), id="key-of-another-object"),
        pytest.param(
            lambda url: url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"), id="longer-expires"
        ),
        pytest.param(lambda url: url.replace("//localhost:", f"//{LOOPBACK}:"), id="other-host"),
    ],
)
def test_tampered_link_is_refused(
    store: Store, http: httpx.Client, tamper: Callable[[str], str]
) -> None:
    """One changed byte, another existing key, a longer life or another host: 403."""
    url = store.presign_get(KEY, 3600)
    tampered = tamper(url)

    assert tampered != url
    resp = http.get(tampered)
    assert resp.status_code == 403
    assert _error_code(resp) == "SignatureDoesNotMatch"
    assert http.get(url).status_code == 200  # the untouched link still works


def test_link_signed_with_another_secret_is_refused(
    store: Store, http: httpx.Client, verifying_s3: VerifyingS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint checks the HMAC with the real secret, not just the link's own shape."""
    forged = _store(verifying_s3, store.bucket, monkeypatch, "testing")

    resp = http.get(forged.presign_get(KEY, 3600))
    assert resp.status_code == 403
    assert _error_code(resp) == "SignatureDoesNotMatch"


def test_expired_link_is_refused(store: Store, http: httpx.Client) -> None:
    url = store.presign_get(KEY, 2)
    assert http.get(url).status_code == 200  # still inside its 2 s

    signed = parse_qs(urlsplit(url).query)["X-Amz-Date"][0]
    expiry = calendar.timegm(time.strptime(signed, "%Y%m%dT%H%M%SZ")) + 2
    time.sleep(max(0.0, expiry - time.time()) + 1.1)
    resp = http.get(url)
    assert resp.status_code == 403
    assert "Request has expired" in resp.text

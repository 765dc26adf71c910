"""The bucket store against a real S3 endpoint over HTTP (moto server)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from boto3.s3.transfer import TransferConfig

from dicomiso_common import store as store_module
from dicomiso_common.errors import ObjectMissing, PreconditionFailed, StoreError
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import MAX_LINK_TTL, Store
from support.net import LOOPBACK
from support.tcpproxy import TcpProxy


def test_conditional_create_lets_exactly_one_writer_win(store: Store) -> None:
    """If-None-Match makes 'create once' records: the second create is a 412 -> conflict."""
    store.put_json("jobs/x/1.json", {"a": 1}, if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_json("jobs/x/1.json", {"a": 2}, if_none_match=True)
    assert store.get_json("jobs/x/1.json")[0] == {"a": 1}


def test_conditional_update_fails_on_a_stale_etag(store: Store) -> None:
    etag = store.put_json("k.json", {"v": 1})
    store.put_json("k.json", {"v": 2}, if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_json("k.json", {"v": 3}, if_match=etag)
    assert store.get_json("k.json")[0] == {"v": 2}


def test_multipart_upload_streams_and_round_trips(store: Store) -> None:
    """Objects above the threshold go up in parts and come back byte-identical."""
    small = Store(
        store.client,
        store.bucket,
        transfer=__import__("boto3").s3.transfer.TransferConfig(
            multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
        ),
    )
    data = os.urandom(12 * 1024 * 1024 + 7)
    small.upload(
        "packages/p/p.iso",
        io.BytesIO(data),
        content_type="application/x-iso9660-image",
        content_disposition='attachment; filename="X.iso"',
    )
    head = store.head("packages/p/p.iso")
    assert head is not None and head["ContentLength"] == len(data)
    assert "-" in head["ETag"]  # a multipart ETag: "<md5 of part md5s>-<parts>"
    with store.open("packages/p/p.iso") as body:
        assert body.read() == data


def test_list_pages_through_everything_under_a_prefix(store: Store) -> None:
    for i in range(1005):  # more than one list page (1000)
        store.put_bytes(f"instances/1/2/{i}.dcm", b"x")
    store.put_bytes("instances/9/x.dcm", b"y")
    assert len(list(store.list("instances/1/"))) == 1005


def test_missing_object_is_reported_as_missing(store: Store) -> None:
    with pytest.raises(ObjectMissing):
        store.get_json("nope.json")
    assert store.head("nope.json") is None


def test_presigned_link_downloads_and_is_capped_at_seven_days(store: Store) -> None:
    store.put_bytes("packages/a/a.iso", b"iso-bytes")
    url = store.presign_get("packages/a/a.iso", 3600)
    assert "X-Amz-Expires=3600" in url
    assert httpx.get(url).content == b"iso-bytes"
    with pytest.raises(ValueError):
        store.presign_get("packages/a/a.iso", MAX_LINK_TTL + 1)


def test_unreachable_endpoint_becomes_a_store_error() -> None:
    from dicomiso_common.settings import CommonSettings
    from support.net import free_port

    dead = Store.from_settings(CommonSettings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(StoreError):
        dead.ping()


def test_expiry_rule_is_set_once_and_keeps_other_rules(store: Store) -> None:
    """packages/ expires by a lifecycle rule; running it again replaces ours, keeps the rest.

    moto stores the rule but never applies it: whether objects really vanish is proven only
    against MinIO or S3 (docs/media.md says so).
    """
    other = {
        "ID": "someone-else",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 30},
    }
    store.client.put_bucket_lifecycle_configuration(
        Bucket=store.bucket, LifecycleConfiguration={"Rules": [other]}
    )
    store.ensure_expiry("packages/", 7)
    store.ensure_expiry("packages/", 3)
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=store.bucket)["Rules"]
    ours = [r for r in rules if r["ID"] == "dicomiso-expire-packages"]
    assert [r["ID"] for r in rules if r["ID"] == "someone-else"] == ["someone-else"]
    assert len(ours) == 1 and ours[0]["Expiration"]["Days"] == 3
    assert ours[0]["Filter"]["Prefix"] == "packages/"
    assert ours[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1


def _small_parts(store: Store) -> Store:
    return Store(
        store.client,
        store.bucket,
        transfer=TransferConfig(
            multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
        ),
    )


def _composite(data: bytes, part: int) -> str:
    digests = b"".join(
        hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part)
    )
    return base64.b64encode(hashlib.sha256(digests).digest()).decode()


def test_multipart_upload_carries_the_sha256_checksum(store: Store, tmp_path: Path) -> None:
    """Above the multipart threshold each part goes up with its SHA-256 (S3 checks it) and the
    object keeps the composite checksum, for a stream (instances) and a file (images) alike;
    the full-file sha256 stays in the metadata for the manifest."""
    small = _small_parts(store)
    data = os.urandom(12 * 1024 * 1024 + 7)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "image.iso"
    path.write_bytes(data)
    small.upload("instances/1/2/3.dcm", io.BytesIO(data), metadata={"sha256": sha})
    small.upload_path("packages/p/p.iso", path, metadata={"sha256": sha})
    for key in ("instances/1/2/3.dcm", "packages/p/p.iso"):
        head = store.client.head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"].split("-")[0] == _composite(data, 5 * 1024 * 1024)
        assert head["Metadata"]["sha256"] == sha


class _ChangesAfterUpload(io.BytesIO):
    """A file whose bytes change once they have all been read (modified under the upload)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size, self.seen = len(data), 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self.seen >= self.size:
            chunk = bytes(b ^ 0xFF for b in chunk)
        self.seen += len(chunk)
        return chunk


def test_upload_whose_bytes_differ_from_the_file_is_removed(store: Store) -> None:
    """When the object's checksum is not the file's, the upload fails and nothing is left."""
    with pytest.raises(StoreError, match="checksum"):
        _small_parts(store).upload(
            "instances/1/2/4.dcm", _ChangesAfterUpload(os.urandom(6 * 1024 * 1024))
        )
    assert not store.exists("instances/1/2/4.dcm")


def test_upload_replaced_by_another_writer_before_the_check_is_not_deleted(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one job write the same key (a take-over): when the other's object lands
    between our upload and our check, ours fails and theirs is left alone."""
    key = "packages/p/p.zip"
    path = tmp_path / "ours.zip"
    path.write_bytes(b"our image")
    head = store.client.head_object

    def replaced_first(**kwargs: object) -> object:
        store.client.put_object(
            Bucket=store.bucket,
            Key=key,
            Body=b"their image",
            Metadata={"sha256": hashlib.sha256(b"their image").hexdigest()},
            ChecksumAlgorithm="SHA256",
        )
        return head(**kwargs)

    monkeypatch.setattr(store.client, "head_object", replaced_first)
    with pytest.raises(StoreError, match="checksum"):
        store.upload_path(key, path, metadata={"sha256": hashlib.sha256(b"our image").hexdigest()})
    assert store.get_bytes(key)[0] == b"their image"


def test_connection_lost_mid_read_is_a_store_error(store: Store) -> None:
    """A body cut off half-way raises our StoreError, not botocore's error (the forwarder and
    the packager read instances through Store.open and handle StoreError only)."""
    store.put_bytes("instances/1/2/5.dcm", os.urandom(8 * 1024 * 1024))
    endpoint = urlsplit(store.client.meta.endpoint_url)
    proxy = TcpProxy(int(endpoint.port or 80)).start()
    try:
        settings = CommonSettings(
            s3_endpoint_url=f"http://{LOOPBACK}:{proxy.port}", s3_bucket=store.bucket
        )
        body = Store.from_settings(settings).open("instances/1/2/5.dcm")
        assert len(body.read(64 * 1024)) == 64 * 1024
        proxy.stop()
        with pytest.raises(StoreError, match="reading instances/1/2/5.dcm"):
            while body.read(1024 * 1024):
                pass
        body.close()
    finally:
        proxy.stop()


class _Reads(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.largest = max(self.largest, len(chunk))
        return chunk


def test_checking_an_upload_reads_the_file_in_small_pieces() -> None:
    """The check after an upload hashes each part in 1 MiB reads, never a part-sized one
    (a 16 MiB buffer beside the image's parts at the packager's peak, issue 19)."""
    data = os.urandom(12 * 1024 * 1024 + 7)
    fileobj = _Reads(data)
    part = 5 * 1024 * 1024
    transfer = TransferConfig(multipart_threshold=part, multipart_chunksize=part)
    assert store_module._sha256_checksum(fileobj, transfer) == _composite(data, part)
    assert 0 < fileobj.largest <= 1024 * 1024


@pytest.mark.parametrize("size", [3 * 1024 * 1024 + 1, 12 * 1024 * 1024 + 7])
def test_file_sha256_gives_the_whole_and_the_checksum_the_upload_is_checked_against(
    store: Store, tmp_path: Path, size: int
) -> None:
    """One read gives the file's SHA-256 and the S3 checksum (whole below the multipart
    threshold, composite above); an upload checked against it lands, and one checked against
    another file's checksum is removed."""
    small = _small_parts(store)
    data = os.urandom(size)
    path = tmp_path / "image.zip"
    path.write_bytes(data)
    whole, checksum = small.file_sha256(path)
    assert whole == hashlib.sha256(data).hexdigest()
    part = 5 * 1024 * 1024
    expected = (
        _composite(data, part)
        if size >= part
        else base64.b64encode(hashlib.sha256(data).digest()).decode()
    )
    assert checksum == expected
    small.upload_path("packages/p/p.zip", path, metadata={"sha256": whole}, checksum=checksum)
    assert store.exists("packages/p/p.zip")
    wrong = base64.b64encode(hashlib.sha256(b"another file").digest()).decode()
    with pytest.raises(StoreError, match="checksum"):
        small.upload_path("packages/q/q.zip", path, metadata={"sha256": whole}, checksum=wrong)
    assert not store.exists("packages/q/q.zip")

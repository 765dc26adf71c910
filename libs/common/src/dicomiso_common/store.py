"""The bucket: the only place the services share state, and the only boto3 user.

Objects are written whole (one PUT, or a multipart upload that becomes visible only when
completed), so a reader never sees a partial object. Conditional writes (If-None-Match /
If-Match) turn the bucket into a small coordination service for job records and leases.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, cast

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ChunksizeAdjuster

from .errors import ObjectMissing, PreconditionFailed, StoreError
from .settings import CommonSettings

log = logging.getLogger(__name__)

MAX_LINK_TTL = 604_800  # SigV4 presigned URLs are valid for at most 7 days
_MISSING = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_UPLOAD_CODE = re.compile(r"An error occurred \((\w+)\)")
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One entry of a listing. `last_modified` is the bucket's clock, not ours."""

    key: str
    size: int
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class Read:
    """One JSON object as read, with what a conditional write and a staleness test need."""

    body: Any
    etag: str
    age: float  # seconds since its last write, by the bucket's clock (Date - Last-Modified)


def _age(resp: dict[str, Any]) -> float:
    """How old the object is by the bucket's own clock, whole seconds (HTTP dates).

    Both ends come from the bucket, so no host's clock is compared with another's. A
    response without a Date header (none seen from S3, MinIO or moto) falls back to ours.
    """
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        now = parsedate_to_datetime(date) if date else datetime.now(UTC)
    except (TypeError, ValueError):
        now = datetime.now(UTC)
    if now.tzinfo is None:  # "-0000" in the header: UTC by RFC 5322
        now = now.replace(tzinfo=UTC)
    written: datetime = resp["LastModified"]
    return max((now - written).total_seconds(), 0.0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _translated(action: str, key: str) -> Iterator[None]:
    """Turn botocore's errors into ours: missing -> ObjectMissing, 412 -> PreconditionFailed,
    anything else (S3 down, denied, throttled) -> StoreError naming the action and key."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in _MISSING:
            raise ObjectMissing(f"{key} not found") from exc
        if code in _PRECONDITION:
            raise PreconditionFailed(f"{key} changed concurrently") from exc
        raise StoreError(f"{action} {key} failed: {code}") from exc
    except S3UploadFailedError as exc:  # upload_file wraps the ClientError in text
        found = _UPLOAD_CODE.search(str(exc))
        code = found.group(1) if found else type(exc).__name__
        raise StoreError(f"{action} {key} failed: {code}") from exc
    except BotoCoreError as exc:
        raise StoreError(f"{action} {key} failed: {type(exc).__name__}") from exc


def _upload_args(
    content_type: str, metadata: dict[str, str] | None, content_disposition: str | None
) -> dict[str, Any]:
    extra: dict[str, Any] = {"ContentType": content_type, "ChecksumAlgorithm": "SHA256"}
    if metadata:
        extra["Metadata"] = metadata
    if content_disposition:
        extra["ContentDisposition"] = content_disposition
    return extra


def _sha256_checksum(fileobj: IO[bytes], transfer: TransferConfig) -> str:
    """The ChecksumSHA256 S3 computes for this file uploaded with `transfer` (base64): of the
    whole below the multipart threshold, else of the parts' digests, parts sized exactly as
    s3transfer sizes them."""
    return _checksums(fileobj, transfer, None)


def _checksums(fileobj: IO[bytes], transfer: TransferConfig, whole: Any | None) -> str:
    """`_sha256_checksum`; with `whole` (a hashlib sha256) the same reads feed it every
    byte too, so a file's SHA-256 and its S3 checksum cost one pass over it."""
    start = fileobj.tell()
    size = fileobj.seek(0, 2) - start
    fileobj.seek(start)
    if size < transfer.multipart_threshold:
        one = hashlib.sha256()
        while chunk := fileobj.read(_HASH_CHUNK):
            one.update(chunk)
            if whole is not None:
                whole.update(chunk)
        return base64.b64encode(one.digest()).decode()
    part_size = ChunksizeAdjuster().adjust_chunksize(transfer.multipart_chunksize, size)
    digests = []
    for offset in range(0, size, part_size):  # each part hashed in 1 MiB reads, not whole
        part, n = hashlib.sha256(), min(part_size, size - offset)
        while n > 0 and (chunk := fileobj.read(min(_HASH_CHUNK, n))):
            part.update(chunk)
            if whole is not None:
                whole.update(chunk)
            n -= len(chunk)
        digests.append(part.digest())
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()


def _make_client(endpoint_url: str | None) -> Any:
    # Integrity comes from the SHA-256 checksum we send with each instance (S3 verifies it),
    # so botocore's own extra passes over every body (payload signing on plain HTTP, CRC32
    # by default since boto3 1.36) are switched off: -0.8 CPU-s per 1,000 PUTs, measured.
    config = Config(
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class _Body(io.RawIOBase):
    """An object's streaming body whose read errors are ours (StoreError), not botocore's."""

    def __init__(self, body: Any, key: str) -> None:
        super().__init__()
        self._body, self._key = body, key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _translated("reading", self._key):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _b64_sha256(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class MultipartUpload:
    """One multipart upload whose parts the caller sends, in any order and from any thread.

    Each part carries its SHA-256, which S3 verifies on arrival; `complete` lists them and
    then checks the object's composite checksum (the SHA-256 of the parts' digests, in part
    order) against the digests sent, as `Store.upload` does. Until `complete` returns, no
    object exists under the key; `abort` discards the parts. The object's metadata holds a
    token of this upload (the whole-file SHA-256 is not known when the upload starts): a
    failed check deletes the object only while it is still ours.
    """

    def __init__(self, store: Store, key: str, upload_id: str, metadata: dict[str, str]):
        self.store, self.key, self.upload_id, self.metadata = store, key, upload_id, metadata
        self._parts: dict[int, tuple[str, bytes]] = {}  # number -> (ETag, SHA-256 digest)
        self._lock = threading.Lock()

    def upload_part(self, number: int, data: bytes | bytearray) -> None:
        """Send part `number` (1-10,000; all but the last >= 5 MiB); safe from any thread."""
        digest = hashlib.sha256(data).digest()
        with _translated("uploading", self.key):
            resp = self.store.client.upload_part(
                Bucket=self.store.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=_b64_sha256(digest),
            )
        with self._lock:
            self._parts[number] = (str(resp["ETag"]), digest)

    def complete(self) -> None:
        """Join the parts sent into the object, then check its composite SHA-256.

        Raises:
            StoreError: completing failed, or the object's checksum is not the parts'.
        """
        with self._lock:
            parts = sorted(self._parts.items())
        listed = [
            {"PartNumber": n, "ETag": etag, "ChecksumSHA256": _b64_sha256(digest)}
            for n, (etag, digest) in parts
        ]
        with _translated("uploading", self.key):
            self.store.client.complete_multipart_upload(
                Bucket=self.store.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": listed},
            )
        expected = _b64_sha256(hashlib.sha256(b"".join(d for _, (_, d) in parts)).digest())
        self.store._check_checksum(self.key, expected, self.metadata)

    def abort(self) -> None:
        """Discard the parts sent; a failure is logged (the key's next upload aborts it, and
        the lifecycle rule after a day)."""
        try:
            with _translated("aborting upload of", self.key):
                self.store.client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
                )
        except StoreError as exc:
            log.warning("multipart upload not aborted", extra={"key": self.key, "error": str(exc)})


class Store:
    """Typed access to one bucket; botocore errors become our error types here."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        public_client: Any = None,
        transfer: TransferConfig | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self._public = public_client or client
        self._transfer = transfer or TransferConfig()

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Store:
        """Build the store for the configured endpoint; links are signed for the public one."""
        client = _make_client(settings.s3_endpoint_url)
        public_url = settings.s3_public_url or settings.s3_endpoint_url
        public = client if public_url == settings.s3_endpoint_url else _make_client(public_url)
        transfer = TransferConfig(
            multipart_threshold=settings.s3_multipart_threshold,
            multipart_chunksize=settings.s3_multipart_chunk,
            max_concurrency=4,
        )
        return cls(client, settings.s3_bucket, public_client=public, transfer=transfer)

    # -- whole objects -------------------------------------------------------------------

    def put_bytes(
        self,
        key: str,
        data: bytes | bytearray | IO[bytes],
        *,
        content_type: str = "application/octet-stream",
        if_none_match: bool = False,
        if_match: str | None = None,
        metadata: dict[str, str] | None = None,
        sha256_hex: str | None = None,
        cache_control: str | None = None,
        content_disposition: str | None = None,
        action: str = "writing",
    ) -> str:
        """Write one object in a single PUT and return its ETag.

        `data` may be an open, seekable file: botocore streams it without reading it whole.
        With `sha256_hex` the endpoint verifies the body against it and refuses a corrupt one.
        `cache_control` and `content_disposition` are stored and sent back on every GET.
        `action` names the step in an error ("uploading" for an image).

        Raises:
            PreconditionFailed: the conditional write lost (object exists / changed).
        """
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
        }
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if metadata:
            kwargs["Metadata"] = metadata
        if cache_control:
            kwargs["CacheControl"] = cache_control
        if content_disposition:
            kwargs["ContentDisposition"] = content_disposition
        if sha256_hex:
            kwargs["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        with _translated(action, key):
            return str(self.client.put_object(**kwargs)["ETag"])

    def put_json(self, key: str, obj: Any, **kwargs: Any) -> str:
        data = json.dumps(obj, ensure_ascii=False, sort_keys=True).encode()
        return self.put_bytes(key, data, content_type="application/json", **kwargs)

    def upload(
        self,
        key: str,
        fileobj: IO[bytes],
        *,
        content_type: str = "application/dicom",
        metadata: dict[str, str] | None = None,
        content_disposition: str | None = None,
    ) -> None:
        """Stream a seekable file object into the bucket; multipart above the threshold.

        Memory stays at about chunk size x concurrency whatever the object's size, and the
        object appears only when the upload completes. Every part carries its SHA-256, which
        S3 verifies (see `_verify_sha256` for the check of the whole).

        Raises:
            StoreError: the upload failed, or the object's checksum is not the file's.
        """
        start = fileobj.tell()
        with _translated("uploading", key):
            self.client.upload_fileobj(
                fileobj,
                self.bucket,
                key,
                ExtraArgs=_upload_args(content_type, metadata, content_disposition),
                Config=self._transfer,
            )
        fileobj.seek(start)
        self._verify_sha256(key, fileobj, metadata)

    def upload_path(
        self,
        key: str,
        path: Path,
        *,
        content_type: str = "application/dicom",
        metadata: dict[str, str] | None = None,
        content_disposition: str | None = None,
        checksum: str | None = None,
    ) -> None:
        """Upload a local file, multipart above the threshold, checksummed as `upload` is.
        `checksum` (`file_sha256`'s, computed before the upload) spares reading the file
        again to check the stored object against it.

        Unlike `upload` (a stream, whose parts s3transfer must buffer in memory, up to ten
        chunks), each part is read from the file by the thread that sends it: memory stays
        at chunk size x concurrency (measured: 300 -> 127 MiB peak for a 527 MB image).
        """
        with _translated("uploading", key):
            self.client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs=_upload_args(content_type, metadata, content_disposition),
                Config=self._transfer,
            )
        if checksum is None:
            with path.open("rb") as fileobj:
                checksum = _sha256_checksum(fileobj, self._transfer)
        self._check_checksum(key, checksum, metadata)

    def file_sha256(self, path: Path) -> tuple[str, str]:
        """A local file's SHA-256 (hex) and the S3 checksum `upload_path` will find for it
        (base64), in one read: pass the second to `upload_path(checksum=...)`."""
        whole = hashlib.sha256()
        with path.open("rb") as fileobj:
            checksum = _checksums(fileobj, self._transfer, whole)
        return whole.hexdigest(), checksum

    def start_multipart(
        self,
        key: str,
        *,
        content_type: str = "application/octet-stream",
        content_disposition: str | None = None,
    ) -> MultipartUpload:
        """Begin a multipart upload whose parts the caller sends as it produces them (an
        image streamed while it is written); see `MultipartUpload`."""
        metadata = {"upload": secrets.token_hex(8)}
        extra = _upload_args(content_type, metadata, content_disposition)
        with _translated("uploading", key):
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)
        return MultipartUpload(self, key, str(resp["UploadId"]), metadata)

    def _verify_sha256(
        self, key: str, fileobj: IO[bytes], metadata: dict[str, str] | None = None
    ) -> None:
        """Check the uploaded object's S3 checksum against the file's bytes.

        S3 keeps a SHA-256 of the whole object for a single PUT, and for a multipart upload
        a composite one: the SHA-256 of the parts' SHA-256 digests ("...-N"). S3 verified
        each part as it arrived; equal composites then prove the object holds exactly the
        file's bytes, so the full-file sha256 in its metadata is the object's. An object
        that fails the check is deleted, never left looking stored - unless its metadata is
        not the metadata we sent: then another writer of the same key (a run that took the
        job over) replaced it after our upload, and its object is not ours to delete.
        """
        self._check_checksum(key, _sha256_checksum(fileobj, self._transfer), metadata)

    def _check_checksum(self, key: str, expected: str, metadata: dict[str, str] | None) -> None:
        """Compare the object's stored SHA-256 checksum (base64, whole or composite) with
        `expected`; delete a mismatching object unless another writer's (`_verify_sha256`)."""
        with _translated("checking", key):
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        stored = str(head.get("ChecksumSHA256") or "").split("-", 1)[0]
        if stored != expected:
            if not metadata or head.get("Metadata") == metadata:
                self.delete(key)
            raise StoreError(
                f"uploading {key} failed: the bucket's SHA-256 checksum "
                f"({stored or 'none'}) is not the file's"
            )

    def abort_uploads(self, prefix: str) -> int:
        """Abort every unfinished multipart upload under `prefix`; return how many."""
        aborted = 0
        with _translated("aborting uploads of", prefix):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", ()):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        if aborted:
            log.info("stale multipart uploads aborted", extra={"count": aborted})
        return aborted

    def get_bytes(
        self, key: str, *, byte_range: tuple[int, int] | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """Read one (small) object, or a byte range of it; returns (bytes, response headers)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        with _translated("reading", key):
            resp = self.client.get_object(**kwargs)
            return cast(bytes, resp["Body"].read()), resp

    def get_json(self, key: str) -> tuple[Any, str]:
        """Return (decoded JSON, ETag) of one object."""
        read = self.read_json(key)
        return read.body, read.etag

    def read_json(self, key: str) -> Read:
        """Return one JSON object with its ETag and its age by the bucket's clock."""
        data, resp = self.get_bytes(key)
        return Read(json.loads(data), str(resp["ETag"]), _age(resp))

    def open(self, key: str, *, byte_range: tuple[int, int] | None = None) -> IO[bytes]:
        """Return a streaming body for one object, or for the inclusive `byte_range` of it;
        the caller reads it in chunks and closes it.

        A read that fails half-way (connection reset, read timeout) raises StoreError too:
        botocore's errors never leave this module.
        """
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        with _translated("reading", key):
            body = self.client.get_object(**kwargs)["Body"]
        return cast(IO[bytes], _Body(body, key))

    def head(self, key: str) -> dict[str, Any] | None:
        """Return the object's headers, or None when it does not exist."""
        try:
            with _translated("checking", key):
                return cast(dict[str, Any], self.client.head_object(Bucket=self.bucket, Key=key))
        except ObjectMissing:
            return None

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def delete(self, key: str) -> None:
        with _translated("deleting", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object under a prefix, page by page."""
        paginator = self.client.get_paginator("list_objects_v2")
        with _translated("listing", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        item["Key"], int(item["Size"]), str(item["ETag"]), item["LastModified"]
                    )

    # -- links and health ----------------------------------------------------------------

    def presign_get(self, key: str, expires_in: int) -> str:
        """Sign a GET for the public endpoint; SigV4 allows 7 days at most, so we cap it."""
        if not 1 <= expires_in <= MAX_LINK_TTL:
            raise ValueError(f"link lifetime must be 1..{MAX_LINK_TTL} s, got {expires_in}")
        return cast(
            str,
            self._public.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
            ),
        )

    def ensure_expiry(self, prefix: str, days: int, *, attempts: int = 5) -> None:
        """Make objects under `prefix` expire after `days`, and abort stale multipart uploads.

        The bucket's other lifecycle rules are kept; ours is replaced by its ID. The
        configuration is one document that S3 cannot update conditionally, so two services
        starting at once may each overwrite the other's new rule: we read it back and try
        again until ours is there. (moto stores the rule but never applies it: expiry itself
        is proven only on MinIO/S3.)
        """
        rule_id = f"dicomiso-expire-{prefix.strip('/').replace('/', '-')}"
        rule = {
            "ID": rule_id,
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "Expiration": {"Days": days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for attempt in range(attempts):
            kept = [r for r in self._lifecycle_rules() if r.get("ID") != rule_id]
            with _translated("setting lifecycle of", self.bucket):
                self.client.put_bucket_lifecycle_configuration(
                    Bucket=self.bucket, LifecycleConfiguration={"Rules": [*kept, rule]}
                )
            if any(r.get("ID") == rule_id for r in self._lifecycle_rules()):
                return
            time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))  # noqa: S311 - jitter only
        raise StoreError(f"lifecycle rule {rule_id} did not stick on {self.bucket}")

    def _lifecycle_rules(self) -> tuple[dict[str, Any], ...]:
        with _translated("reading lifecycle of", self.bucket):
            try:
                config = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                return ()
        return tuple(config.get("Rules", ()))

    def ping(self) -> None:
        """Raise StoreError unless the bucket answers (used by /readyz)."""
        try:
            with _translated("checking bucket", self.bucket):
                self.client.head_bucket(Bucket=self.bucket)
        except ObjectMissing as exc:
            raise StoreError(f"bucket {self.bucket} does not exist") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (local stack and tests; production buckets pre-exist)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

"""The ISO streamed into a multipart upload while pycdlib writes it (stream.ImageSink).

First what the sink relies on, recorded from a real `write_iso` of a disc shaped like ours;
then the sink against the moto server: the object equals a locally written image byte for
byte, and a failed build or a refused part leaves no object and no upload behind.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pycdlib.headervd
import pycdlib.inplaceeditor
import pycdlib.pycdlib
import pytest

from dicomiso_common.errors import StoreError
from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store
from dicomiso_packager.iso import DiscFile, ImageError, write_iso
from dicomiso_packager.stream import MIN_PART, ImageSink
from support.s3fault import S3Fault

KEY = "packages/p1/p1.iso"
ISO_TYPE = "application/x-iso9660-image"


@pytest.fixture
def store(s3_bucket: Any) -> Store:
    return Store.from_settings(
        CommonSettings(s3_endpoint_url=s3_bucket.endpoint_url, s3_bucket=s3_bucket.name)
    )


class _FrozenTime:
    """The `time` module as pycdlib's modules see it, with a fixed clock: two images of the
    same tree written seconds apart then have the same dates, so they compare byte for byte."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def time() -> float:
        return 1_700_000_000.0


@pytest.fixture
def frozen_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (pycdlib.headervd, pycdlib.pycdlib, pycdlib.inplaceeditor):
        monkeypatch.setattr(module, "time", _FrozenTime())


def _opener(data: bytes) -> Callable[[], IO[bytes]]:
    return lambda: io.BytesIO(data)


def _disc(instances: int, size: int, *, viewer: bool = True) -> list[DiscFile]:
    """The layout `disc.assemble` makes: DICOMDIR, README, the PDI pages and previews, the
    instances 5 levels deep in several series, and a viewer under long (Joliet) names."""
    generated = [("DICOMDIR",), ("README.TXT",), ("IHE_PDI", "INDEX.HTM")]
    generated += [("IHE_PDI", f"SER{s:05d}.JPG") for s in range(1, 4)]
    files = [
        DiscFile(p, 3_001 + 11 * i, _opener(bytes([i]) * (3_001 + 11 * i)))
        for i, p in enumerate(generated)
    ]
    for n in range(instances):
        path = ("DICOM", "PAT00001", f"STU{n % 2 + 1:05d}", f"SER{n % 3 + 1:05d}", f"I{n:07d}")
        blob = (f"{n:07d}".encode() * (size // 7 + 1))[: size + n % 5]  # not block aligned
        files.append(DiscFile(path, len(blob), _opener(blob)))
    files.append(DiscFile(("IHE_PDI", "EMPTY.TXT"), 0, _opener(b"")))  # no data, no extent
    if viewer:
        for i, name in enumerate(["viewer.js", "Start Viewer.html", "style.css"]):
            blob = name.encode() * 500
            short = ("VIEWER", f"FILE{i}.HTM")
            files.append(DiscFile(short, len(blob), _opener(blob), ("Viewer", name)))
    return files


class Recording(io.BytesIO):
    """A BytesIO that records the offset and length of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, int]] = []

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        self.writes.append((self.tell(), n))
        return super().write(data)


@pytest.mark.parametrize("joliet", [True, False])
def test_pycdlib_goes_back_only_before_the_first_files_data(joliet: bool) -> None:
    """Recorded from a real write_fp (1,200 files, DICOMDIR, Joliet or not): before the
    first file's data pycdlib goes back (it patches the path tables while it writes the
    directory records), always below that offset; from the first write there on, no write
    starts below the high-water mark. `ImageSink` sends a part only once this makes it final."""
    out = Recording()
    settled: list[int] = []
    write_iso(_disc(1_200, 700, viewer=joliet), out, "REC", joliet=joliet, settle=settled.append)

    (data_start,) = settled
    first = next(i for i, (pos, _) in enumerate(out.writes) if pos >= data_start)
    head, rest = out.writes[:first], out.writes[first:]
    assert rest[0][0] == data_start  # the first file's data begins exactly there
    assert all(pos + n <= data_start for pos, n in head)
    high, back = 0, []
    for pos, n in head:
        if pos < high:
            back.append(pos)
        high = max(high, pos + n)
    assert back, "pycdlib no longer goes back in the head: the recording is stale"
    high = data_start
    for pos, n in rest:
        assert pos >= high, f"write at {pos} below the high-water mark {high}"
        high = pos + n
    assert high == len(out.getvalue())


def _local(files: list[DiscFile], tmp_path: Path) -> bytes:
    path = tmp_path / "local.iso"
    with path.open("w+b") as f:
        write_iso(files, f, "STREAM", joliet=True)
    return path.read_bytes()


def _stream(store: Store, files: list[DiscFile], **kwargs: Any) -> Any:
    sink = ImageSink(store, KEY, part_size=MIN_PART, content_type=ISO_TYPE, in_flight=2, **kwargs)
    write_iso(files, cast(BinaryIO, sink), "STREAM", joliet=True, settle=sink.settle)
    return sink.finish()


def _uploads(store: Store) -> list[str]:
    listed = store.client.list_multipart_uploads(Bucket=store.bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


@pytest.mark.usefixtures("frozen_dates")
def test_streamed_image_equals_the_local_one_byte_for_byte(store: Store, tmp_path: Path) -> None:
    """A 3-part image: the object is the locally written image, with its SHA-256, checked
    by the bucket's composite checksum, and no upload is left open."""
    files = _disc(400, 35_000)  # ~14 MB
    expected = _local(files, tmp_path)
    assert len(expected) > 2 * MIN_PART

    streamed = _stream(store, files)

    data, resp = store.get_bytes(KEY)
    assert data == expected
    assert streamed.size == len(expected)
    assert streamed.sha256 == hashlib.sha256(expected).hexdigest()
    head = store.client.head_object(Bucket=store.bucket, Key=KEY, ChecksumMode="ENABLED")
    parts = [expected[i : i + MIN_PART] for i in range(0, len(expected), MIN_PART)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert len(parts) == 3
    assert head["ChecksumSHA256"].split("-")[0] == base64.b64encode(composite).decode()
    assert resp["ContentType"] == ISO_TYPE
    assert _uploads(store) == []


@pytest.mark.usefixtures("frozen_dates")
def test_image_smaller_than_a_part_is_one_put_with_its_sha256(store: Store, tmp_path: Path) -> None:
    files = _disc(20, 5_000)
    expected = _local(files, tmp_path)

    streamed = _stream(store, files)

    data, resp = store.get_bytes(KEY)
    assert data == expected
    assert resp["Metadata"]["sha256"] == streamed.sha256 == hashlib.sha256(expected).hexdigest()
    assert "-" not in resp["ETag"]


def test_a_build_that_fails_after_parts_were_sent_leaves_nothing(store: Store) -> None:
    """A source ends short after two parts went up: ImageError, the upload is aborted."""
    files = _disc(400, 35_000)
    good = files[-50]
    files[-50] = DiscFile(good.path, good.size, _opener(b"short"))

    with pytest.raises(ImageError):
        _stream(store, files)

    assert store.head(KEY) is None
    assert _uploads(store) == []


def test_a_refused_part_fails_the_image_and_aborts_the_upload(
    s3_bucket: Any,
) -> None:
    """S3 refuses part 2 while the writer goes on: StoreError naming the key; no object."""

    def refuse(method: str, path: str) -> bool:
        return method == "PUT" and "partNumber=2" in path

    with S3Fault(s3_bucket.endpoint_url, refuse) as proxy:
        store = Store.from_settings(
            CommonSettings(s3_endpoint_url=proxy.url, s3_bucket=s3_bucket.name)
        )
        with pytest.raises(StoreError, match=f"uploading {KEY} failed: AccessDenied"):
            _stream(store, _disc(400, 35_000))
        assert proxy.refused >= 1
        assert store.head(KEY) is None
        assert _uploads(store) == []


def test_a_write_below_a_sent_part_fails_instead_of_uploading_stale_bytes(
    store: Store,
) -> None:
    """The guard for a writer that breaks the rule (a future pycdlib): never a stale part."""
    sink = ImageSink(store, KEY, part_size=MIN_PART, content_type=ISO_TYPE)
    sink.settle(0)
    sink.write(b"\0" * (MIN_PART + 10))
    sink.seek(100)
    with pytest.raises(ImageError):
        sink.write(b"late")
    sink.abort()
    assert store.head(KEY) is None
    assert _uploads(store) == []


class _Recorder:
    """A store whose multipart upload keeps every part object it is handed (and a copy of
    its bytes at that moment), and counts the parts on their way at once."""

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.data: list[bytes] = []
        self.busy = self.most_busy = 0
        self.completed = False

    def abort_uploads(self, key: str) -> int:
        return 0

    def start_multipart(self, key: str, **kwargs: Any) -> _Recorder:
        return self

    def upload_part(self, number: int, data: Any) -> None:
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        self.parts.append(data)
        self.data.append(bytes(data))
        time.sleep(0.01)  # a part on its way while the writer goes on
        self.busy -= 1

    def complete(self) -> None:
        self.completed = True

    def abort(self) -> None:
        pass


@pytest.mark.parametrize("in_flight", [1, 2])
def test_the_sink_holds_at_most_one_part_buffer_more_than_parts_on_their_way(
    in_flight: int,
) -> None:
    """Memory bound (issue 19): the parts sent are the sink's own buffers, reused, not
    copies: over a 12-part image at most `in_flight` + 1 distinct buffers, whatever the
    image's size; never more than `in_flight` parts on their way; the bytes are right."""
    rec = _Recorder()
    sink = ImageSink(
        cast(Store, rec), KEY, part_size=MIN_PART, content_type=ISO_TYPE, in_flight=in_flight
    )
    image = bytes(range(256)) * (12 * MIN_PART // 256) + b"tail"
    sink.settle(0)
    for i in range(0, len(image), 1 << 20):
        sink.write(image[i : i + (1 << 20)])
    done = sink.finish()

    assert rec.completed and len(rec.parts) == 13
    assert b"".join(rec.data) == image
    assert done.sha256 == hashlib.sha256(image).hexdigest()
    assert len({id(p) for p in rec.parts}) <= in_flight + 1
    assert rec.most_busy <= in_flight

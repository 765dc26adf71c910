"""A package run that was taken over by another replica writes no manifest and deletes
nothing: the keys under packages/{id}/ are the job's, so they are the new owner's too."""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dicomiso_common.errors import StoreError
from dicomiso_common.jobs import JobHandle, JobLost, JobRecord
from dicomiso_common.models import PackageImage, PackageJobRequest
from dicomiso_common.store import Store
from dicomiso_packager import disc
from dicomiso_packager.packaging import Packaging, image_key, manifest_key_of
from dicomiso_packager.settings import PackagerSettings

JOB = "0123456789abcdef0123456789abcdef"
RECORD_KEY = f"jobs/package/{JOB}.json"


@pytest.fixture
def settings(s3_bucket: Any) -> PackagerSettings:
    return PackagerSettings(
        s3_endpoint_url=s3_bucket.endpoint_url, s3_bucket=s3_bucket.name, view_online=False
    )


@pytest.fixture
def store(settings: PackagerSettings) -> Store:
    return Store.from_settings(settings)


def _handle(store: Store) -> JobHandle:
    now = time.time()
    record = JobRecord(
        id=JOB,
        kind="package",
        request={"accession_numbers": ["A1"], "profile": "STD-GEN-CD", "format": "zip"},
        state="running",
        created_at=now,
        updated_at=now,
        heartbeat_at=now,
        owner="a",
        run="run-a",
    )
    etag = store.put_json(RECORD_KEY, record.model_dump())
    return JobHandle(
        store, RECORD_KEY, record, etag, confirmed_at=time.monotonic(), give_up_after=60
    )


def _take_over(store: Store) -> None:
    """What a claim by replica b writes: the same record with b's run token."""
    record = JobRecord.model_validate(store.get_json(RECORD_KEY)[0])
    theirs = record.model_copy(update={"owner": "b", "run": "run-b"})
    store.put_json(RECORD_KEY, theirs.model_dump())


def _image() -> Any:
    return SimpleNamespace(instances=1, transcoded=[], files=[], volume_id="DISC")


def _zip(tmp_path: Path) -> Path:
    path = tmp_path / "image.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.TXT", "run a's image")
    return path


def test_a_run_taken_over_writes_no_package_manifest(
    store: Store, settings: PackagerSettings, tmp_path: Path
) -> None:
    handle = _handle(store)
    request = PackageJobRequest.model_validate(handle.record.request)
    _take_over(store)

    with pytest.raises(JobLost):
        uploaded = PackageImage(
            format="zip", key=image_key(JOB, "zip"), filename="A1.zip", size=16, sha256=""
        )
        Packaging(settings, store)._publish(handle, request, [], _image(), {"zip": uploaded}, [])

    assert not store.exists(manifest_key_of(JOB))


def _build_whose_iso_upload_fails(
    store: Store,
    settings: PackagerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: Callable[[], None],
) -> None:
    """Run the image step of a ZIP + ISO package (the online page on): the ZIP is uploaded,
    then `meanwhile`, then the ISO's streamed upload fails."""
    handle = _handle(store)
    request = PackageJobRequest.model_validate(handle.record.request)
    monkeypatch.setattr(disc, "assemble", lambda *a, **k: _image())
    monkeypatch.setattr(Packaging, "_write_zip", lambda *a, **k: _zip(tmp_path))

    def stream_and_fail(self: Packaging, *args: Any) -> Any:
        deadline = time.monotonic() + 30  # the ZIP goes up in a thread beside the ISO
        while not store.exists(image_key(JOB, "zip")):
            assert time.monotonic() < deadline, "run a's ZIP was never uploaded"
            time.sleep(0.02)
        meanwhile()
        raise StoreError(f"uploading {image_key(JOB, 'iso')} failed: SlowDown")

    monkeypatch.setattr(Packaging, "_stream_iso", stream_and_fail)
    both = settings.model_copy(update={"view_online": True})
    with pytest.raises(StoreError):
        Packaging(both, store)._build_and_upload(handle, request, [], tmp_path, lambda f: f"A1.{f}")


def test_a_run_taken_over_that_fails_leaves_the_new_owners_images(
    store: Store, settings: PackagerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run a uploads the ZIP, is taken over, and its ISO upload fails: b's ZIP stays."""

    def taken_over() -> None:
        _take_over(store)
        store.put_bytes(image_key(JOB, "zip"), b"PK run b's image")

    _build_whose_iso_upload_fails(store, settings, tmp_path, monkeypatch, taken_over)
    assert store.get_bytes(image_key(JOB, "zip"))[0] == b"PK run b's image"


def test_a_run_still_ours_that_fails_removes_its_images(
    store: Store, settings: PackagerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build_whose_iso_upload_fails(store, settings, tmp_path, monkeypatch, lambda: None)
    assert not store.exists(image_key(JOB, "zip"))

"""Per-instance descriptions and the study manifest (studies/{uid}/manifest.json).

The manifest lists every stored instance with what the packager needs for a DICOMDIR
(PS3.3 F.5 key attributes) and what anyone needs to check a copy: size, sha256, transfer syntax.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import time
from collections import Counter
from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from dicomiso_common.dicom import manifest_key, study_prefix
from dicomiso_common.errors import DicomisoError
from dicomiso_common.store import ObjectInfo, Store

log = logging.getLogger(__name__)

HEADER_PROBE = 256 * 1024  # bytes read from S3 to parse a header we did not receive ourselves
_CHUNK = 1024 * 1024


class IncompleteStudy(DicomisoError):
    """The PACS said it was done, but the bucket does not hold the whole study."""

    status = 502
    title = "Incomplete study"


def _text(ds: Dataset, name: str) -> str | None:
    value = ds.get(name)
    return None if value in (None, "") else str(value)


def _int(ds: Dataset, name: str) -> int | None:
    value = ds.get(name)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _charsets(ds: Dataset) -> list[str]:
    """SpecificCharacterSet as a list: it is multi-valued under ISO 2022 (PS3.3 C.12.1.1.2)."""
    value = ds.get("SpecificCharacterSet")
    if value in (None, ""):
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue | list | tuple) else [str(value)]


def describe(ds: Dataset, transfer_syntax: str, size: int, sha256: str, key: str) -> dict[str, Any]:
    """Reduce one instance's header to its manifest entry (no pixel data is touched)."""
    return {
        "key": key,
        "size": size,
        "sha256": sha256,
        "transfer_syntax": transfer_syntax,
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_uid": str(ds.SOPInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "instance_number": _int(ds, "InstanceNumber"),
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "frames": _int(ds, "NumberOfFrames"),
        "series": {
            "modality": _text(ds, "Modality"),
            "number": _int(ds, "SeriesNumber"),
            "description": _text(ds, "SeriesDescription"),
        },
        "study": {
            "study_uid": str(ds.StudyInstanceUID),
            "date": _text(ds, "StudyDate"),
            "time": _text(ds, "StudyTime"),
            "id": _text(ds, "StudyID"),
            "description": _text(ds, "StudyDescription"),
            "accession_number": _text(ds, "AccessionNumber"),
        },
        "patient": {
            "id": _text(ds, "PatientID"),
            "name": _text(ds, "PatientName"),
            "birth_date": _text(ds, "PatientBirthDate"),
            "sex": _text(ds, "PatientSex"),
        },
        "charset": _charsets(ds),
    }


def sha256_of(fileobj: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := fileobj.read(_CHUNK):
        digest.update(chunk)
    fileobj.seek(0)
    return digest.hexdigest()


def describe_stored(store: Store, obj: ObjectInfo) -> dict[str, Any]:
    """Describe an instance from the bucket (one another replica, or a dead process, stored).

    A ranged GET of the first 256 KiB holds the header of nearly every instance; the rare
    longer header (large SR, big private groups) is read from a spooled copy instead.
    """
    data, resp = store.get_bytes(obj.key, byte_range=(0, HEADER_PROBE - 1))
    meta = {k.lower(): v for k, v in resp.get("Metadata", {}).items()}
    sha = meta.get("sha256", "")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        ds.StudyInstanceUID  # noqa: B018 - force parsing up to the study level
        ds.SeriesInstanceUID  # noqa: B018
    except (InvalidDicomError, EOFError, AttributeError, ValueError, OSError):
        with tempfile.TemporaryFile() as spool, store.open(obj.key) as body:
            while chunk := body.read(_CHUNK):
                spool.write(chunk)
            spool.seek(0)
            sha = sha or sha256_of(spool)
            ds = pydicom.dcmread(spool, stop_before_pixels=True)
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    return describe(ds, ts, obj.size, sha, obj.key)


def _representative(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The entry whose patient/study attributes stand for the study: one carrying the most
    common PatientName (one workstation's re-encoded spelling must not name the disc)."""
    if not entries:
        return {}
    names = Counter(str((e.get("patient") or {}).get("name")) for e in entries)
    common = names.most_common(1)[0][0]
    return next(e for e in entries if str((e.get("patient") or {}).get("name")) == common)


def build_manifest(
    store: Store, study_uid: str, known: dict[str, dict[str, Any]], job_id: str, method: str
) -> dict[str, Any]:
    """Assemble the manifest from the bucket listing; entries we hold already are reused."""
    entries = []
    for obj in store.list(study_prefix(study_uid)):
        sop_uid = obj.key.rsplit("/", 1)[-1].removesuffix(".dcm")
        entry = known.get(sop_uid)
        if entry is None or entry["size"] != obj.size:
            entry = describe_stored(store, obj)
        entries.append(entry)
    entries.sort(key=lambda e: (e["series_uid"], e["instance_number"] or 0, e["sop_uid"]))
    first = _representative(entries)
    series: dict[str, Any] = {}
    for e in entries:
        series.setdefault(e["series_uid"], e["series"])
    return {
        "study_uid": study_uid,
        "patient": first.get("patient"),
        "study": first.get("study"),
        "charset": first.get("charset"),
        "series": series,
        "instance_count": len(entries),
        "total_bytes": sum(e["size"] for e in entries),
        "instances": [
            {k: v for k, v in e.items() if k not in ("patient", "study", "series", "charset")}
            for e in entries
        ],
        "retrieved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "job_id": job_id,
        "method": method,
    }


def read_manifest(store: Store, study_uid: str) -> dict[str, Any] | None:
    """Return the study's manifest, or None when the study is not (completely) stored."""
    if not store.exists(manifest_key(study_uid)):
        return None
    data, _ = store.get_json(manifest_key(study_uid))
    return data if isinstance(data, dict) else None


def write_manifest(store: Store, manifest: dict[str, Any]) -> None:
    store.put_json(manifest_key(manifest["study_uid"]), manifest)

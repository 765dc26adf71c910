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
from typing import IO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from dicomiso_common.dicom import manifest_key, segment_prefix, study_prefix
from dicomiso_common.errors import DicomisoError
from dicomiso_common.manifests import load, load_manifest
from dicomiso_common.models import (
    InstanceDescription,
    InstanceEntry,
    PatientInfo,
    SegmentIndex,
    SeriesInfo,
    StudyInfo,
    StudyManifest,
)
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


def describe(
    ds: Dataset, transfer_syntax: str, size: int, sha256: str, key: str
) -> InstanceDescription:
    """Reduce one instance's header to its manifest entry (no pixel data is touched)."""
    return InstanceDescription(
        entry=InstanceEntry(
            key=key,
            size=size,
            sha256=sha256,
            transfer_syntax=transfer_syntax,
            sop_class_uid=str(ds.SOPClassUID),
            sop_uid=str(ds.SOPInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            instance_number=_int(ds, "InstanceNumber"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            frames=_int(ds, "NumberOfFrames"),
        ),
        series=SeriesInfo(
            modality=_text(ds, "Modality"),
            number=_int(ds, "SeriesNumber"),
            description=_text(ds, "SeriesDescription"),
        ),
        study=StudyInfo(
            study_uid=str(ds.StudyInstanceUID),
            date=_text(ds, "StudyDate"),
            time=_text(ds, "StudyTime"),
            id=_text(ds, "StudyID"),
            description=_text(ds, "StudyDescription"),
            accession_number=_text(ds, "AccessionNumber"),
        ),
        patient=PatientInfo(
            id=_text(ds, "PatientID"),
            name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex"),
        ),
        charset=tuple(_charsets(ds)),
    )


def sha256_of(fileobj: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := fileobj.read(_CHUNK):
        digest.update(chunk)
    fileobj.seek(0)
    return digest.hexdigest()


def describe_stored(store: Store, obj: ObjectInfo) -> InstanceDescription:
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


def _representative(described: list[InstanceDescription]) -> InstanceDescription | None:
    """The instance whose patient/study attributes stand for the study: one carrying the most
    common PatientName (one workstation's re-encoded spelling must not name the disc)."""
    if not described:
        return None
    names = Counter(str(d.patient.name) for d in described)
    common = names.most_common(1)[0][0]
    return next(d for d in described if str(d.patient.name) == common)


class StudyContents:
    """What the bucket holds of one study: the instances of its segment indexes (each index
    read once: an index never changes) and, from versions before segments, whole instance
    objects under instances/. An instance stored twice (a second move of a cached study, a
    retry after a take-over) counts once."""

    def __init__(
        self, store: Store, study_uid: str, known: dict[str, SegmentIndex] | None = None
    ) -> None:
        self.store = store
        self.study_uid = study_uid
        self._indexes: dict[str, SegmentIndex] = dict(known or {})
        self._legacy: dict[str, ObjectInfo] = {}

    def refresh(self) -> int:
        """Look at the bucket again; return how many distinct instances it holds."""
        for obj in self.store.list(segment_prefix(self.study_uid)):
            if obj.key.endswith(".json") and obj.key not in self._indexes:
                self._indexes[obj.key] = load(self.store, obj.key, SegmentIndex)
        self._legacy = {
            obj.key.rsplit("/", 1)[-1].removesuffix(".dcm"): obj
            for obj in self.store.list(study_prefix(self.study_uid))
        }
        return len(self._sop_uids())

    def _sop_uids(self) -> set[str]:
        segmented = {d.entry.sop_uid for i in self._indexes.values() for d in i.instances}
        return segmented | self._legacy.keys()

    def descriptions(self) -> list[InstanceDescription]:
        """One description per instance: a segment's (first index by key) before a whole
        object's (which costs a ranged GET to describe)."""
        chosen: dict[str, InstanceDescription] = {}
        for key in sorted(self._indexes):
            for d in self._indexes[key].instances:
                chosen.setdefault(d.entry.sop_uid, d)
        for sop_uid, obj in sorted(self._legacy.items()):
            if sop_uid not in chosen:
                chosen[sop_uid] = describe_stored(self.store, obj)
        return list(chosen.values())


def build_manifest(
    store: Store, study_uid: str, known: dict[str, SegmentIndex], job_id: str, method: str
) -> StudyManifest:
    """Assemble the manifest from the study's segment indexes (and any older instance
    objects); indexes this process wrote are not read again."""
    contents = StudyContents(store, study_uid, known)
    contents.refresh()
    return assemble_manifest(study_uid, contents.descriptions(), job_id, method)


def assemble_manifest(
    study_uid: str, described: list[InstanceDescription], job_id: str, method: str
) -> StudyManifest:
    """The manifest of these instances: sorted by series, instance number and UID; the
    patient and study attributes of the representative instance."""
    described = sorted(
        described, key=lambda d: (d.entry.series_uid, d.entry.instance_number or 0, d.entry.sop_uid)
    )
    first = _representative(described)
    series: dict[str, SeriesInfo] = {}
    for d in described:
        series.setdefault(d.entry.series_uid, d.series)
    return StudyManifest(
        study_uid=study_uid,
        patient=first.patient if first else PatientInfo(),
        study=first.study if first else StudyInfo(),
        charset=first.charset if first else (),
        series=series,
        instance_count=len(described),
        total_bytes=sum(d.entry.size for d in described),
        instances=tuple(d.entry for d in described),
        retrieved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        job_id=job_id,
        method=method,
    )


def read_manifest(store: Store, study_uid: str) -> StudyManifest | None:
    """Return the study's manifest, or None when the study is not (completely) stored."""
    if not store.exists(manifest_key(study_uid)):
        return None
    return load_manifest(store, study_uid)


def write_manifest(store: Store, manifest: StudyManifest) -> None:
    store.put_json(manifest_key(manifest.study_uid), manifest.to_json())

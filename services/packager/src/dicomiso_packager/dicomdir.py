"""The DICOM file-set: file IDs and the DICOMDIR (PS3.10 7-8, PS3.3 Annex F, PS3.11).

Built from the study manifests the retriever writes, so a DICOMDIR for thousands of instances
needs no instance bytes; only non-image leaves (SR, KO, PR, ...) need a header read.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import uid as uids
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO

# Private, with no public equivalent (PS3.3 Table F.4-1 as pydicom keeps it): pydicom is held
# to 3.0.x in pyproject, and tests/common/test_pinned_internals.py fails if it moves.
from pydicom.fileset import _FOUR_LEVEL_SOP_CLASSES, DIRECTORY_RECORDERS
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import PersonName

from dicomiso_common.errors import InvalidInput
from dicomiso_common.models import InstanceEntry, PatientInfo, SeriesInfo, StudyManifest

from .media import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    MEDIA_STORAGE_DIRECTORY,
    UTF8,
    FileSetError,
)

log = logging.getLogger(__name__)


# --- file-set layout -------------------------------------------------------------------------

MAX_COMPONENT = 99_999  # patients/studies/series per parent: "PAT" + 5 digits
MAX_IMAGES = 99_999_999  # instances per series: 8 digits, no prefix (PS3.10 8.2 allows it)

HeaderReader = Callable[[InstanceEntry], Dataset]


@dataclass
class _Series:
    uid: str
    info: SeriesInfo
    entries: list[InstanceEntry]


@dataclass
class _Study:
    manifest: StudyManifest
    series: list[_Series]


@dataclass
class _Patient:
    info: PatientInfo
    studies: list[_Study]


def _key_int(value: int | None) -> tuple[bool, int]:
    return (value is None, value or 0)


def _tree(manifests: list[StudyManifest]) -> list[_Patient]:
    """Group manifests into patients (by PatientID, PS3.11 H.3.3), studies and series, sorted.

    A study or instance listed twice (two accessions of one study) is kept once.
    """
    by_study = {m.study_uid: m for m in reversed(manifests)}
    patients: dict[str, _Patient] = {}

    def study_key(m: StudyManifest) -> tuple[str, str, str, str]:
        return (m.patient.id or "", m.study.date or "", m.study.time or "", m.study_uid)

    seen: set[str] = set()
    for m in sorted(by_study.values(), key=study_key):
        info = m.patient
        patient = patients.setdefault(info.id or "", _Patient(info, []))
        patient.info = patient.info.model_copy(
            update={k: v for k, v in info if not getattr(patient.info, k)}
        )
        series: dict[str, _Series] = {}
        for e in m.instances:
            if e.sop_uid in seen:
                continue
            seen.add(e.sop_uid)
            uid = e.series_uid
            series.setdefault(uid, _Series(uid, m.series_info(uid), []))
            series[uid].entries.append(e)
        for s in series.values():
            s.entries.sort(key=lambda e: (_key_int(e.instance_number), e.sop_uid))
        ordered = sorted(series.values(), key=lambda s: (_key_int(s.info.number), s.uid))
        patient.studies.append(_Study(m, ordered))
    return [patients[k] for k in sorted(patients)]


def patient_tree(manifests: list[StudyManifest]) -> list[_Patient]:
    """The patients, studies and series of the file-set, in the order the DICOMDIR lists them
    (the disc planner cuts along it)."""
    return _tree(manifests)


def _check_count(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise FileSetError(f"{count} {what} exceed the {limit} one file-set can name")


def assign_file_ids(manifests: list[StudyManifest]) -> dict[str, tuple[str, ...]]:
    """Map each SOP Instance UID to its File ID components, e.g. DICOM/PAT00001/.../00000001.

    Components are 1-8 characters of A-Z, 0-9 and _ without extension (PS3.10 8.2, PS3.12
    F.3.2.1), 5 levels deep, within the 8 directory levels of ISO 9660. The order is
    deterministic: patient ID, study date/time/UID, series number/UID, instance number/UID.

    Raises:
        FileSetError: More than 99,999 patients, studies or series, or 10^8 instances.
    """
    ids: dict[str, tuple[str, ...]] = {}
    patients = _tree(manifests)
    _check_count(len(patients), MAX_COMPONENT, "patients")
    for p, patient in enumerate(patients, 1):
        _check_count(len(patient.studies), MAX_COMPONENT, "studies of one patient")
        for s, study in enumerate(patient.studies, 1):
            _check_count(len(study.series), MAX_COMPONENT, "series of one study")
            for r, series in enumerate(study.series, 1):
                _check_count(len(series.entries), MAX_IMAGES, "instances of one series")
                for i, entry in enumerate(series.entries, 1):
                    ids[entry.sop_uid] = (
                        "DICOM",
                        f"PAT{p:05d}",
                        f"STU{s:05d}",
                        f"SER{r:05d}",
                        f"{i:08d}",
                    )
    return ids


# --- directory records (PS3.3 F.5) -----------------------------------------------------------

_EXTRA_LEAF_TYPES = {
    uids.EncapsulatedPDFStorage: "ENCAP DOC",
    uids.EncapsulatedCDAStorage: "ENCAP DOC",
    uids.EncapsulatedSTLStorage: "ENCAP DOC",
    uids.EncapsulatedOBJStorage: "ENCAP DOC",
    uids.EncapsulatedMTLStorage: "ENCAP DOC",
    uids.RTPlanStorage: "RT PLAN",
    uids.RTIonPlanStorage: "RT PLAN",
}
_MODALITY_LEAF_TYPES = {
    "RTINTENT": "RADIOTHERAPY",
    "RTSEGANN": "RADIOTHERAPY",
    "RTRAD": "RADIOTHERAPY",
    "PLAN": "PLAN",
}
# Placeholders for Type 1 keys the instances lack, which the FSC must supply (PS3.11 H.3.3.1
# note); dcmmkdir's --invent does the same.
_INVENTED_STUDY = {"date": "19000101", "time": "000000"}


def leaf_record_type(sop_class_uid: str, modality: str | None = None) -> str:
    """Directory Record Type for an instance (PS3.3 F.5, Table F.4-1 via pydicom.fileset)."""
    if modality in _MODALITY_LEAF_TYPES:
        return _MODALITY_LEAF_TYPES[modality]
    uid = UID(sop_class_uid)
    return _EXTRA_LEAF_TYPES.get(uid) or _FOUR_LEVEL_SOP_CLASSES.get(uid, "IMAGE")


def needs_header(sop_class_uid: str, modality: str | None = None) -> bool:
    """True if the leaf record needs attributes the manifest lacks (all but IMAGE records)."""
    return leaf_record_type(sop_class_uid, modality) != "IMAGE"


def _strings(value: Any) -> Iterator[str]:
    """Every text value in a record, sequences included (to choose its character set)."""
    if isinstance(value, Dataset):
        for elem in value:
            yield from _strings(elem.value)
    elif isinstance(value, list | tuple | MutableSequence):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str | PersonName):
        yield str(value)


def _set_charset(record: Dataset, preferred: Sequence[str]) -> None:
    """Set (0008,0005) when a key is not ASCII (PS3.3 F.5: 1C per record).

    The manifest's (single-valued, non-ISO 2022) character set is kept when it can encode the
    text; otherwise UTF-8 (ISO_IR 192), which encodes anything.
    """
    texts = [t for t in _strings(record) if not t.isascii()]
    if not texts:
        return
    charset = UTF8
    if len(preferred) == 1 and preferred[0] in python_encoding and "2022" not in preferred[0]:
        try:
            for t in texts:
                t.encode(python_encoding[preferred[0]])
            charset = preferred[0]
        except UnicodeEncodeError:
            charset = UTF8
    record.SpecificCharacterSet = charset


def _encode(kind: str, keys: Dataset, charset: Sequence[str]) -> bytearray:
    """One directory record, Explicit VR Little Endian, with both offsets still zero."""
    record = Dataset()
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = kind
    record.update(keys)
    _set_charset(record, charset)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, record)
    return bytearray(fp.getvalue())


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """A short-form explicit VR little endian element (PS3.5 7.1.2)."""
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _ascii(value: object, pad: bytes = b" ") -> bytes:
    data = str(value).encode("ascii")
    return data + pad if len(data) % 2 else data


def _image_record(
    entry: InstanceEntry, index: int, file_id: tuple[str, ...], syntax: str
) -> bytearray:
    """An IMAGE record encoded directly: thousands of them via pydicom take seconds.

    Only ASCII values (UIDs, CS, IS, US) occur, so no character set is involved. Elements are
    in tag order; Rows/Columns are Type 1 and NumberOfFrames 1C in STD-GEN-DVD (Table H.3-2).
    """
    try:
        parts = [
            _element(0x0004, 0x1400, b"UL", b"\0\0\0\0"),
            _element(0x0004, 0x1410, b"US", struct.pack("<H", 0xFFFF)),
            _element(0x0004, 0x1420, b"UL", b"\0\0\0\0"),
            _element(0x0004, 0x1430, b"CS", b"IMAGE "),
            _element(0x0004, 0x1500, b"CS", _ascii("\\".join(file_id))),
            _element(0x0004, 0x1510, b"UI", _ascii(entry.sop_class_uid, b"\0")),
            _element(0x0004, 0x1511, b"UI", _ascii(entry.sop_uid, b"\0")),
            _element(0x0004, 0x1512, b"UI", _ascii(syntax, b"\0")),
            _element(0x0020, 0x0013, b"IS", _ascii(entry.instance_number or index)),
        ]
        if entry.frames is not None:
            parts.append(_element(0x0028, 0x0008, b"IS", _ascii(entry.frames)))
        for elem, value in ((0x0010, entry.rows), (0x0011, entry.columns)):
            if value is not None:
                parts.append(_element(0x0028, elem, b"US", struct.pack("<H", value)))
    except (UnicodeEncodeError, struct.error, ValueError, TypeError) as exc:
        raise FileSetError(f"{entry.sop_uid}: invalid IMAGE record key") from exc
    return bytearray(b"".join(parts))


def _patient_keys(info: PatientInfo, index: int) -> Dataset:
    keys = Dataset()
    keys.PatientName = info.name or ""
    keys.PatientID = info.id or f"UNKNOWN{index:05d}"
    # 1C in STD-GEN-DVD (PS3.11 Table H.3-2)
    if info.birth_date:
        keys.PatientBirthDate = info.birth_date
    if info.sex:
        keys.PatientSex = info.sex
    return keys


def _study_keys(m: StudyManifest, index: int) -> Dataset:
    study = m.study
    keys = Dataset()
    keys.StudyDate = study.date or _INVENTED_STUDY["date"]
    keys.StudyTime = study.time or _INVENTED_STUDY["time"]
    keys.StudyDescription = study.description or ""
    keys.StudyInstanceUID = m.study_uid
    keys.StudyID = study.id or f"{index}"
    keys.AccessionNumber = study.accession_number or ""
    return keys


def _series_keys(series: _Series, index: int) -> Dataset:
    keys = Dataset()
    keys.Modality = series.info.modality or "OT"
    keys.SeriesInstanceUID = series.uid
    keys.SeriesNumber = series.info.number if series.info.number is not None else index
    return keys


def _leaf_keys(
    entry: InstanceEntry, kind: str, index: int, read_header: HeaderReader
) -> tuple[Dataset, list[str]]:
    """Keys of a non-image leaf record, from the header, and the character set they use."""
    header = read_header(entry)
    if "InstanceNumber" not in header or header.InstanceNumber in (None, ""):
        header.InstanceNumber = entry.instance_number or index
    try:
        keys = DIRECTORY_RECORDERS[kind](header)
    except (ValueError, KeyError, AttributeError) as exc:
        raise FileSetError(f"{entry.sop_uid}: no {kind} record ({exc})") from exc
    if "ContentSequence" in keys:  # PS3.3 F.5: only the root's context and modifiers
        items = [
            i
            for i in keys.ContentSequence
            if i.get("RelationshipType") in ("HAS CONCEPT MOD", "HAS OBS CONTEXT")
        ]
        if items:
            keys.ContentSequence = items
        else:
            del keys.ContentSequence
    value = header.get("SpecificCharacterSet")
    charset = [] if value is None else [value] if isinstance(value, str) else list(value)
    return keys, charset


@dataclass
class _Node:
    body: bytearray  # the encoded record; offsets patched in at _NEXT_AT and _LOWER_AT
    children: list[_Node] = field(default_factory=list)
    offset: int = 0


# Every record starts (0004,1400) UL, (0004,1410) US, (0004,1420) UL: 12 + 10 + 12 bytes.
_NEXT_AT, _LOWER_AT = 8, 30


def _leaf(
    entry: InstanceEntry,
    index: int,
    modality: str | None,
    file_id: tuple[str, ...],
    syntax: str,
    charset: Sequence[str],
    read_header: HeaderReader,
) -> _Node:
    kind = leaf_record_type(entry.sop_class_uid, modality)
    if kind == "IMAGE":
        return _Node(_image_record(entry, index, file_id, syntax))
    keys, leaf_charset = _leaf_keys(entry, kind, index, read_header)
    keys.ReferencedFileID = list(file_id)
    keys.ReferencedSOPClassUIDInFile = entry.sop_class_uid
    keys.ReferencedSOPInstanceUIDInFile = entry.sop_uid
    keys.ReferencedTransferSyntaxUIDInFile = syntax
    return _Node(_encode(kind, keys, leaf_charset or charset))


def _nodes(
    manifests: list[StudyManifest],
    file_ids: dict[str, tuple[str, ...]],
    final_syntax: dict[str, str],
    read_header: HeaderReader,
) -> list[_Node]:
    roots: list[_Node] = []
    for p, patient in enumerate(_tree(manifests), 1):
        first_charset = patient.studies[0].manifest.charset
        pnode = _Node(_encode("PATIENT", _patient_keys(patient.info, p), first_charset))
        roots.append(pnode)
        for s, study in enumerate(patient.studies, 1):
            charset = study.manifest.charset
            snode = _Node(_encode("STUDY", _study_keys(study.manifest, s), charset))
            pnode.children.append(snode)
            for r, series in enumerate(study.series, 1):
                rnode = _Node(_encode("SERIES", _series_keys(series, r), charset))
                snode.children.append(rnode)
                rnode.children = [
                    _leaf(
                        e,
                        i,
                        series.info.modality,
                        file_ids[e.sop_uid],
                        final_syntax[e.sop_uid],
                        charset,
                        read_header,
                    )
                    for i, e in enumerate(series.entries, 1)
                ]
    return roots


def _preorder(nodes: list[_Node]) -> Iterator[_Node]:
    for node in nodes:
        yield node
        yield from _preorder(node.children)


def _link(nodes: list[_Node]) -> None:
    """Patch the next/lower offsets of every record at one level (PS3.3 F.3.2.1)."""
    for i, node in enumerate(nodes):
        after = nodes[i + 1].offset if i + 1 < len(nodes) else 0
        lower = node.children[0].offset if node.children else 0
        struct.pack_into("<I", node.body, _NEXT_AT, after)
        struct.pack_into("<I", node.body, _LOWER_AT, lower)
        _link(node.children)


_FILESET_ID = re.compile(r"[A-Z0-9_ ]{0,16}")


def _file_head(fileset_id: str, instance_uid: str, first: int, last: int) -> bytes:
    """Preamble, file meta and the File-set Identification elements before the records."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds = Dataset()
    ds.FileSetID = fileset_id
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = last
    ds.FileSetConsistencyFlag = 0x0000  # PS3.3 F.3.2.1: no known inconsistencies
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def build_dicomdir(
    manifests: list[StudyManifest],
    file_ids: dict[str, tuple[str, ...]],
    final_syntax: dict[str, str],
    read_header: HeaderReader,
    fileset_id: str,
) -> bytes:
    """Return the bytes of the DICOMDIR (Media Storage Directory, PS3.10 7.2, PS3.3 F.2).

    One PATIENT record per Patient ID, then STUDY, SERIES and one leaf per instance, its
    ReferencedTransferSyntaxUIDInFile taken from ``final_syntax`` (what is on the medium).
    ``read_header`` is called only for leaves that need it (see :func:`needs_header`).

    Raises:
        InvalidInput: ``fileset_id`` is not a CS of at most 16 characters (PS3.10 8.5).
        FileSetError: A non-image instance lacks a Type 1 key of its record.
    """
    if not _FILESET_ID.fullmatch(fileset_id):
        raise InvalidInput("file-set ID must be at most 16 characters of A-Z, 0-9, _ or space")
    roots = _nodes(manifests, file_ids, final_syntax, read_header)
    nodes = list(_preorder(roots))
    # Offsets count from the first byte of the file (PS3.10 7.2): the sequence value starts
    # after its 12-byte explicit VR header, each record after its 8-byte item tag and length.
    uid = generate_uid(entropy_srcs=[fileset_id, *sorted(file_ids)])  # same content, same UID
    start = len(_file_head(fileset_id, uid, 0, 0)) + 12
    offset = start
    for node in nodes:
        node.offset = offset
        offset += 8 + len(node.body)
    _link(roots)
    first, last = (roots[0].offset, roots[-1].offset) if roots else (0, 0)
    items = b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, len(n.body)) + n.body for n in nodes)
    sequence = struct.pack("<HH2sHI", 0x0004, 0x1220, b"SQ", 0, len(items))
    data = _file_head(fileset_id, uid, first, last) + sequence + items
    if len(data) != offset:
        raise FileSetError(f"DICOMDIR encodes to {len(data)} bytes, offsets assumed {offset}")
    log.info("dicomdir built", extra={"records": len(nodes), "bytes": len(data)})
    return data

"""Check a disc image (ISO 9660) or ZIP the way a DICOM reader and a patient would meet it.

What is checked, with its source: DICOMDIR at the root and parseable (PS3.10 7.2); the
directory record offsets form one tree (PS3.3 F.3.2.1); every File ID is 1-8 components of
1-8 characters A-Z 0-9 _ (PS3.10 8.2) and names a file that is there, parses, and carries the
SOP Instance UID, SOP Class UID and Transfer Syntax its record says (PS3.3 F.5); no file in
the DICOM tree is left unreferenced; README.TXT and INDEX.HTM are at the root (IHE RAD TF-3
4.47.4.1.2); the ISO primary volume uses Level 1 names (ECMA-119 7.5, 10.1: 8.3 d-characters,
at most 8 directory levels). Files are opened one at a time and only their headers are
parsed, so memory does not grow with the disc.

A set of discs (a study bigger than one medium, PS3.11 M.2.1.1: independent File-sets) is
checked as a whole by `verify_set`: every disc of "n OF N" is there once, all of one package,
and no SOP Instance is on two of them.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, cast

import pycdlib
import pydicom
from pycdlib.pycdlibexception import PyCdlibException
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage

_COMPONENT = re.compile(r"[A-Z0-9_]{1,8}")
_ISO_FILE = re.compile(r"[A-Z0-9_]{1,8}\.[A-Z0-9_]{0,3};1")  # ECMA-119 7.5.1, Level 1
_ISO_DIR = re.compile(r"[A-Z0-9_]{1,8}")
_PLAIN_NAME = re.compile(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?")
MAX_DEPTH = 8
MEDIA_STORAGE_DIRECTORY = str(MediaStorageDirectoryStorage)
REQUIRED = ("DICOMDIR", "README.TXT", "INDEX.HTM")
_HEADER_TAGS = ["SOPInstanceUID", "SOPClassUID"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the medium, naming the path or DICOMDIR record it is about."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Report:
    """What `verify` found: counts and every problem (empty = clean)."""

    path: str
    kind: str
    files: int = 0
    referenced: int = 0
    problems: list[Problem] = field(default_factory=list)
    fileset_id: str = ""
    sop_uids: set[str] = field(default_factory=set)  # referenced by the DICOMDIR

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, what: str) -> None:
        self.problems.append(Problem(where, what))

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "ok": self.ok,
            "files": self.files,
            "referenced": self.referenced,
            "fileset_id": self.fileset_id,
            "problems": [{"where": p.where, "what": p.what} for p in self.problems],
        }


class _Medium(Protocol):
    """A read-only file tree: clean paths ("DICOM/PAT00001/...", no ';1') -> raw names."""

    names: dict[str, str]

    def open(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def close(self) -> None: ...


class _Iso:
    """The primary (ISO 9660) volume of an image, through pycdlib."""

    def __init__(self, path: Path) -> None:
        self._iso = pycdlib.PyCdlib()
        self._iso.open(str(path))
        self.names: dict[str, str] = {}
        self.dirs: list[str] = []
        for root, dirs, files in self._iso.walk(iso_path="/"):
            base = root.rstrip("/")
            self.dirs += [f"{base}/{d}".lstrip("/") for d in dirs]
            for name in files:
                raw = f"{base}/{name}"
                self.names[raw.lstrip("/").split(";")[0].rstrip(".")] = raw

    def open(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return cast(
            contextlib.AbstractContextManager[IO[bytes]],
            self._iso.open_file_from_iso(iso_path=self.names[path]),
        )

    def close(self) -> None:
        self._iso.close()


class _Zip:
    """A ZIP file-set (PS3.12 Annex V)."""

    def __init__(self, path: Path) -> None:
        self._zip = zipfile.ZipFile(path)
        self.names = {i.filename: i.filename for i in self._zip.infolist() if not i.is_dir()}

    def open(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self._zip.open(path)

    def close(self) -> None:
        self._zip.close()


def _open_medium(path: Path, report: Report) -> _Iso | _Zip | None:
    try:
        if zipfile.is_zipfile(path):
            report.kind = "zip"
            return _Zip(path)
        return _Iso(path)
    except (OSError, PyCdlibException, zipfile.BadZipFile) as exc:
        report.add(path.name, f"cannot be opened as an ISO 9660 image or ZIP ({exc})")
        return None


def verify(path: Path) -> Report:
    """Check the medium at `path` (ISO or ZIP); the report lists every problem found."""
    report = Report(str(path), "iso")
    medium = _open_medium(path, report)
    if medium is None:
        return report
    try:
        report.files = len(medium.names)
        _check_names(medium, report)
        for name in REQUIRED:
            if name not in medium.names:
                report.add(name, "missing at the root")
        if "DICOMDIR" in medium.names:
            _check_dicomdir(medium, report)
    finally:
        medium.close()
    return report


# -- names -----------------------------------------------------------------------------------


def _check_names(medium: _Iso | _Zip, report: Report) -> None:
    """ISO: every primary-volume name is Level 1. ZIP: the DICOM and PDI trees' names are."""
    if isinstance(medium, _Iso):
        for d in medium.dirs:
            if not _ISO_DIR.fullmatch(d.rsplit("/", 1)[-1]):
                report.add(d, "directory name is not ISO 9660 Level 1 (1-8 of A-Z 0-9 _)")
            if d.count("/") + 1 > MAX_DEPTH:
                report.add(d, f"more than {MAX_DEPTH} directory levels")
        for clean, raw in medium.names.items():
            if not _ISO_FILE.fullmatch(raw.rsplit("/", 1)[-1]):
                report.add(clean, "file name is not ISO 9660 Level 1 (8.3 of A-Z 0-9 _)")
        return
    for clean in medium.names:
        parts = clean.split("/")
        if len(parts) == 1 or parts[0] in ("DICOM", "IHE_PDI"):
            if not all(_PLAIN_NAME.fullmatch(p) for p in parts):
                report.add(clean, "name is not 8.3 upper case (A-Z 0-9 _)")


# -- DICOMDIR --------------------------------------------------------------------------------


def _record_label(index: int, record: Dataset) -> str:
    kind = str(record.get("DirectoryRecordType", "?")).strip()
    return f"DICOMDIR record #{index} ({kind} at offset {record.seq_item_tell})"


def _check_dicomdir(medium: _Iso | _Zip, report: Report) -> None:
    try:
        with medium.open("DICOMDIR") as fp:
            ds = pydicom.dcmread(io.BytesIO(fp.read()))
        records = list(ds.DirectoryRecordSequence)
    except (InvalidDicomError, AttributeError, ValueError, EOFError, KeyError) as exc:
        report.add("DICOMDIR", f"does not parse as a DICOM directory ({type(exc).__name__}: {exc})")
        return
    report.fileset_id = str(ds.get("FileSetID", "") or "").strip()
    sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class != MEDIA_STORAGE_DIRECTORY:
        report.add(
            "DICOMDIR",
            f"Media Storage SOP Class is {sop_class or 'missing'}, not {MEDIA_STORAGE_DIRECTORY}",
        )
    _check_offsets(ds, records, report)
    referenced = _check_records(records, medium, report)
    report.referenced = len(referenced)
    _check_unreferenced(medium, referenced, report)


def _check_offsets(ds: Dataset, records: list[Dataset], report: Report) -> None:
    """Walk the record tree from the root (PS3.3 F.3.2.1); each record reached exactly once."""
    by_offset = {r.seq_item_tell: i for i, r in enumerate(records)}
    seen: set[int] = set()

    def chain(offset: int, where: str) -> int | None:
        """Follow one directory entity's chain; return the offset of its last record."""
        last = None
        while offset:
            index = by_offset.get(offset)
            if index is None:
                report.add("DICOMDIR", f"{where} points at offset {offset}, where no record starts")
                return last
            if index in seen:
                report.add(_record_label(index, records[index]), "reached twice (offset loop)")
                return last
            seen.add(index)
            record, last = records[index], offset
            lower = int(record.get("OffsetOfReferencedLowerLevelDirectoryEntity", 0) or 0)
            if lower:
                chain(lower, f"{_record_label(index, record)} lower-level offset")
            offset = int(record.get("OffsetOfTheNextDirectoryRecord", 0) or 0)
            where = f"{_record_label(index, record)} next-record offset"
        return last

    first = int(ds.get("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity", 0) or 0)
    last = int(ds.get("OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity", 0) or 0)
    end = chain(first, "first root record offset")
    if records and end != last:
        report.add("DICOMDIR", f"last root record offset is {last}, the root chain ends at {end}")
    for index in sorted(set(range(len(records))) - seen):
        report.add(_record_label(index, records[index]), "not reachable from the root")


def _file_id(record: Dataset) -> list[str]:
    value = record.ReferencedFileID
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _check_records(records: list[Dataset], medium: _Iso | _Zip, report: Report) -> set[str]:
    """Each leaf's File ID is legal, present, unique, and the file matches its record."""
    referenced: set[str] = set()
    for index, record in enumerate(records):
        if "ReferencedFileID" not in record:
            continue
        label = _record_label(index, record)
        parts = _file_id(record)
        if not 1 <= len(parts) <= MAX_DEPTH or not all(_COMPONENT.fullmatch(p) for p in parts):
            shown = "\\".join(parts)
            report.add(
                label,
                f"ReferencedFileID {shown!r} is not 1-8 components "
                "of 1-8 characters A-Z 0-9 _ (PS3.10 8.2)",
            )
            continue
        path = "/".join(parts)
        if path in referenced:
            report.add(label, f"{path} is referenced by more than one record")
            continue
        referenced.add(path)
        report.sop_uids.add(str(record.get("ReferencedSOPInstanceUIDInFile", "")))
        if path not in medium.names:
            report.add(label, f"references {path}, which is not on the medium")
            continue
        _check_file(medium, path, record, label, report)
    return referenced


def _check_file(
    medium: _Iso | _Zip, path: str, record: Dataset, label: str, report: Report
) -> None:
    try:
        with medium.open(path) as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        report.add(path, f"does not parse as a DICOM file ({type(exc).__name__}); {label}")
        return
    pairs = [
        ("ReferencedSOPInstanceUIDInFile", ds.get("SOPInstanceUID"), "SOP Instance UID"),
        ("ReferencedSOPClassUIDInFile", ds.get("SOPClassUID"), "SOP Class UID"),
        (
            "ReferencedTransferSyntaxUIDInFile",
            getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID"),
            "Transfer Syntax UID",
        ),
    ]
    for keyword, actual, what in pairs:
        expected = record.get(keyword)
        if expected is None:
            report.add(label, f"has no {keyword}")
        elif str(actual) != str(expected):
            report.add(path, f"{what} is {actual}, but {label} says {expected}")


def _tree_roots(referenced: set[str]) -> set[str]:
    return {"DICOM"} | {p.split("/", 1)[0] for p in referenced if "/" in p}


def _check_unreferenced(medium: _Iso | _Zip, referenced: set[str], report: Report) -> None:
    roots = _tree_roots(referenced)
    for path in sorted(_in_trees(medium.names, roots)):
        if path not in referenced:
            report.add(path, "in the DICOM tree but not referenced by the DICOMDIR")


def _in_trees(names: dict[str, str], roots: set[str]) -> Iterator[str]:
    return (p for p in names if "/" in p and p.split("/", 1)[0] in roots)


# -- a set of discs --------------------------------------------------------------------------

_SET_ID = re.compile(r"([0-9A-F]{8})_([0-9]{1,2})OF([0-9]{1,2})")  # packager: disc.set_volume_id


@dataclass
class SetReport:
    """What `verify_set` found across the discs of one set."""

    discs: int
    instances: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "discs": self.discs,
            "instances": self.instances,
            "ok": self.ok,
            "problems": [{"where": p.where, "what": p.what} for p in self.problems],
        }


def verify_set(reports: list[Report]) -> SetReport:
    """Check that the media form one complete set: every disc n of N once, one package, and
    each SOP Instance on one disc only (what is on each disc is checked by `verify`)."""
    found = SetReport(len(reports), len({u for r in reports for u in r.sop_uids}))
    numbers: dict[int, str] = {}
    packages, totals = set(), set()
    for r in reports:
        match = _SET_ID.fullmatch(r.fileset_id)
        if match is None:
            found.problems.append(
                Problem(r.path, f"File-set ID {r.fileset_id!r} does not name a disc of a set")
            )
            continue
        packages.add(match.group(1))
        number, total = int(match.group(2)), int(match.group(3))
        totals.add(total)
        if number in numbers:
            found.problems.append(Problem(r.path, f"disc {number} also given as {numbers[number]}"))
        numbers[number] = r.path
    if len(packages) > 1 or len(totals) > 1:
        found.problems.append(
            Problem("set", f"the discs belong to different sets ({', '.join(sorted(packages))})")
        )
    for total in totals:
        for number in range(1, total + 1):
            if number not in numbers:
                found.problems.append(Problem("set", f"disc {number} of {total} is missing"))
    where: dict[str, str] = {}
    for r in reports:
        for uid in sorted(r.sop_uids):
            if uid in where:
                found.problems.append(
                    Problem(r.path, f"SOP Instance {uid} is also on {where[uid]}")
                )
            where.setdefault(uid, r.path)
    return found

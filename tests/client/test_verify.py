"""`dicom-iso verify` against real discs built by the packager's own modules, then broken."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from pydicom import dcmread
from typer.testing import CliRunner

from dicomiso_packager import dicomdir, pdi
from dicomiso_packager.iso import DiscFile, write_iso, write_zip
from dicomiso_tools.cli import app
from dicomiso_tools.verify import verify
from support.manifests import manifest_of
from support.studies import make_study

Files = list[DiscFile]


def _opener(data: bytes) -> Callable[[], IO[bytes]]:
    return lambda: io.BytesIO(data)


def _file(path: tuple[str, ...], data: bytes) -> DiscFile:
    return DiscFile(path, len(data), _opener(data))


@pytest.fixture(scope="module")
def disc_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """Every file of a disc of two small synthetic studies, as the packager lays it out."""
    root = tmp_path_factory.mktemp("studies")
    studies = [
        make_study(root / "a", "ACC1", ct=2, mr=1),
        make_study(root / "b", "ACC2", ct=1, mr=0, with_ko=False, with_pr=False),
    ]
    manifests = [manifest_of(s.files) for s in studies]
    ids = dicomdir.assign_file_ids(manifests)
    entries = [e for m in manifests for e in m.instances]
    final = {e.sop_uid: e.transfer_syntax for e in entries}
    data = dicomdir.build_dicomdir(
        manifests, ids, final, lambda e: dcmread(e.key, stop_before_pixels=True), "DICOMISO_TEST"
    )
    now = datetime.now(UTC)
    generated = [
        (("DICOMDIR",), data),
        (
            ("README.TXT",),
            pdi.readme_text(
                manifests, institution="Test", viewer=None, profile="STD-GEN-CD", created_at=now
            ),
        ),
        *pdi.web_pages(manifests, institution="Test", previews={}, created_at=now),
    ]
    files = [_file(path, body) for path, body in generated]
    files += [_file(ids[e.sop_uid], Path(e.key).read_bytes()) for e in entries]
    return files


def _iso(files: Files, path: Path) -> Path:
    with path.open("wb") as out:
        write_iso(files, out, "DICOMISO_TEST")
    return path


def _dicomdir(files: Files) -> bytes:
    return next(f.opener().read() for f in files if f.path == ("DICOMDIR",))


def _with_dicomdir(files: Files, data: bytes) -> Files:
    return [_file(f.path, data) if f.path == ("DICOMDIR",) else f for f in files]


def _problems(path: Path) -> list[str]:
    return [str(p) for p in verify(path).problems]


def test_a_disc_as_the_packager_builds_it_is_clean(disc_files: Files, tmp_path: Path) -> None:
    """ISO and ZIP of the same tree: no problem, every instance referenced, exit 0."""
    iso = _iso(disc_files, tmp_path / "disc.iso")
    with (tmp_path / "disc.zip").open("wb") as out:
        write_zip(disc_files, out)
    instances = sum(1 for f in disc_files if f.path[0] == "DICOM")
    for path, kind in ((iso, "iso"), (tmp_path / "disc.zip", "zip")):
        report = verify(path)
        assert report.problems == [] and report.kind == kind
        assert report.referenced == instances and report.files == len(disc_files)
    result = CliRunner().invoke(app, ["verify", str(iso), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


def test_a_flipped_uid_byte_names_the_file_and_the_record(
    disc_files: Files, tmp_path: Path
) -> None:
    """One digit of a ReferencedSOPInstanceUIDInFile changed: that file is named, exit 1."""
    data = bytearray(_dicomdir(disc_files))
    ds = dcmread(io.BytesIO(bytes(data)))
    leaf = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    uid = str(leaf.ReferencedSOPInstanceUIDInFile).encode()
    at = data.index(uid) + len(uid) - 1
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    iso = _iso(_with_dicomdir(disc_files, bytes(data)), tmp_path / "bad.iso")

    path = "/".join(leaf.ReferencedFileID)
    problems = _problems(iso)
    assert any(p.startswith(f"{path}: SOP Instance UID is {uid.decode()}") for p in problems)
    result = CliRunner().invoke(app, ["verify", str(iso)])
    assert result.exit_code == 1 and path in result.stdout


def test_a_broken_offset_is_named(disc_files: Files, tmp_path: Path) -> None:
    """OffsetOfTheNextDirectoryRecord pointing between records: offset and orphan named."""
    data = bytearray(_dicomdir(disc_files))
    tag = struct.pack("<HH2sH", 0x0004, 0x1400, b"UL", 4)
    at = data.index(tag) + len(tag)
    while struct.unpack_from("<I", data, at)[0] == 0:  # the first record that has a next one
        at = data.index(tag, at) + len(tag)
    value = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at, value + 2)
    iso = _iso(_with_dicomdir(disc_files, bytes(data)), tmp_path / "bad.iso")

    problems = _problems(iso)
    assert any(f"points at offset {value + 2}, where no record starts" in p for p in problems)
    assert any(p.endswith(f"at offset {value}): not reachable from the root") for p in problems)


def test_missing_files_are_named(disc_files: Files, tmp_path: Path) -> None:
    """A referenced instance, README.TXT and INDEX.HTM left off; a stray file added."""
    gone = next(f for f in disc_files if f.path[0] == "DICOM")
    kept = [
        f for f in disc_files if f is not gone and f.path not in (("README.TXT",), ("INDEX.HTM",))
    ]
    kept.append(_file((*gone.path[:-1], "STRAY"), b"not referenced"))
    problems = _problems(_iso(kept, tmp_path / "bad.iso"))

    assert "README.TXT: missing at the root" in problems
    assert "INDEX.HTM: missing at the root" in problems
    assert any(p.endswith(f"references {gone.label}, which is not on the medium") for p in problems)
    assert (
        f"{'/'.join((*gone.path[:-1], 'STRAY'))}: in the DICOM tree but not referenced "
        "by the DICOMDIR" in problems
    )


def test_a_file_that_is_not_an_image_is_a_problem(tmp_path: Path) -> None:
    """Neither ISO 9660 nor ZIP: one problem naming the file, exit 1."""
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 40_000)
    result = CliRunner().invoke(app, ["verify", str(junk), "--json"])
    assert result.exit_code == 1
    assert "cannot be opened" in json.loads(result.stdout)["problems"][0]["what"]

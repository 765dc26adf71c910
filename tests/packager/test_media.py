"""Media rules of the packager: profiles, transcoding, file IDs and the DICOMDIR.

Every DICOMDIR is checked with the reference tools: dicom3tools' dciodvfy and dcentvfy, dcmtk's
dcmdump, pydicom's own FileSet reader, and dcmmkdir -Pgp for a STD-GEN-CD file-set.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from dicomiso_common.models import InstanceEntry, StudyManifest
from dicomiso_packager import dicomdir, media
from support.dcmtk import dcmtk_bin
from support.manifests import manifest_of
from support.studies import CT_IMAGE, Study

ELE = str(ExplicitVRLittleEndian)
_COMPONENT = re.compile(r"[A-Z0-9_]{1,8}")


class HeaderReader:
    """read_header for tests: parses the source file and counts the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, entry: InstanceEntry) -> Dataset:
        self.calls.append(entry.sop_class_uid)
        return dcmread(entry.key, stop_before_pixels=True)


def lay_out(
    manifests: list[StudyManifest], root: Path, write: Callable[[Path, Path], str] | None = None
) -> tuple[Path, bytes]:
    """Place every instance under its file ID, write the DICOMDIR; return it and its bytes."""
    ids = dicomdir.assign_file_ids(manifests)
    final: dict[str, str] = {}
    for m in manifests:
        for e in m.instances:
            dst = root.joinpath(*ids[e.sop_uid])
            dst.parent.mkdir(parents=True, exist_ok=True)
            if write is None:
                shutil.copyfile(e.key, dst)
                final[e.sop_uid] = e.transfer_syntax
            else:
                final[e.sop_uid] = write(Path(e.key), dst)
    data = dicomdir.build_dicomdir(manifests, ids, final, HeaderReader(), "DICOMISO_TEST")
    path = root / "DICOMDIR"
    path.write_bytes(data)
    return path, data


def walk(ds: Dataset) -> list[Dataset]:
    """Follow the record offsets from the root (PS3.3 F.3.2.1); return the leaves in order."""
    by_offset = {r.seq_item_tell: r for r in ds.DirectoryRecordSequence}
    leaves: list[Dataset] = []

    def level(offset: int) -> None:
        while offset:
            record = by_offset[offset]
            if record.OffsetOfReferencedLowerLevelDirectoryEntity:
                level(record.OffsetOfReferencedLowerLevelDirectoryEntity)
            else:
                leaves.append(record)
            offset = record.OffsetOfTheNextDirectoryRecord

    level(ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity)
    last = ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity
    assert by_offset[last].OffsetOfTheNextDirectoryRecord == 0
    return leaves


def assert_valid_dicomdir(dicomdir: Path) -> None:
    """dciodvfy/dcentvfy report no error, dcmdump parses it and every referenced file exists."""
    vfy = subprocess.run(["dciodvfy", str(dicomdir)], capture_output=True, text=True)
    out = vfy.stdout + vfy.stderr
    assert "BasicDirectory" in out
    assert not [line for line in out.splitlines() if line.startswith("Error")], out
    ent = subprocess.run(["dcentvfy", str(dicomdir)], capture_output=True, text=True)
    assert ent.returncode == 0 and "Error" not in ent.stdout + ent.stderr, ent.stderr
    dump = subprocess.run([dcmtk_bin("dcmdump"), str(dicomdir)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    leaves = walk(dcmread(dicomdir))
    fs = FileSet(dcmread(dicomdir))  # pydicom's reader follows the offsets as well
    assert len(fs) == len(leaves) == len({r.ReferencedSOPInstanceUIDInFile for r in leaves})
    for instance in fs:
        assert Path(instance.path).is_file()
        assert (
            dcmread(instance.path, stop_before_pixels=True).SOPInstanceUID
            == instance.ReferencedSOPInstanceUIDInFile
        )


def test_needs_transcode_follows_each_profile() -> None:
    """STD-GEN-CD keeps only Explicit VR LE; the DVD profiles add JPEG or JPEG 2000 only."""
    cd, jpeg, j2k = (
        media.PROFILES[n] for n in ("STD-GEN-CD", "STD-GEN-DVD-JPEG", "STD-GEN-DVD-J2K")
    )
    assert media.PROFILES[media.DEFAULT_PROFILE] is jpeg
    assert not any(media.needs_transcode(p, ELE) for p in (cd, jpeg, j2k))
    for ts in (JPEGLosslessSV1, JPEGBaseline8Bit, "1.2.840.10008.1.2.4.51"):
        assert media.needs_transcode(cd, ts) and media.needs_transcode(j2k, ts)
        assert not media.needs_transcode(jpeg, ts)
    for ts in (JPEG2000Lossless, "1.2.840.10008.1.2.4.91"):
        assert not media.needs_transcode(j2k, ts) and media.needs_transcode(jpeg, ts)
    for ts in (
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        RLELossless,
        JPEGLSLossless,
        DeflatedExplicitVRLittleEndian,
        "1.2.840.10008.1.2.4.57",
    ):
        assert all(media.needs_transcode(p, ts) for p in (cd, jpeg, j2k))
    assert cd.medium == "CD" and cd.capacity == 734_003_200
    assert jpeg.medium == j2k.medium == "DVD" and jpeg.capacity == 4_700_000_000


def test_file_ids_are_legal_and_deterministic(study_factory: Callable[..., Study]) -> None:
    """File IDs are PS3.10 legal, unique, and independent of the manifests' order."""
    studies = [
        manifest_of(study_factory(patient_id="P1").files),
        manifest_of(study_factory(patient_id="P2", ct=2, mr=0).files),
    ]
    ids = dicomdir.assign_file_ids(studies)
    assert len(ids) == len(set(ids.values())) == sum(len(m.instances) for m in studies)
    for components in ids.values():
        assert 1 <= len(components) <= 8 and components[0] == "DICOM"
        assert all(_COMPONENT.fullmatch(c) for c in components), components
    shuffled = [
        m.model_copy(update={"instances": tuple(random.sample(m.instances, len(m.instances)))})
        for m in reversed(studies)
    ]
    assert dicomdir.assign_file_ids(shuffled) == ids
    ct = sorted(
        (e for e in studies[0].instances if e.sop_class_uid == CT_IMAGE),
        key=lambda e: e.instance_number or 0,
    )
    assert [ids[e.sop_uid][-1] for e in ct] == ["00000001", "00000002", "00000003"]


def test_file_ids_refuse_to_overflow(
    monkeypatch: pytest.MonkeyPatch, study_factory: Callable[..., Study]
) -> None:
    """Beyond what 8 characters can number, assignment fails instead of colliding."""
    monkeypatch.setattr(dicomdir, "MAX_IMAGES", 2)
    with pytest.raises(media.FileSetError, match="instances of one series"):
        dicomdir.assign_file_ids([manifest_of(study_factory(ct=3, mr=0).files)])


@pytest.mark.parametrize("name", ["Doe^Jane", "Müller^Jürgen"])
def test_dicomdir_of_a_mixed_study_is_valid(
    study_factory: Callable[..., Study], tmp_path: Path, name: str
) -> None:
    """CT, MR, SR, KO, PR, SC and multi-frame get the right records; only non-images are read."""
    study = study_factory(patient_name=name)
    manifest = manifest_of(study.files)
    reader = HeaderReader()
    ids = dicomdir.assign_file_ids([manifest])
    final = {e.sop_uid: e.transfer_syntax for e in manifest.instances}
    for e in manifest.instances:
        dst = tmp_path.joinpath("fs", *ids[e.sop_uid])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(e.key, dst)
    data = dicomdir.build_dicomdir([manifest], ids, final, reader, "DICOMISO_TEST")
    (tmp_path / "fs" / "DICOMDIR").write_bytes(data)

    assert_valid_dicomdir(tmp_path / "fs" / "DICOMDIR")
    assert sorted(reader.calls) == sorted(
        i.sop_class_uid for i in study.instances if i.kind in ("sr", "ko", "pr")
    )
    ds = dcmread(io.BytesIO(data))
    types = [r.DirectoryRecordType for r in ds.DirectoryRecordSequence]
    assert types.count("PATIENT") == 1 and types.count("STUDY") == 1
    for kind in ("SR DOCUMENT", "KEY OBJECT DOC", "PRESENTATION"):
        assert types.count(kind) == 1
    assert types.count("IMAGE") == len(study.of_kind("ct") + study.of_kind("mr")) + 3
    patient = ds.DirectoryRecordSequence[0]
    assert patient.PatientName == name
    if not name.isascii():
        assert patient.SpecificCharacterSet == "ISO_IR 192"
    assert ds.FileSetID == "DICOMISO_TEST"


def test_two_studies_of_one_patient_share_one_patient_record(
    study_factory: Callable[..., Study], tmp_path: Path
) -> None:
    """One PATIENT record per Patient ID (PS3.11 H.3.3), holding both studies."""
    first = study_factory(patient_id="PID7", ct=2, mr=0, with_sc=False, with_multiframe=False)
    second = study_factory(patient_id="PID7", ct=1, mr=1, study_date="20240401")
    manifests = [manifest_of(second.files), manifest_of(first.files)]
    dicomdir, data = lay_out(manifests, tmp_path / "fs")

    assert_valid_dicomdir(dicomdir)
    ds = dcmread(io.BytesIO(data))
    types = [r.DirectoryRecordType for r in ds.DirectoryRecordSequence]
    assert types.count("PATIENT") == 1 and types.count("STUDY") == 2
    studies = [
        r.StudyInstanceUID for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "STUDY"
    ]
    assert studies == [first.study_uid, second.study_uid]  # by study date


def _dcmtk(tool: str, *args: str) -> Callable[[Path, Path], None]:
    def convert(src: Path, dst: Path) -> None:
        subprocess.run(
            [dcmtk_bin(tool), *args, str(src), str(dst)], check=True, capture_output=True
        )

    return convert


def _pydicom_j2k(src: Path, dst: Path) -> None:
    ds = dcmread(src)
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    ds.save_as(dst, enforce_file_format=True)


CONVERTERS = {
    "jpeg-lossless": (_dcmtk("dcmcjpeg"), JPEGLosslessSV1),
    "jpeg-ls": (_dcmtk("dcmcjpls"), JPEGLSLossless),
    "rle": (_dcmtk("dcmcrle"), RLELossless),
    "big-endian": (_dcmtk("dcmconv", "+tb"), ExplicitVRBigEndian),
    "implicit": (_dcmtk("dcmconv", "+ti"), ImplicitVRLittleEndian),
    "deflated": (_dcmtk("dcmconv", "+td"), DeflatedExplicitVRLittleEndian),
    "j2k-lossless": (_pydicom_j2k, JPEG2000Lossless),
}


@pytest.mark.parametrize("how", sorted(CONVERTERS))
def test_transcode_restores_the_original_pixels(
    study_factory: Callable[..., Study], tmp_path: Path, how: str
) -> None:
    """Every syntax comes back as Explicit VR LE with the same pixels and SOP Instance UID."""
    convert, syntax = CONVERTERS[how]
    study = study_factory(
        ct=1, mr=0, with_sr=False, with_ko=False, with_pr=False, with_nonascii=False
    )
    for inst in [*study.of_kind("ct"), *study.of_kind("sc"), *study.of_kind("mf")]:
        encoded, out = tmp_path / f"{inst.kind}.enc", io.BytesIO()
        convert(inst.path, encoded)
        assert dcmread(encoded).file_meta.TransferSyntaxUID == syntax
        with encoded.open("rb") as src:
            assert media.transcode(src, out) == ELE
        out.seek(0)
        result, original = dcmread(out), dcmread(inst.path)
        assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert result.file_meta.ImplementationClassUID == media.IMPLEMENTATION_CLASS_UID
        assert (
            result.SOPInstanceUID
            == result.file_meta.MediaStorageSOPInstanceUID
            == inst.sop_instance_uid
        )
        assert np.array_equal(result.pixel_array, original.pixel_array)
        assert "LossyImageCompression" not in result


def test_transcode_of_lossy_jpeg_flags_it(
    study_factory: Callable[..., Study], tmp_path: Path
) -> None:
    """A baseline JPEG is decoded to what a viewer shows and marked lossy (PS3.3 C.7.6.1.1.5)."""
    study = study_factory(ct=1, mr=0, with_sr=False, with_ko=False, with_pr=False)
    sc = study.of_kind("sc")[0]
    _dcmtk("dcmcjpeg", "+eb")(sc.path, tmp_path / "lossy.dcm")
    out = io.BytesIO()
    with (tmp_path / "lossy.dcm").open("rb") as src:
        media.transcode(src, out)
    out.seek(0)
    result = dcmread(out)
    assert result.LossyImageCompression == "01"
    assert result.LossyImageCompressionMethod == "ISO_10918_1"
    assert np.array_equal(result.pixel_array, dcmread(tmp_path / "lossy.dcm").pixel_array)


def test_transcode_errors_name_the_instance_not_the_patient(
    study_factory: Callable[..., Study], tmp_path: Path
) -> None:
    """Undecodable input raises TranscodeError naming the SOP Instance UID only."""
    study = study_factory(
        patient_name="Secret^Sam", ct=1, mr=0, with_sr=False, with_ko=False, with_pr=False
    )
    ct = study.of_kind("ct")[0]
    _dcmtk("dcmcjpeg")(ct.path, tmp_path / "ok.dcm")
    ds = dcmread(tmp_path / "ok.dcm")
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3 not a JPEG stream \xff\xd9"])
    ds.save_as(tmp_path / "bad.dcm")
    with (tmp_path / "bad.dcm").open("rb") as src, pytest.raises(media.TranscodeError) as err:
        media.transcode(src, io.BytesIO())
    assert ct.sop_instance_uid in str(err.value) and "Secret" not in str(err.value)
    with pytest.raises(media.TranscodeError, match="unknown SOP instance"):
        media.transcode(io.BytesIO(b"not dicom at all" * 20), io.BytesIO())


def test_cd_file_set_of_transcoded_files_passes_dcmmkdir(
    study_factory: Callable[..., Study], tmp_path: Path
) -> None:
    """JPEG lossless sources, transcoded for STD-GEN-CD, satisfy dcmmkdir -Pgp and dciodvfy."""
    study = study_factory(ct=2, mr=1, with_nonascii=False)
    sources = tmp_path / "jpeg"
    sources.mkdir()
    for inst in study.instances:  # images to JPEG lossless; SR/KO/PR stay uncompressed
        dst = sources / inst.path.name
        if inst.kind in ("sr", "ko", "pr"):
            _dcmtk("dcmconv", "+ti")(inst.path, dst)
        else:
            _dcmtk("dcmcjpeg")(inst.path, dst)
    manifest = manifest_of(sorted(sources.iterdir()))
    cd = media.PROFILES["STD-GEN-CD"]
    assert all(media.needs_transcode(cd, e.transfer_syntax) for e in manifest.instances)

    def transcode(src: Path, dst: Path) -> str:
        with src.open("rb") as fin, dst.open("wb") as fout:
            return media.transcode(fin, fout)

    dicomdir, data = lay_out([manifest], tmp_path / "fs", transcode)
    assert_valid_dicomdir(dicomdir)
    records = dcmread(io.BytesIO(data)).DirectoryRecordSequence
    assert {r.ReferencedTransferSyntaxUIDInFile for r in records if "ReferencedFileID" in r} == {
        ELE
    }
    check = subprocess.run(
        [
            dcmtk_bin("dcmmkdir"),
            "-Pgp",
            "+r",
            "+id",
            str(tmp_path / "fs"),
            "+D",
            str(tmp_path / "DCMTKDIR"),
            "DICOM",
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert len(dcmread(tmp_path / "DCMTKDIR").DirectoryRecordSequence) == len(records)


def test_dicomdir_for_2000_instances_reads_no_header(tmp_path: Path) -> None:
    """A 2,000-instance DICOMDIR of images is built from the manifest alone (no header read
    from the bucket), every record in disc order. Its speed is measured in bench/, not here."""
    study_uid = generate_uid()
    series = {
        generate_uid(): {"modality": "CT", "number": n, "description": None} for n in range(1, 5)
    }
    instances: list[dict[str, Any]] = [
        {
            "key": "",
            "size": 1,
            "sha256": "",
            "transfer_syntax": ELE,
            "sop_class_uid": CT_IMAGE,
            "sop_uid": generate_uid(),
            "series_uid": uid,
            "instance_number": i,
            "rows": 512,
            "columns": 512,
            "frames": None,
        }
        for uid in series
        for i in range(1, 501)
    ]
    manifest = StudyManifest.model_validate(
        {
            "study_uid": study_uid,
            "instance_count": len(instances),
            "total_bytes": len(instances),
            "retrieved_at": "2024-01-01T12:00:00Z",
            "job_id": "job-1",
            "method": "test",
            "charset": ["ISO_IR 192"],
            "series": series,
            "patient": {"id": "PID1", "name": "Nuñez^José", "birth_date": None, "sex": None},
            "study": {
                "study_uid": study_uid,
                "date": "20240101",
                "time": "1200",
                "id": None,
                "description": None,
                "accession_number": "A1",
            },
            "instances": instances,
        }
    )

    def no_reads(entry: InstanceEntry) -> Dataset:
        raise AssertionError("no header needed for images")

    ids = dicomdir.assign_file_ids([manifest])
    data = dicomdir.build_dicomdir(
        [manifest], ids, {e["sop_uid"]: ELE for e in instances}, no_reads, "BIG"
    )
    leaves = walk(dcmread(io.BytesIO(data)))
    assert [r.ReferencedSOPInstanceUIDInFile for r in leaves] == [e["sop_uid"] for e in instances]
    assert list(leaves[-1].ReferencedFileID)[-2:] == ["SER00004", "00000500"]

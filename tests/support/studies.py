"""Synthetic DICOM studies for tests and benchmarks.

The retriever has to cope with what real PACS hold, so the generator builds a
realistic mixed study (CT, MR, SR, KO, PR, RGB secondary capture, a
multi-frame object and a UTF-8 encoded instance) rather than a pile of
identical slices. Every object is written as a Part 10 file in Explicit VR
Little Endian and passes ``dciodvfy`` without errors.

Patient name variants: Orthanc 1.10.1 keys patients by PatientID only. When
instances of one PatientID carry different PatientName values it neither
rejects nor rewrites them: each stored file keeps its own bytes and the patient
level simply shows the name of the first instance received. So the default
study carries one instance whose PatientName is an accented variant of the
name on the others (as happens when a workstation with a different character
set re-encodes the name). Passing a non-ASCII ``patient_name`` instead makes
every file carry that name under ``ISO_IR 192``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
GRAYSCALE_SOFTCOPY_PS = "1.2.840.10008.5.1.4.1.1.11.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
UTF8 = "ISO_IR 192"
_ACCENTS = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú", "n": "ñ"}


@dataclasses.dataclass(frozen=True)
class Instance:
    """One generated file and the identifiers tests usually assert on."""

    path: Path
    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str


@dataclasses.dataclass
class Study:
    """A generated study; ``files`` and ``sop_uids`` are in the same order."""

    study_uid: str
    accession: str
    patient_id: str
    patient_name: str
    instances: list[Instance] = dataclasses.field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Paths of all files, in generation order."""
        return [i.path for i in self.instances]

    @property
    def sop_uids(self) -> list[str]:
        """SOPInstanceUIDs, same order as :attr:`files`."""
        return [i.sop_instance_uid for i in self.instances]

    @property
    def series_uids(self) -> list[str]:
        """Distinct SeriesInstanceUIDs in order of first appearance."""
        return list(dict.fromkeys(i.series_uid for i in self.instances))

    @property
    def sop_classes(self) -> dict[str, str]:
        """Map SOPInstanceUID -> SOPClassUID."""
        return {i.sop_instance_uid: i.sop_class_uid for i in self.instances}

    def of_kind(self, kind: str) -> list[Instance]:
        """Instances of one kind ("ct", "mr", "sr", "ko", "pr", "sc", "nonascii", "mf")."""
        return [i for i in self.instances if i.kind == kind]


@dataclasses.dataclass
class _Ctx:
    """Study-wide state shared by the per-object builders."""

    study: Study
    out_dir: Path
    date: str
    time: str
    rng: np.random.Generator
    all_utf8: bool
    next_series: int = 1

    def new_series(self) -> tuple[str, int]:
        number = self.next_series
        self.next_series += 1
        return generate_uid(), number


def _item(**elements: Any) -> Dataset:
    """A sequence item from keyword=value pairs; keeps the IOD builders compact."""
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> DicomSequence:
    """A one-item code sequence."""
    return DicomSequence(
        [_item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)]
    )


def _base(
    ctx: _Ctx,
    sop_class: str,
    series: tuple[str, int],
    modality: str,
    number: int,
    *,
    patient_name: str | None = None,
    series_description: str = "",
) -> Dataset:
    """Patient, study, series, equipment and SOP common attributes."""
    name = patient_name if patient_name is not None else ctx.study.patient_name
    ds = Dataset()
    if ctx.all_utf8 or not name.isascii() or not series_description.isascii():
        ds.SpecificCharacterSet = UTF8  # pydicom encodes PN/LO text with it on write
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = ctx.date, ctx.time
    ds.StudyDate = ds.ContentDate = ctx.date
    ds.StudyTime = ds.ContentTime = ctx.time
    ds.AccessionNumber, ds.Modality = ctx.study.accession, modality
    ds.Manufacturer, ds.InstitutionName = "dicom-iso synthetic", "Test Hospital"
    ds.ReferringPhysicianName, ds.StudyDescription = "Referrer^Rita", "Synthetic study"
    ds.SeriesDescription = series_description
    ds.PatientName, ds.PatientID = name, ctx.study.patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
    ds.StudyInstanceUID, ds.StudyID = ctx.study.study_uid, "1"
    ds.SeriesInstanceUID, ds.SeriesNumber = series
    ds.InstanceNumber = number
    if modality not in ("SR", "KO"):  # General Series module; SR/KO series lack it
        ds.BodyPartExamined = "CHEST"  # unpaired, so (2C) Laterality must be absent
    return ds


def _pixels(ds: Dataset, arr: np.ndarray, photometric: str, bits_stored: int) -> None:
    """Image Pixel module for an unsigned array shaped (frames?, rows, cols, samples?)."""
    samples = 3 if photometric == "RGB" else 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = arr.shape[-3:-1] if samples == 3 else arr.shape[-2:]
    ds.BitsAllocated, ds.BitsStored = arr.dtype.itemsize * 8, bits_stored
    ds.HighBit, ds.PixelRepresentation = bits_stored - 1, 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _write(ctx: _Ctx, ds: Dataset, kind: str) -> Instance:
    path = ctx.out_dir / f"{kind}_{ds.SeriesNumber:02d}_{ds.InstanceNumber:04d}.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    inst = Instance(path, kind, ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID)
    ctx.study.instances.append(inst)
    return inst


def _volume(ctx: _Ctx, count: int, rows: int, cols: int, max_value: int) -> np.ndarray:
    """A smooth phantom plus seeded noise, so images are not trivially compressible."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    disc = ((yy - rows / 2) ** 2 + (xx - cols / 2) ** 2) < (min(rows, cols) / 2.5) ** 2
    base = np.where(disc, max_value * 0.4, max_value * 0.05)
    noise = ctx.rng.integers(0, max_value // 20, size=(count, rows, cols))
    return (base[None, :, :] + noise).astype(np.uint16)


def _image_plane(ds: Dataset, index: int, spacing: float) -> None:
    """Image Plane plus the type 2 positioning attributes of an axial slice."""
    ds.PatientPosition, ds.PositionReferenceIndicator, ds.AcquisitionNumber = "HFS", "", 1
    ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], "2.5"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100, -100, round(-index * 2.5, 2)]
    ds.SliceLocation = round(-index * 2.5, 2)


def _ct_attributes(ds: Dataset, frame_of_reference: str) -> None:
    """CT Image module (12 bits in 16, Hounsfield rescale) and Frame of Reference."""
    ds.FrameOfReferenceUID = frame_of_reference
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = "120"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"


def _mr_attributes(ds: Dataset, frame_of_reference: str) -> None:
    """MR Image module (spin echo, 1.5 T) and Frame of Reference."""
    ds.FrameOfReferenceUID = frame_of_reference
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "500", "20", "1"
    ds.MagneticFieldStrength, ds.ImagedNucleus = "1.5", "1H"


def _slices(ctx: _Ctx, modality: str, count: int, rows: int, cols: int) -> list[Instance]:
    """One CT or MR series of ``count`` 12-bit slices."""
    sop_class, attributes, spacing, description = {
        "CT": (CT_IMAGE, _ct_attributes, 0.7, "Chest axial"),
        "MR": (MR_IMAGE, _mr_attributes, 0.9, "T1 SE axial"),
    }[modality]
    series, frame_of_reference = ctx.new_series(), generate_uid()
    volume = _volume(ctx, count, rows, cols, 4095)
    out = []
    for i in range(count):
        ds = _base(ctx, sop_class, series, modality, i + 1, series_description=description)
        attributes(ds, frame_of_reference)
        _image_plane(ds, i, spacing)
        _pixels(ds, volume[i], "MONOCHROME2", 12)
        out.append(_write(ctx, ds, modality.lower()))
    return out


def _sr_document(ds: Dataset) -> None:
    """SR Document Series / General modules shared by SR and KO."""
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"


def _evidence(ctx: _Ctx, refs: Sequence[Instance]) -> DicomSequence:
    """Hierarchical SOP Instance Reference macro for the given instances."""
    series = [
        _item(SeriesInstanceUID=uid, ReferencedSOPSequence=_sop_refs(refs, uid))
        for uid in dict.fromkeys(r.series_uid for r in refs)
    ]
    return DicomSequence(
        [
            _item(
                StudyInstanceUID=ctx.study.study_uid, ReferencedSeriesSequence=DicomSequence(series)
            )
        ]
    )


def _sop_refs(refs: Sequence[Instance], series_uid: str | None = None) -> DicomSequence:
    """Referenced SOP items for ``refs`` (optionally only those of one series)."""
    return DicomSequence(
        [
            _item(
                ReferencedSOPClassUID=r.sop_class_uid, ReferencedSOPInstanceUID=r.sop_instance_uid
            )
            for r in refs
            if series_uid in (None, r.series_uid)
        ]
    )


def _sr(ctx: _Ctx) -> Instance:
    ds = _base(ctx, BASIC_TEXT_SR, ctx.new_series(), "SR", 1, series_description="Report")
    _sr_document(ds)
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.ConceptNameCodeSequence = _code("11528-7", "LN", "Radiology Report")
    ds.ContentSequence = DicomSequence(
        [
            _item(
                RelationshipType="CONTAINS",
                ValueType="TEXT",
                ConceptNameCodeSequence=_code("121071", "DCM", "Finding"),
                TextValue="No acute abnormality. Synthetic report for testing.",
            )
        ]
    )
    return _write(ctx, ds, "sr")


def _ko(ctx: _Ctx, refs: Sequence[Instance]) -> Instance:
    ds = _base(ctx, KEY_OBJECT_SELECTION, ctx.new_series(), "KO", 1, series_description="Keys")
    _sr_document(ds)
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(ctx, refs)
    ds.ConceptNameCodeSequence = _code("113000", "DCM", "Of Interest")
    ds.ContentTemplateSequence = DicomSequence(
        [_item(MappingResource="DCMR", TemplateIdentifier="2010")]  # TID 2010 Key Object
    )
    ds.ContentSequence = DicomSequence(
        [
            _item(
                RelationshipType="CONTAINS", ValueType="IMAGE", ReferencedSOPSequence=_sop_refs([r])
            )
            for r in refs
        ]
    )
    return _write(ctx, ds, "ko")


def _pr(ctx: _Ctx, refs: Sequence[Instance], rows: int, cols: int) -> Instance:
    ds = _base(ctx, GRAYSCALE_SOFTCOPY_PS, ctx.new_series(), "PR", 1, series_description="GSPS")
    del ds.ContentDate, ds.ContentTime  # PR uses PresentationCreationDate/Time instead
    ds.ContentLabel, ds.ContentDescription = "WINDOW", "Soft tissue window"
    ds.ContentCreatorName = "Reader^Rob"
    ds.PresentationCreationDate, ds.PresentationCreationTime = ctx.date, ctx.time
    ds.ReferencedSeriesSequence = DicomSequence(
        [
            _item(
                SeriesInstanceUID=refs[0].series_uid,
                ReferencedImageSequence=_sop_refs(refs, refs[0].series_uid),
            )
        ]
    )
    ds.DisplayedAreaSelectionSequence = DicomSequence(
        [
            _item(
                DisplayedAreaTopLeftHandCorner=[1, 1],
                DisplayedAreaBottomRightHandCorner=[cols, rows],
                PresentationSizeMode="SCALE TO FIT",
                PresentationPixelAspectRatio=[1, 1],
            )
        ]
    )
    if refs[0].sop_class_uid == CT_IMAGE:  # Modality LUT is required iff the images rescale
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.SoftcopyVOILUTSequence = DicomSequence([_item(WindowCenter="40", WindowWidth="400")])
    ds.PresentationLUTShape = "IDENTITY"
    return _write(ctx, ds, "pr")


def _secondary_capture(ds: Dataset) -> None:
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED", "SECONDARY"]


def _sc_rgb(ctx: _Ctx, rows: int, cols: int) -> Instance:
    ds = _base(ctx, SECONDARY_CAPTURE, ctx.new_series(), "OT", 1, series_description="Snapshot")
    _secondary_capture(ds)
    rgb = ctx.rng.integers(0, 256, size=(rows, cols, 3), dtype=np.uint8)
    _pixels(ds, rgb, "RGB", 8)
    return _write(ctx, ds, "sc")


def _sc_nonascii(ctx: _Ctx, rows: int, cols: int) -> Instance:
    name = ctx.study.patient_name
    accentable = [i for i, c in enumerate(name) if c in _ACCENTS]
    if name.isascii() and accentable:  # accent one letter, as a re-encoding system might
        i = accentable[0]
        name = name[:i] + _ACCENTS[name[i]] + name[i + 1 :]
    ds = _base(
        ctx,
        SECONDARY_CAPTURE,
        ctx.new_series(),
        "OT",
        1,
        patient_name=name,
        series_description="Résumé externe – scanné",
    )  # non-ASCII => ISO_IR 192
    _secondary_capture(ds)
    _pixels(ds, ctx.rng.integers(0, 256, size=(rows, cols), dtype=np.uint8), "MONOCHROME2", 8)
    return _write(ctx, ds, "nonascii")


def _multiframe(ctx: _Ctx, rows: int, cols: int, frames: int = 4) -> Instance:
    ds = _base(
        ctx, MULTIFRAME_GRAYSCALE_WORD_SC, ctx.new_series(), "OT", 1, series_description="Cine"
    )
    _secondary_capture(ds)
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00182001  # PageNumberVector
    ds.PageNumberVector = list(range(1, frames + 1))
    ds.BurnedInAnnotation = "NO"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PresentationLUTShape = "IDENTITY"
    _pixels(ds, _volume(ctx, frames, rows, cols, 4095), "MONOCHROME2", 12)
    return _write(ctx, ds, "mf")


def make_study(
    out_dir: Path,
    accession: str = "ACC001",
    patient_id: str = "PID001",
    patient_name: str = "Doe^Jane",
    *,
    ct: int = 3,
    mr: int = 2,
    with_sr: bool = True,
    with_ko: bool = True,
    with_pr: bool = True,
    with_sc: bool = True,
    with_nonascii: bool = True,
    with_multiframe: bool = True,
    rows: int = 64,
    cols: int = 64,
    study_uid: str | None = None,
    seed: int = 0,
    study_date: str = "20240315",
) -> Study:
    """Write a realistic multi-series study into ``out_dir``.

    Args:
        out_dir: Directory to write into (created if missing).
        accession: AccessionNumber shared by every instance.
        patient_id: PatientID shared by every instance.
        patient_name: PatientName; if non-ASCII, every file uses ISO_IR 192.
        ct: Number of CT slices (one series).
        mr: Number of MR slices (one series).
        with_sr: Add a Basic Text SR.
        with_ko: Add a Key Object Selection referencing the first CT/MR images.
        with_pr: Add a Grayscale Softcopy Presentation State on those images.
        with_sc: Add an RGB 8-bit Secondary Capture.
        with_nonascii: Add a UTF-8 instance carrying an accented name variant.
        with_multiframe: Add a 4-frame Multi-frame Grayscale Word SC.
        rows: Image rows.
        cols: Image columns.
        study_uid: StudyInstanceUID to use; a fresh one by default.
        seed: Seed of the pixel data generator (UIDs are always fresh).
        study_date: StudyDate (DA) used for all date attributes.

    Returns:
        The generated :class:`Study`.

    Raises:
        ValueError: If a KO/PR is requested but there are no images to reference.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    study = Study(study_uid or generate_uid(), accession, patient_id, patient_name)
    ctx = _Ctx(
        study,
        out_dir,
        study_date,
        "101500",
        np.random.default_rng(seed),
        all_utf8=not patient_name.isascii(),
    )
    images = _slices(ctx, "CT", ct, rows, cols) + _slices(ctx, "MR", mr, rows, cols)
    if (with_ko or with_pr) and not images:
        raise ValueError("KO/PR need at least one CT or MR image to reference")
    if with_sr:
        _sr(ctx)
    if with_ko:
        _ko(ctx, images[:2])
    if with_pr:
        _pr(ctx, images[:2], rows, cols)
    if with_sc:
        _sc_rgb(ctx, rows, cols)
    if with_nonascii:
        _sc_nonascii(ctx, rows, cols)
    if with_multiframe:
        _multiframe(ctx, rows, cols)
    return study


def make_ct_series(
    out_dir: Path,
    n: int,
    rows: int = 512,
    cols: int = 512,
    accession: str = "BENCH001",
    patient_id: str = "BENCHPID",
    patient_name: str = "Bench^Ct",
    *,
    study_uid: str | None = None,
    seed: int = 0,
) -> Study:
    """Write one CT series of ``n`` 16-bit slices quickly, for benchmarks.

    One template dataset is reused and only per-slice attributes change; the
    pixel data is a seeded base image shifted by the slice index, so no large
    random volume is ever held in memory.

    Returns:
        The generated :class:`Study` (kind "ct" for every instance).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    study = Study(study_uid or generate_uid(), accession, patient_id, patient_name)
    ctx = _Ctx(study, out_dir, "20240315", "101500", np.random.default_rng(seed), False)
    ds = _base(ctx, CT_IMAGE, ctx.new_series(), "CT", 1, series_description="Bench axial")
    _ct_attributes(ds, generate_uid())
    base = _volume(ctx, 1, rows, cols, 4000)[0]
    _pixels(ds, base, "MONOCHROME2", 12)
    for i in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        _image_plane(ds, i, 0.7)
        ds.PixelData = ((base + (i % 64)) & 0x0FFF).astype("<u2").tobytes()
        _write(ctx, ds, "ct")
    return study


def many_classes(
    out: Path,
    n: int,
    classes: int | Sequence[str],
    series: int = 1,
    accession: str = "MANY1",
) -> list[Path]:
    """One study of n header-only instances over many distinct SOP classes.

    `classes`: a count of private SOP classes, or the class UIDs to use. Instance i has
    class i % len(classes) and goes to series (i % len(classes)) % series: each series holds
    its own share of the classes (no class in two series). For the 128-presentation-context
    limit (PS3.8 9.3.2.2) of C-STORE and C-GET.
    """
    uids = (
        [f"1.2.826.0.1.3680043.8.498.77.{k + 1}" for k in range(classes)]
        if isinstance(classes, int)
        else list(classes)
    )
    out.mkdir()
    study, series_uids = generate_uid(), [generate_uid() for _ in range(series)]
    files = []
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID = uids[i % len(uids)]
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uids[i % len(uids) % series]
        ds.PatientID, ds.PatientName, ds.Modality = "MANY1", "Many^Classes", "OT"
        ds.AccessionNumber, ds.InstanceNumber = accession, i + 1
        ds.SeriesNumber = i % len(uids) % series + 1
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files

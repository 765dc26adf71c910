"""Synthetic demo studies for the local stack: the accession numbers of the HIS seed rows.

Every value is made up. The Patient IDs equal the seed's MEDRECIDs (services/lookup/seed.sql),
so the packager's checks (one patient per disc, one Patient ID in the PACS) hold for them.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

CT_IMAGE = CTImageStorage
MR_IMAGE = MRImageStorage
SECONDARY_CAPTURE = SecondaryCaptureImageStorage


@dataclass(frozen=True)
class DemoStudy:
    accession: str
    patient_id: str
    patient_name: str
    modality: str
    images: int
    description: str
    date: str


DEMO_STUDIES = (
    DemoStudy("MR.001", "RM000001", "Santoso^Budi", "MR", 4, "MR knee left", "20260310"),
    DemoStudy("CT.002", "RM000001", "Santoso^Budi", "CT", 6, "CT thorax", "20260402"),
    DemoStudy("ACC001", "RM000001", "Santoso^Budi", "CT", 3, "CT head", "20251120"),
    DemoStudy("CT.100", "RM000002", "Nurhaliza^Siti", "CT", 4, "CT abdomen", "20260115"),
    DemoStudy("US.200", "RM000003", "O'Brien^Mary Ann", "OT", 2, "Ultrasound capture", "20260201"),
    DemoStudy("MR.300", "RM000004", "Anggraini^Dewi", "MR", 3, "MR brain", "20260220"),
    DemoStudy("CR.400", "RM000005", "Nuñez^José", "OT", 2, "Chest capture", "20260228"),
    DemoStudy("DX.500", "RM000106", "Wijaya^Agus", "OT", 2, "Hand capture", "20260303"),
    DemoStudy("CT.600", "RM000107", "Kusuma^Rina", "CT", 3, "CT sinus", "20260305"),
    DemoStudy("MR.700", "RM000108", "Gunawan^Hendra", "MR", 3, "MR spine", "20260307"),
    DemoStudy("CT.800", "RM000109", "Lestari^Putri", "CT", 2, "CT wrist", "20260309"),
    DemoStudy("MR.900", "RM000110", "Habibi^Yusuf", "MR", 2, "MR shoulder", "20260311"),
)
_SOP_CLASS = {"CT": CT_IMAGE, "MR": MR_IMAGE, "OT": SECONDARY_CAPTURE}


def _pixels(size: int, seed: int) -> bytes:
    """A 16-bit gradient with a disc in the middle, different per image."""
    centre, radius = size / 2, size / 3
    values = array(
        "H",
        (
            (x * 8 + y * 4 + seed * 97) % 2048
            + (1500 if (x - centre) ** 2 + (y - centre) ** 2 < radius**2 else 0)
            for y in range(size)
            for x in range(size)
        ),
    )
    return values.tobytes()


def _instance(study: DemoStudy, study_uid: str, series_uid: str, index: int, size: int) -> Dataset:
    sop_class = UID(_SOP_CLASS[study.modality])
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if any(ord(c) > 127 for c in study.patient_name):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientBirthDate, ds.PatientSex = "19800101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID = study.date, "101500", study.accession[-3:]
    ds.AccessionNumber, ds.StudyDescription = study.accession, study.description
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = study.modality, 1, index + 1
    ds.SeriesDescription = study.description
    ds.Manufacturer = "dicom-iso demo"
    if study.modality == "OT":
        ds.ConversionType = "WSD"
    else:
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid])
        ds.ImagePositionPatient = [0, 0, index * 5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 5
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    if study.modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = -1024, 1, 120
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = _pixels(size, index)
    return ds


def demo_files(size: int = 128) -> Iterator[tuple[DemoStudy, bytes]]:
    """Every demo instance as Part 10 bytes, study by study (UIDs fixed per accession)."""
    for study in DEMO_STUDIES:
        study_uid = generate_uid(entropy_srcs=["dicom-iso demo", study.accession])
        series_uid = generate_uid(entropy_srcs=["dicom-iso demo series", study.accession])
        for index in range(study.images):
            ds = _instance(study, study_uid, series_uid, index, size)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
                entropy_srcs=[study.accession, str(index)]
            )
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            yield study, buf.getvalue()

"""DICOM media rules: application profiles and transcoding (PS3.11, PS3.5).

Which transfer syntaxes a profile keeps byte-exact, and the lossless re-encoding of the rest
to Explicit VR Little Endian. The file-set itself (file IDs, DICOMDIR) is in dicomdir.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import pydicom
from pydicom import uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomiso_common.errors import DicomisoError

log = logging.getLogger(__name__)

# Our implementation class UID (PS3.7 D.3.3.2): 2.25 + uuid5(URL, "urn:dicom-iso:packager").
IMPLEMENTATION_CLASS_UID = UID("2.25.287755771680465195349204608587098242331")
IMPLEMENTATION_VERSION = "DICOMISO_1"
MEDIA_STORAGE_DIRECTORY = uids.MediaStorageDirectoryStorage
UTF8 = "ISO_IR 192"


class TranscodeError(DicomisoError):
    """An instance could not be decoded, so it cannot go on a profile that needs it native."""

    status = 502
    title = "Cannot transcode instance"


class FileSetError(DicomisoError):
    """The instances cannot be laid out or indexed as one DICOM file-set."""

    status = 422
    title = "Cannot build file-set"


@dataclass(frozen=True)
class Profile:
    """A PS3.11 media application profile: the medium and the syntaxes kept byte-exact."""

    name: str
    medium: str  # "CD" | "DVD" | "BD" | "USB"
    capacity: int  # bytes of user data we allow on the medium
    syntaxes: frozenset[str] = field(default_factory=frozenset)


# CD: "700 MB" read as 700 MiB = 734,003,200 bytes, below the 736,966,656 bytes of user data
# (359,847 sectors of 2048) of an 80-minute CD-R, leaving room for ISO 9660 overhead.
# DVD: 4.7 GB decimal; single layer DVD+R holds 4,700,372,992 bytes, DVD-R 4,707,319,808.
# BD: single layer BD-R, 25 GB decimal (12,219,392 sectors of 2048 hold 25,025,314,816).
# USB: PS3.12 names no size; 30,000,000,000 bytes is what a stick sold as "32 GB" keeps free
# after formatting, so one image fits the smallest common stick.
CD_CAPACITY = 700 * 1024 * 1024
DVD_CAPACITY = 4_700_000_000
BD_CAPACITY = 25_000_000_000
USB_CAPACITY = 30_000_000_000
_JPEG = frozenset({uids.JPEGLosslessSV1, uids.JPEGBaseline8Bit, uids.JPEGExtended12Bit})
_J2K = frozenset({uids.JPEG2000Lossless, uids.JPEG2000})
PROFILES: dict[str, Profile] = {
    # PS3.11 Annex D, Table D.3-1: Explicit VR Little Endian uncompressed only.
    "STD-GEN-CD": Profile("STD-GEN-CD", "CD", CD_CAPACITY, frozenset({ExplicitVRLittleEndian})),
    # PS3.11 Annex H, Table H.3-1: Explicit VR LE plus, for -JPEG, JPEG Lossless SV1 (.70),
    # Baseline (.50) and Extended (.51); for -J2K, JPEG 2000 lossless (.90) and lossy (.91).
    "STD-GEN-DVD-JPEG": Profile(
        "STD-GEN-DVD-JPEG", "DVD", DVD_CAPACITY, frozenset({ExplicitVRLittleEndian}) | _JPEG
    ),
    "STD-GEN-DVD-J2K": Profile(
        "STD-GEN-DVD-J2K", "DVD", DVD_CAPACITY, frozenset({ExplicitVRLittleEndian}) | _J2K
    ),
    # PS3.11 Annex M, Table M.3-1 (General Purpose BD With Compression): the same syntaxes as
    # the DVD profiles for -JPEG / -J2K (the MPEG2 / MPEG-4 video profiles are not offered).
    "STD-GEN-BD-JPEG": Profile(
        "STD-GEN-BD-JPEG", "BD", BD_CAPACITY, frozenset({ExplicitVRLittleEndian}) | _JPEG
    ),
    "STD-GEN-BD-J2K": Profile(
        "STD-GEN-BD-J2K", "BD", BD_CAPACITY, frozenset({ExplicitVRLittleEndian}) | _J2K
    ),
    # PS3.11 Annex J, Table J.3-1 (General Purpose USB and Flash Memory With Compression).
    "STD-GEN-USB-JPEG": Profile(
        "STD-GEN-USB-JPEG", "USB", USB_CAPACITY, frozenset({ExplicitVRLittleEndian}) | _JPEG
    ),
    "STD-GEN-USB-J2K": Profile(
        "STD-GEN-USB-J2K", "USB", USB_CAPACITY, frozenset({ExplicitVRLittleEndian}) | _J2K
    ),
}
# The next larger medium with the same syntaxes: what a refusal names when a series does
# not fit on one medium (a series is never split over two).
LARGER = {
    "STD-GEN-CD": "STD-GEN-DVD-JPEG",
    "STD-GEN-DVD-JPEG": "STD-GEN-BD-JPEG",
    "STD-GEN-DVD-J2K": "STD-GEN-BD-J2K",
    "STD-GEN-BD-JPEG": "STD-GEN-USB-JPEG",
    "STD-GEN-BD-J2K": "STD-GEN-USB-J2K",
}
DEFAULT_PROFILE = "STD-GEN-DVD-JPEG"

# Syntaxes whose decoded pixels differ from the original ones (PS3.5 Table A-1 and 8.2).
_LOSSY_METHOD = {
    uids.JPEGBaseline8Bit: "ISO_10918_1",
    uids.JPEGExtended12Bit: "ISO_10918_1",
    uids.JPEGLSNearLossless: "ISO_14495_1",
    uids.JPEG2000: "ISO_15444_1",
    uids.HTJ2K: "ISO_15444_15",
}


def needs_transcode(profile: Profile, transfer_syntax: str) -> bool:
    """Return True if an instance in ``transfer_syntax`` may not go on ``profile`` as it is."""
    return transfer_syntax not in profile.syntaxes


def _decoded(ds: Dataset, sop_uid: str) -> None:
    """Replace compressed or big endian pixel data by native little endian pixels, in place."""
    ts = ds.file_meta.TransferSyntaxUID
    if "PixelData" not in ds:
        return
    lossy = ts in _LOSSY_METHOD
    if ts.is_compressed:
        ds.decompress(generate_instance_uid=False)
    elif not ts.is_little_endian:
        # Native big endian OW pixel data is swapped per word (PS3.5 7.3); OB is bytes.
        elem, size = ds["PixelData"], int(ds.BitsAllocated)
        if elem.VR == "OW" or size > 8:
            width = max(size // 8, 2)
            elem.value = np.frombuffer(elem.value, f">u{width}").astype(f"<u{width}").tobytes()
    if lossy or ds.get("LossyImageCompression") == "01":
        # PS3.3 C.7.6.1.1.5: once lossy, always flagged as lossy, with the method used.
        ds.LossyImageCompression = "01"
        if lossy and "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = _LOSSY_METHOD[ts]
    log.debug("decoded pixel data", extra={"sop_uid": sop_uid, "source_syntax": str(ts)})


def transcode(src: IO[bytes], dst: IO[bytes]) -> str:
    """Rewrite one Part 10 file as Explicit VR Little Endian, uncompressed; return that syntax.

    Pixels are decoded losslessly with respect to what the source holds; a lossy source keeps
    Lossy Image Compression "01". The file meta is rebuilt with our implementation UID and the
    same SOP Instance UID. Objects without pixel data are simply re-encoded.

    Raises:
        TranscodeError: The file is not DICOM or its pixel data cannot be decoded.
    """
    sop_uid = "unknown SOP instance"
    try:
        ds = pydicom.dcmread(src)
        sop_uid = str(ds.SOPInstanceUID)
        _decoded(ds, sop_uid)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        ds.file_meta = meta
        dcmwrite(dst, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    except (
        InvalidDicomError,
        AttributeError,
        ValueError,
        TypeError,
        KeyError,
        NotImplementedError,
        RuntimeError,
        EOFError,
        OSError,
    ) as exc:
        raise TranscodeError(
            f"{sop_uid}: cannot transcode to Explicit VR Little Endian ({type(exc).__name__})"
        ) from exc
    return str(ExplicitVRLittleEndian)

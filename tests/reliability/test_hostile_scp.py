"""Hostile C-STOREs to the retriever's Storage SCP (pynetdicom as the SCU): each gets a failure
status (0xA900 / 0xC000 / 0xA700) and nothing reaches the bucket.

What tests/retriever/test_scp.py covers already is not repeated (a study nobody asked for,
truncated pixel data, an illegal Series UID, the size limit, the default calling-AE rule, `*`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, build_context

from support.stored import stored_keys, stored_sops

FAILURES = {0xA700, 0xA900, 0xC000}


@pytest.fixture
def study(study_factory: Any) -> Any:
    return study_factory(
        ct=1,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )


def _store(retriever: Any, items: list[Dataset | Path], calling: str = "ABPACS") -> list[int]:
    """C-STORE each data set or Part 10 file (sent as its bytes) to the SCP; the statuses."""
    ae = AE(ae_title=calling)
    # Explicit VR LE only: the raw files are in it, and pynetdicom sends a file as it is when
    # STORE_SEND_CHUNKED_DATASET is on (a process-wide flag the forwarder sets), so the
    # context must match the file whatever other tests ran before.
    ae.requested_contexts = [
        build_context(cx.abstract_syntax, [ExplicitVRLittleEndian])
        for cx in StoragePresentationContexts
        if cx.abstract_syntax is not None
    ]
    assoc = ae.associate(
        "127.0.0.1", retriever.settings.scp_port, ae_title=retriever.settings.scp_aet
    )
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(item).Status) for item in items]
    finally:
        assoc.release()
        retriever.app.state.scp.writer.flush_all(30)  # what was received is in the bucket


def _part10(path: Path, meta_from: Dataset, body: bytes) -> Path:
    """A Part 10 file whose file meta names meta_from's SOP class/instance, then raw bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_from.SOPClassUID
    meta.MediaStorageSOPInstanceUID = meta_from.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = DicomBytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    path.write_bytes(buf.getvalue() + body)
    return path


def _head(ds: Dataset) -> bytes:
    """SOP Class and SOP Instance UID elements (the SCU reads them before it sends)."""
    out = b""
    for elem, value in ((0x0016, ds.SOPClassUID), (0x0018, ds.SOPInstanceUID)):
        raw = str(value).encode() + (b"\0" if len(str(value)) % 2 else b"")
        out += struct.pack("<HH2sH", 0x0008, elem, b"UI", len(raw)) + raw
    return out


def _dataset_bytes(ds: Dataset) -> bytes:
    """The data set alone, Explicit VR Little Endian (what follows the file meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _first(study: Any) -> Dataset:
    return pydicom.dcmread(study.files[0])


def test_garbage_after_a_valid_file_meta_is_refused(
    retriever: Any, study: Any, tmp_path: Path
) -> None:
    """A Part 10 file whose data set is noise: 'cannot understand', nothing stored."""
    ds = _first(study)
    retriever.app.state.scp.leases.expect(study.study_uid)
    noise = bytes(range(256)) * 64
    path = _part10(tmp_path / "noise.dcm", ds, _head(ds) + noise)
    assert _store(retriever, [path])[0] in FAILURES
    assert stored_keys(retriever.store) == []


def test_a_uid_element_with_a_huge_declared_length_is_refused(
    retriever: Any, study: Any, tmp_path: Path
) -> None:
    """(0020,000D) Study UID as UN with a 2 GiB declared length and a few bytes behind it."""
    ds = _first(study)
    retriever.app.state.scp.leases.expect(study.study_uid)
    element = struct.pack("<HH2sHI", 0x0020, 0x000D, b"UN", 0, 0x7FFFFFF0) + b"1.2.3" * 20
    path = _part10(tmp_path / "huge-uid.dcm", ds, _head(ds) + element)
    assert _store(retriever, [path])[0] in FAILURES
    assert stored_keys(retriever.store) == []


def test_pixel_data_with_a_huge_declared_length_is_refused(
    retriever: Any, study: Any, tmp_path: Path
) -> None:
    """Native Pixel Data declaring 2 GiB with 1 KiB present (pydicom would defer the read)."""
    ds = _first(study)
    retriever.app.state.scp.leases.expect(study.study_uid)
    del ds.PixelData
    header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 0x7FFFFFF0)
    path = _part10(tmp_path / "huge-pixels.dcm", ds, _dataset_bytes(ds) + header + b"\0" * 1024)
    assert _store(retriever, [path])[0] in FAILURES
    assert stored_keys(retriever.store) == []


def test_an_instance_of_another_study_while_one_is_wanted_is_refused(
    retriever: Any, study: Any
) -> None:
    """A live job wants study A; an instance of study B on the same association is 0xA900."""
    retriever.app.state.scp.leases.expect(study.study_uid)
    other = _first(study)
    other.StudyInstanceUID = generate_uid()
    other.SOPInstanceUID = generate_uid()
    assert _store(retriever, [other, _first(study)]) == [0xA900, 0]
    assert stored_sops(retriever.store, study.study_uid) == {str(_first(study).SOPInstanceUID)}
    assert stored_sops(retriever.store, other.StudyInstanceUID) == set()


@pytest.mark.parametrize(
    "field,value",
    [
        ("SeriesInstanceUID", "1." + "2" * 63),  # 65 characters
        ("StudyInstanceUID", "1.2..3"),
        ("StudyInstanceUID", "1.2.3/../../4"),
        ("SeriesInstanceUID", "1.2.3\x004"),
    ],
)
def test_illegal_uids_are_refused(retriever: Any, study: Any, field: str, value: str) -> None:
    ds = _first(study)
    retriever.app.state.scp.leases.expect(study.study_uid)
    retriever.app.state.scp.leases.expect(value)  # even a "wanted" illegal study UID
    setattr(ds, field, value)
    assert _store(retriever, [ds])[0] in FAILURES
    assert stored_keys(retriever.store) == []


def test_only_the_configured_calling_aets_may_associate(make_retriever: Any, study: Any) -> None:
    """DICOMISO_SCP_CALLING_AETS=PACSA,PACSB: both may send; PACSC and the default PACS may not;
    the match is exact (no case folding, no prefix)."""
    retriever = make_retriever(scp_calling_aets=" PACSA , PACSB ")
    retriever.app.state.scp.leases.expect(study.study_uid)
    assert _store(retriever, [_first(study)], calling="PACSB") == [0]
    for calling in ("PACSC", "ABPACS", "pacsa", "PACS", "PACSA2"):
        ae = AE(ae_title=calling)
        ae.requested_contexts = StoragePresentationContexts
        assoc = ae.associate(
            "127.0.0.1", retriever.settings.scp_port, ae_title=retriever.settings.scp_aet
        )
        assert not assoc.is_established, calling
        if assoc.is_established:
            assoc.release()
    assert len(stored_sops(retriever.store, study.study_uid)) == 1

"""The Storage SCP accepts only what a live job asked for, and only whole, legal instances."""

from __future__ import annotations

import time
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts

from dicomiso_retriever.leases import lease_is_live, lease_key
from support.stored import stored_keys, stored_sops


def _send(retriever: Any, datasets: list[Dataset], calling: str = "ABPACS") -> list[int]:
    """C-STORE each data set to the retriever's SCP as the PACS would; return the statuses."""
    ae = AE(ae_title=calling)
    ae.requested_contexts = StoragePresentationContexts
    assoc = ae.associate(
        "127.0.0.1", retriever.settings.scp_port, ae_title=retriever.settings.scp_aet
    )
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()
        retriever.app.state.scp.writer.flush_all(30)  # what was received is in the bucket


@pytest.fixture
def study(study_factory: Any) -> Any:
    return study_factory(
        ct=2,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )


def _read(study: Any) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in study.files]


def test_instance_of_a_study_nobody_asked_for_is_refused(retriever: Any, study: Any) -> None:
    statuses = _send(retriever, _read(study))
    assert statuses == [0xA900, 0xA900]
    assert stored_keys(retriever.store) == []


def test_wanted_instance_is_stored_once_and_duplicates_are_acknowledged(
    retriever: Any, study: Any
) -> None:
    retriever.app.state.scp.leases.expect(study.study_uid)
    datasets = _read(study)
    assert _send(retriever, datasets + datasets[:1]) == [0, 0, 0]
    assert len(stored_sops(retriever.store, study.study_uid)) == 2


def test_live_lease_of_another_replica_makes_a_study_wanted(retriever: Any, study: Any) -> None:
    retriever.store.put_json(
        lease_key(study.study_uid), {"job_id": "f" * 32, "heartbeat_at": time.time()}
    )
    assert _send(retriever, _read(study)[:1]) == [0]


def test_stale_lease_does_not(retriever: Any, study: Any) -> None:
    """Stale by the bucket's clock: not rewritten for longer than job_stale_after."""
    retriever.store.put_json(
        lease_key(study.study_uid), {"job_id": "f" * 32, "heartbeat_at": time.time() - 600}
    )
    deadline = time.monotonic() + 15
    while lease_is_live(retriever.store, study.study_uid, retriever.settings.job_stale_after):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert _send(retriever, _read(study)[:1]) == [0xA900]


def test_truncated_native_pixel_data_is_refused(retriever: Any, study: Any) -> None:
    """pydicom would read such a file without complaint; the SCP must not store it."""
    retriever.app.state.scp.leases.expect(study.study_uid)
    ds = _read(study)[0]
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    assert _send(retriever, [ds]) == [0xA900]
    assert stored_keys(retriever.store) == []


def test_illegal_uid_is_refused(retriever: Any, study: Any) -> None:
    ds = _read(study)[0]
    ds.SeriesInstanceUID = "1.2.3/../4"
    retriever.app.state.scp.leases.expect(study.study_uid)
    assert _send(retriever, [ds]) == [0xA900]
    assert stored_keys(retriever.store) == []


def test_oversized_instance_gets_out_of_resources(make_retriever: Any, study: Any) -> None:
    retriever = make_retriever(scp_max_instance_bytes=1000)
    retriever.app.state.scp.leases.expect(study.study_uid)
    assert _send(retriever, _read(study)[:1]) == [0xA700]
    assert stored_keys(retriever.store) == []


def test_association_from_an_ae_other_than_the_pacs_is_rejected(retriever: Any, study: Any) -> None:
    """By default only the configured PACS may send (DICOMISO_SCP_CALLING_AETS)."""
    retriever.app.state.scp.leases.expect(study.study_uid)
    ae = AE(ae_title="INTRUDER")
    ae.requested_contexts = StoragePresentationContexts
    assoc = ae.associate(
        "127.0.0.1", retriever.settings.scp_port, ae_title=retriever.settings.scp_aet
    )
    assert not assoc.is_established
    assert stored_keys(retriever.store) == []


def test_any_calling_ae_when_configured(make_retriever: Any, study: Any) -> None:
    retriever = make_retriever(scp_calling_aets="*")
    retriever.app.state.scp.leases.expect(study.study_uid)
    assert _send(retriever, _read(study)[:1], calling="OTHERPACS") == [0]


def test_acknowledged_instance_that_cannot_reach_the_bucket_fails_the_study(
    make_retriever: Any, study: Any
) -> None:
    """C-STOREs are answered before the PUT; a PUT that fails must surface before any manifest."""
    from dicomiso_common.errors import StoreError

    retriever = make_retriever(s3_bucket_name="dicom-iso-no-such-bucket")
    scp = retriever.app.state.scp
    scp.leases.expect(study.study_uid)
    assert _send(retriever, _read(study)) == [0, 0]
    with pytest.raises(
        StoreError, match="1 of 1 segments of received instances could not be written"
    ):
        scp.take_descriptions(study.study_uid)


def test_pixel_data_running_past_the_end_of_the_file_is_refused(
    retriever: Any, study: Any, tmp_path: Any
) -> None:
    """The element header promises the whole image but the file ends early: the check reads
    the header only (the value stays unread), so it must compare with the file's size."""
    retriever.app.state.scp.leases.expect(study.study_uid)
    data = study.files[0].read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 1000])
    scp = retriever.app.state.scp
    status = scp.accept_file(cut, None, study_uid=study.study_uid)
    assert isinstance(status, Dataset) and status.Status == 0xA900
    assert "past the end" in str(status.ErrorComment)
    whole = tmp_path / "whole.dcm"
    whole.write_bytes(data)
    assert scp.accept_file(whole, None, study_uid=study.study_uid) == 0x0000

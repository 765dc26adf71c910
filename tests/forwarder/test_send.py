"""Sending details: status classification, re-encoding for a peer that takes Explicit VR LE only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE

from dicomiso_common.store import Store
from dicomiso_forwarder.send import Item, _classify, plan
from support.net import free_port

from .conftest import seed


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (0x0000, "acknowledged"),
        (0x0001, "warning"),
        (0x0107, "warning"),
        (0x0116, "warning"),
        (0xB000, "warning"),
        (0xB007, "warning"),
        (0xA900, "failed"),
        (0xC000, "failed"),
        (0x0122, "failed"),
    ],
)
def test_status_classification(code: int, status: str) -> None:
    """PS3.4 B.2.3 and PS3.7 C: warnings mean stored; 0xA7xx is retried (None)."""
    outcome = _classify(code)
    assert outcome is not None and outcome.status == status


def test_out_of_resources_is_transient() -> None:
    assert _classify(0xA700) is None and _classify(0xA7FF) is None


def test_plan_keeps_each_batch_within_128_contexts() -> None:
    items = [
        Item(f"k{i}", f"1.2.{i}", f"1.2.840.99.{i % 140}", "1.2.840.10008.1.2.4.70")
        for i in range(300)
    ]
    batches = plan(items)
    assert len(batches) >= 3 and sum(len(b) for b in batches) == 300
    for batch in batches:
        assert len({(i.sop_class, i.transfer_syntax) for i in batch}) * 2 <= 128


def test_implicit_vr_study_reaches_an_explicit_le_only_peer(
    make_forwarder: Any, study_factory: Any, store: Store, tmp_path: Path
) -> None:
    """Most PACS send Implicit VR; a peer that takes only Explicit VR LE still gets it all."""
    study = study_factory(
        ct=3,
        mr=1,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )
    implicit_dir = tmp_path / "implicit"
    implicit_dir.mkdir()
    files = []
    for path in study.files:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        target = implicit_dir / path.name
        ds.save_as(target, enforce_file_format=True)
        files.append(target)
    seed(store, files, study.accession)

    received: dict[str, str] = {}

    def on_store(event: evt.Event) -> int:
        request = event.request
        assert isinstance(request, C_STORE)
        received[str(request.AffectedSOPInstanceUID)] = str(event.context.transfer_syntax)
        return 0x0000

    scp_ae = AE(ae_title="EXPLONLY")
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            scp_ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian])
    port = free_port()
    server = scp_ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None  # block=False always returns the server
    try:
        forwarder = make_forwarder(
            {"explicit": {"aet": "EXPLONLY", "host": "127.0.0.1", "port": port}}
        )
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "explicit"})
    finally:
        server.shutdown()

    assert status["state"] == "succeeded", status
    assert set(received) == set(study.sop_uids)
    assert set(received.values()) == {ExplicitVRLittleEndian}
    assert status["counts"]["transcoded"] == len(files)

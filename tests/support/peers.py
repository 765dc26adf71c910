"""Peers the forwarder delivers to: Orthanc as a STOW-RS endpoint and as a Storage Commitment
SCP, and a commitment SCP that never reports (which no real server here can be made to be).

Facts about Orthanc 1.10.1 with Debian's DICOMweb plugin 1.7 this module relies on, each
proven by ``tests/forwarder/test_stow.py`` or ``tests/forwarder/test_commitment.py``:

* The plugin is loaded by path (``Plugins``); STOW-RS is ``POST {root}studies/{StudyUID}``
  with a chunked ``multipart/related; type="application/dicom"`` body.
* An instance of another study than the URL's is listed in the Failed SOP Sequence with
  Failure Reason 0x0110; the others of the request are stored and listed as referenced.
  The HTTP status is 200 when some were stored, 409 when none were (never 202).
* A part that is not a DICOM file is named in neither sequence.
* Storage Commitment (``AllowStorageCommitment`` on the modality): Orthanc answers the
  N-ACTION at once and sends the N-EVENT-REPORT later on a *new* association to the
  modality's registered host and port, from its own AE title; instances it does not hold
  are in the Failed SOP Sequence with Failure Reason 0x0112 (no such object instance).
* An instance its Lua ``ReceivedInstanceFilter`` drops is answered as stored all the same
  (C-STORE status 0x0000): only Storage Commitment shows that it is not there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt

# pynetdicom.sop_class generates its SOP class names at import: mypy cannot see them.
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from support.net import LOOPBACK, free_port
from support.orthanc import DICOMWEB_ROOT, Orthanc
from support.orthanc import dicomweb_config as orthanc_dicomweb_config

PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"  # PS3.4 J.3.1


def dicomweb_config(lua_scripts: list[Path] | None = None) -> dict[str, Any]:
    """``extra_config``: the DICOMweb plugin (`support.orthanc.dicomweb_config`) and Lua filters."""
    return {**orthanc_dicomweb_config(), "LuaScripts": [str(p) for p in lua_scripts or []]}


def dicomweb_url(orthanc: Orthanc) -> str:
    """The DICOMweb root of an Orthanc started with :func:`dicomweb_config`."""
    return orthanc.url + DICOMWEB_ROOT.rstrip("/")


def register_commitment_scu(orthanc: Orthanc, aet: str, port: int) -> None:
    """Make ``aet`` a modality that may C-STORE and ask for Storage Commitment; Orthanc sends
    its N-EVENT-REPORTs to ``port`` (our commitment SCP)."""
    orthanc.register_modality(aet, LOOPBACK, port)
    body = {
        "AET": aet,
        "Host": LOOPBACK,
        "Port": port,
        "AllowEcho": True,
        "AllowStore": True,
        "AllowStorageCommitment": True,
    }
    orthanc._modalities[aet] = body  # re-applied on restart, like register_modality
    orthanc._put_modality(body)


@dataclass
class SilentCommitmentScp:
    """A Storage SCP that accepts every C-STORE and every Storage Commitment N-ACTION
    (0x0000) and never sends the N-EVENT-REPORT, on the same association or another."""

    aet: str
    port: int
    stored: list[str] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)  # SOP Instance UIDs asked about


@contextmanager
def silent_commitment_scp(
    aet: str = "SILENTPACS", *, report_on_same_association: bool = False
) -> Iterator[SilentCommitmentScp]:
    """Run a :class:`SilentCommitmentScp` on a free loopback port; stopped on exit.

    With ``report_on_same_association`` it is not silent: right after answering the N-ACTION
    it sends the N-EVENT-REPORT (all committed) on the same association, as PS3.4 J.3.3
    allows and some archives do (Orthanc never does).
    """
    peer = SilentCommitmentScp(aet, free_port())
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            peer.stored.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def on_action(event: evt.Event) -> tuple[int, Dataset | None]:
        request = event.action_information
        with lock:
            peer.transactions.append(str(request.TransactionUID))
            peer.requested += [
                str(i.ReferencedSOPInstanceUID) for i in request.ReferencedSOPSequence
            ]
        if report_on_same_association:
            threading.Thread(target=_report, args=(event.assoc, request), daemon=True).start()
        return 0x0000, None

    def _report(assoc: Any, request: Dataset) -> None:
        info = Dataset()
        info.TransactionUID = request.TransactionUID
        info.ReferencedSOPSequence = request.ReferencedSOPSequence
        time.sleep(0.2)  # the N-ACTION response goes first (the handler has returned)
        assoc.send_n_event_report(info, 1, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE)

    ae = AE(ae_title=aet)
    ae.supported_contexts = StoragePresentationContexts
    ae.add_supported_context(StorageCommitmentPushModel)
    server = ae.start_server(
        (LOOPBACK, peer.port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_N_ACTION, on_action)],
    )
    assert server is not None  # block=False returns the server
    try:
        yield peer
    finally:
        server.shutdown()

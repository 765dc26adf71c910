"""Storage Commitment Push Model (PS3.4 Annex J) after the C-STOREs to a peer.

The forward job sends one N-ACTION (Action Type 1, "Request Storage Commitment", on the
well-known instance 1.2.840.10008.1.20.1.1, J.3.2) naming every instance the peer
acknowledged, under a new Transaction UID. The peer answers with an N-EVENT-REPORT (J.3.3):
Event Type 1 when all are committed, 2 when some failed (the Failed SOP Sequence with a
Failure Reason each). PS3.4 J.3.3 lets it come on the same association while that is open,
or later on a new association that the peer opens to us. So:

* the N-ACTION association waits for the report for a short while
  (`min(timeout, DICOMISO_DICOM_NETWORK_TIMEOUT / 2)`), then is released;
* our commitment SCP (`CommitmentScp`, AE `DICOMISO_CALLING_AET` on
  `DICOMISO_COMMITMENT_HOST`:`DICOMISO_COMMITMENT_PORT`) accepts a report on a new
  association, on any forwarder replica: the peer knows one address for our AE title.

Either way the report is written to the bucket (`forwards/commitments/{TransactionUID}/
report.json`) and the job, on whichever replica owns it, waits for that object until
`DICOMISO_COMMITMENT_TIMEOUT`. A report is accepted only for a transaction some job asked
for (`.../request.json`, written before the N-ACTION), so a stray or forged report never
lands. No report in time is a failure: every instance asked about is "not committed".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

# pynetdicom.sop_class generates its SOP class names at import: mypy cannot see them.
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomiso_common.dicom import CONNECTION_HANDLERS, is_valid_uid
from dicomiso_common.errors import DicomError, DicomisoError, ObjectMissing
from dicomiso_common.models import _Document
from dicomiso_common.pacs import PacsPeer, associate, make_ae
from dicomiso_common.store import Store

from .send import Item
from .settings import ForwarderSettings, Peer

log = logging.getLogger(__name__)

PUSH_MODEL = str(StorageCommitmentPushModel)
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"  # PS3.4 J.3.1, the well-known SOP instance
REQUEST_COMMITMENT = 1  # Action Type ID, PS3.4 J.3.2
EVENT_ALL_COMMITTED, EVENT_SOME_FAILED = 1, 2  # Event Type ID, PS3.4 J.3.3
PREFIX = "forwards/commitments/"  # under forwards/: the same lifecycle rule expires it

FAILURE_TEXT = {  # PS3.4 J.3.3.1.1 Failure Reason
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0119: "class / instance conflict",
    0x0122: "SOP class not supported",
    0x0131: "duplicate transaction UID",
    0x0213: "resource limitation",
}


# Transactions this process waits for: a report our own SCP stores wakes the job at once
# (one on another replica is found in the bucket at the next poll).
_waiting: dict[str, threading.Event] = {}
_waiting_lock = threading.Lock()


def _wake(transaction_uid: str) -> None:
    with _waiting_lock:
        event = _waiting.get(transaction_uid)
    if event is not None:
        event.set()


def request_key(transaction_uid: str) -> str:
    return f"{PREFIX}{transaction_uid}/request.json"


def report_key(transaction_uid: str) -> str:
    return f"{PREFIX}{transaction_uid}/report.json"


class CommitmentReport(_Document):
    """What the peer's N-EVENT-REPORT said: committed SOP UIDs, failed ones with the reason."""

    transaction_uid: str
    committed: list[str]
    failed: dict[str, int]  # SOP Instance UID -> Failure Reason
    calling_aet: str


@dataclass(frozen=True)
class Verdict:
    """One instance's commitment: None reason means committed."""

    committed: bool
    reason: str | None = None


def _failure(code: int | None) -> str:
    if code is None:
        return "the peer did not commit it (no reason given)"
    return f"the peer did not commit it: 0x{code:04X} ({FAILURE_TEXT.get(code, 'failure')})"


def accept_report(store: Store, event: evt.Event) -> int:
    """Handle an N-EVENT-REPORT (either association): write it to the bucket; the status.

    0x0110 when the transaction is not ours or the report unreadable or not stored (a peer
    may send it again later), 0x0000 once it is in the bucket.
    """
    request: Any = event.request  # an N_EVENT_REPORT primitive (the only event bound here)
    if str(request.AffectedSOPClassUID) != PUSH_MODEL:
        return 0x0112  # no such SOP instance: we take reports for the push model only
    info: Dataset | None = event.event_information
    event_type = int(request.EventTypeID or 0)
    txn = str(getattr(info, "TransactionUID", "")) if info is not None else ""
    if event_type not in (EVENT_ALL_COMMITTED, EVENT_SOME_FAILED) or not is_valid_uid(txn):
        log.warning("commitment report refused: unreadable", extra={"event_type": event_type})
        return 0x0110
    assert info is not None
    committed = [
        str(i.ReferencedSOPInstanceUID) for i in getattr(info, "ReferencedSOPSequence", [])
    ]
    failed = {
        str(i.ReferencedSOPInstanceUID): int(getattr(i, "FailureReason", 0x0110))
        for i in getattr(info, "FailedSOPSequence", [])
    }
    report = CommitmentReport(
        transaction_uid=txn,
        committed=committed,
        failed=failed,
        calling_aet=str(event.assoc.requestor.ae_title),
    )
    try:
        if not store.exists(request_key(txn)):
            log.warning("commitment report refused: unknown transaction")
            return 0x0110
        store.put_json(report_key(txn), report.to_json())
        _wake(txn)
    except DicomisoError:
        log.warning("commitment report not stored", exc_info=True)
        return 0x0110
    log.info(
        "commitment report stored",
        extra={"committed": len(committed), "failed": len(failed), "aet": report.calling_aet},
    )
    return 0x0000


class CommitmentScp:
    """Our SCP for N-EVENT-REPORTs a peer sends on a new association (PS3.4 J.3.3).

    It takes the SCU role of the Storage Commitment Push Model SOP class as the peer
    proposes it (SCP/SCU role selection, PS3.7 D.3.3.4: the peer, association requestor,
    is the SCP of the class), and only from the AE titles of peers with commitment on.
    """

    def __init__(self, settings: ForwarderSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        s = self.settings
        ae = AE(ae_title=s.calling_aet)
        ae.network_timeout = s.dicom_network_timeout
        ae.dimse_timeout = s.dicom_dimse_timeout
        ae.maximum_associations = 16
        ae.require_calling_aet = sorted(
            {p.aet for p in s.peers.values() if isinstance(p, Peer) and p.commitment}
        )
        ae.add_supported_context(PUSH_MODEL, scu_role=True, scp_role=True)
        self._server = ae.start_server(
            (s.commitment_host, s.commitment_port),
            block=False,
            evt_handlers=[
                *CONNECTION_HANDLERS,
                (evt.EVT_N_EVENT_REPORT, lambda e: (accept_report(self.store, e), None)),
            ],
        )
        log.info("commitment SCP listening", extra={"aet": s.calling_aet, "port": self.port})

    @property
    def port(self) -> int:
        if self._server is None:
            return self.settings.commitment_port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def request_commitment(
    store: Store,
    settings: ForwarderSettings,
    peer: PacsPeer,
    items: list[Item],
    job_id: str,
    check: Callable[[], None],
) -> dict[str, Verdict]:
    """Ask the peer to commit `items`; each one's verdict once it reports or time runs out.

    `check` is called while waiting (the job's `check`: raises JobLost). Raises DicomError
    only when the N-ACTION cannot be sent at all (the job retries it on a re-run).
    """
    txn = generate_uid()
    store.put_json(request_key(txn), {"job_id": job_id, "peer": peer.aet, "instances": len(items)})
    dataset = Dataset()
    dataset.TransactionUID = txn
    refs = []
    for item in items:
        ref = Dataset()
        ref.ReferencedSOPClassUID = item.sop_class
        ref.ReferencedSOPInstanceUID = item.sop_uid
        refs.append(ref)
    dataset.ReferencedSOPSequence = refs

    deadline = time.monotonic() + settings.commitment_timeout
    arrived = threading.Event()
    with _waiting_lock:
        _waiting[txn] = arrived

    def on_report(event: evt.Event) -> tuple[int, None]:
        return accept_report(store, event), None

    try:
        return _ask(store, settings, peer, items, dataset, deadline, arrived, on_report, check)
    finally:
        with _waiting_lock:
            _waiting.pop(txn, None)


def _ask(
    store: Store,
    settings: ForwarderSettings,
    peer: PacsPeer,
    items: list[Item],
    dataset: Dataset,
    deadline: float,
    arrived: threading.Event,
    on_report: Callable[[evt.Event], tuple[int, None]],
    check: Callable[[], None],
) -> dict[str, Verdict]:
    """Send the N-ACTION, wait for the report; each instance's verdict."""
    txn = str(dataset.TransactionUID)
    hold = min(settings.commitment_timeout, settings.dicom_network_timeout / 2)

    ae = make_ae(peer)
    ae.add_requested_context(PUSH_MODEL)
    with associate(peer, ae, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]) as assoc:
        if PUSH_MODEL not in {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}:
            raise DicomError(f"peer {peer.aet} does not accept Storage Commitment")
        status, _ = assoc.send_n_action(
            dataset, REQUEST_COMMITMENT, PUSH_MODEL, PUSH_MODEL_INSTANCE
        )
        code = int(status.Status) if "Status" in status else None
        if code != 0x0000:
            shown = "no answer" if code is None else f"0x{code:04X}"
            raise DicomError(f"peer {peer.aet} refused the commitment request ({shown})")
        held_until = time.monotonic() + hold
        while assoc.is_established and not arrived.is_set() and time.monotonic() < held_until:
            check()
            arrived.wait(0.2)
    report = _wait_report(store, settings, txn, deadline, arrived, check)
    if report is None:
        reason = f"no commitment report within {settings.commitment_timeout:g} s"
        return {i.sop_uid: Verdict(False, reason) for i in items}
    verdicts: dict[str, Verdict] = {}
    committed = set(report.committed)
    for item in items:
        if item.sop_uid in report.failed:
            verdicts[item.sop_uid] = Verdict(False, _failure(report.failed[item.sop_uid]))
        elif item.sop_uid in committed:
            verdicts[item.sop_uid] = Verdict(True)
        else:
            verdicts[item.sop_uid] = Verdict(False, "the peer's report does not name it")
    return verdicts


def _wait_report(
    store: Store,
    settings: ForwarderSettings,
    txn: str,
    deadline: float,
    arrived: threading.Event,
    check: Callable[[], None],
) -> CommitmentReport | None:
    """The report from the bucket, or None at the deadline."""
    while True:
        check()
        try:
            body: Any = store.read_json(report_key(txn)).body
            return CommitmentReport.model_validate(body)
        except ObjectMissing:
            pass
        except (DicomisoError, ValidationError):
            log.warning("commitment report unreadable", exc_info=True)
        if time.monotonic() >= deadline:
            return None
        arrived.wait(min(settings.commitment_poll, max(0.0, deadline - time.monotonic())))

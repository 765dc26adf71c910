"""Talking to a PACS as an SCU: associations and STUDY-level C-FIND, shared by the services.

Identifiers are built only from validated values, at exact-match keys (PS3.4 C.2.2.2.1), and
every answer is checked again on our side: a PACS that treats a key loosely must not hand us
another patient's study. Answers carry patient data, so nothing here logs an identifier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association

from .dicom import (
    CONNECTION_HANDLERS,
    is_valid_uid,
    status_text,
    validate_accession,
    validate_uid,
)
from .errors import DicomError

log = logging.getLogger(__name__)

# PS3.4 C.6.2.1: Study Root Query/Retrieve Information Model
StudyRootQueryRetrieveInformationModelFind = UID("1.2.840.10008.5.1.4.1.2.2.1")
StudyRootQueryRetrieveInformationModelMove = UID("1.2.840.10008.5.1.4.1.2.2.2")
StudyRootQueryRetrieveInformationModelGet = UID("1.2.840.10008.5.1.4.1.2.2.3")
# PS3.4 C.6.1.1: Patient Root, for archives that offer no Study Root model
PatientRootQueryRetrieveInformationModelFind = UID("1.2.840.10008.5.1.4.1.2.1.1")
PatientRootQueryRetrieveInformationModelMove = UID("1.2.840.10008.5.1.4.1.2.1.2")
PatientRootQueryRetrieveInformationModelGet = UID("1.2.840.10008.5.1.4.1.2.1.3")
# Proposed together on every Q/R association, Study Root first: the one accepted is used.
MODELS = {
    "find": (
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelFind,
    ),
    "move": (
        StudyRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelMove,
    ),
    "get": (StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelGet),
}
PENDING = (0xFF00, 0xFF01)  # PS3.4 C.4.1.1.4: pending, with or without optional keys


@dataclass(frozen=True)
class PacsPeer:
    """Where a PACS is and how we talk to it; services build one from their settings."""

    aet: str = "ABPACS"
    host: str = "127.0.0.1"
    port: int = 11112
    calling_aet: str = "CDRECORD"
    acse_timeout: float = 30.0  # association negotiation
    dimse_timeout: float = 600.0  # one DIMSE reply, e.g. the next C-MOVE pending
    network_timeout: float = 60.0  # silence on the socket
    max_pdu: int = 1_048_576  # largest PDU we accept (0 = no limit)
    busy_wait: float = 30.0  # how long to retry a transient rejection ("local limit exceeded")

    def describe(self) -> str:
        """Name the peer for error messages (AE title and address, never a query key)."""
        return f"PACS {self.aet} at {self.host}:{self.port}"


@dataclass(frozen=True)
class StudyAnswer:
    """One C-FIND answer at STUDY level, reduced to what the services act on or show.

    Only `study_uid` and `instances` are needed to retrieve a study, so the rest default to
    empty: callers that only move studies can build one from those two.
    """

    study_uid: str
    instances: int | None = None  # NumberOfStudyRelatedInstances, when the PACS reports it
    patient_id: str | None = None
    patient_name: str | None = None  # PN as pydicom decodes it, components joined by "^"
    study_date: str | None = None
    study_description: str | None = None
    modalities: list[str] = field(default_factory=list)
    accession_number: str | None = None
    sop_classes: list[str] = field(default_factory=list)  # SOPClassesInStudy, when reported
    patient_birth_date: str | None = None  # YYYYMMDD, when the PACS reports it
    patient_sex: str | None = None  # M, F, O


def make_ae(peer: PacsPeer) -> AE:
    """Return an AE calling as `peer.calling_aet`, with the peer's timeouts and PDU size."""
    ae = AE(ae_title=peer.calling_aet)
    ae.acse_timeout = peer.acse_timeout
    ae.dimse_timeout = peer.dimse_timeout
    ae.network_timeout = peer.network_timeout
    ae.connection_timeout = peer.acse_timeout  # TCP connect; pynetdicom's default waits forever
    ae.maximum_pdu_size = peer.max_pdu
    return ae


def request_models(ae: AE, kind: str) -> None:
    """Propose the Study Root and the Patient Root model of `kind` ("find", "move", "get")."""
    for model in MODELS[kind]:
        ae.add_requested_context(model)


def accepted_model(assoc: Association, kind: str, peer: PacsPeer) -> UID:
    """The Q/R model of `kind` the PACS accepted, Study Root preferred.

    Raises:
        DicomError: The PACS accepted neither Study Root nor Patient Root for `kind`.
    """
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    for model in MODELS[kind]:
        if model in accepted:
            return model
    raise DicomError(
        f"{peer.describe()} accepts neither Study Root nor Patient Root C-{kind.upper()}"
    )


def _open(peer: PacsPeer, ae: AE, **kwargs: Any) -> tuple[Association, bool, int | None]:
    """One association attempt: (association, TCP connected, A-ASSOCIATE-RJ result)."""
    connected = threading.Event()
    result: list[int] = []

    def on_acse(event: evt.Event) -> None:
        primitive = getattr(event, "primitive", None)
        if primitive is not None and getattr(primitive, "result", None) in (0x01, 0x02):
            result.append(int(primitive.result))

    handlers = [
        *kwargs.pop("evt_handlers", []),
        *CONNECTION_HANDLERS,
        (evt.EVT_CONN_OPEN, lambda _: connected.set()),
        (evt.EVT_ACSE_RECV, on_acse),
    ]
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, evt_handlers=handlers, **kwargs)
    return assoc, connected.is_set(), result[0] if result else None


@contextmanager
def associate(peer: PacsPeer, ae: AE, **kwargs: Any) -> Iterator[Association]:
    """Open an association with the PACS, or raise DicomError saying why it could not.

    Telling "unreachable" from "refused" matters to whoever reads the error: the first is a
    network or PACS outage, the second a configuration problem (our AE title unknown there).
    A transient rejection (PS3.8 9.3.4 result 2, e.g. an archive that takes one association
    at a time) is retried with a growing pause for up to `peer.busy_wait` seconds; a
    negotiation the peer cut without an answer is tried three times.
    An exception inside the block aborts rather than releases, so the PACS stops at once.
    """
    deadline = time.monotonic() + peer.busy_wait
    pause, aborts = 0.1, 0
    while True:
        assoc, connected, rejected = _open(peer, ae, **dict(kwargs))
        # A busy archive may also just close the socket instead of sending its rejection
        # (dcmqrscp at MaxAssociations): a negotiation that ends so is tried three times.
        dropped = connected and rejected is None and not assoc.is_established
        aborts += dropped
        busy = rejected == 0x02 or (dropped and aborts < 3)
        if assoc.is_established or not busy or time.monotonic() + pause > deadline:
            break
        log.info("PACS busy (transient rejection); retrying", extra={"aet": peer.aet})
        time.sleep(pause)
        pause = min(pause * 2, 2.0)
    if not assoc.is_established:
        if not connected:
            raise DicomError(f"{peer.describe()} unreachable (connection refused or timed out)")
        if rejected == 0x02:
            raise DicomError(
                f"{peer.describe()} stayed busy for {peer.busy_wait:g} s "
                "(transient rejection: too many associations)"
            )
        # pynetdicom sometimes reports a rejection as an abort; both mean "not you"
        how = "" if assoc.is_rejected else " (aborted during negotiation)"
        raise DicomError(f"{peer.describe()} refused association from {peer.calling_aet}{how}")
    try:
        yield assoc
    except BaseException:
        if assoc.is_established:
            assoc.abort()  # stop the PACS mid-operation; a release would wait for it to finish
        raise
    if assoc.is_established:
        release(assoc)


RELEASE_PAUSE_WAIT = 5.0  # seconds for the association's reactor to pause before a release


def release(assoc: Association) -> None:
    """Release an association, or abort it when its reactor thread is gone or stuck.

    pynetdicom 3.0's ``Association.release`` first waits, without a deadline, for the reactor
    thread to reach its pause point (``_is_paused``). A reactor that has ended while the
    association still counts as established (the peer dropped the connection at that moment)
    never pauses, and the release spins forever: seen as a forward job, and so a whole pytest
    run, that never ended after a peer closed right after its N-EVENT-REPORT. So wait here,
    bounded, and abort instead of releasing what cannot be released.
    """
    assoc._reactor_checkpoint.clear()
    give_up = time.monotonic() + RELEASE_PAUSE_WAIT
    while not assoc._is_paused:
        if not assoc.is_alive() or time.monotonic() > give_up:
            log.info("association's reactor ended before the release: aborted")
            assoc.abort()
            assoc._reactor_checkpoint.set()  # a reactor still alive must not stay parked
            return
        time.sleep(0.001)
    assoc.release()  # the reactor is paused: release() no longer waits for it


def _text(ident: Dataset, keyword: str) -> str | None:
    value = ident.get(keyword)
    return None if value is None or str(value) == "" else str(value)


def _values(ident: Dataset, keyword: str) -> list[str]:
    """A possibly multi-valued element as a list of strings ([] when absent or empty)."""
    value = ident.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def unpadded(value: object) -> str:
    """A string value without the padding archives add: spaces either side, trailing NULs.

    PS3.5 6.2: leading and trailing spaces of SH and LO are not significant, and some
    archives pad with NUL instead of a space; the value itself must still match exactly.
    """
    return str(value or "").rstrip("\x00").strip(" ")


def _answer(ident: Dataset, uid: str) -> StudyAnswer:
    raw = ident.get("NumberOfStudyRelatedInstances")
    return StudyAnswer(
        study_uid=uid,
        instances=int(raw) if raw not in (None, "") else None,
        patient_id=_text(ident, "PatientID"),
        patient_name=_text(ident, "PatientName"),
        study_date=_text(ident, "StudyDate"),
        study_description=_text(ident, "StudyDescription"),
        modalities=_values(ident, "ModalitiesInStudy"),
        accession_number=_text(ident, "AccessionNumber"),
        sop_classes=[c for c in _values(ident, "SOPClassesInStudy") if is_valid_uid(c)],
        patient_birth_date=_text(ident, "PatientBirthDate"),
        patient_sex=_text(ident, "PatientSex"),
    )


def _collect(
    answers: Iterator[tuple[Dataset, Dataset | None]],
    peer: PacsPeer,
    accept: Callable[[Dataset], bool],
) -> list[StudyAnswer]:
    """Keep the pending answers that match our key and carry a legal UID, one per study."""
    found: dict[str, StudyAnswer] = {}
    final: int | None = None
    for status, ident in answers:
        if "Status" not in status:
            raise DicomError(f"{peer.describe()}: C-FIND got no answer (timeout or abort)")
        code = int(status.Status)
        if code in PENDING and ident is not None:
            uid = unpadded(ident.get("StudyInstanceUID"))
            if not accept(ident) or not is_valid_uid(uid):
                log.warning("C-FIND answer dropped: key mismatch or bad UID")
                continue
            found[uid] = _answer(ident, uid)
        else:
            final = code
    if final not in (0x0000, None):
        raise DicomError(f"{peer.describe()}: C-FIND failed with status {status_text(final)}")
    return list(found.values())


def _study_query(**keys: str) -> Dataset:
    """A STUDY-level identifier: the given match keys plus empty return keys (PS3.4 C.6.2.1)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in (
        "StudyInstanceUID",
        "AccessionNumber",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyDescription",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedInstances",
    ):
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _find_studies(
    peer: PacsPeer, query: Dataset, accept: Callable[[Dataset], bool]
) -> list[StudyAnswer]:
    ae = make_ae(peer)
    request_models(ae, "find")
    with associate(peer, ae) as assoc:
        answers = assoc.send_c_find(query, accepted_model(assoc, "find", peer))
        return _collect(answers, peer, accept)


def find_studies_by_accession(peer: PacsPeer, accession: str) -> list[StudyAnswer]:
    """Return the studies whose AccessionNumber equals `accession` exactly.

    Raises:
        InvalidInput: The accession is empty or holds a wildcard; the PACS was not asked.
        DicomError: The PACS could not be reached, refused us or answered with a failure.
    """
    accession = validate_accession(accession)  # never send a wildcard or empty key
    return _find_studies(
        peer,
        _study_query(AccessionNumber=accession),
        lambda d: unpadded(d.get("AccessionNumber")) == accession,
    )


def find_study_by_uid(peer: PacsPeer, study_uid: str) -> list[StudyAnswer]:
    """Return the study with this StudyInstanceUID (an empty list when the PACS has none).

    Raises:
        InvalidInput: `study_uid` is not a legal UID; the PACS was not asked.
        DicomError: The PACS could not be reached, refused us or answered with a failure.
    """
    study_uid = validate_uid(study_uid, "StudyInstanceUID")
    return _find_studies(
        peer,
        _study_query(StudyInstanceUID=study_uid),
        lambda d: unpadded(d.get("StudyInstanceUID")) == study_uid,
    )

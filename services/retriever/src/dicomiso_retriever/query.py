"""The PACS side: C-FIND by accession or study, C-MOVE and C-GET of one study.

Identifiers are built only from validated values, at exact-match keys (PS3.4 C.2.2.2.1), and
every answer is checked again on our side: a PACS that treats a key loosely must not hand us
another patient's study.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association

from dicomiso_common.dicom import is_valid_uid, status_text, validate_accession, validate_uid
from dicomiso_common.errors import DicomError, InvalidInput

from .settings import RetrieverSettings

log = logging.getLogger(__name__)

# PS3.4 C.6.2.1: Study Root Query/Retrieve Information Model
StudyRootQueryRetrieveInformationModelFind = UID("1.2.840.10008.5.1.4.1.2.2.1")
StudyRootQueryRetrieveInformationModelMove = UID("1.2.840.10008.5.1.4.1.2.2.2")
StudyRootQueryRetrieveInformationModelGet = UID("1.2.840.10008.5.1.4.1.2.2.3")
PENDING = (0xFF00, 0xFF01)
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
# Proposed per SOP class for C-GET, so a compressed instance can arrive byte-exact.
COMPRESSED = ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
              "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
              "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"]
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context ids are odd numbers 1..255


@dataclass(frozen=True)
class StudyHit:
    """One C-FIND answer at STUDY level, reduced to what we act on."""

    study_uid: str
    instances: int | None  # NumberOfStudyRelatedInstances, when the PACS reports it


@dataclass
class TransferResult:
    """Final counts of one C-MOVE or C-GET."""

    status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0
    aborted: bool = False
    failed_uids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.aborted and self.status in (0x0000, 0xB000)
                and self.failed == 0)


Progress = Callable[[TransferResult], None]


def _pacs(s: RetrieverSettings) -> str:
    return f"PACS {s.pacs_aet} at {s.pacs_host}:{s.pacs_port}"


def _ae(s: RetrieverSettings) -> AE:
    ae = AE(ae_title=s.our_calling_aet)
    ae.acse_timeout = s.dicom_acse_timeout
    ae.dimse_timeout = s.dicom_dimse_timeout
    ae.network_timeout = s.dicom_network_timeout
    ae.maximum_pdu_size = s.scp_max_pdu
    return ae


@contextmanager
def _associate(s: RetrieverSettings, ae: AE, **kwargs: Any) -> Iterator[Association]:
    """Open an association with the PACS, or raise DicomError saying why it could not."""
    connected = threading.Event()
    handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, lambda _: connected.set())]
    assoc = ae.associate(s.pacs_host, s.pacs_port, ae_title=s.pacs_aet,
                         evt_handlers=handlers, **kwargs)
    if not assoc.is_established:
        if not connected.is_set():
            raise DicomError(f"{_pacs(s)} unreachable (connection refused or timed out)")
        # pynetdicom sometimes reports a rejection as an abort; both mean "not you"
        how = "" if assoc.is_rejected else " (aborted during negotiation)"
        raise DicomError(f"{_pacs(s)} refused association from {s.our_calling_aet}{how}")
    try:
        yield assoc
    except BaseException:
        if assoc.is_established:
            assoc.abort()  # stop the PACS mid-operation; a release would wait for it to finish
        raise
    if assoc.is_established:
        assoc.release()


def _study_hits(answers: Iterator[tuple[Dataset, Dataset | None]], s: RetrieverSettings,
                accept: Callable[[Dataset], bool]) -> list[StudyHit]:
    hits: dict[str, StudyHit] = {}
    final: int | None = None
    for status, ident in answers:
        if "Status" not in status:
            raise DicomError(f"{_pacs(s)}: C-FIND got no answer (timeout or abort)")
        code = int(status.Status)
        if code in PENDING and ident is not None:
            uid = str(ident.get("StudyInstanceUID", ""))
            if not accept(ident) or not is_valid_uid(uid):
                log.warning("C-FIND answer dropped: key mismatch or bad UID")
                continue
            raw = ident.get("NumberOfStudyRelatedInstances")
            count = int(raw) if raw not in (None, "") else None
            hits[uid] = StudyHit(uid, count)
        else:
            final = code
    if final not in (0x0000, None):
        raise DicomError(f"{_pacs(s)}: C-FIND failed with status {status_text(final)}")
    return list(hits.values())


def _study_query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.AccessionNumber = ""
    ds.NumberOfStudyRelatedInstances = ""
    ds.ModalitiesInStudy = ""
    ds.StudyDate = ""
    for name, value in keys.items():
        setattr(ds, name, value)
    return ds


def find_by_accession(s: RetrieverSettings, accession: str) -> list[StudyHit]:
    """Return the studies whose AccessionNumber equals `accession` exactly."""
    accession = validate_accession(accession)  # never send a wildcard or empty key
    ae = _ae(s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    with _associate(s, ae) as assoc:
        answers = assoc.send_c_find(_study_query(AccessionNumber=accession),
                                    StudyRootQueryRetrieveInformationModelFind)
        return _study_hits(answers, s, lambda d: str(d.get("AccessionNumber", "")) == accession)


def find_by_study_uid(s: RetrieverSettings, study_uid: str) -> list[StudyHit]:
    """Return the study with this StudyInstanceUID (an empty list when the PACS has none)."""
    study_uid = validate_uid(study_uid, "StudyInstanceUID")
    ae = _ae(s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    with _associate(s, ae) as assoc:
        answers = assoc.send_c_find(_study_query(StudyInstanceUID=study_uid),
                                    StudyRootQueryRetrieveInformationModelFind)
        return _study_hits(answers, s, lambda d: str(d.get("StudyInstanceUID")) == study_uid)


def find_sop_classes(s: RetrieverSettings, study_uid: str) -> list[str]:
    """List the SOP classes in a study (IMAGE-level C-FIND), to propose exactly those for C-GET."""
    ae = _ae(s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    classes: set[str] = set()
    with _associate(s, ae) as assoc:
        series_q = Dataset()
        series_q.QueryRetrieveLevel = "SERIES"
        series_q.StudyInstanceUID = study_uid
        series_q.SeriesInstanceUID = ""
        series: list[str] = []
        answers = assoc.send_c_find(series_q, StudyRootQueryRetrieveInformationModelFind)
        for status, ident in answers:
            if "Status" in status and int(status.Status) in PENDING and ident is not None:
                uid = str(ident.get("SeriesInstanceUID", ""))
                if is_valid_uid(uid):
                    series.append(uid)
        for series_uid in series:
            image_q = Dataset()
            image_q.QueryRetrieveLevel = "IMAGE"
            image_q.StudyInstanceUID = study_uid
            image_q.SeriesInstanceUID = series_uid
            image_q.SOPInstanceUID = ""
            image_q.SOPClassUID = ""
            for status, ident in assoc.send_c_find(image_q,
                                                   StudyRootQueryRetrieveInformationModelFind):
                if "Status" in status and int(status.Status) in PENDING and ident is not None:
                    sop_class = str(ident.get("SOPClassUID", ""))
                    if is_valid_uid(sop_class):
                        classes.add(sop_class)
    return sorted(classes)


def _retrieve_query(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = validate_uid(study_uid, "StudyInstanceUID")
    return ds


def _follow(responses: Iterator[tuple[Dataset, Dataset | None]], assoc: Association,
            progress: Progress) -> TransferResult:
    """Track a C-MOVE/C-GET's pending and final responses into a TransferResult."""
    result = TransferResult()
    for status, ident in responses:
        if "Status" not in status:
            result.aborted = True
            break
        code = int(status.Status)
        result.completed = int(status.get("NumberOfCompletedSuboperations", result.completed))
        result.failed = int(status.get("NumberOfFailedSuboperations", result.failed))
        result.warning = int(status.get("NumberOfWarningSuboperations", result.warning))
        result.remaining = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
        if code in PENDING:
            progress(result)
            continue
        result.status = code
        if ident is not None and "FailedSOPInstanceUIDList" in ident:
            raw = ident.FailedSOPInstanceUIDList
            uids = raw if isinstance(raw, list | tuple) else [raw]
            result.failed_uids = [str(u) for u in uids if is_valid_uid(str(u))]
    if assoc.is_aborted:
        result.aborted = True
    progress(result)
    return result


def move_study(s: RetrieverSettings, study_uid: str, progress: Progress) -> TransferResult:
    """C-MOVE one study to our Storage SCP (the PACS must know our AE title)."""
    ae = _ae(s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    with _associate(s, ae) as assoc:
        responses = assoc.send_c_move(_retrieve_query(study_uid), s.scp_aet,
                                      StudyRootQueryRetrieveInformationModelMove)
        return _follow(responses, assoc, progress)


def get_contexts(sop_classes: list[str]) -> list[tuple[str, list[str]]]:
    """Presentation contexts for a C-GET: each SOP class uncompressed, plus compressed if room.

    The Get model itself takes one of the 128 contexts.
    """
    budget = MAX_CONTEXTS - 1
    if len(sop_classes) > budget:
        raise InvalidInput(f"study has {len(sop_classes)} SOP classes; C-GET can negotiate "
                           f"{budget}; use method 'move'")
    contexts = [(c, UNCOMPRESSED) for c in sop_classes]
    for ts in COMPRESSED:
        if len(contexts) + len(sop_classes) > budget:
            break
        contexts += [(c, [ts]) for c in sop_classes]
    return contexts


def get_study(s: RetrieverSettings, study_uid: str, sop_classes: list[str],
              on_store: Callable[[evt.Event], Any], progress: Progress) -> TransferResult:
    """C-GET one study on our own association; its C-STOREs go to `on_store`."""
    ae = _ae(s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, syntaxes in get_contexts(sop_classes):
        ae.add_requested_context(sop_class, [UID(t) for t in syntaxes])
    roles = [build_role(c, scp_role=True) for c in sop_classes]
    with _associate(s, ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        responses = assoc.send_c_get(_retrieve_query(study_uid),
                                     StudyRootQueryRetrieveInformationModelGet)
        return _follow(responses, assoc, progress)

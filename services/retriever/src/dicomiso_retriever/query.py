"""The PACS side of a retrieval: C-FIND of the studies, then C-MOVE or C-GET of each one.

Associations and STUDY-level C-FIND live in `dicomiso_common.pacs`, so every service queries
the PACS with the same validation; this module adds what only the retriever does: listing a
study's SOP classes and moving or getting it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom import uid as uids
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_role, evt
from pynetdicom.association import Association

# pynetdicom.sop_class generates its SOP class names at import: mypy cannot see them.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomiso_common.dicom import is_valid_uid, validate_uid
from dicomiso_common.errors import InvalidInput
from dicomiso_common.pacs import (
    PENDING,
    PacsPeer,
    StudyAnswer,
    associate,
    find_studies_by_accession,
    find_study_by_uid,
    make_ae,
)

from .settings import RetrieverSettings

log = logging.getLogger(__name__)

UNCOMPRESSED: list[str] = [uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian]
# Proposed per SOP class for C-GET, so a compressed instance can arrive byte-exact.
COMPRESSED: list[str] = [
    uids.JPEGLosslessSV1,
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLossless,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.RLELossless,
]
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context ids are odd numbers 1..255

# What the retriever acts on of a C-FIND answer: `study_uid` and `instances`.
StudyHit = StudyAnswer


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
        return not self.aborted and self.status in (0x0000, 0xB000) and self.failed == 0


Progress = Callable[[TransferResult], None]


def peer(s: RetrieverSettings) -> PacsPeer:
    """The PACS as the retriever's settings describe it, called as `our_calling_aet`."""
    return PacsPeer(
        aet=s.pacs_aet,
        host=s.pacs_host,
        port=s.pacs_port,
        calling_aet=s.our_calling_aet,
        acse_timeout=s.dicom_acse_timeout,
        dimse_timeout=s.dicom_dimse_timeout,
        network_timeout=s.dicom_network_timeout,
        max_pdu=s.scp_max_pdu,
    )


def find_by_accession(s: RetrieverSettings, accession: str) -> list[StudyHit]:
    """Return the studies whose AccessionNumber equals `accession` exactly."""
    return find_studies_by_accession(peer(s), accession)


def find_by_study_uid(s: RetrieverSettings, study_uid: str) -> list[StudyHit]:
    """Return the study with this StudyInstanceUID (an empty list when the PACS has none)."""
    return find_study_by_uid(peer(s), study_uid)


def find_sop_classes(s: RetrieverSettings, study_uid: str) -> list[str]:
    """List the SOP classes in a study (IMAGE-level C-FIND), to propose exactly those for C-GET."""
    ae = make_ae(peer(s))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    classes: set[str] = set()
    with associate(peer(s), ae) as assoc:
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
            for status, ident in assoc.send_c_find(
                image_q, StudyRootQueryRetrieveInformationModelFind
            ):
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


def _follow(
    responses: Iterator[tuple[Dataset, Dataset | None]], assoc: Association, progress: Progress
) -> TransferResult:
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
    ae = make_ae(peer(s))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    with associate(peer(s), ae) as assoc:
        responses = assoc.send_c_move(
            _retrieve_query(study_uid), s.scp_aet, StudyRootQueryRetrieveInformationModelMove
        )
        return _follow(responses, assoc, progress)


def get_contexts(sop_classes: list[str]) -> list[tuple[str, list[str]]]:
    """Presentation contexts for a C-GET: each SOP class uncompressed, plus compressed if room.

    The Get model itself takes one of the 128 contexts.
    """
    budget = MAX_CONTEXTS - 1
    if len(sop_classes) > budget:
        raise InvalidInput(
            f"study has {len(sop_classes)} SOP classes; C-GET can negotiate "
            f"{budget}; use method 'move'"
        )
    contexts = [(c, UNCOMPRESSED) for c in sop_classes]
    for ts in COMPRESSED:
        if len(contexts) + len(sop_classes) > budget:
            break
        contexts += [(c, [ts]) for c in sop_classes]
    return contexts


def get_study(
    s: RetrieverSettings,
    study_uid: str,
    sop_classes: list[str],
    on_store: Callable[[evt.Event], Any],
    progress: Progress,
) -> TransferResult:
    """C-GET one study on our own association; its C-STOREs go to `on_store`."""
    ae = make_ae(peer(s))
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, syntaxes in get_contexts(sop_classes):
        ae.add_requested_context(sop_class, [UID(t) for t in syntaxes])
    roles = [build_role(c, scp_role=True) for c in sop_classes]
    with associate(peer(s), ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        responses = assoc.send_c_get(
            _retrieve_query(study_uid), StudyRootQueryRetrieveInformationModelGet
        )
        return _follow(responses, assoc, progress)

"""The PACS side of a retrieval: C-FIND of the studies, then C-MOVE or C-GET of each one.

Associations and STUDY-level C-FIND live in `dicomiso_common.pacs`, so every service queries
the PACS with the same validation; this module adds what only the retriever does: listing a
study's instances (SERIES and IMAGE level) and moving or getting it. Every association
proposes the Study Root and the Patient Root model and uses the one the PACS accepts; on
Patient Root the identifier carries the study's PatientID (PS3.4 C.4.1.2.1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_role, evt
from pynetdicom.association import Association

from dicomiso_common.dicom import is_valid_uid, validate_uid
from dicomiso_common.pacs import (
    MODELS,
    PENDING,
    PacsPeer,
    StudyAnswer,
    accepted_model,
    associate,
    find_studies_by_accession,
    find_study_by_uid,
    make_ae,
    request_models,
    unpadded,
)

from .negotiation import Plan
from .settings import RetrieverSettings

log = logging.getLogger(__name__)

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


Inventory = dict[str, dict[str, str | None]]  # series UID -> {SOP instance UID: class}


def _patient_root(model: UID) -> bool:
    return model in (m[1] for m in MODELS.values())


def _level(level: str, hit: StudyHit, model: UID, **keys: str) -> Dataset:
    """An identifier at `level` below the study, with PatientID on Patient Root."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    if _patient_root(model):
        ds.PatientID = hit.patient_id or ""
    ds.StudyInstanceUID = validate_uid(hit.study_uid, "StudyInstanceUID")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _pending(answers: Iterator[tuple[Dataset, Dataset | None]]) -> Iterator[Dataset]:
    for status, ident in answers:
        if "Status" in status and int(status.Status) in PENDING and ident is not None:
            yield ident


def take_inventory(s: RetrieverSettings, hit: StudyHit) -> Inventory:
    """List the study's instances by series (SERIES-, then IMAGE-level C-FIND).

    The IMAGE-level query names the series: hierarchical archives (dcmqrscp) answer nothing
    without it. SOPClassUID is asked for and kept when the PACS returns it (None otherwise).
    Answers of another study or series, or with an illegal UID, are dropped.
    """
    ae = make_ae(peer(s))
    request_models(ae, "find")
    found: Inventory = {}
    with associate(peer(s), ae) as assoc:
        model = accepted_model(assoc, "find", peer(s))
        series_q = _level("SERIES", hit, model, SeriesInstanceUID="")
        for ident in _pending(assoc.send_c_find(series_q, model)):
            uid = unpadded(ident.get("SeriesInstanceUID"))
            if is_valid_uid(uid) and unpadded(ident.get("StudyInstanceUID")) == hit.study_uid:
                found[uid] = {}
        for series_uid, instances in found.items():
            image_q = _level(
                "IMAGE", hit, model, SeriesInstanceUID=series_uid, SOPInstanceUID="", SOPClassUID=""
            )
            for ident in _pending(assoc.send_c_find(image_q, model)):
                sop = unpadded(ident.get("SOPInstanceUID"))
                if not is_valid_uid(sop) or unpadded(ident.get("SeriesInstanceUID")) not in (
                    series_uid,
                    "",
                ):
                    continue
                sop_class = unpadded(ident.get("SOPClassUID"))
                instances[sop] = sop_class if is_valid_uid(sop_class) else None
    return found


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


def merge(results: list[TransferResult]) -> TransferResult:
    """Several transfers of one study (split or retried) as one; the last status counts."""
    if len(results) == 1:
        return results[0]
    merged = TransferResult(status=results[-1].status)
    for r in results:
        merged.completed += r.completed
        merged.failed += r.failed
        merged.warning += r.warning
        merged.aborted = merged.aborted or r.aborted
        merged.failed_uids += r.failed_uids
        if r.status not in (0x0000, 0xB000):
            merged.status = r.status
    return merged


def move_study(s: RetrieverSettings, hit: StudyHit, progress: Progress) -> TransferResult:
    """C-MOVE one study to our Storage SCP (the PACS must know our AE title)."""
    ae = make_ae(peer(s))
    request_models(ae, "move")
    with associate(peer(s), ae) as assoc:
        model = accepted_model(assoc, "move", peer(s))
        responses = assoc.send_c_move(_level("STUDY", hit, model), s.scp_aet, model)
        return _follow(responses, assoc, progress)


def get_study(
    s: RetrieverSettings,
    hit: StudyHit,
    plan: Plan,
    on_store: Callable[[evt.Event], Any],
    progress: Progress,
) -> TransferResult:
    """C-GET one study as `plan` says: per association its contexts, the whole study or its
    series one C-GET each; the C-STOREs go to `on_store`. Counts add up across the parts."""
    done: list[TransferResult] = []

    def running(result: TransferResult) -> None:
        progress(merge([*done, result]))

    for contexts, series in plan.associations:
        ae = make_ae(peer(s))
        request_models(ae, "get")
        for sop_class, syntaxes in contexts:
            ae.add_requested_context(sop_class, [UID(t) for t in syntaxes])
        roles = [build_role(c, scp_role=True) for c in dict.fromkeys(c for c, _ in contexts)]
        handlers = [(evt.EVT_C_STORE, on_store)]
        with associate(peer(s), ae, ext_neg=roles, evt_handlers=handlers) as assoc:
            model = accepted_model(assoc, "get", peer(s))
            queries = (
                [_level("SERIES", hit, model, SeriesInstanceUID=u) for u in series]
                if series
                else [_level("STUDY", hit, model)]
            )
            for query in queries:
                done.append(_follow(assoc.send_c_get(query, model), assoc, running))
                if done[-1].aborted:
                    return merge(done)
    return merge(done)

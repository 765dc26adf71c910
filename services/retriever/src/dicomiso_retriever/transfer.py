"""The PACS side of a retrieval, part two: C-MOVE or C-GET of one study, and its counts.

The study is found first (`query`); a C-MOVE sends it to our Storage SCP, a C-GET brings it
back on our own association. Both report progress from the pending responses.
"""

from __future__ import annotations

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
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomiso_common.dicom import is_valid_uid, validate_uid
from dicomiso_common.errors import InvalidInput
from dicomiso_common.pacs import PENDING, associate, make_ae

from .query import peer
from .settings import RetrieverSettings

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


Progress = Callable[[TransferResult], None]


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

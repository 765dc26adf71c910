"""The PACS side of a retrieval, part two: C-MOVE or C-GET of one study.

C-GET proposes what `negotiation.plan` chose; its parts (a split by series, a retry) add up
into one TransferResult. A C-MOVE is one STUDY-level request, or, with DICOMISO_MOVE_LANES,
the lanes `lanes.plan` made, moved at once over one association each; they add up the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_role, evt
from pynetdicom.association import Association

from dicomiso_common.dicom import is_valid_uid
from dicomiso_common.pacs import (
    PENDING,
    StudyAnswer,
    accepted_model,
    associate,
    make_ae,
    request_models,
)

from . import lanes, reactor
from .negotiation import Plan
from .query import Inventory, level, peer
from .settings import RetrieverSettings

log = logging.getLogger(__name__)


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


def move_study(
    s: RetrieverSettings, hit: StudyAnswer, progress: Progress, inventory: Inventory | None = None
) -> TransferResult:
    """C-MOVE one study to our Storage SCP (the PACS must know our AE title): one STUDY-level
    C-MOVE, or, when DICOMISO_MOVE_LANES asks and the inventory is large enough, its lanes."""
    shares = lanes.plan(s, inventory, hit.instances) if inventory is not None else []
    if len(shares) > 1:
        return _move_lanes(s, hit, shares, progress)
    ae = make_ae(peer(s))
    reactor.use(ae)
    request_models(ae, "move")
    with associate(peer(s), ae) as assoc:
        model = accepted_model(assoc, "move", peer(s))
        responses = assoc.send_c_move(level("STUDY", hit, model), s.scp_aet, model)
        return _follow(responses, assoc, progress)


class _Stopped(Exception):
    """Another lane failed: this one stops (its association is aborted)."""


def _identifier(piece: lanes.Piece, hit: StudyAnswer, model: UID) -> Dataset:
    """A whole series at SERIES level; a chunk of one at IMAGE level with its UIDs."""
    if piece.whole:
        return level("SERIES", hit, model, SeriesInstanceUID=piece.series_uid)
    ds = level("IMAGE", hit, model, SeriesInstanceUID=piece.series_uid)
    ds.SOPInstanceUID = list(piece.instances)
    return ds


def _ok(result: TransferResult) -> bool:
    return not result.aborted and result.status in (0x0000, 0xB000)


def _move_lane(
    s: RetrieverSettings,
    hit: StudyAnswer,
    lane: lanes.Lane,
    progress: Progress,
    done: Callable[[TransferResult], None],
) -> None:
    """One lane: its own association, its pieces one C-MOVE after the other; it ends at
    the first piece that did not end in success or warning."""
    ae = make_ae(peer(s))
    reactor.use(ae)
    request_models(ae, "move")
    with associate(peer(s), ae) as assoc:
        model = accepted_model(assoc, "move", peer(s))
        for piece in lane:
            responses = assoc.send_c_move(_identifier(piece, hit, model), s.scp_aet, model)
            result = _follow(responses, assoc, progress)
            done(result)
            if not _ok(result):
                return


def _move_lanes(
    s: RetrieverSettings, hit: StudyAnswer, shares: list[lanes.Lane], progress: Progress
) -> TransferResult:
    """Move the lanes at once, one thread and association each; `progress` sees the sums.

    A lane that fails (an exception, e.g. `progress` raising, or a piece that did not
    succeed) stops the others at their next response; the first exception is raised here,
    otherwise the merged counts say what failed.
    """
    lock = threading.Lock()
    stop = threading.Event()
    finished: list[TransferResult] = []
    running: dict[int, TransferResult] = {}
    errors: list[BaseException] = []

    def so_far() -> TransferResult:
        # Stopped lanes first: their status (none) must not hide a failed piece's.
        return merge([*running.values(), *finished] or [TransferResult()])

    def lane_progress(i: int) -> Progress:
        def report(result: TransferResult) -> None:
            if stop.is_set():
                raise _Stopped
            with lock:
                running[i] = result
                progress(so_far())

        return report

    def lane_done(i: int) -> Callable[[TransferResult], None]:
        def done(result: TransferResult) -> None:
            with lock:
                running.pop(i, None)
                finished.append(result)
            if not _ok(result):
                stop.set()
            elif stop.is_set():
                raise _Stopped

        return done

    def run(i: int, lane: lanes.Lane) -> None:
        try:
            _move_lane(s, hit, lane, lane_progress(i), lane_done(i))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller
            with lock:
                errors.append(exc)
            stop.set()

    log.info("C-MOVE in lanes", extra={"lanes": len(shares), "moves": sum(map(len, shares))})
    log.debug("C-MOVE in lanes", extra={"study_uid": hit.study_uid})
    with ThreadPoolExecutor(len(shares), thread_name_prefix="lane") as pool:
        for future in [pool.submit(run, i, lane) for i, lane in enumerate(shares)]:
            future.result()
    if errors:
        raise errors[0]
    with lock:
        return so_far()


def get_study(
    s: RetrieverSettings,
    hit: StudyAnswer,
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
        reactor.use(ae)
        request_models(ae, "get")
        for sop_class, syntaxes in contexts:
            ae.add_requested_context(sop_class, [UID(t) for t in syntaxes])
        roles = [build_role(c, scp_role=True) for c in dict.fromkeys(c for c, _ in contexts)]
        handlers = [(evt.EVT_C_STORE, on_store)]
        with associate(peer(s), ae, ext_neg=roles, evt_handlers=handlers) as assoc:
            model = accepted_model(assoc, "get", peer(s))
            queries = (
                [level("SERIES", hit, model, SeriesInstanceUID=u) for u in series]
                if series
                else [level("STUDY", hit, model)]
            )
            for query in queries:
                done.append(_follow(assoc.send_c_get(query, model), assoc, running))
                if done[-1].aborted:
                    return merge(done)
    return merge(done)

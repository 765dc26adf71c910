"""One retrieval job: find the studies, move each one exactly once, prove it complete.

A study counts as retrieved only when the PACS ended the transfer with success or warning,
no sub-operation failed, and the bucket holds the instances the PACS listed: as many as
NumberOfStudyRelatedInstances when the STUDY-level answer carries it, otherwise every
SOPInstanceUID an IMAGE-level C-FIND lists (series by series); only when the PACS answers
neither do the transfer's own sub-operation counts decide, and a transfer that counts nothing
fails. Only then is its manifest written. Everything is idempotent: a job that is taken over
re-runs from the start, finds complete studies by their manifest and re-stores nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dicomiso_common.dicom import accession_key, manifest_key
from dicomiso_common.errors import DicomError, DicomisoError, NotFound
from dicomiso_common.jobs import JobHandle, JobLost, JobRecord
from dicomiso_common.models import (
    AccessionIndex,
    RetrievalJobRequest,
    RetrievalJobResult,
    StudyManifest,
    StudyOutcome,
)
from dicomiso_common.pacs import StudyAnswer
from dicomiso_common.store import Store

from . import audited, dicomweb, lanes, negotiation, query, transfer
from .leases import Lease, LeaseBook, LeaseHeld, study_lease
from .manifest import (
    IncompleteStudy,
    StudyContents,
    assemble_manifest,
    read_manifest,
    write_manifest,
)
from .query import Inventory
from .scp import SUCCESS, StorageSCP
from .settings import RetrieverSettings
from .transfer import TransferResult

log = logging.getLogger(__name__)


class StudyNotFound(NotFound):
    title = "Study not found"


class LeaseLost(Exception):
    """Our lease on a study passed to another runner mid-transfer; stop and look again."""


def _count(inventory: Inventory) -> int:
    return sum(len(instances) for instances in inventory.values())


def _listed(inventory: Inventory | None) -> set[str]:
    return {sop for instances in (inventory or {}).values() for sop in instances}


def _expectation(
    hit: StudyAnswer, inventory: Inventory | None, result: TransferResult, method: str = "move"
) -> tuple[int, str]:
    """How many instances make the study complete, and what says so (the module's rule)."""
    web = method == "dicomweb"
    if hit.instances is not None:
        return hit.instances, "NumberOfStudyRelatedInstances ({})".format(
            "QIDO-RS" if web else "STUDY-level C-FIND"
        )
    if inventory and _count(inventory):
        return _count(inventory), "SOPInstanceUIDs listed by {}".format(
            "QIDO-RS" if web else "IMAGE-level C-FIND"
        )
    return result.completed + result.warning, "the PACS's sub-operation counts"


def _complete(manifest: StudyManifest | None, hit: StudyAnswer) -> bool:
    if manifest is None:
        return False
    return hit.instances is None or manifest.instance_count >= hit.instances


class _Progress:
    """Sums the per-study transfer counts into the job's counts."""

    def __init__(self, handle: JobHandle, hits: list[StudyAnswer]) -> None:
        self._handle = handle
        self._lock = threading.Lock()
        self._per_study: dict[str, tuple[int, int, int]] = {}
        self._expected = {h.study_uid: h.instances or 0 for h in hits}
        self._reused = 0
        handle.set_counts(
            expected=sum(self._expected.values()), received=0, failed=0, warnings=0, reused=0
        )

    def expect(self, study_uid: str, instances: int) -> None:
        """The study's instance count, once known from an IMAGE-level C-FIND."""
        with self._lock:
            self._expected[study_uid] = instances
            self._handle.set_counts(expected=sum(self._expected.values()))

    def reused(self, study_uid: str, instances: int) -> None:
        self.update(study_uid, TransferResult(completed=instances))
        with self._lock:
            self._reused += instances
            self._handle.set_counts(reused=self._reused)

    def update(self, study_uid: str, result: TransferResult) -> None:
        with self._lock:
            self._per_study[study_uid] = (result.completed, result.failed, result.warning)
            sums = [sum(v[i] for v in self._per_study.values()) for i in range(3)]
            self._handle.set_counts(received=sums[0], failed=sums[1], warnings=sums[2])


class Retrieval:
    """Runs retrieval jobs on this replica (the Jobs engine calls `run`)."""

    def __init__(
        self, settings: RetrieverSettings, store: Store, scp: StorageSCP, leases: LeaseBook
    ) -> None:
        self.settings = settings
        self.store = store
        self.scp = scp
        self.leases = leases

    def is_current(self, record: JobRecord) -> bool:
        """A succeeded job stays the answer while every study it stored still has a manifest."""
        studies = RetrievalJobResult.model_validate(record.result).studies
        return bool(studies) and all(
            self.store.exists(manifest_key(st.study_uid)) for st in studies
        )

    def run(self, handle: JobHandle) -> dict[str, Any]:
        request = RetrievalJobRequest.model_validate(handle.record.request)
        method = request.method or self.settings.retrieve_method
        handle.update(phase="query", flush=True)
        hits, accessions = self._find(request, method, handle.id)
        progress = _Progress(handle, hits)
        handle.update(phase="retrieve", flush=True)
        with ThreadPoolExecutor(
            self.settings.move_parallel, thread_name_prefix=f"move-{handle.id[:6]}"
        ) as pool:
            futures = [pool.submit(self._study, handle, hit, method, progress) for hit in hits]
            studies = [f.result() for f in futures]
        log.info(
            "retrieval finished",
            extra={"job_id": handle.id, "studies": len(studies), **handle.record.counts},
        )
        result = RetrievalJobResult(studies=tuple(studies), accessions=accessions, method=method)
        return result.to_json()

    def _find(
        self, request: RetrievalJobRequest, method: str, job_id: str
    ) -> tuple[list[StudyAnswer], dict[str, tuple[str, ...]]]:
        """C-FIND, or QIDO-RS for method dicomweb (the archive may speak nothing else)."""
        finder = dicomweb if method == "dicomweb" else query
        hits: dict[str, StudyAnswer] = {}
        accessions: dict[str, tuple[str, ...]] = {}
        for accession in request.accession_numbers:
            found = finder.find_by_accession(self.settings, accession)
            audited.job_query(
                self.store, self.settings, method, {"AccessionNumber": accession}, found, job_id
            )
            if not found:
                raise StudyNotFound(f"no study found for accession {accession}")
            index = AccessionIndex(
                accession_number=accession,
                study_uids=tuple(sorted(h.study_uid for h in found)),
                found_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            accessions[accession] = index.study_uids
            self.store.put_json(accession_key(accession), index.to_json())
            hits.update((h.study_uid, h) for h in found)
        for study_uid in request.study_uids:
            found = finder.find_by_study_uid(self.settings, study_uid)
            keys = {"StudyInstanceUID": study_uid}
            audited.job_query(self.store, self.settings, method, keys, found, job_id)
            if not found:
                raise StudyNotFound(f"no study {study_uid} in the PACS")
            hits.update((h.study_uid, h) for h in found)
        return list(hits.values()), accessions

    def _study(
        self, handle: JobHandle, hit: StudyAnswer, method: str, progress: _Progress
    ) -> StudyOutcome:
        """Make sure one study is complete in the bucket, moving it if no one else is."""
        s = self.settings
        while True:
            handle.check()
            manifest = read_manifest(self.store, hit.study_uid)
            if _complete(manifest, hit):
                assert manifest is not None  # noqa: S101 - narrowed by _complete
                progress.reused(hit.study_uid, manifest.instance_count)
                return StudyOutcome(
                    study_uid=hit.study_uid,
                    instances=manifest.instance_count,
                    transferred=False,
                )
            try:
                with study_lease(
                    self.store,
                    hit.study_uid,
                    handle.id,
                    stale_after=s.job_stale_after,
                    heartbeat=s.job_heartbeat,
                    give_up_after=s.job_give_up_after,
                ) as lease:
                    if _complete(read_manifest(self.store, hit.study_uid), hit):
                        continue  # finished by another job while we waited for the lease
                    return self._audited_transfer(handle, hit, method, progress, lease)
            except (LeaseHeld, LeaseLost):
                time.sleep(s.lease_poll)  # another live runner is moving it: wait, look again

    def _audited_transfer(
        self, handle: JobHandle, hit: StudyAnswer, method: str, progress: _Progress, lease: Lease
    ) -> StudyOutcome:
        """Transfer one study between its audit events: started, then succeeded or failed
        (a lost lease or job is no outcome: whoever holds the study next reports it)."""
        job_id = handle.id
        audited.transfer(self.store, self.settings, method, hit, "started", job_id=job_id)
        try:
            outcome = self._transfer(handle, hit, method, progress, lease)
        except (LeaseLost, JobLost):
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DicomisoError) else type(exc).__name__
            audited.transfer(
                self.store, self.settings, method, hit, "failed", job_id=job_id, error=reason
            )
            raise
        manifest = read_manifest(self.store, hit.study_uid)
        audited.transfer(
            self.store, self.settings, method, hit, "succeeded", job_id=job_id, manifest=manifest
        )
        return outcome

    def _transfer(
        self, handle: JobHandle, hit: StudyAnswer, method: str, progress: _Progress, lease: Lease
    ) -> StudyOutcome:
        s = self.settings
        uid = hit.study_uid
        started = time.monotonic()

        def report(result: TransferResult) -> None:
            """Progress callback; raising here aborts the association (pacs.associate)."""
            progress.update(uid, result)
            handle.check()
            if not lease.held():
                raise LeaseLost(uid)

        self.leases.expect(uid)
        inventory: Inventory | None = None
        plan: negotiation.Plan | None = None
        try:
            if method == "get" or hit.instances is None or self._lanes(method, hit):
                lister = dicomweb if method == "dicomweb" else query
                inventory = lister.take_inventory(s, hit)
                if hit.instances is None:
                    progress.expect(uid, _count(inventory))
            if method == "get":
                plan = negotiation.plan(hit.sop_classes, inventory or {})
                result = self._get(hit, plan, inventory or {}, report)
            elif method == "dicomweb":
                result = dicomweb.retrieve_study(s, hit, self._accept(uid), report)
            else:
                result = transfer.move_study(s, hit, report, inventory)
            described = self.scp.take_descriptions(uid)
        finally:
            self.leases.forget(uid)
            self.scp.forget(uid)  # drop what a failed transfer left behind
        expected, basis = _expectation(hit, inventory, result, method)
        self._judge(hit, result, method, expected)
        settle = time.monotonic() + s.settle_timeout
        contents = StudyContents(self.store, uid, described)
        while contents.refresh() < expected and time.monotonic() < settle:
            # Another replica's SCP may have received part of the study and still be
            # uploading it (it answers C-STOREs before its PUTs finish).
            time.sleep(0.5)
            handle.check()
            if not lease.held():
                raise LeaseLost(uid)
        manifest = assemble_manifest(uid, contents.descriptions(), handle.id, method)
        if manifest.instance_count == 0 or manifest.instance_count < expected:
            raise IncompleteStudy(
                f"study {uid}: {manifest.instance_count} of {expected} instances arrived "
                f"(expected count from {basis})"
            )
        missing = _listed(inventory) - {i.sop_uid for i in manifest.instances}
        if missing:
            raise IncompleteStudy(
                f"study {uid}: {len(missing)} instance(s) the PACS listed at IMAGE level "
                f"did not arrive (e.g. {sorted(missing)[0]})"
            )
        handle.check()
        if not lease.confirm():  # the fence: only a holder whose renewal just landed writes
            raise LeaseLost(uid)
        write_manifest(self.store, manifest)
        log.info(
            "study stored",
            extra={
                "job_id": handle.id,
                "study_uid": uid,
                "instances": manifest.instance_count,
                "bytes": manifest.total_bytes,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return StudyOutcome(
            study_uid=uid,
            instances=manifest.instance_count,
            transferred=True,
            completeness={"expected": expected, "from": basis},
            negotiation=plan.report() if plan is not None else None,
        )

    def _lanes(self, method: str, hit: StudyAnswer) -> bool:
        """A C-MOVE in lanes needs the inventory (which the completeness check then uses)."""
        return method == "move" and lanes.lanes_wanted(self.settings, hit.instances)

    def _get(
        self,
        hit: StudyAnswer,
        plan: negotiation.Plan,
        inventory: Inventory,
        report: transfer.Progress,
    ) -> TransferResult:
        """C-GET as planned; sub-operations that failed are retried once with the contexts
        they need (negotiation.retry_plan), if that proposes anything new."""
        s = self.settings
        result = transfer.get_study(s, hit, plan, self.scp.handle_store, report)
        if result.aborted or not (result.failed or result.failed_uids):
            return result
        failed = set(result.failed_uids)
        classes = {
            c for instances in inventory.values() for u, c in instances.items() if u in failed
        }
        failed_series = {
            series: {c for c in instances.values() if c}
            for series, instances in inventory.items()
            if failed & instances.keys()
        }
        retry = negotiation.retry_plan(plan, {c for c in classes if c}, failed_series)
        if retry is None:
            return result
        log.info(
            "C-GET retried with more contexts",
            extra={"study_uid": hit.study_uid, "failed": result.failed},
        )
        second = transfer.get_study(s, hit, retry, self.scp.handle_store, report)
        plan.retried.append({**retry.report(), "first_failed": result.failed})
        return second

    def _accept(self, study_uid: str) -> dicomweb.Accept:
        """WADO-RS parts go through the Storage SCP's checks and segment writer, bound to the
        study; one response is one stream (its segments are flushed by take_descriptions)."""
        stream = object()

        def accept(path: Path) -> str | None:
            status = self.scp.accept_file(path, None, study_uid=study_uid, stream=stream)
            return None if status == SUCCESS else str(getattr(status, "ErrorComment", "refused"))

        return accept

    def _judge(self, hit: StudyAnswer, result: TransferResult, method: str, expected: int) -> None:
        """Turn a transfer's final counts into a user-readable failure, or pass."""
        s = self.settings
        op = {"get": "C-GET", "dicomweb": "WADO-RS"}.get(method, "C-MOVE")
        pacs = f"PACS {s.pacs_aet}"
        total = expected or (result.completed + result.failed + result.warning)
        if result.aborted:
            raise DicomError(
                f"{pacs} aborted the association during {op} of study "
                f"{hit.study_uid}; {result.completed} of {total} instances arrived"
            )
        failed = max(result.failed, len(result.failed_uids))
        if failed:
            raise IncompleteStudy(
                f"study {hit.study_uid}: {failed} of {total} instances failed during {op}"
            )
        if result.status not in (0x0000, 0xB000):
            code = "none" if result.status is None else f"0x{result.status:04X}"
            raise DicomError(f"{pacs} ended {op} of study {hit.study_uid} with status {code}")

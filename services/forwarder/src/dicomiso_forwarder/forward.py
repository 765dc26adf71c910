"""One forward job: make sure the studies are in the bucket, then send what the peer lacks.

Per-instance results live beside the job (`forwards/{job_id}/results.json`) and survive a
retry: a re-run sends only instances the peer has not acknowledged. Only the job's owner writes
them, each write conditional on the ETag it last saw (docs/architecture.md, "Jobs and leases").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from dicomiso_client import RetrieverClient
from dicomiso_common import audit
from dicomiso_common.dicom import manifest_key
from dicomiso_common.errors import (
    DicomError,
    DicomisoError,
    NotFound,
    ObjectMissing,
    PreconditionFailed,
)
from dicomiso_common.jobs import JobHandle, JobLost
from dicomiso_common.manifests import BadDocument, load, load_accession_index, load_manifest
from dicomiso_common.models import ForwardJobRequest, ForwardJobResult, SendResult, SendResults
from dicomiso_common.store import Store

from .commitment import Verdict, request_commitment
from .peers import audit_fields, pacs_peer, resolve
from .send import Item, Outcome, Sender, Transient
from .settings import DicomwebPeer, ForwarderSettings, Peer
from .stow import StowSender

log = logging.getLogger(__name__)

DONE = ("acknowledged", "warning")
RESULTS_PREFIX = "forwards/"


Results = dict[str, SendResult]  # by SOP Instance UID


def results_key(job_id: str) -> str:
    return f"{RESULTS_PREFIX}{job_id}/results.json"


class ResultsFile:
    """One job's results.json, fenced: a write that finds it changed goes ahead only after
    the job record confirms we still own the job (else JobLost), merged with what is there."""

    def __init__(self, store: Store, handle: JobHandle) -> None:
        self._store = store
        self._handle = handle
        self.key = results_key(handle.id)
        self._etag: str | None = None

    def load(self) -> Results:
        """What the job's earlier runs recorded ({} if none); remembers the ETag."""
        try:
            read = self._store.read_json(self.key)
        except ObjectMissing:
            self._etag = None
            return {}
        self._etag = read.etag
        try:
            return dict(SendResults.model_validate(read.body).root)
        except ValidationError as exc:
            raise BadDocument(f"{self.key}: {exc.error_count()} invalid field(s)") from exc

    def save(self, results: Results) -> None:
        """Write our results; raises JobLost if the job has passed to another replica."""
        try:
            try:
                self._put(results)
            except PreconditionFailed:
                self._handle.flush()  # a conditional write of the job record: ours or JobLost
                theirs = self.load()  # another runner's last acknowledgements stay
                self._put({**theirs, **results})
        except (PreconditionFailed, JobLost):
            self._handle.lost = True
            raise JobLost(self._handle.id) from None
        except DicomisoError:
            log.warning("results not saved", extra={"job_id": self._handle.id})

    def _put(self, results: Results) -> None:
        body = {k: r.to_json() for k, r in results.items()}
        if self._etag is None:
            self._etag = self._store.put_json(self.key, body, if_none_match=True)
        else:
            self._etag = self._store.put_json(self.key, body, if_match=self._etag)


def load_send_results(store: Store, key: str) -> dict[str, SendResult]:
    """forwards/{job_id}/results.json: each instance's outcome so far (ObjectMissing if none)."""
    return load(store, key, SendResults).root


def _done(results: Results, item: Item) -> bool:
    result = results.get(item.sop_uid)
    return result is not None and result.status in DONE


def _delivered(results: Results, item: Item, commitment: bool) -> bool:
    """Acknowledged, and committed where the peer is asked to commit. A re-run sends again
    what the peer acknowledged but did not commit: a C-STORE of a kept instance is harmless."""
    return _done(results, item) and (
        not commitment or results[item.sop_uid].commitment == "committed"
    )


class RetrievalFailed(DicomisoError):
    status = 502
    title = "Retrieval failed"


class Forwarding:
    def __init__(self, settings: ForwarderSettings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def run(self, handle: JobHandle) -> dict[str, Any]:
        """Forward the studies; the outcome goes into the audit trail (not a lost job's:
        the replica that took it over reports it)."""
        request = ForwardJobRequest.model_validate(handle.record.request)
        about = {
            "job_id": handle.id,
            "destination": request.destination,
            "accession_numbers": list(request.accession_numbers) or None,
            "study_uids": list(request.study_uids) or None,
            "attempt": handle.record.attempt,
            **audit_fields(self.settings, request.destination),
        }
        try:
            result = self._run(handle, request, about)
        except JobLost:
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DicomisoError) else type(exc).__name__
            audit.record_outcome(
                self.store,
                "forwarder",
                "forward",
                "failed",
                **about,
                error=reason,
                counts=dict(handle.record.counts),
            )
            raise
        audit.record_outcome(
            self.store,
            "forwarder",
            "forward",
            "succeeded",
            **about,
            counts=dict(handle.record.counts),
        )
        return result.to_json()

    def _run(
        self, handle: JobHandle, request: ForwardJobRequest, about: dict[str, Any]
    ) -> ForwardJobResult:
        """Forward; `about` gains the PatientID, Study UIDs and SOP classes of what is sent
        once the manifests are read, for the job's audit events."""
        peer = resolve(self.settings, request.destination)  # config may have changed
        handle.update(phase="locate", flush=True)
        items = self._items(request, handle, about)
        saved = ResultsFile(self.store, handle)
        results = saved.load()
        commit = isinstance(peer, Peer) and peer.commitment
        todo = [i for i in items if not _delivered(results, i, commit)]
        lock = threading.Lock()
        answered: set[str] = set()  # instances this run has an outcome for
        last_write = [time.monotonic()]

        wanted = {i.sop_uid for i in items}
        tally = Counter(r.status for sop, r in results.items() if sop in wanted)
        transcoded = Counter(sop for sop, r in results.items() if r.transcoded)

        def count() -> None:
            handle.set_counts(
                instances=len(items),
                sent=sum(tally.values()),
                acknowledged=tally["acknowledged"],
                warning=tally["warning"],
                failed=tally["failed"],
                pending=len(items) - sum(tally.values()),
                transcoded=len(transcoded),
            )
            if commit:
                verdicts = Counter(
                    results[i.sop_uid].commitment for i in items if i.sop_uid in results
                )
                handle.set_counts(
                    committed=verdicts["committed"], not_committed=verdicts["not committed"]
                )

        def on_result(item: Item, outcome: Outcome) -> None:
            with lock:
                before = results.get(item.sop_uid)
                if before is not None:
                    tally[before.status] -= 1
                results[item.sop_uid] = outcome
                answered.add(item.sop_uid)
                tally[outcome.status] += 1
                if outcome.transcoded:
                    transcoded[item.sop_uid] = 1
                count()
                if time.monotonic() - last_write[0] > self.settings.job_heartbeat:
                    saved.save(results)
                    last_write[0] = time.monotonic()
            handle.check()

        count()
        handle.update(phase="send", flush=True)
        sender: Sender | StowSender
        if isinstance(peer, DicomwebPeer):
            sender = StowSender(self.store, peer, self.settings.http_timeout, on_result)
            parallel, label = peer.max_connections, peer.url
        else:
            sender = Sender(self.store, pacs_peer(self.settings, peer), on_result)
            parallel, label = peer.max_associations, peer.aet
        shards = [todo[i::parallel] for i in range(parallel)]
        try:
            with ThreadPoolExecutor(parallel, thread_name_prefix="send") as pool:
                for future in [
                    pool.submit(self._send_shard, sender, shard, results, answered, lock)
                    for shard in shards
                    if shard
                ]:
                    future.result()
        finally:
            with lock:
                if not handle.lost:  # a replica that lost the job must not overwrite results
                    saved.save(results)
                count()
        if commit:
            assert isinstance(peer, Peer)
            self._commit(handle, peer, items, results, saved)
            with lock:
                count()
        failed = [i for i in items if not _done(results, i)]
        uncommitted = [
            i for i in items if commit and not failed and not _delivered(results, i, True)
        ]
        if uncommitted:
            reasons = sorted({str(results[i.sop_uid].commitment_reason) for i in uncommitted})
            raise DicomError(
                f"{len(uncommitted)} of {len(items)} instances were stored but not committed by "
                f"{request.destination} ({label}): {'; '.join(reasons[:3])}"
            )
        if failed:
            reasons = sorted(
                {
                    str(results[i.sop_uid].reason or results[i.sop_uid].code)
                    for i in failed
                    if i.sop_uid in results
                }
            )
            raise DicomError(
                f"{len(failed)} of {len(items)} instances were not accepted by "
                f"{request.destination} ({label}): "
                f"{'; '.join(reasons[:3]) or 'not sent'}"
            )
        return ForwardJobResult(
            destination=request.destination,
            instances=len(items),
            results_key=results_key(handle.id),
        )

    def _commit(
        self, handle: JobHandle, peer: Peer, items: list[Item], results: Results, saved: ResultsFile
    ) -> None:
        """Storage Commitment for what the peer acknowledged and has not committed yet."""
        asked = [
            i for i in items if _done(results, i) and results[i.sop_uid].commitment != "committed"
        ]
        if not asked:
            return
        handle.update(phase="commit", flush=True)
        try:
            verdicts = request_commitment(
                self.store,
                self.settings,
                pacs_peer(self.settings, peer),
                asked,
                handle.id,
                handle.check,
            )
        except DicomError as exc:
            verdicts = {i.sop_uid: Verdict(False, str(exc)) for i in asked}
        for item in asked:
            verdict = verdicts[item.sop_uid]
            results[item.sop_uid] = results[item.sop_uid].model_copy(
                update={
                    "commitment": "committed" if verdict.committed else "not committed",
                    "commitment_reason": verdict.reason,
                }
            )
        if not handle.lost:
            saved.save(results)

    def _send_shard(
        self,
        sender: Sender | StowSender,
        shard: list[Item],
        results: Results,
        answered: set[str],
        lock: threading.Lock,
    ) -> None:
        """Send one shard, retrying what is left after a transient failure, with backoff."""
        s = self.settings
        for attempt in range(1, s.send_attempts + 1):
            with lock:
                # the shard was chosen from what earlier runs did not deliver; within this run
                # an instance is sent until the peer answers for it (stored or failed)
                left = [i for i in shard if i.sop_uid not in answered]
            if not left:
                return
            try:
                for batch in sender.plan(left):
                    sender.send_batch(batch)
                return
            except (Transient, DicomError) as exc:
                if attempt == s.send_attempts:
                    raise DicomError(
                        f"{sender.describe()}: {exc} (after {attempt} attempts)"
                    ) from exc
                delay = s.send_backoff * 2 ** (attempt - 1)
                log.warning(
                    "send retry",
                    extra={"attempt": attempt, "delay": delay, "error": type(exc).__name__},
                )
                time.sleep(delay)

    # -- finding the instances -----------------------------------------------------------

    def _items(
        self, request: ForwardJobRequest, handle: JobHandle, about: dict[str, Any]
    ) -> list[Item]:
        uids = self._study_uids(request)
        if uids is None or not all(self.store.exists(manifest_key(u)) for u in uids):
            handle.update(phase="retrieve", flush=True)
            self._retrieve(request)
            uids = self._study_uids(request)
            if uids is None:
                raise NotFound("retrieval finished but the studies are not in the bucket")
        items: list[Item] = []
        manifests = [load_manifest(self.store, uid) for uid in uids]
        about.update(audit.study_facts(manifests))
        for uid, manifest in zip(uids, manifests, strict=True):
            items += [
                Item(i.key, i.sop_uid, i.sop_class_uid, i.transfer_syntax, uid, i.size, entry=i)
                for i in manifest.instances
            ]
        return items

    def _study_uids(self, request: ForwardJobRequest) -> list[str] | None:
        uids = list(request.study_uids)
        for accession in request.accession_numbers:
            try:
                index = load_accession_index(self.store, accession)
            except ObjectMissing:
                return None
            uids += index.study_uids
        return sorted(set(uids))

    def _retrieve(self, request: ForwardJobRequest) -> None:
        """Ask the retriever (the mkiso2 relay) and wait for its job.

        The client waits out a restarting retriever (the job lives in the bucket) for up to
        30 s; anything else it cannot pass on is one of our errors, naming the retriever.
        """
        s = self.settings
        wanted = {"accession_numbers": request.accession_numbers, "study_uids": request.study_uids}
        body = {k: list(v) for k, v in wanted.items() if v}
        with RetrieverClient(s.retriever_url, s.outgoing_token()) as retriever:
            started = retriever.start(body)
            view = retriever.wait(started.id, timeout=s.retrieve_wait, outage=30.0)
        if view.state != "succeeded":
            raise RetrievalFailed(f"retrieval failed: {view.error or 'no reason given'}")

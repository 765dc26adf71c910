"""Jobs whose records live in the bucket, so any replica can answer for them and take them over.

A job's id is derived from its request, so the same request twice finds the same job. The
replica that creates (or claims) a record runs the job and rewrites the record every
heartbeat; every write is conditional on the ETag it last saw, so two replicas can never both
believe they own a job: the loser's write fails with 412 and it stops. A live job whose record
has not been written for `job_stale_after` seconds, by the bucket's clock, is claimed by the
next replica that looks at it (on GET, on a repeated POST, or by the periodic sweep); its
owner gives up earlier, after `job_give_up_after` seconds without a confirmed write. Steps must
be idempotent, because a claimed job starts over.

Each run of a job also has a marker, `jobs/live/{kind}/{id}/{run}`, written after the record
that names the run and deleted once the run's final state is recorded; the sweeper lists
only markers, so its cost follows the live jobs, not every job ever run. The protocol and its
invariants: docs/architecture.md, "Jobs and leases".
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field

from .errors import DicomisoError, InvalidInput, NotFound, ObjectMissing, PreconditionFailed
from .settings import CommonSettings
from .store import Read, Store

log = logging.getLogger(__name__)

State = Literal["queued", "running", "succeeded", "failed"]
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
_JOB_ID = re.compile(r"[0-9a-f]{32}")
LIVE_PREFIX = "jobs/live/"
PROGRESS_EVERY = 1.0  # s: a long poll answers a change of counts alone after this long
MAX_WAIT = 30.0  # s: the longest `wait` a status request may ask for
Wait = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT,
        description="Seconds to hold the answer until the job's state or phase changes "
        "(a long poll; 0: answer now). Only a job the answering replica runs is waited for.",
    ),
]


def records_prefix(kind: str) -> str:
    """Where the records of one kind of job live (and expire by lifecycle)."""
    return f"jobs/{kind}/"


def live_key(kind: str, job: str, run: str) -> str:
    """The marker that says run `run` of job `job` may still be going."""
    return f"{LIVE_PREFIX}{kind}/{job}/{run}"


class JobRecord(BaseModel):
    """What is stored at jobs/{kind}/{id}.json."""

    id: str
    kind: str
    state: State = "queued"
    request: dict[str, Any]
    created_at: float
    updated_at: float
    heartbeat_at: float
    owner: str | None = None
    attempt: int = 1
    run: str = ""  # token of the runner that owns the record (one per start/claim)
    phase: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class JobLost(Exception):
    """Another replica took the job over; this one must stop working on it."""


def job_id(kind: str, request: dict[str, Any]) -> str:
    """Derive the id from the canonical request, so equal requests meet in one record."""
    canonical = json.dumps(
        {"kind": kind, "request": request}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def validate_job_id(value: str) -> str:
    if not _JOB_ID.fullmatch(value):
        raise InvalidInput("job id must be 32 lower-case hex digits")
    return value


class JobHandle:
    """The running replica's view of one job: progress in memory, flushed with each beat."""

    def __init__(
        self,
        store: Store,
        key: str,
        record: JobRecord,
        etag: str,
        *,
        confirmed_at: float,
        give_up_after: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._on_change = on_change  # wakes status requests waiting for this job (Jobs.get)
        self._key = key
        self._lock = threading.Lock()  # the record's fields
        self._write_lock = threading.Lock()  # one PUT of the record at a time
        self.record = record
        self._etag = etag
        self._confirmed_at = confirmed_at  # monotonic time a write that landed was sent
        self._give_up_after = give_up_after
        self.lost = False

    @property
    def id(self) -> str:
        return self.record.id

    def update(self, *, flush: bool = False, **fields: Any) -> None:
        """Change fields of the record (counts, phase, result); written at the next flush."""
        with self._lock:
            for name, value in fields.items():
                setattr(self.record, name, value)
        if flush:
            self.flush()
        elif "phase" in fields or "state" in fields:
            self._on_change()

    def set_counts(self, **counts: int) -> None:
        with self._lock:
            self.record.counts = {**self.record.counts, **counts}

    def flush(self) -> None:
        """Write the record (and a fresh heartbeat) if we still own it.

        The record lock is held only to take a snapshot, never during the PUT: progress
        updates from the job's threads must not wait for S3 (measured: up to 13 % of an
        image build under load). Writes themselves are serialised, each on the last ETag.

        Raises:
            JobLost: the record changed under us, i.e. another replica claimed the job.
        """
        with self._write_lock:
            self.check()
            with self._lock:
                now = time.time()
                self.record.heartbeat_at = now
                self.record.updated_at = now
                body = self.record.model_dump()
            sent = time.monotonic()
            try:
                self._etag = self._store.put_json(self._key, body, if_match=self._etag)
            except PreconditionFailed as exc:
                etag = self._still_ours()
                if etag is None:
                    with self._lock:
                        self.lost = True
                    raise JobLost(self.record.id) from exc
                self._etag = self._store.put_json(self._key, body, if_match=etag)
            self._confirmed_at = sent
        self._on_change()  # after the write: a final state is shown only once it has landed

    def _still_ours(self) -> str | None:
        """The record's ETag if our run still owns it (a 412 after botocore retried our own
        landed write), else None."""
        try:
            current, etag = self._store.get_json(self._key)
        except ObjectMissing:
            return None
        return etag if current.get("run") == self.record.run else None

    def snapshot(self) -> JobRecord | None:
        """A copy of the record as this run has it, for a status GET; None when memory may not
        answer: the run is lost or past its give-up deadline, or it set a final state whose
        write has not landed yet (only the bucket tells that the result counts)."""
        with self._lock:
            if self.lost or time.monotonic() - self._confirmed_at > self._give_up_after:
                return None
            if self.record.state not in ACTIVE:
                return None
            return self.record.model_copy(deep=True)

    def check(self) -> None:
        """Raise JobLost if the job is no longer ours to work on (called between steps).

        It is not once another replica took it (a write of ours failed with 412), or once no
        write of ours has landed for `job_give_up_after` seconds (S3 unreachable): others
        may take it over at `job_stale_after`, and we stop before they can.
        """
        if not self.lost and time.monotonic() - self._confirmed_at > self._give_up_after:
            log.warning("job given up: its record could not be renewed", extra={"job_id": self.id})
            self.lost = True
        if self.lost:
            raise JobLost(self.record.id)


Runner = Callable[[JobHandle], dict[str, Any]]
IsCurrent = Callable[[JobRecord], bool]


class Jobs:
    """Create, find, run and take over the jobs of one kind on this replica."""

    def __init__(
        self,
        store: Store,
        kind: str,
        settings: CommonSettings,
        run: Runner,
        is_current: IsCurrent | None = None,
        *,
        max_waiters: int = 16,
    ) -> None:
        if kind == LIVE_PREFIX.split("/")[1]:
            raise ValueError(f"job kind {kind!r} would share the live markers' prefix")
        self.store = store
        self.kind = kind
        self.settings = settings
        self._run = run
        self._is_current = is_current or (lambda _rec: True)
        self._pool = ThreadPoolExecutor(settings.job_workers, thread_name_prefix=f"job-{kind}")
        self._mine: dict[str, JobHandle] = {}
        self._futures: list[Future[None]] = []
        self._mine_lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        # Status requests waiting for a change (`get(wait=...)`): a version counter under a
        # condition, bumped by this replica's job handles; at most `max_waiters` block a
        # server thread at once, the others are answered at once.
        self._changed = threading.Condition()
        self._version = 0
        self._waiters = threading.BoundedSemaphore(max_waiters)

    def key(self, job: str) -> str:
        return f"{records_prefix(self.kind)}{validate_job_id(job)}.json"

    # -- public API ----------------------------------------------------------------------

    def submit(self, request: dict[str, Any]) -> JobRecord:
        """Return the job for this request: an existing live or still-valid one, else a new run.

        A failed job, or a succeeded one whose objects are gone, is started again under the
        same id (its `attempt` counts up).
        """
        jid = job_id(self.kind, request)
        now = time.time()
        fresh = JobRecord(
            id=jid,
            kind=self.kind,
            request=request,
            created_at=now,
            updated_at=now,
            heartbeat_at=now,
            owner=self.settings.replica_id,
            run=uuid.uuid4().hex,
        )
        key = self.key(jid)
        sent = time.monotonic()
        try:
            etag = self.store.put_json(key, fresh.model_dump(), if_none_match=True)
        except PreconditionFailed:
            return self._reuse(jid)
        log.info("job created", extra={"job_id": jid, "kind": self.kind})
        self._start(fresh, etag, sent)
        return fresh

    def get(self, job: str, *, wait: float = 0.0) -> JobRecord:
        """Read a job; a live job whose runner has gone silent is claimed on the way.

        A job this replica runs answers from memory, with no S3 request (its progress is more
        recent there than in the bucket); a job of another replica, a finished or unknown one
        is read from the bucket.

        With `wait` > 0 (a long poll), a live job this replica runs is answered when its state
        or phase changes (a final state once its record has landed), when only its counts
        changed and `PROGRESS_EVERY` seconds have passed, or after `wait` seconds, whichever
        comes first. Any other job is answered at once: the caller waits its own poll
        interval (JobClient.wait).
        """
        with self._changed:  # before the read: a change right after it still wakes us
            version = self._version
        record = self._get(job)
        if wait <= 0 or record.state not in ACTIVE or not self._runs_here(record.id):
            return record
        if not self._waiters.acquire(blocking=False):
            return record  # enough server threads wait already: this caller polls
        try:
            return self._wait_for_change(record, version, wait)
        finally:
            self._waiters.release()

    def _wait_for_change(self, seen: JobRecord, version: int, wait: float) -> JobRecord:
        start = time.monotonic()
        deadline = start + wait
        now = seen
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            version = self._next_version(version, min(left, 0.5))
            now = self._get(seen.id)  # outside the lock: it may read the bucket
            if (now.state, now.phase) != (seen.state, seen.phase):
                return now
            if now.counts != seen.counts and time.monotonic() - start >= PROGRESS_EVERY:
                return now
        return now

    def _runs_here(self, job: str) -> bool:
        with self._mine_lock:
            return job in self._mine

    def _next_version(self, version: int, timeout: float) -> int:
        """Wait until a job of this replica changed after `version` (or `timeout`)."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout)
            return self._version

    def _changed_now(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _get(self, job: str) -> JobRecord:
        with self._mine_lock:
            handle = self._mine.get(validate_job_id(job))
        if handle is not None and (mine := handle.snapshot()) is not None:
            return mine
        record, read = self._read(job)
        if self._stale(record, read):
            return self._claim(record, read.etag) or self._read(job)[0]
        return record

    def start_sweeper(self) -> None:
        """Look for abandoned jobs every half heartbeat timeout, in a daemon thread."""
        if self._sweeper is None:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, daemon=True, name=f"sweep-{self.kind}"
            )
            self._sweeper.start()

    def sweep(self) -> int:
        """Claim every stale live job of this kind; return how many were claimed.

        Reads one listing of the live markers and one record per live job. A marker whose run
        is over (the record names another run, or a final state) is deleted on the way: a
        marker is written only after its run's record, so a run the record no longer names
        can never come back.
        """
        prefix = f"{LIVE_PREFIX}{self.kind}/"
        runs: dict[str, list[str]] = {}
        for obj in self.store.list(prefix):
            jid, _, run = obj.key.removeprefix(prefix).partition("/")
            runs.setdefault(jid, []).append(run)
        claimed = 0
        for jid, markers in runs.items():
            try:
                record, read = self._read(jid)
            except NotFound:
                record, read = None, None
            except (DicomisoError, ValueError):
                continue
            for run in markers:
                if record is None or run != record.run or record.state not in ACTIVE:
                    self._drop_marker(jid, run)
            if record is not None and read is not None and self._stale(record, read):
                if self._claim(record, read.etag) is not None:
                    claimed += 1
        return claimed

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop for a restart: release every running job so another replica takes it over.

        Waits at most `grace` seconds for the job threads to notice: `docker stop` sends
        SIGKILL 10 s after SIGTERM, and the record is handed over whether or not they did.

        Running jobs are marked lost: their heartbeats stop, their next check raises JobLost
        (a transfer in progress aborts its association), and their records are left `running`
        so that they go stale and are claimed elsewhere instead of being recorded as failed.
        """
        with self._mine_lock:
            self._stop.set()
            for handle in self._mine.values():
                handle.lost = True
        self._changed_now()  # waiting status requests answer now
        self._pool.shutdown(wait=False, cancel_futures=True)
        futures_wait(self._futures, timeout=grace)

    # -- internals -----------------------------------------------------------------------

    def _read(self, job: str) -> tuple[JobRecord, Read]:
        try:
            read = self.store.read_json(self.key(job))
        except ObjectMissing as exc:
            raise NotFound(f"no {self.kind} job {job}") from exc
        return JobRecord.model_validate(read.body), read

    def _stale(self, record: JobRecord, read: Read) -> bool:
        """A live job not ours whose record is older than `job_stale_after` by the bucket's
        clock (never the writer's `heartbeat_at`: hosts' clocks differ)."""
        if record.state not in ACTIVE:
            return False
        with self._mine_lock:
            if record.id in self._mine:
                return False
        return read.age > self.settings.job_stale_after

    def _reuse(self, jid: str) -> JobRecord:
        record, read = self._read(jid)
        etag = read.etag
        if record.state == "failed" or (
            record.state == "succeeded" and not self._is_current(record)
        ):
            now = time.time()
            again = record.model_copy(
                update={
                    "state": "queued",
                    "attempt": record.attempt + 1,
                    "error": None,
                    "result": {},
                    "counts": {},
                    "phase": None,
                    "owner": self.settings.replica_id,
                    "run": uuid.uuid4().hex,
                    "heartbeat_at": now,
                    "updated_at": now,
                }
            )
            sent = time.monotonic()
            try:
                new_etag = self.store.put_json(self.key(jid), again.model_dump(), if_match=etag)
            except PreconditionFailed:
                return self._read(jid)[0]  # another replica restarted it first
            log.info("job restarted", extra={"job_id": jid, "attempt": again.attempt})
            self._start(again, new_etag, sent)
            return again
        if self._stale(record, read):
            return self._claim(record, etag) or self._read(jid)[0]
        return record

    def _claim(self, record: JobRecord, etag: str) -> JobRecord | None:
        now = time.time()
        claimed = record.model_copy(
            update={
                "owner": self.settings.replica_id,
                "run": uuid.uuid4().hex,
                "heartbeat_at": now,
                "updated_at": now,
            }
        )
        sent = time.monotonic()
        try:
            new_etag = self.store.put_json(self.key(record.id), claimed.model_dump(), if_match=etag)
        except PreconditionFailed:
            return None
        log.info("job taken over", extra={"job_id": record.id, "previous_owner": record.owner})
        self._start(claimed, new_etag, sent)
        return claimed

    def _start(self, record: JobRecord, etag: str, sent: float) -> None:
        """Run a record we just wrote (created, restarted or claimed) with etag `etag`."""
        try:  # after the record: a marker for a run its record never named cannot exist
            self.store.put_bytes(live_key(self.kind, record.id, record.run), b"")
        except DicomisoError:  # the job still runs; a GET or repeated POST finds it if we die
            log.warning("live marker not written", extra={"job_id": record.id})
        handle = JobHandle(
            self.store,
            self.key(record.id),
            record,
            etag,
            confirmed_at=sent,
            give_up_after=self.settings.job_give_up_after,
            on_change=self._changed_now,
        )
        with self._mine_lock:
            if self._stop.is_set():  # shutting down: the record goes stale, another replica
                return  # takes the job over
            self._mine[record.id] = handle
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(self._pool.submit(self._execute, handle))

    def _execute(self, handle: JobHandle) -> None:
        stop_beat = threading.Event()
        beat = threading.Thread(
            target=self._beat_loop,
            args=(handle, stop_beat),
            daemon=True,
            name=f"beat-{handle.id[:8]}",
        )
        try:
            handle.update(state="running", flush=True)
            beat.start()
            result = self._run(handle)
            stop_beat.set()
            handle.update(state="succeeded", result=result, phase="done", flush=True)
            log.info("job succeeded", extra={"job_id": handle.id, **handle.record.counts})
            self._drop_marker(handle.id, handle.record.run)
        except JobLost:
            log.warning("job lost to another replica", extra={"job_id": handle.id})
        except DicomisoError as exc:
            self._fail(handle, str(exc) or exc.title)
        except Exception as exc:  # the job thread's edge: record, never crash the replica
            log.exception("job crashed", extra={"job_id": handle.id})
            self._fail(handle, f"internal error ({type(exc).__name__}); see the service log")
        finally:
            stop_beat.set()
            with self._mine_lock:
                if self._mine.get(handle.id) is handle:  # not a newer attempt of the same job
                    del self._mine[handle.id]
            self._changed_now()  # a waiter on a lost job stops waiting for it

    def _fail(self, handle: JobHandle, reason: str) -> None:
        log.warning("job failed", extra={"job_id": handle.id, **handle.record.counts})
        try:
            handle.update(state="failed", error=reason, flush=True)
            self._drop_marker(handle.id, handle.record.run)
        except JobLost:
            log.warning("job lost to another replica", extra={"job_id": handle.id})
        except DicomisoError:
            log.exception("could not record job failure", extra={"job_id": handle.id})

    def _drop_marker(self, jid: str, run: str) -> None:
        """Delete a finished or superseded run's marker (a failure only costs a later sweep)."""
        try:
            self.store.delete(live_key(self.kind, jid, run))
        except DicomisoError:
            log.warning("live marker not deleted", extra={"job_id": jid})

    def _beat_loop(self, handle: JobHandle, stop: threading.Event) -> None:
        while not stop.wait(self.settings.job_heartbeat):
            try:
                handle.flush()
            except JobLost:
                return
            except DicomisoError:
                log.warning("heartbeat not written", extra={"job_id": handle.id})

    def _sweep_loop(self) -> None:
        interval = max(self.settings.job_stale_after / 2, 0.5)
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except DicomisoError:
                log.warning("job sweep failed", extra={"kind": self.kind})
            except Exception:  # the sweeper thread's edge
                log.exception("job sweep crashed", extra={"kind": self.kind})


class JobAccepted(BaseModel):
    """The 202 answer to a POST that starts (or finds) a job."""

    id: str
    state: str
    status_url: str


def accepted(
    record: JobRecord, request: Request, response: Response, status_route: str
) -> JobAccepted:
    """Point the client at the job's status route (body and Location header)."""
    url = str(request.url_for(status_route, job_id=record.id))
    response.headers["Location"] = url
    return JobAccepted(id=record.id, state=record.state, status_url=url)


class JobStatus(BaseModel):
    """What GET on a job's status URL shows (services add their own fields)."""

    id: str
    state: str
    phase: str | None
    attempt: int
    counts: dict[str, int]
    error: str | None
    result: dict[str, Any]
    created_at: str  # ISO 8601, UTC, like every other time in the API (the record keeps epochs)
    updated_at: str
    heartbeat_at: str

    @classmethod
    def of(cls, record: JobRecord) -> Self:
        fields = record.model_dump(include=set(cls.model_fields))
        for name in ("created_at", "updated_at", "heartbeat_at"):
            fields[name] = datetime.fromtimestamp(fields[name], UTC).isoformat()
        return cls(**fields)

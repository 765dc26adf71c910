"""Receiver workers (DICOMISO_SCP_WORKERS): the SCP's associations run in other processes,
with the same checks, and a study counts only once every worker's segments landed."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.association import Association

from dicomiso_common.errors import StoreError
from support.stored import stored_keys, stored_sops


def _pool(retriever: Any) -> Any:
    pool = retriever.app.state.scp._pool
    assert pool is not None and pool.wait_ready(60), "receiver workers did not start"
    return pool


def _associate(retriever: Any, calling: str = "ABPACS") -> Association:
    ae = AE(ae_title=calling)
    ae.requested_contexts = StoragePresentationContexts
    assoc = ae.associate(
        "127.0.0.1", retriever.settings.scp_port, ae_title=retriever.settings.scp_aet
    )
    assert assoc.is_established
    return assoc


def _store(assoc: Association, datasets: list[Dataset]) -> list[int]:
    return [int(assoc.send_c_store(ds).Status) for ds in datasets]


@pytest.fixture
def study(study_factory: Any) -> Any:
    return study_factory(
        ct=4,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_nonascii=False,
        with_multiframe=False,
    )


@pytest.fixture
def datasets(study: Any) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in study.files]


def test_a_study_moved_from_the_pacs_arrives_through_a_worker(
    make_retriever: Any, any_pacs: Any, study: Any
) -> None:
    retriever = make_retriever(any_pacs, scp_workers=2)
    pool = _pool(retriever)
    any_pacs.upload(study.files)
    status = retriever.run({"accession_numbers": [study.accession]})
    assert status["state"] == "succeeded", status
    assert sum(pool.handed()) == 1  # the PACS's one association, run by a worker
    assert retriever.app.state.scp.stored == 0  # ... and not by the service process
    assert stored_sops(retriever.store, study.study_uid) == set(study.sop_uids)


def test_a_study_moved_in_two_lanes_is_received_by_two_workers(
    make_retriever: Any, any_pacs: Any, study: Any
) -> None:
    """The two settings together, as meant: the PACS sends one study over two associations
    at once (two C-MOVEs of two instances each), one to each worker, and it is complete."""
    retriever = make_retriever(any_pacs, scp_workers=2, move_lanes=2, move_lane_min_instances=2)
    pool = _pool(retriever)
    any_pacs.upload(study.files)
    status = retriever.run({"accession_numbers": [study.accession]})
    assert status["state"] == "succeeded", status
    assert pool.handed() == [1, 1]
    assert stored_sops(retriever.store, study.study_uid) == set(study.sop_uids)
    assert status["result"]["studies"][0]["instances"] == len(study.sop_uids)


def test_concurrent_associations_go_to_different_workers(
    make_retriever: Any, study: Any, datasets: list[Dataset]
) -> None:
    retriever = make_retriever(scp_workers=2)
    pool = _pool(retriever)
    scp = retriever.app.state.scp
    scp.leases.expect(study.study_uid)
    first, second = _associate(retriever), _associate(retriever)
    try:
        assert _store(first, datasets[:2]) == [0, 0]
        assert _store(second, datasets[2:]) == [0, 0]
    finally:
        first.release()
        second.release()
    assert sorted(pool.handed()) == [1, 1]
    indexes = scp.take_descriptions(study.study_uid)  # every worker's segments, landed
    described = {d.entry.sop_uid for i in indexes.values() for d in i.instances}
    assert described == set(study.sop_uids)
    assert len(indexes) == 2  # one segment per association, one association per worker


def test_a_worker_refuses_what_no_job_asked_for(
    make_retriever: Any, datasets: list[Dataset]
) -> None:
    retriever = make_retriever(scp_workers=1)
    pool = _pool(retriever)
    assoc = _associate(retriever)
    try:
        assert _store(assoc, datasets[:1]) == [0xA900]
    finally:
        assoc.release()
    assert pool.handed() == [1]
    assert stored_keys(retriever.store) == []


def test_a_worker_that_dies_fails_the_study_it_was_receiving_and_is_started_again(
    make_retriever: Any, study: Any, datasets: list[Dataset]
) -> None:
    retriever = make_retriever(scp_workers=1)
    pool = _pool(retriever)
    scp = retriever.app.state.scp
    scp.leases.expect(study.study_uid)
    assoc = _associate(retriever)
    assert _store(assoc, datasets[:1]) == [0]  # acknowledged, still in the worker's segment
    (dead,) = pool.pids
    os.kill(dead, signal.SIGKILL)
    with pytest.raises(StoreError, match="receiver worker"):
        scp.take_descriptions(study.study_uid)
    assoc.abort()
    deadline = time.monotonic() + 60
    while (not pool.pids or pool.pids == [dead]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pool.pids and pool.pids != [dead]
    assert pool.wait_ready(60)
    scp.leases.forget(study.study_uid)  # the failed job lets go; the next one asks again
    scp.leases.expect(study.study_uid)
    again = _associate(retriever)
    try:
        assert _store(again, datasets) == [0, 0, 0, 0]
    finally:
        again.release()
    indexes = scp.take_descriptions(study.study_uid)
    assert {d.entry.sop_uid for i in indexes.values() for d in i.instances} == set(study.sop_uids)


def test_workers_stop_with_the_service(make_retriever: Any) -> None:
    retriever = make_retriever(scp_workers=2)
    pids = _pool(retriever).pids
    assert len(pids) == 2
    retriever.client.__exit__(None, None, None)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by the service: gone, not a zombie


def test_a_restarted_worker_learns_the_expected_studies_and_its_death_fails_them(
    make_retriever: Any, study: Any, datasets: list[Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study expected while its worker was down reaches the restarted worker (it accepts
    the study without any bucket lease) and counts as that worker's: when it dies too, the
    study fails instead of being judged on the other workers' segments."""
    from dicomiso_retriever import workers

    monkeypatch.setattr(workers, "RESTART_DELAY", 3.0)
    retriever = make_retriever(scp_workers=1)
    pool = _pool(retriever)
    scp = retriever.app.state.scp
    (first,) = pool.pids
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pool.pids and time.monotonic() < deadline:  # its death noticed, not yet restarted
        time.sleep(0.02)
    assert pool.pids == []
    scp.leases.expect(study.study_uid)  # while no worker runs: only the snapshot carries it
    assert pool.wait_ready(60)
    (second,) = pool.pids
    assoc = _associate(retriever)
    assert _store(assoc, datasets[:1]) == [0]  # no bucket lease: the snapshot's expect
    os.kill(second, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pool.pids and time.monotonic() < deadline:  # noticed: no worker left to ask
        time.sleep(0.02)
    with pytest.raises(StoreError, match="stopped while"):
        scp.take_descriptions(study.study_uid)
    assoc.abort()

"""One study's C-MOVE in lanes (DICOMISO_MOVE_LANES): the plan, and the moves against both
real PACSs (Orthanc, dcmqrscp) with the threshold lowered so that small studies split."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dicomiso_common.pacs import MODELS, StudyAnswer
from dicomiso_retriever import transfer
from dicomiso_retriever.lanes import MAX_UIDS, Piece, lanes_wanted, plan, split
from dicomiso_retriever.settings import RetrieverSettings
from dicomiso_retriever.transfer import TransferResult
from support.stored import stored_sops

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _inventory(*sizes: int) -> dict[str, dict[str, str | None]]:
    """Series 1.2.3.<i> of the given sizes, instances 1.2.3.<i>.<j>."""
    return {
        f"1.2.3.{i}": {f"1.2.3.{i}.{j}": None for j in range(1, n + 1)}
        for i, n in enumerate(sizes, 1)
    }


def _load(lane: list[Piece]) -> int:
    return sum(len(p.instances) for p in lane)


def _moved(lanes: list[list[Piece]]) -> list[str]:
    return [u for lane in lanes for p in lane for u in p.instances]


# -- the plan ---------------------------------------------------------------------------------


def test_whole_series_are_spread_over_the_lanes_and_kept_whole() -> None:
    lanes = split(_inventory(40, 30, 20, 10), 2)
    assert sorted(_load(lane) for lane in lanes) == [50, 50]
    assert all(p.whole for lane in lanes for p in lane)
    assert sorted(_moved(lanes)) == sorted(
        u for i in _inventory(40, 30, 20, 10).values() for u in i
    )


def test_a_series_larger_than_a_lane_is_cut_and_the_others_stay_whole() -> None:
    inventory = _inventory(9, 1)
    lanes = split(inventory, 2)
    assert sorted(_load(lane) for lane in lanes) == [5, 5]
    pieces = [p for lane in lanes for p in lane]
    assert [p.whole for p in pieces if p.series_uid == "1.2.3.2"] == [True]
    big = [p for p in pieces if p.series_uid == "1.2.3.1"]
    assert len(big) == 2 and not any(p.whole for p in big)
    assert sorted(_moved(lanes)) == sorted(u for i in inventory.values() for u in i)


def test_every_instance_is_in_exactly_one_lane_balanced_within_one() -> None:
    inventory = _inventory(7, 13, 1, 1, 29, 3)
    for n in range(1, 8):
        lanes = split(inventory, n)
        moved = _moved(lanes)
        assert sorted(moved) == sorted(u for i in inventory.values() for u in i), n
        loads = [_load(lane) for lane in lanes]
        assert len(lanes) == n and max(loads) - min(loads) <= n, (n, loads)
        assert max(loads) <= -(-54 // n), (n, loads)


def test_chunks_name_at_most_the_cap_of_uids() -> None:
    lanes = split(_inventory(1200), 2, cap=MAX_UIDS)
    pieces = [p for lane in lanes for p in lane]
    assert [len(p.instances) for p in pieces] == [500, 100, 500, 100]
    assert not any(p.whole for p in pieces)
    assert [len(p.instances) for p in split(_inventory(10), 2, cap=2)[0]] == [2, 2, 1]


def test_more_lanes_than_instances_and_an_empty_inventory() -> None:
    assert [_load(lane) for lane in split(_inventory(2), 5)] == [1, 1]
    assert split({}, 2) == []
    assert split(_inventory(0, 0), 2) == []


def test_the_settings_decide_whether_to_split() -> None:
    inventory = _inventory(150, 100)
    assert plan(RetrieverSettings(), inventory) == []  # default: one lane, today's C-MOVE
    assert not lanes_wanted(RetrieverSettings(), None)
    two = RetrieverSettings(move_lanes=2)
    assert len(plan(two, inventory)) == 2
    assert plan(two, _inventory(150, 49)) == []  # 199 < the default threshold of 200
    assert lanes_wanted(two, None) and lanes_wanted(two, 200) and not lanes_wanted(two, 199)
    assert plan(two, inventory, listed=251) == []  # the inventory misses one: move the study
    assert len(plan(two, inventory, listed=250)) == 2
    low = RetrieverSettings(move_lanes=3, move_lane_min_instances=3)
    assert [_load(lane) for lane in plan(low, _inventory(3))] == [1, 1, 1]
    assert plan(low, _inventory(2)) == []


def test_the_identifiers_of_a_series_and_of_a_chunk() -> None:
    hit = StudyAnswer(study_uid=STUDY, patient_id="PID9")
    study_root = MODELS["move"][0]
    series = transfer._identifier(Piece("1.2.3.1", ("1.2.3.1.1",), True), hit, study_root)
    assert (series.QueryRetrieveLevel, series.SeriesInstanceUID) == ("SERIES", "1.2.3.1")
    assert "SOPInstanceUID" not in series and "PatientID" not in series
    chunk = Piece("1.2.3.1", ("1.2.3.1.1", "1.2.3.1.2"), False)
    image = transfer._identifier(chunk, hit, MODELS["move"][1])
    assert (image.QueryRetrieveLevel, image.StudyInstanceUID) == ("IMAGE", STUDY)
    assert (image.SeriesInstanceUID, image.PatientID) == ("1.2.3.1", "PID9")
    assert list(image.SOPInstanceUID) == ["1.2.3.1.1", "1.2.3.1.2"]


# -- the lanes at once, with their moves faked -----------------------------------------------


def test_progress_raising_in_one_lane_stops_every_lane_and_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The progress callback sees the sums; when it raises (job cancelled, lease lost) in one
    lane, the other lane stops at its next response and the callback's exception is raised."""
    stopped: list[str] = []
    other_started = threading.Event()

    def fake_lane(s: Any, hit: Any, lane: Any, progress: Any, done: Any) -> None:
        if lane[0].series_uid == "1.2.3.1":  # runs until it is stopped (bounded: no hang)
            try:
                for n in range(1, 2000):
                    progress(TransferResult(completed=n))
                    other_started.set()
                    time.sleep(0.005)
            except Exception as exc:
                stopped.append(type(exc).__name__)
                raise
            return
        other_started.wait(10)
        progress(TransferResult(completed=1))
        progress(TransferResult(completed=2, failed=1))

    seen: list[int] = []

    def report(result: TransferResult) -> None:
        seen.append(result.completed)
        if result.failed:
            raise RuntimeError("job cancelled")

    monkeypatch.setattr(transfer, "_move_lane", fake_lane)
    lanes = split(_inventory(2, 2), 2)
    with pytest.raises(RuntimeError, match="job cancelled"):
        transfer._move_lanes(RetrieverSettings(), StudyAnswer(STUDY), lanes, report)
    assert stopped == ["_Stopped"]
    assert max(seen) > 2  # the sum of both lanes, not one lane's count


def test_a_failed_piece_stops_the_other_lanes_and_its_counts_decide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A piece ending in failure stops the other lanes; no exception: the merged result carries
    the failing status, not an abort (the job's reason names what the PACS said)."""

    def fake_lane(s: Any, hit: Any, lane: Any, progress: Any, done: Any) -> None:
        if lane[0].series_uid == "1.2.3.1":
            done(TransferResult(status=0xC000, completed=1, failed=1))
            return
        for n in range(1, 2000):
            progress(TransferResult(completed=n))
            time.sleep(0.005)
        done(TransferResult(status=0x0000, completed=1999))

    monkeypatch.setattr(transfer, "_move_lane", fake_lane)
    lanes = split(_inventory(2, 2), 2)
    result = transfer._move_lanes(RetrieverSettings(), StudyAnswer(STUDY), lanes, lambda r: None)
    assert (result.status, result.failed, result.aborted) == (0xC000, 1, False)
    assert result.completed < 2000  # the other lane was stopped, not run to its end


# -- against the real PACSs -------------------------------------------------------------------

FLAGS = dict.fromkeys(
    ("with_sr", "with_ko", "with_pr", "with_sc", "with_nonascii", "with_multiframe"), False
)


def _six(study_factory: Any) -> Any:
    """Five CT slices (one series) and one MR slice: in 2 lanes of 3, the CT series is cut
    (3 + 2 instances, IMAGE level) and the MR series goes whole with the 2 (SERIES level)."""
    return study_factory(ct=5, mr=1, rows=16, cols=16, **FLAGS)


def _streams(retriever: Any) -> list[int]:
    """Record which association (stream) each instance our SCP accepted arrived on."""
    writer = retriever.app.state.scp.writer
    seen: list[int] = []
    add = writer.add

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(id(kwargs.get("stream")))
        return add(*args, **kwargs)

    writer.add = recording
    return seen


def _slowed(retriever: Any, pause: float = 0.02) -> None:
    """Make our SCP take at least `pause` seconds per instance."""
    writer = retriever.app.state.scp.writer
    add = writer.add

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(pause)
        return add(*args, **kwargs)

    writer.add = slow


def _lanes(**kw: Any) -> dict[str, Any]:
    return {"move_lanes": 2, "move_lane_min_instances": 2, **kw}


def test_a_study_in_two_lanes_arrives_complete(
    make_retriever: Any, any_pacs: Any, study_factory: Any
) -> None:
    """Each PACS runs the 3 C-MOVEs of 2 lanes (one of them at SERIES level, two with a list
        of SOPInstanceUIDs); the instances come over 2 or more associations (a PACS may open one
    per C-MOVE) and the study is complete."""
    study = _six(study_factory)
    any_pacs.upload(study.files)
    retriever = make_retriever(pacs=any_pacs, **_lanes())
    streams = _streams(retriever)
    any_pacs.mark()
    status = retriever.run({"accession_numbers": [study.accession]})
    assert status["state"] == "succeeded", status.get("error")
    assert stored_sops(retriever.store, study.study_uid) == set(study.sop_uids)
    assert status["counts"]["received"] == 6, status["counts"]
    assert any_pacs.move_requests() == 3
    assert len(streams) == 6 and len(set(streams)) >= 2  # Orthanc: one per C-MOVE, 3
    done = status["result"]["studies"][0]
    assert done["instances"] == 6
    if any_pacs.name == "dcmqrscp":  # no NumberOfStudyRelatedInstances: the inventory counts
        assert done["completeness"]["from"] == "SOPInstanceUIDs listed by IMAGE-level C-FIND"


@pytest.mark.parametrize(
    "settings",
    [{}, {"move_lanes": 1, "move_lane_min_instances": 2}, _lanes(move_lane_min_instances=7)],
)
def test_one_lane_or_a_small_study_is_one_study_level_move(
    make_retriever: Any, any_pacs: Any, study_factory: Any, settings: dict[str, Any]
) -> None:
    """The default, one lane, or a study under the threshold: one C-MOVE, one association."""
    study = _six(study_factory)
    any_pacs.upload(study.files)
    retriever = make_retriever(pacs=any_pacs, **settings)
    streams = _streams(retriever)
    any_pacs.mark()
    status = retriever.run({"accession_numbers": [study.accession]})
    assert status["state"] == "succeeded", status.get("error")
    assert stored_sops(retriever.store, study.study_uid) == set(study.sop_uids)
    assert any_pacs.move_requests() == 1
    assert len(set(streams)) == 1


def _delete_from_orthanc(pacs: Any, study_uid: str) -> None:
    """Remove one instance's file from Orthanc's storage (its index still lists it)."""
    orthanc_id = sorted(pacs.instance_ids_of_study(study_uid))[0]
    uuid = pacs.http.get(f"/instances/{orthanc_id}/attachments/dicom/info").json()["Uuid"]
    (pacs.work_dir / "storage" / uuid[:2] / uuid[2:4] / uuid).unlink()


@pytest.mark.parametrize("kind", ["orthanc", "dcmqrscp"])
def test_a_lane_failing_fails_the_job(
    make_retriever: Any,
    orthanc_factory: Any,
    dcmqrscp_factory: Any,
    study_factory: Any,
    kind: str,
) -> None:
    """An instance the archive lists but cannot read (its file deleted): the lane holding it
    fails, so does the job, with the reason, and no manifest presents the study complete."""
    no_cache = {"MaximumStorageCacheSize": 0}  # Orthanc would send its cached copy
    pacs = orthanc_factory(extra_config=no_cache) if kind == "orthanc" else dcmqrscp_factory()
    study = _six(study_factory)
    pacs.upload(study.files)
    if kind == "orthanc":
        _delete_from_orthanc(pacs, study.study_uid)
    else:
        Path(pacs.instance_ids_of_study(study.study_uid)[0]).unlink()
    retriever = make_retriever(pacs=pacs, **_lanes())
    status = retriever.run({"accession_numbers": [study.accession]})
    assert status["state"] == "failed", status
    # Orthanc ends the lane's C-MOVE with a failure status (the other lane is stopped);
    # dcmqrscp counts a failed sub-operation and goes on.
    reason = "with status 0xC000" if kind == "orthanc" else "1 of 6 instances failed during C-MOVE"
    assert reason in status["error"], status["error"]
    assert not retriever.keys(f"studies/{study.study_uid}/manifest.json")


@pytest.mark.parametrize("kind", ["orthanc", "dcmqrscp"])
def test_the_pacs_dying_during_the_lanes_fails_the_job_then_a_retry_completes(
    make_retriever: Any,
    orthanc_factory: Any,
    dcmqrscp_factory: Any,
    study_factory: Any,
    kind: str,
) -> None:
    """The PACS is killed while both lanes move (one series cut in two IMAGE-level C-MOVEs):
    the job fails with the reason and no manifest; restarted, the same POST completes."""
    pacs = orthanc_factory() if kind == "orthanc" else dcmqrscp_factory()
    study = study_factory(ct=150, mr=0, rows=128, cols=128, **FLAGS)
    pacs.upload(study.files)
    retriever = make_retriever(pacs=pacs, segment_bytes=128 * 1024, **_lanes())
    _slowed(retriever)  # so that the PACS is still sending when it dies
    body = {"accession_numbers": [study.accession]}
    job = retriever.post(body).json()["id"]
    deadline = time.monotonic() + 30
    while len(stored_sops(retriever.store, study.study_uid)) < 10:
        assert time.monotonic() < deadline, "move never started"
        time.sleep(0.02)
    if kind == "orthanc":
        pacs.kill()
    else:
        pacs.stop()

    failed = retriever.wait(job)
    assert failed["state"] == "failed"
    reasons = ("aborted the association during C-MOVE", "unreachable", "of 150")
    assert any(r in failed["error"] for r in reasons), failed["error"]
    assert not retriever.keys(f"studies/{study.study_uid}/manifest.json")
    assert len(stored_sops(retriever.store, study.study_uid)) < len(study.files)

    writer = retriever.app.state.scp.writer
    del writer.add  # full speed again
    streams = _streams(retriever)
    pacs.restart()
    pacs.mark()
    assert retriever.post(body).json()["id"] == job
    done = retriever.wait(job)
    assert done["state"] == "succeeded" and done["attempt"] == 2, done.get("error")
    assert stored_sops(retriever.store, study.study_uid) == set(study.sop_uids)
    assert len(set(streams)) == 2  # the retry moved in lanes too: two associations
    if kind == "orthanc":  # dcmqrscp's forked children share one log: lines can interleave
        assert pacs.move_requests() == 2

"""The segment writer: instances appended to segment objects, visible only with their index."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from dicomiso_common.dicom import segment_prefix
from dicomiso_common.instances import open_instances
from dicomiso_common.models import (
    InstanceDescription,
    InstanceEntry,
    PatientInfo,
    SeriesInfo,
    StudyInfo,
)
from dicomiso_common.store import Store
from dicomiso_retriever.segments import SegmentWriter
from support.stored import stored_sops

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _spooled(tmp_path: Path, i: int, size: int) -> tuple[Path, bytes, InstanceDescription]:
    data = os.urandom(size)
    path = tmp_path / f"{i}.dcm"
    path.write_bytes(data)
    entry = InstanceEntry(
        key="",
        size=size,
        sha256=hashlib.sha256(data).hexdigest(),
        transfer_syntax="1.2.840.10008.1.2.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_uid=f"{STUDY}.{i}",
        series_uid=f"{STUDY}.0",
    )
    described = InstanceDescription(
        entry=entry, series=SeriesInfo(), study=StudyInfo(study_uid=STUDY), patient=PatientInfo()
    )
    return path, data, described


def _writer(store: Store, **kw: Any) -> SegmentWriter:
    values: dict[str, Any] = {"segment_bytes": 1 << 30, "idle": 60.0, "workers": 2, "backlog": 2}
    return SegmentWriter(store, **{**values, **kw})


def test_full_segments_flush_and_read_back_byte_exact(s3_bucket: Any, tmp_path: Path) -> None:
    """Segments close at the size limit; wait() flushes the rest; every instance reads back
    exactly through its entry; spool files are gone."""
    store = Store(s3_bucket.client, s3_bucket.name)
    writer = _writer(store, segment_bytes=250_000)
    sent = {}
    for i in range(10):
        path, data, described = _spooled(tmp_path, i, 100_000)
        writer.add(STUDY, path, described, stream="assoc-1", track=True)
        assert not path.exists()
        sent[described.entry.sop_uid] = data
    indexes = writer.wait(STUDY, timeout=30)
    writer.close()
    assert len(indexes) == 4  # 3 + 3 + 3 at the limit, 1 flushed by wait()
    entries = [
        d.entry for i in sorted(indexes.values(), key=lambda x: x.segment_key) for d in i.instances
    ]
    assert {e.sop_uid for e in entries} == set(sent)
    assert all(e.key.startswith(segment_prefix(STUDY)) and e.offset is not None for e in entries)
    for entry, stream in open_instances(store, entries):
        assert stream.read() == sent[entry.sop_uid]
    assert stored_sops(store, STUDY) == set(sent)


def test_idle_and_ended_streams_flush_untracked_segments(s3_bucket: Any, tmp_path: Path) -> None:
    """Another replica's lease: nothing waits, yet the association's end and the idle timer
    each bring a segment into the bucket; before that, nothing of it counts."""
    store = Store(s3_bucket.client, s3_bucket.name)
    writer = _writer(store, idle=0.5)
    path, _, first = _spooled(tmp_path, 1, 1000)
    writer.add(STUDY, path, first, stream="ended", track=False)
    path, _, second = _spooled(tmp_path, 2, 1000)
    writer.add(STUDY, path, second, stream="idle", track=False)
    writer.end_stream("ended")
    deadline = time.monotonic() + 20
    while stored_sops(store, STUDY) != {first.entry.sop_uid, second.entry.sop_uid}:
        assert time.monotonic() < deadline, stored_sops(store, STUDY)
        time.sleep(0.1)
    writer.close()


def test_a_duplicate_on_one_association_is_stored_once(s3_bucket: Any, tmp_path: Path) -> None:
    store = Store(s3_bucket.client, s3_bucket.name)
    writer = _writer(store)
    path, data, described = _spooled(tmp_path, 1, 1000)
    again = tmp_path / "again.dcm"
    again.write_bytes(data)
    writer.add(STUDY, path, described, stream="a", track=True)
    writer.add(STUDY, again, described, stream="a", track=True)
    (index,) = writer.wait(STUDY, timeout=30).values()
    writer.close()
    assert len(index.instances) == 1 and index.size == 1000

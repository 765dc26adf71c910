"""Reading instances through manifest entries: ranges of segments, coalesced, checked."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from dicomiso_common.instances import DamagedInstance, InstanceSource, open_instances, read_head
from dicomiso_common.models import InstanceEntry
from dicomiso_common.store import Store


def _entry(key: str, sop: str, data: bytes, offset: int | None) -> InstanceEntry:
    return InstanceEntry(
        key=key,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        offset=offset,
        transfer_syntax="1.2.840.10008.1.2.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_uid=sop,
        series_uid="1.2.3",
    )


def _segment(store: Store, key: str, parts: list[bytes]) -> list[InstanceEntry]:
    store.put_bytes(key, b"".join(parts))
    entries, offset = [], 0
    for i, data in enumerate(parts):
        entries.append(_entry(key, f"1.2.3.{i}", data, offset))
        offset += len(data)
    return entries


class _Gets:
    """Counts the GETs the store sends (the S3 server is real; only the count is ours)."""

    def __init__(self, store: Store) -> None:
        self.n = 0
        real = store.client.get_object

        def counted(**kwargs: Any) -> Any:
            self.n += 1
            return real(**kwargs)

        store.client.get_object = counted


@pytest.fixture
def store(s3_bucket: Any) -> Store:
    return Store(s3_bucket.client, s3_bucket.name)


def test_back_to_back_instances_are_one_ranged_get_and_exact(store: Store) -> None:
    """Three instances of one segment, read in order: one GET, each stream exactly its bytes."""
    parts = [os.urandom(n) for n in (1000, 3 * 1024 * 1024 + 7, 10)]
    entries = _segment(store, "segments/1.2/a.seg", parts)
    gets = _Gets(store)
    got = [stream.read() for _, stream in open_instances(store, entries)]
    assert got == parts
    assert gets.n == 1


def test_out_of_order_and_skipped_reads_stay_correct(store: Store) -> None:
    """Opened out of the planned order (or one skipped), a stream is still its instance."""
    parts = [os.urandom(5000 + i) for i in range(5)]
    entries = _segment(store, "segments/1.2/b.seg", parts)
    source = InstanceSource(store, entries)
    with source.open(entries[1]) as s1:  # entry 0 never read: the run skips its bytes
        assert s1.read() == parts[1]
    with source.open(entries[4]) as s4:
        assert s4.read() == parts[4]
    with source.open(entries[2]) as s2:  # behind the run: its own ranged GET
        assert s2.read() == parts[2]
    assert InstanceSource(store).open(entries[0]).read() == parts[0]
    assert read_head(store, entries[3], 100) == parts[3][:100]


def test_a_damaged_instance_fails_its_reader(store: Store) -> None:
    """A byte changed in the segment: the reader raises instead of handing it on."""
    parts = [os.urandom(2000), os.urandom(2000)]
    entries = _segment(store, "segments/1.2/c.seg", parts)
    damaged = bytearray(b"".join(parts))
    damaged[2500] ^= 1
    store.put_bytes("segments/1.2/c.seg", bytes(damaged))
    source = InstanceSource(store, entries)
    assert source.open(entries[0]).read() == parts[0]
    with pytest.raises(DamagedInstance, match=r"1\.2\.3\.1 does not match its SHA-256"):
        source.open(entries[1]).read()


def test_an_old_manifest_entry_is_the_whole_object(store: Store) -> None:
    """Manifests from before segments: no offset, the object is the instance."""
    data = os.urandom(4096)
    store.put_bytes("instances/1.2/1.2.3/1.2.3.9.dcm", data)
    entry = _entry("instances/1.2/1.2.3/1.2.3.9.dcm", "1.2.3.9", data, None)
    assert [s.read() for _, s in open_instances(store, [entry])] == [data]
    assert read_head(store, entry, 100) == data[:100]


def test_a_segment_read_in_another_order_is_one_get(store: Store) -> None:
    """The disc lists instances in another order than the PACS sent them: still one GET for
    the segment (spooled on disk), every instance exact."""
    parts = [os.urandom(3000 + i) for i in range(6)]
    entries = _segment(store, "segments/1.2/d.seg", parts)
    order = [entries[i] for i in (3, 0, 5, 1, 4, 2)]
    gets = _Gets(store)
    got = {e.sop_uid: s.read() for e, s in open_instances(store, order)}
    assert got == {e.sop_uid: parts[i] for i, e in enumerate(entries)}
    assert gets.n == 1


def test_a_small_segment_read_in_another_order_is_exact(store: Store) -> None:
    """A span smaller than the spool file's write buffer (8 KiB): its bytes reach the file
    before they are read from it (seen: the last disc of a set failed "ends early")."""
    parts = [os.urandom(700 + i) for i in range(4)]
    entries = _segment(store, "segments/1.2/s.seg", parts)
    order = [entries[i] for i in (2, 0, 3, 1)]
    got = {e.sop_uid: s.read() for e, s in open_instances(store, order)}
    assert got == {e.sop_uid: parts[i] for i, e in enumerate(entries)}

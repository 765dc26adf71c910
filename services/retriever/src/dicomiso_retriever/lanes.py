"""One study's C-MOVE split into lanes: parts of the study the PACS sends over one
association each, so that several receivers can take them at once (DICOMISO_MOVE_LANES).

A plan is made from the study's IMAGE-level inventory: the lanes are balanced by instance
count (C-FIND says nothing of sizes), each holding a list of pieces moved one after the
other on the lane's association. A series that fits in the lane is one SERIES-level C-MOVE;
a series larger than what is left of a lane is cut into chunks, each an IMAGE-level C-MOVE
naming at most `MAX_UIDS` SOPInstanceUIDs (PS3.4 C.4.2.2.1: the keys above the level
single-valued, SOPInstanceUID a list). Moving the lanes is `transfer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .query import Inventory
from .settings import RetrieverSettings

MAX_UIDS = 500  # SOPInstanceUIDs in one IMAGE-level C-MOVE (a 32 KB identifier at most)


@dataclass(frozen=True)
class Piece:
    """One C-MOVE of a lane: a whole series (SERIES level) or some of its instances (IMAGE)."""

    series_uid: str
    instances: tuple[str, ...]  # the SOPInstanceUIDs it moves (all of the series if whole)
    whole: bool


Lane = list[Piece]


def lanes_wanted(s: RetrieverSettings, instances: int | None) -> bool:
    """Whether a study of `instances` (None: not known yet) may be moved in lanes."""
    if s.move_lanes < 2:
        return False
    return instances is None or instances >= s.move_lane_min_instances


def plan(s: RetrieverSettings, inventory: Inventory, listed: int | None = None) -> list[Lane]:
    """The lanes the settings ask for this study; none or one: move it as one study.

    `listed` is the study's NumberOfStudyRelatedInstances when known: an inventory that
    lists another number would leave instances out of every lane, so the study is moved
    whole (and judged by that count, as without lanes).
    """
    count = sum(len(instances) for instances in inventory.values())
    if not lanes_wanted(s, count) or listed not in (None, count):
        return []
    return split(inventory, s.move_lanes, MAX_UIDS)


def _chunks(series_uid: str, uids: list[str], cap: int) -> list[Piece]:
    return [
        Piece(series_uid, tuple(uids[i : i + cap]), whole=False) for i in range(0, len(uids), cap)
    ]


def split(inventory: Inventory, lanes: int, cap: int = MAX_UIDS) -> list[Lane]:
    """Share the inventory among at most `lanes` lanes of at most ceil(total / lanes)
    instances each; the largest series first, each kept whole in the least loaded lane where
    it fits, else cut over the least loaded lanes. Empty lanes are left out."""
    total = sum(len(instances) for instances in inventory.values())
    if total == 0 or lanes < 1:
        return []
    target = math.ceil(total / lanes)
    shares: list[Lane] = [[] for _ in range(min(lanes, total))]
    load = [0] * len(shares)
    by_size = sorted(inventory.items(), key=lambda item: -len(item[1]))
    for series_uid, instances in by_size:
        uids = list(instances)
        if not uids:
            continue
        lightest = min(range(len(shares)), key=load.__getitem__)
        if load[lightest] + len(uids) <= target:
            shares[lightest].append(Piece(series_uid, tuple(uids), whole=True))
            load[lightest] += len(uids)
            continue
        while uids:
            lightest = min(range(len(shares)), key=load.__getitem__)
            take = max(1, min(target - load[lightest], len(uids)))
            shares[lightest] += _chunks(series_uid, uids[:take], cap)
            load[lightest] += take
            uids = uids[take:]
    return [lane for lane in shares if lane]

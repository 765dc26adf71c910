"""A set of discs for studies bigger than one medium, planned before anything is built.

DICOM does not let a File-set span volumes (PS3.12 F.1.1; PS3.11 M.2.1.1 and J.2.1.1: "the
FSC will create multiple independent DICOM File Sets such that each File Set can reside on a
single physical volume"), so each disc of a set is a complete File-set of its own. The plan
cuts at study boundaries where it can and at series boundaries where it must; an instance is
never split and a series never leaves its disc (one larger than a medium is refused, naming
the series and a profile that holds it). Among the cuts that need the fewest discs it picks,
first, the fewest studies split over two discs, then the most even fill, keeping the studies
in date order (disc 1 holds the oldest).

Sizes are estimates made from the study manifests, so the plan can be shown before the
build: byte-exact instances as stored, transcoded ones as their decoded pixels (2 bytes a
sample, one sample a pixel: grey images; colour ones can come out larger, and a disc that
does after all exceed its medium fails the package, see packaging.py), every file rounded
up to a 2048-byte sector, plus what DICOMDIR, previews, pages and the viewer add.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicomiso_common.errors import DicomisoError
from dicomiso_common.models import DiscPlan, InstanceEntry, PlannedDisc, StudyManifest

from . import dicomdir, media

SECTOR = 2048
PER_INSTANCE = 512  # DICOMDIR leaf record, ISO 9660 and Joliet directory records
PER_SERIES = 96 * 1024  # preview JPEG (512 px, at most), SERIES record, directories
PER_STUDY = 16 * 1024  # IHE_PDI/STUDYnnn.HTM, STUDY record, directories
PER_DISC = 512 * 1024  # volume descriptors, path tables, README.TXT, INDEX.HTM, DICOMDIR head
MAX_DISCS = 99  # volume ids and file names count to two digits


class SeriesTooLarge(DicomisoError):
    """One series does not fit on one medium: a series is never split over two discs."""

    status = 413
    title = "Series too large for the medium"


class TooManyDiscs(DicomisoError):
    status = 413
    title = "Too many discs"


@dataclass(frozen=True)
class _Unit:
    """One series with what it costs on a disc."""

    study_uid: str
    series_uid: str
    entries: tuple[InstanceEntry, ...]
    cost: int


@dataclass(frozen=True)
class Part:
    """One planned disc: the study manifests cut down to its series."""

    number: int
    total: int
    manifests: list[StudyManifest]
    planned: PlannedDisc


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 10_000_000 else f"{size / 1e6:.2f} MB"


def _sectors(size: int) -> int:
    return -(-size // SECTOR) * SECTOR


def instance_cost(entry: InstanceEntry, profile: media.Profile) -> int:
    """Bytes the instance takes on the medium (an estimate where it is transcoded)."""
    size = entry.size
    if media.needs_transcode(profile, entry.transfer_syntax):
        pixels = (entry.rows or 0) * (entry.columns or 0) * max(entry.frames or 1, 1)
        size = max(size, 2 * pixels + 4096)
    return _sectors(size) + PER_INSTANCE


def fixed_cost(viewer: Path | None) -> int:
    """What every disc carries whatever its studies: the viewer and the volume's own."""
    if viewer is None:
        return PER_DISC
    files = [p for p in viewer.rglob("*") if p.is_file()]
    return PER_DISC + sum(_sectors(p.stat().st_size) + 2 * PER_INSTANCE for p in files)


def _units(manifests: list[StudyManifest], profile: media.Profile) -> list[_Unit]:
    """Every series, studies in the order the disc lists them (dicomdir's), deduplicated."""
    units = []
    for patient in dicomdir.patient_tree(manifests):
        for study in patient.studies:
            for i, series in enumerate(study.series):
                cost = sum(instance_cost(e, profile) for e in series.entries) + PER_SERIES
                cost += PER_STUDY if i == 0 else 0
                units.append(
                    _Unit(study.manifest.study_uid, series.uid, tuple(series.entries), cost)
                )
    return units


def _describe(unit: _Unit, manifests: list[StudyManifest]) -> str:
    info = next((m.series_info(unit.series_uid) for m in manifests), None)
    what = ", ".join(
        x
        for x in (
            info.modality if info else None,
            f"series number {info.number}" if info and info.number is not None else None,
            f"{len(unit.entries)} instances",
        )
        if x
    )
    return f"series {unit.series_uid} ({what})"


def _refuse_series(unit: _Unit, profile: media.Profile, room: int, ms: list[StudyManifest]) -> None:
    bigger = media.LARGER.get(profile.name)
    advice = (
        f"choose the profile {bigger} ({media.PROFILES[bigger].medium}) or the ZIP format"
        if bigger
        else "choose the ZIP format"
    )
    raise SeriesTooLarge(
        f"{_describe(unit, ms)} needs about {_mb(unit.cost)}, more than one "
        f"{profile.medium} of profile {profile.name} holds ({_mb(room)} for images); "
        f"a series is never split over two discs: {advice}"
    )


def _cuts(units: list[_Unit], room: int) -> list[int]:
    """Start index of each disc: fewest discs, then fewest split studies, then most even."""
    sums = [0]
    for u in units:
        sums.append(sums[-1] + u.cost)
    n = len(units)
    # Fewest discs: a greedy fill is optimal for contiguous parts.
    count, load = 1, 0
    for u in units:
        if load + u.cost > room:
            count, load = count + 1, 0
        load += u.cost
    if count == 1:
        return [0]
    inf = (n + 1, sums[-1] + 1)
    # best[k][i]: (studies split, largest disc) for units[:i] on k discs; start[k][i]: the cut.
    best = [[inf] * (n + 1) for _ in range(count + 1)]
    start = [[0] * (n + 1) for _ in range(count + 1)]
    best[0][0] = (0, 0)
    for k in range(1, count + 1):
        for i in range(1, n + 1):
            for p in range(i - 1, -1, -1):
                load = sums[i] - sums[p]
                if load > room:
                    break
                prev = best[k - 1][p]
                if prev == inf:
                    continue
                split = int(0 < p < n and units[p - 1].study_uid == units[p].study_uid)
                value = (prev[0] + split, max(prev[1], load))
                if value < best[k][i]:
                    best[k][i], start[k][i] = value, p
    cuts, i = [], n
    for k in range(count, 0, -1):
        p = start[k][i]
        cuts.append(p)
        i = p
    return sorted(cuts)


def _subset(manifest: StudyManifest, entries: list[InstanceEntry]) -> StudyManifest:
    series = {e.series_uid for e in entries}
    return manifest.model_copy(
        update={
            "instances": tuple(entries),
            "instance_count": len(entries),
            "total_bytes": sum(e.size for e in entries),
            "series": {k: v for k, v in manifest.series.items() if k in series},
        }
    )


def plan_discs(
    manifests: list[StudyManifest], profile: media.Profile, capacity: int, fixed: int
) -> tuple[DiscPlan, list[Part]]:
    """Spread the studies over as few media of `capacity` bytes as they need.

    Raises:
        SeriesTooLarge: one series alone is larger than what a medium holds for images.
        TooManyDiscs: more than MAX_DISCS media, or a medium too small for even the viewer.
    """
    room = capacity - fixed
    if room <= 0:
        raise TooManyDiscs(
            f"a {profile.medium} of {capacity / 1e6:.0f} MB cannot even hold the viewer and "
            f"the disc's own files ({fixed / 1e6:.1f} MB); check DICOMISO_MEDIUM_CAPACITY_BYTES"
        )
    units = _units(manifests, profile)
    for unit in units:
        if unit.cost > room:
            _refuse_series(unit, profile, room, manifests)
    cuts = _cuts(units, room) if units else [0]
    if len(cuts) > MAX_DISCS:
        raise TooManyDiscs(
            f"the studies need {len(cuts)} {profile.medium}s, more than {MAX_DISCS}: "
            "choose a larger medium or the ZIP format"
        )
    by_uid = {m.study_uid: m for m in manifests}
    bounds = [*cuts, len(units)]
    parts = []
    for number, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False), 1):
        chunk = units[lo:hi]
        studies: dict[str, list[InstanceEntry]] = {}
        for unit in chunk:
            studies.setdefault(unit.study_uid, []).extend(unit.entries)
        planned = PlannedDisc(
            number=number,
            study_uids=tuple(studies),
            series_uids=tuple(u.series_uid for u in chunk),
            instances=sum(len(u.entries) for u in chunk),
            estimated_bytes=fixed + sum(u.cost for u in chunk),
        )
        subset = [_subset(by_uid[uid], entries) for uid, entries in studies.items()]
        parts.append(Part(number, len(cuts), subset, planned))
    plan = DiscPlan(
        profile=profile.name,
        medium=profile.medium,
        capacity=capacity,
        discs=tuple(p.planned for p in parts),
    )
    return plan, parts

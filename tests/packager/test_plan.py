"""The disc planner on its own: fewest discs, study boundaries before series boundaries,
balanced, date order, and the refusal of a series larger than one medium."""

from __future__ import annotations

import itertools

import pytest

from dicomiso_common.models import InstanceEntry, SeriesInfo, StudyInfo, StudyManifest
from dicomiso_packager import media, plan

MB = 1_000_000
DVD = media.PROFILES["STD-GEN-DVD-JPEG"]
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_uids = itertools.count(1)


def _study(date: str, *series_mb: int) -> StudyManifest:
    """One study; each series one instance of the given size (MB), kept byte-exact."""
    study_uid = f"1.2.{next(_uids)}"
    instances, series = [], {}
    for number, size in enumerate(series_mb, 1):
        uid = f"{study_uid}.{number}"
        series[uid] = SeriesInfo(modality="CT", number=number)
        instances.append(
            InstanceEntry(
                key=f"instances/{study_uid}/{uid}/{uid}.1.dcm",
                size=size * MB,
                transfer_syntax=EXPLICIT_LE,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                sop_uid=f"{uid}.1",
                series_uid=uid,
                instance_number=1,
                rows=512,
                columns=512,
            )
        )
    return StudyManifest(
        study_uid=study_uid,
        study=StudyInfo(date=date),
        series=series,
        instance_count=len(instances),
        total_bytes=sum(i.size for i in instances),
        instances=tuple(instances),
        retrieved_at="2026-01-01T00:00:00+00:00",
        job_id="j",
        method="move",
    )


def _plan(manifests: list[StudyManifest], room_mb: int) -> list[list[str]]:
    """Series UIDs per disc for a medium with `room_mb` MB for images, 1 MB more for what
    each series and study adds (previews, records), and 2 MB for what every disc carries."""
    _, parts = plan.plan_discs(manifests, DVD, room_mb * MB + 3 * MB, 2 * MB)
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    return [list(p.planned.series_uids) for p in parts]


def _loads(discs: list[list[str]], sizes: dict[str, int]) -> list[int]:
    return [sum(sizes[s] for s in d) for d in discs]


def test_what_fits_is_one_disc() -> None:
    a, b = _study("20240101", 10, 10), _study("20240201", 10)
    assert len(_plan([a, b], 100)) == 1


def test_whole_studies_when_that_needs_no_more_discs() -> None:
    """Four studies of 2 x 25 MB on 100 MB media: two discs of two whole studies each."""
    studies = [_study(f"2024010{d}", 25, 25) for d in range(1, 5)]
    discs = _plan(studies, 100)
    assert len(discs) == 2
    for disc in discs:
        assert len({s.rsplit(".", 1)[0] for s in disc}) == 2  # two studies, both whole


def test_a_study_is_split_at_a_series_when_that_saves_a_disc() -> None:
    """Three studies of 2 x 30 MB on 100 MB media: whole studies need 3 discs, cutting one
    study between its series needs 2; exactly one study is split, the discs balanced."""
    studies = [_study(f"2024010{d}", 30, 30) for d in range(1, 4)]
    discs = _plan(studies, 100)
    assert len(discs) == 2
    split = [
        u
        for u in (m.study_uid for m in studies)
        if all(any(s.startswith(u + ".") for s in d) for d in discs)
    ]
    assert len(split) == 1
    sizes = {s: 30 for m in studies for s in m.series}
    assert _loads(discs, sizes) == [90, 90]


def test_the_fullest_disc_is_as_empty_as_it_can_be() -> None:
    """50, 50, 30, 10 MB studies on 100 MB media: not 100 + 40 (a greedy fill) but 50 + 90."""
    studies = [_study(f"2024010{d}", mb) for d, mb in enumerate((50, 50, 30, 10), 1)]
    discs = _plan(studies, 100)
    sizes = {s: mb for m, mb in zip(studies, (50, 50, 30, 10), strict=True) for s in m.series}
    assert len(discs) == 2 and max(_loads(discs, sizes)) == 90


def test_disc_one_holds_the_oldest_studies() -> None:
    new, old = _study("20250101", 60), _study("20200101", 60)
    discs = _plan([new, old], 100)
    assert discs == [list(old.series), list(new.series)]


def test_a_series_larger_than_the_medium_is_refused_with_a_larger_profile() -> None:
    big = _study("20240101", 20, 120)
    with pytest.raises(plan.SeriesTooLarge) as refused:
        _plan([big], 100)
    text = str(refused.value)
    assert list(big.series)[1] in text and "series number 2" in text
    assert "never split" in text and "STD-GEN-BD-JPEG" in text
    assert refused.value.status == 413


def test_a_medium_too_small_for_the_viewer_is_refused() -> None:
    with pytest.raises(plan.TooManyDiscs, match="cannot even hold the viewer"):
        plan.plan_discs([_study("20240101", 1)], DVD, 1 * MB, 2 * MB)


def test_the_mail_of_a_set_lists_every_disc() -> None:
    """The patient's e-mail gives each disc's link and says each opens on its own."""
    from dicomiso_packager import mail
    from dicomiso_packager.settings import PackagerSettings

    discs = [
        {
            "number": n,
            "total": 2,
            "filename": f"BudiSantoso-MR1CT2-{n}of2.iso",
            "download_url": f"http://127.0.0.1:9/disc{n}",
        }
        for n in (1, 2)
    ]
    links = {
        "download_url": "http://127.0.0.1:9/disc1",
        "view_url": None,
        "expires_at": "2026-12-05T10:00:00+00:00",
        "filename": discs[0]["filename"],
        "size": 1,
        "discs": discs,
    }
    text = mail.compose(PackagerSettings(), "patient@example.org", links).get_content()
    assert "The images need 2 discs. Each disc opens on its own" in text
    for d in discs:
        assert f"Disc {d['number']} of 2 ({d['filename']}):\n{d['download_url']}" in text
    one = mail.compose(PackagerSettings(), "p@example.org", {**links, "discs": discs[:1]})
    assert "discs" not in one.get_content()

"""Studies bigger than one medium: a set of discs, each a complete File-set, for real.

A small DICOMISO_MEDIUM_CAPACITY_BYTES stands in for a CD or DVD. Orthanc holds three
studies of one patient (five image series and SR/KO/PR/SC objects), the retriever C-MOVEs
them, the packager plans and builds the set; every disc is downloaded over its signed link
and checked with pycdlib, isoinfo, dciodvfy, dcentvfy and `dicom-iso verify`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from dicomiso_packager import plan, viewer
from dicomiso_packager.app import create_app as create_packager
from dicomiso_packager.settings import PackagerSettings
from dicomiso_tools.cli import app as cli
from support.discs import dcentvfy, dciodvfy_errors, download, read_iso, read_zip
from support.mariadb import add_patient
from support.net import free_port
from support.servers import serving
from support.studies import Study

ROOM = 330_000  # bytes for images on each small "medium", beyond what every disc carries


def _studies(study_factory: Any, patient_id: str, base: int) -> list[Study]:
    """Three studies of one patient, accession numbers MR.{base+1}, CT.{base+2}, CT.{base+3}
    (unique per test: the session's Orthanc is shared)."""
    return [
        study_factory(
            ct=8, mr=6, patient_id=patient_id, accession=f"MR.{base + 1}", study_date="20230105"
        ),
        study_factory(
            ct=7,
            mr=0,
            with_ko=False,
            with_pr=False,
            with_nonascii=False,
            patient_id=patient_id,
            accession=f"CT.{base + 2}",
            study_date="20240210",
            seed=3,
        ),
        study_factory(
            ct=4,
            mr=5,
            with_sr=False,
            with_sc=False,
            with_multiframe=False,
            with_nonascii=False,
            patient_id=patient_id,
            accession=f"CT.{base + 3}",
            study_date="20250320",
            seed=5,
        ),
    ]


def _fixed() -> int:
    """What every disc carries besides its studies (the bundled viewer, the volume's own)."""
    return plan.fixed_cost(viewer.viewer_source(PackagerSettings()))


def _follow(stack: Any, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the status until the job ends; every status seen, in order."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = stack.packager.get(f"/v1/packages/{job_id}").json()
        seen.append(status)
        if status["state"] in ("succeeded", "failed"):
            return status, seen
        time.sleep(0.05)
    raise AssertionError(f"package {job_id} did not finish: {seen[-1]}")


def _isoinfo_volume(path: Path) -> str:
    out = subprocess.run(
        ["isoinfo", "-d", "-i", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"^Volume id:\s*(\S+)", out, re.M)
    assert found, out
    return found.group(1)


def test_a_study_set_too_big_for_one_medium_becomes_a_set_of_complete_discs(
    make_stack: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    """The plan is in the status before the build (and stays in the result); each disc is a
    valid File-set of its own with DICOMDIR, README.TXT and INDEX.HTM saying "disc n of N",
    previews and the viewer; volume ids and file names say which disc; no series is split;
    the discs together hold every instance of the PACS exactly once; the ZIP beside them
    holds everything in one File-set; the link of disc 2 redirects to disc 2."""
    studies = _studies(study_factory, "RM-SET-1", 9000)
    orthanc.upload([f for s in studies for f in s.files])
    stack = make_stack(medium_capacity_bytes=_fixed() + ROOM)
    add_patient(stack.his, "RM-SET-1", "Budi Santoso", [s.accession for s in studies])

    response = stack.post({"accession_numbers": [s.accession for s in studies]})
    assert response.status_code == 202, response.text
    status, seen = _follow(stack, response.json()["id"])

    assert status["state"] == "succeeded", status.get("error")
    total = len(status["plan"]["discs"])
    assert total >= 2, status["plan"]
    assert status["plan"]["medium"] == "DVD" and status["plan"]["profile"] == "STD-GEN-DVD-JPEG"
    building = [s for s in seen if s["phase"] in ("plan", "build", "upload")]
    assert building, [s["phase"] for s in seen]
    assert all(s["plan"] is not None for s in building if s["phase"] != "plan")
    planned = [d["instances"] for d in status["plan"]["discs"]]
    discs = status["discs"]
    assert [d["number"] for d in discs] == list(range(1, total + 1))
    assert (
        status["filename"]
        == discs[0]["filename"]
        == f"BudiSantoso-MR9001CT9002CT9003-1of{total}.iso"
    )
    assert status["download_url"] == discs[0]["download_url"]

    source = {uid: s for s in studies for uid in s.sop_uids}
    series_of = {i.sop_instance_uid: i.series_uid for s in studies for i in s.instances}
    on_disc: dict[str, int] = {}
    previews = 0
    for d in discs:
        n = d["number"]
        image = tmp_path / d["filename"]
        response = download(d["download_url"], image)
        assert response.headers["content-disposition"] == f'attachment; filename="{d["filename"]}"'
        assert d["filename"] == f"BudiSantoso-MR9001CT9002CT9003-{n}of{total}.iso"
        assert image.stat().st_size == d["size"] <= stack.settings.medium_capacity_bytes
        assert hashlib.sha256(image.read_bytes()).hexdigest() == d["sha256"]
        assert (
            _isoinfo_volume(image) == d["volume_id"] == f"{status['id'][:8].upper()}_{n}OF{total}"
        )

        tree = read_iso(image)
        referenced = tree.referenced()
        assert len(referenced) == d["instances"] == planned[n - 1]
        for sop in referenced:
            assert sop not in on_disc, f"{sop} on disc {on_disc[sop]} and {n}"
            on_disc[sop] = n
        assert {"DICOMDIR", "README.TXT", "INDEX.HTM", "VIEWER/VIEWER.HTM"} <= set(tree.files)
        previews += sum(p.startswith("IHE_PDI/SER") for p in tree.files)
        readme = tree.files["README.TXT"].decode("ascii")
        assert f"DISC {n} OF {total}" in readme and f"disc {n} of a set of {total}" in readme
        index = tree.files["INDEX.HTM"].decode("ascii")
        assert f"Disc {n} of {total}" in index and "On the other discs of this set" in index
        for other in set(range(1, total + 1)) - {n}:
            assert f"<td>{other} of {total}</td>" in index
        assert tree.dicomdir().FileSetID == d["volume_id"]
        root = tree.extract(tmp_path / f"disc{n}")
        assert dciodvfy_errors(root / "DICOMDIR") == []
        checked = dcentvfy(root / "DICOMDIR")
        assert checked.returncode == 0 and "Error" not in checked.stdout + checked.stderr, (
            checked.stdout + checked.stderr
        )

    assert previews >= 5  # one per image series, on the disc that holds it
    assert set(on_disc) == set(source)  # the union is the source, each instance once
    for series in set(series_of.values()):
        assert len({on_disc[s] for s, r in series_of.items() if r == series}) == 1, series

    whole = next(i for i in status["downloads"] if i["format"] == "zip")
    download(whole["url"], tmp_path / "all.zip")
    assert set(read_zip(tmp_path / "all.zip").referenced()) == set(source)

    isos = [str(tmp_path / d["filename"]) for d in discs]
    checked_set = CliRunner().invoke(cli, ["verify", *isos])
    assert checked_set.exit_code == 0, checked_set.output
    assert f"set of {total} discs: ok ({len(source)} instances" in checked_set.output
    missing = CliRunner().invoke(cli, ["verify", *isos[1:]])
    assert missing.exit_code == 1 and f"disc 1 of {total} is missing" in missing.output

    second = stack.packager.get(
        f"/v1/packages/{status['id']}/download?disc=2", follow_redirects=False
    )
    assert second.status_code == 307
    assert f"-2of{total}.iso" in second.headers["location"]
    summary = next(p for p in stack.packager.get("/v1/packages").json() if p["id"] == status["id"])
    assert summary["discs"] == total


def test_cli_downloads_every_disc_of_a_set(
    make_stack: Any, orthanc: Any, study_factory: Any, tmp_path: Path
) -> None:
    """`dicom-iso package --download DIR` saves each disc (size and SHA-256 checked) under
    its own name; `dicom-iso verify` on them passes as a set."""
    studies = _studies(study_factory, "RM-SET-2", 9100)
    orthanc.upload([f for s in studies for f in s.files])
    stack = make_stack(medium_capacity_bytes=_fixed() + ROOM, http_port=free_port())
    add_patient(stack.his, "RM-SET-2", "Siti Aminah", [s.accession for s in studies])
    out = tmp_path / "saved"
    out.mkdir()

    with serving(create_packager(stack.settings), stack.settings) as url:
        run = CliRunner().invoke(
            cli,
            [
                "package",
                ",".join(s.accession for s in studies),
                "--download",
                str(out),
                "--packager-url",
                url,
                "--json",
            ],
        )
        job_id = json.loads(run.output)["id"] if run.exit_code == 0 else ""
        shown = CliRunner().invoke(cli, ["status", job_id, "--packager-url", url])

    assert run.exit_code == 0, run.output
    assert "disc 2 of " in shown.output and "-2of" in shown.output, shown.output
    saved = sorted(out.glob("*.iso"))
    total = len(saved)
    assert total >= 2
    assert [p.name for p in saved] == [
        f"SitiAminah-MR9101CT9102CT9103-{n}of{total}.iso" for n in range(1, total + 1)
    ]
    checked = CliRunner().invoke(cli, ["verify", *map(str, saved)])
    assert checked.exit_code == 0, checked.output


def test_a_series_larger_than_one_medium_is_refused_naming_it_and_a_larger_profile(
    make_stack: Any, orthanc: Any, study_factory: Any
) -> None:
    """A series is never split over two discs: one that does not fit fails the package
    before anything is built, with the series, its size and the profile that holds it."""
    study = study_factory(
        ct=20,
        mr=0,
        with_sr=False,
        with_ko=False,
        with_pr=False,
        with_sc=False,
        with_multiframe=False,
        with_nonascii=False,
        patient_id="RM-SET-3",
    )
    orthanc.upload(study.files)
    stack = make_stack(medium_capacity_bytes=_fixed() + 100_000)
    add_patient(stack.his, "RM-SET-3", "Tono Hadi", [study.accession])

    status = stack.run({"accession_numbers": [study.accession]})

    assert status["state"] == "failed", status
    ct_series = study.of_kind("ct")[0].series_uid
    assert f"series {ct_series} (CT" in status["error"]
    assert "never split" in status["error"] and "STD-GEN-BD-JPEG" in status["error"]
    assert stack.keys(f"packages/{status['id']}/") == []
    # Now that the study is in the bucket, the same refusal comes at once, as a 413.
    again = stack.post({"accession_numbers": [study.accession], "expires_in": 3600})
    assert again.status_code == 413, again.text
    assert again.json()["title"] == "Series too large for the medium"
    assert f"series {ct_series} (CT" in again.json()["detail"]
    assert "STD-GEN-BD-JPEG" in again.json()["detail"]
    events = [stack.store.get_json(k)[0] for k in stack.keys("audit/")]
    refused = [e for e in events if e["action"] == "package" and e["outcome"] == "refused"]
    assert len(refused) == 1 and "never split" in refused[0]["reason"], refused
    cd = stack.post({"accession_numbers": [study.accession], "profile": "STD-GEN-CD"})
    assert cd.status_code == 413 and "choose the profile STD-GEN-DVD-JPEG (DVD)" in cd.text
    # ZIP has no capacity: the same study is one ZIP.
    zipped = stack.run({"accession_numbers": [study.accession], "format": "zip"})
    assert zipped["state"] == "succeeded", zipped
    assert len(zipped["discs"]) == 1 and zipped["plan"] is None

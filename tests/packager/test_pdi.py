"""README.TXT, web pages and JPEG previews of a patient disc (IHE RAD PDI)."""

from __future__ import annotations

import io
import logging
import posixpath
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from dicomiso_common.dicom import instance_key
from dicomiso_common.models import StudyManifest
from dicomiso_packager.pdi import preview_candidate, readme_text, series_preview, web_pages
from support.dcmtk import dcmtk_bin
from support.manifests import manifest_of as support_manifest_of
from support.studies import Study

StudyFactory = Callable[..., Study]
XHTML = "{http://www.w3.org/1999/xhtml}"
CREATED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
NAME_83 = re.compile(r"^[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?$")


def manifest_of(study: Study) -> StudyManifest:
    """The manifest the retriever would write for these files (bucket keys)."""

    def key(path: Path, ds: pydicom.Dataset) -> str:
        return instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    return support_manifest_of(study.files, key)


def previews_for(manifests: list[StudyManifest]) -> dict[str, tuple[str, ...]]:
    """One JPEG path per series that has an image to preview, as the packager would name them."""
    out: dict[str, tuple[str, ...]] = {}
    for manifest in manifests:
        for uid in manifest.series:
            if preview_candidate(manifest, uid) is not None:
                out[uid] = ("IHE_PDI", f"S{len(out) + 1:04d}.JPG")
    return out


def parse(page: bytes) -> ET.Element:
    return ET.fromstring(page.decode("utf-8"))


def text_of(root: ET.Element) -> str:
    return " ".join("".join(root.itertext()).split())


@pytest.fixture
def two_studies(study_factory: StudyFactory) -> list[StudyManifest]:
    first = study_factory(patient_name="Santoso^Budi", patient_id="PID-77")
    second = study_factory(
        patient_name="Santoso^Budi", patient_id="PID-77", study_date="20240402", seed=1
    )
    return [manifest_of(first), manifest_of(second)]


def test_readme_is_ascii_general_and_counts(two_studies: list[StudyManifest]) -> None:
    """README.TXT is CRLF ASCII, names creator, profile and counts, and no patient data."""
    data = readme_text(
        two_studies,
        institution="Clínica São José",
        profile="STD-GEN-DVD-JPEG",
        created_at=CREATED,
        viewer="VIEWER",
        contact="+62 21 555 0100",
    )

    text = data.decode("ascii")
    assert "\n" not in text.replace("\r\n", "") and "\r" not in text.replace("\r\n", "")
    assert all(len(line) <= 76 for line in text.split("\r\n"))
    flat = " ".join(text.split())
    assert "Clinica Sao Jose" in flat and "+62 21 555 0100" in flat
    # 2 x (3 CT, 2 MR, SR, KO, PR, SC RGB, SC UTF-8, multi-frame): 11 files, 8 images.
    assert "2 studies, 16 series, 16 images (22 DICOM files in all)" in flat
    for expected in (
        "STD-GEN-DVD-JPEG",
        "1 May 2024",  # Babel, en_GB: day month year
        "INDEX.HTM",
        "DICOMDIR",
        "VIEWER",
        "autorun",
        "personal health information",
        "no diagnosis",
    ):
        assert expected in flat
    for private in filter(
        None,
        (
            "Santoso",
            "Budi",
            "PID-77",
            "19700101",
            "1970-01-01",
            "1 January 1970",
            two_studies[0].study.accession_number,
            "No acute abnormality",
        ),
    ):  # (an absent accession number cannot leak)
        assert private not in flat


def test_readme_without_viewer_says_nothing_autoruns(two_studies: list[StudyManifest]) -> None:
    """Without a viewer bundle the README says none is included and nothing autoruns."""
    flat = " ".join(
        readme_text(
            two_studies[:1], institution="RS", profile="STD-GEN-CD", created_at=CREATED, viewer=None
        )
        .decode("ascii")
        .split()
    )
    assert "No viewer program is included" in flat and "1 study," in flat


def test_pages_are_xhtml_with_resolving_relative_links(two_studies: list[StudyManifest]) -> None:
    """Every page parses as XML; every href/src is relative and names a file on the disc."""
    previews = previews_for(two_studies)
    pages = web_pages(
        two_studies, institution="RS Test", previews=previews, created_at=CREATED, viewer="VIEWER"
    )

    paths = [path for path, _ in pages]
    assert paths[0] == ("INDEX.HTM",)
    assert paths[1:] == [("IHE_PDI", "STUDY001.HTM"), ("IHE_PDI", "STUDY002.HTM")]
    on_disc = set(paths) | set(previews.values()) | {("README.TXT",)}
    assert all(NAME_83.fullmatch(part) for path in on_disc for part in path)
    images_seen = 0
    for path, data in pages:
        assert data.isascii() and b"charset=UTF-8" in data
        root = parse(data)
        for element in root.iter():
            for attribute in ("href", "src"):
                link = element.get(attribute)
                if link is None:
                    continue
                assert ":" not in link and not link.startswith("/"), link
                target = posixpath.normpath(posixpath.join(posixpath.dirname("/".join(path)), link))
                assert tuple(target.split("/")) in on_disc, (path, link)
        images_seen += len(list(root.iter(f"{XHTML}img")))
    assert images_seen == len(previews) == 2 * 5  # CT, MR, SC RGB, SC UTF-8, multi-frame

    index = text_of(parse(pages[0][1]))
    assert "Budi Santoso" in index and "PID-77" in index and "1 January 1970" in index
    assert "15 March 2024" in index and "2 April 2024" in index and "RS Test" in index
    study = text_of(parse(pages[1][1]))
    assert "Chest axial" in study and "T1 SE axial" in study and "no preview" in study


def test_hostile_text_renders_as_text(two_studies: list[StudyManifest]) -> None:
    """Names and descriptions with markup are escaped: no script, no handler, text intact."""
    hostile = '<script>alert(1)</script>^O\'Brien & "Co"'
    manifest = two_studies[0]
    first = next(iter(manifest.series))
    manifest = manifest.model_copy(
        update={
            "patient": manifest.patient.model_copy(update={"name": hostile}),
            "study": manifest.study.model_copy(
                update={"description": '<img src="x" onerror="alert(2)">'}
            ),
            "series": {
                **manifest.series,
                first: manifest.series[first].model_copy(
                    update={"description": "</td></tr><b>x</b>"}
                ),
            },
        }
    )
    pages = web_pages([manifest], institution="A & B <i>", previews={}, created_at=CREATED)

    for _, data in pages:
        assert b"<script" not in data.lower() and b'<img src="x"' not in data
        root = parse(data)
        for element in root.iter():
            assert element.tag.removeprefix(XHTML) not in ("script", "object", "embed", "iframe")
            assert not any(name.lower().startswith("on") for name in element.attrib)
            assert element.tag != f"{XHTML}img"
        flat = text_of(root)
        assert 'O\'Brien & "Co" <script>alert(1)</script>' in flat and "A & B <i>" in flat
    assert '<img src="x" onerror="alert(2)">' in text_of(parse(pages[0][1]))
    assert "</td></tr><b>x</b>" in text_of(parse(pages[1][1]))


def test_non_ascii_name_displays(study_factory: StudyFactory) -> None:
    """A UTF-8 name reaches the page as character references that parse back to the name."""
    manifest = manifest_of(study_factory(patient_name="Nuñez^José", ct=1, mr=0))
    pages = web_pages([manifest], institution="Clínica", previews={}, created_at=CREATED)

    assert all(data.isascii() for _, data in pages)
    assert "José Nuñez" in text_of(parse(pages[0][1]))
    assert "Clínica" in text_of(parse(pages[1][1]))


def test_preview_candidate_is_the_middle_image(study_factory: StudyFactory) -> None:
    """The middle instance by Instance Number; SR/KO/PR series get none."""
    study = study_factory(ct=5, mr=0)
    manifest = manifest_of(study)
    ct_uid = study.of_kind("ct")[0].series_uid
    assert preview_candidate(manifest, ct_uid).instance_number == 3  # type: ignore[union-attr]
    for kind in ("sr", "ko", "pr"):
        assert preview_candidate(manifest, study.of_kind(kind)[0].series_uid) is None


def jpeg(data: bytes | None) -> Image.Image:
    assert data is not None and data[:2] == b"\xff\xd8"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "JPEG" and not image.info.get("progressive")
    return image


def centre_and_corner(image: Image.Image) -> tuple[float, float]:
    arr = np.asarray(image.convert("L"), dtype=np.float64)
    h, w = arr.shape
    centre = arr[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4]
    return float(centre.mean()), float(arr[:6, :6].mean())


def test_previews_of_native_images(study_factory: StudyFactory) -> None:
    """CT (windowed), MR, RGB SC and multi-frame give JPEGs; SR, KO, PR give None."""
    study = study_factory()
    ct = jpeg(series_preview(study.of_kind("ct")[1].path.open("rb")))
    assert ct.mode == "L" and ct.size == (64, 64)
    centre, corner = centre_and_corner(ct)
    assert centre > 200 and corner < 30  # HU 614 above the 40/400 window, air below it
    assert jpeg(series_preview(study.of_kind("mr")[0].path.open("rb"))).mode == "L"
    assert jpeg(series_preview(study.of_kind("sc")[0].path.open("rb"))).mode == "RGB"
    assert jpeg(series_preview(study.of_kind("nonascii")[0].path.open("rb"))).mode == "L"
    assert jpeg(series_preview(study.of_kind("mf")[0].path.open("rb"))).size == (64, 64)
    for kind in ("sr", "ko", "pr"):
        assert series_preview(study.of_kind(kind)[0].path.open("rb")) is None


def test_monochrome1_is_inverted(study_factory: StudyFactory, tmp_path: Path) -> None:
    """MONOCHROME1 shows its minimum as white (PS3.3 C.7.6.3.1.2)."""
    ds = pydicom.dcmread(study_factory(ct=1, mr=0).of_kind("ct")[0].path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = tmp_path / "mono1.dcm"
    ds.save_as(out)
    centre, corner = centre_and_corner(jpeg(series_preview(out.open("rb"))))
    assert centre < 30 and corner > 200


def test_preview_size_is_bounded(study_factory: StudyFactory) -> None:
    """The longest side is at most max_size and the aspect ratio is kept."""
    path = study_factory(ct=1, mr=0, rows=700, cols=350).of_kind("ct")[0].path
    assert jpeg(series_preview(path.open("rb"))).size == (256, 512)
    assert max(jpeg(series_preview(path.open("rb"), max_size=100)).size) == 100


def test_previews_of_compressed_images(study_factory: StudyFactory, tmp_path: Path) -> None:
    """JPEG lossless (dcmcjpeg), JPEG baseline YBR, RLE and JPEG 2000 instances decode."""
    study = study_factory(ct=1, mr=0)
    ct = study.of_kind("ct")[0].path
    lossless = tmp_path / "lossless.dcm"
    subprocess.run([dcmtk_bin("dcmcjpeg"), str(ct), str(lossless)], check=True)
    assert pydicom.dcmread(lossless).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert centre_and_corner(jpeg(series_preview(lossless.open("rb"))))[0] > 200

    red = pydicom.dcmread(study.of_kind("sc")[0].path)
    pixels = np.zeros((red.Rows, red.Columns, 3), np.uint8)
    pixels[..., 0] = 200
    red.PixelData = pixels.tobytes()
    plain, baseline = tmp_path / "red.dcm", tmp_path / "baseline.dcm"
    red.save_as(plain)
    subprocess.run([dcmtk_bin("dcmcjpeg"), "+eb", str(plain), str(baseline)], check=True)
    assert pydicom.dcmread(baseline).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    r, g, b = (
        float(c)
        for c in np.asarray(jpeg(series_preview(baseline.open("rb")))).reshape(-1, 3).mean(axis=0)
    )
    assert r > 180 and g < 30 and b < 30  # YBR_FULL_422 came back as RGB

    for syntax in (RLELossless, JPEG2000Lossless):
        ds = pydicom.dcmread(ct)
        ds.compress(syntax)
        out = tmp_path / f"{syntax.keyword}.dcm"
        ds.save_as(out)
        assert centre_and_corner(jpeg(series_preview(out.open("rb"))))[0] > 200


def test_undecodable_pixels_give_none_and_log_only_the_uid(
    study_factory: StudyFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Broken compressed pixel data: None, one WARNING naming the SOP Instance UID only."""
    ds = pydicom.dcmread(
        study_factory(ct=1, mr=0, patient_name="Secret^Name").of_kind("ct")[0].path
    )
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdbnot really a jpeg" * 4])
    ds["PixelData"].VR = "OB"
    out = tmp_path / "broken.dcm"
    ds.save_as(out, enforce_file_format=True)

    with caplog.at_level(logging.WARNING, logger="dicomiso_packager.pdi"):
        assert series_preview(out.open("rb")) is None
    records = [r for r in caplog.records if r.name == "dicomiso_packager.pdi"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].sop_uid == ds.SOPInstanceUID  # type: ignore[attr-defined]
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert "Secret" not in logged and ds.PatientID not in logged


def test_preview_paths_must_be_iso9660_names(two_studies: list[StudyManifest]) -> None:
    """A preview path that is not 8.3 upper case is refused rather than linked."""
    uid = next(iter(two_studies[0].series))
    with pytest.raises(ValueError, match="8.3"):
        web_pages(
            two_studies,
            institution="RS",
            previews={uid: ("IHE_PDI", "preview.jpeg")},
            created_at=CREATED,
        )

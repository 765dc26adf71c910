"""Which viewer goes on a disc, what INDEX.HTM and README.TXT say about it, and that a
packager without its viewer bundle refuses to start instead of making viewer-less discs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dicomiso_common.models import StudyManifest
from dicomiso_packager import viewer
from dicomiso_packager.app import create_app
from dicomiso_packager.pdi import readme_text, web_pages
from dicomiso_packager.settings import PackagerSettings

CREATED = datetime(2024, 5, 1, tzinfo=UTC)
MANIFEST = StudyManifest.model_validate(
    {
        "study_uid": "1.2.3",
        "patient": {"name": "Doe^Jane", "id": "P1"},
        "study": {"date": "20240501", "description": "CT"},
        "series": {"1.2.3.1": {"modality": "CT", "number": 1}},
        "instance_count": 0,
        "total_bytes": 0,
        "retrieved_at": "2024-05-01T00:00:00Z",
        "job_id": "job-1",
        "method": "test",
    }
)


def test_the_bundle_is_built_with_its_study_marker() -> None:
    """scripts/build-viewer's VIEWER.HTM holds the online-mode marker exactly once."""
    html = viewer.bundle_html().read_text()
    assert html.count('id="dicomiso-study"') == 1 and viewer.STUDY_MARKER in html
    assert "<script src=" not in html and "<link " not in html  # nothing loaded from beside it


def test_a_missing_bundle_stops_start_up_naming_the_build_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the bundle create_app raises; DICOMISO_VIEWER=false starts without one."""
    monkeypatch.setattr(viewer, "BUNDLE_DIR", tmp_path / "nothing")
    with pytest.raises(viewer.ViewerMissing, match="scripts/build-viewer"):
        create_app(PackagerSettings(s3_endpoint_url="http://127.0.0.1:9"))
    assert viewer.viewer_source(PackagerSettings(viewer=False)) is None
    create_app(PackagerSettings(viewer=False, s3_endpoint_url="http://127.0.0.1:9"))


def test_viewer_dir_overrides_and_must_exist(tmp_path: Path) -> None:
    """DICOMISO_VIEWER_DIR replaces the bundle; a path that is no directory is refused."""
    assert viewer.viewer_source(PackagerSettings(viewer_dir=tmp_path)) == tmp_path
    assert viewer.viewer_source(PackagerSettings()) == viewer.bundle_html().parent
    with pytest.raises(viewer.ViewerMissing, match="not a directory"):
        viewer.viewer_source(PackagerSettings(viewer_dir=tmp_path / "missing"))


def test_index_links_the_viewer_and_readme_says_how_to_open_it() -> None:
    """INDEX.HTM's "View the images" goes to VIEWER/VIEWER.HTM; README.TXT explains it."""
    page = ("VIEWER", "VIEWER.HTM")
    index = dict(
        web_pages(
            [MANIFEST],
            institution="RS",
            previews={},
            created_at=CREATED,
            viewer="VIEWER",
            viewer_page=page,
        )  # fmt: skip
    )[("INDEX.HTM",)].decode()
    assert '<p class="view"><a href="VIEWER/VIEWER.HTM">View the images</a></p>' in index
    assert "A DICOM viewer is in the" not in index
    readme = " ".join(
        readme_text(
            [MANIFEST],
            institution="RS",
            profile="STD-GEN-CD",
            created_at=CREATED,
            viewer="VIEWER",
            viewer_page=page,
        )
        .decode("ascii")
        .split()  # fmt: skip
    )
    assert 'click "View the images", or open VIEWER\\VIEWER.HTM directly' in readme
    assert "choose this disc" in readme and "no autorun" in readme

"""Which viewer goes on the discs: the bundled web viewer (scripts/build-viewer), another
directory (DICOMISO_VIEWER_DIR), or none (DICOMISO_VIEWER=false).

The bundled one is a single self-contained HTML file, VIEWER.HTM (docs/media.md, "The
viewer"): it is the page INDEX.HTM links to, and the page the online view serves. A packager
that would silently make discs without a viewer is misconfigured, so a missing bundle stops
start-up with a message naming the build script.
"""

from __future__ import annotations

from pathlib import Path

from dicomiso_common.errors import DicomisoError

from .settings import PackagerSettings

BUNDLE_DIR = Path(__file__).resolve().parent / "viewer_dist"
ENTRY = "VIEWER.HTM"  # an ISO 9660 Level 1 name: the same on every tree of the disc
STUDY_MARKER = '<script type="application/json" id="dicomiso-study">null</script>'


class ViewerMissing(DicomisoError):
    status = 503
    title = "Viewer not built"


def bundle_html() -> Path:
    """The built viewer page.

    Raises:
        ViewerMissing: scripts/build-viewer has not run (or its output is incomplete).
    """
    page = BUNDLE_DIR / ENTRY
    if not page.is_file() or STUDY_MARKER.encode() not in page.read_bytes():
        raise ViewerMissing(
            f"the disc viewer is not built ({page} missing or without its study marker): "
            "run scripts/build-viewer, or set DICOMISO_VIEWER=false to make discs without one"
        )
    return page


def viewer_source(settings: PackagerSettings) -> Path | None:
    """The directory copied under VIEWER/ on every disc, or None when the site turned it off.

    Raises:
        ViewerMissing: The bundle is not built, or DICOMISO_VIEWER_DIR is not a directory.
    """
    if not settings.viewer:
        return None
    if settings.viewer_dir is not None:
        if not settings.viewer_dir.is_dir():
            raise ViewerMissing(f"DICOMISO_VIEWER_DIR={settings.viewer_dir} is not a directory")
        return settings.viewer_dir
    return bundle_html().parent

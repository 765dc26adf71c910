"""Study manifests of local files, built by the retriever's own describe/assemble code."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomiso_common.models import StudyManifest
from dicomiso_retriever.manifest import assemble_manifest, describe


def local_key(path: Path, ds: Dataset) -> str:
    """Entries keyed by the local path, so a test can open what an entry names."""
    return str(path)


def manifest_of(
    files: Iterable[Path], key: Callable[[Path, Dataset], str] = local_key
) -> StudyManifest:
    """The manifest the retriever would write for these files (one study)."""
    described = []
    for path in files:
        data = path.read_bytes()
        ds = dcmread(path, stop_before_pixels=True)
        sha = hashlib.sha256(data).hexdigest()
        syntax = str(ds.file_meta.TransferSyntaxUID)
        described.append(describe(ds, syntax, len(data), sha, key(path, ds)))
    (study_uid,) = {d.study.study_uid for d in described}
    manifest: StudyManifest = assemble_manifest(str(study_uid), described, "job-1", "test")
    return manifest

"""Read the typed documents other services wrote to the bucket (see `models`).

A document that does not parse is a bug or a damaged bucket, not a missing one: it is
reported as `BadDocument` (naming the key), never as a `KeyError` deep in a job.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .dicom import accession_key, manifest_key
from .errors import DicomisoError
from .models import AccessionIndex, StudyManifest
from .store import Store

_Doc = TypeVar("_Doc", bound=BaseModel)


class BadDocument(DicomisoError):
    """A JSON document in the bucket does not have the shape its model requires."""

    status = 500
    title = "Damaged document in the bucket"


def load(store: Store, key: str, model: type[_Doc]) -> _Doc:
    """Read and validate one document.

    Raises:
        ObjectMissing: no object at `key`.
        BadDocument: the object is not the JSON `model` describes.
    """
    data, _ = store.get_json(key)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadDocument(f"{key}: {exc.error_count()} invalid field(s)") from exc


def load_manifest(store: Store, study_uid: str) -> StudyManifest:
    """The study manifest (ObjectMissing when the study is not completely stored)."""
    return load(store, manifest_key(study_uid), StudyManifest)


def load_accession_index(store: Store, accession: str) -> AccessionIndex:
    """The studies an accession number resolved to (ObjectMissing when never retrieved)."""
    return load(store, accession_key(accession), AccessionIndex)

"""What the bucket holds of a study, read the way the retriever stores it (for assertions).

Instances live in segments (`segments/{StudyUID}/{id}.seg`), each counted only through its
index (`{id}.json`); manifests from before segments point at whole objects under instances/.
"""

from __future__ import annotations

from dicomiso_common.dicom import segment_prefix, study_prefix
from dicomiso_common.store import Store


def stored_sops(store: Store, study_uid: str) -> set[str]:
    """SOP Instance UIDs of the study in the bucket (each counted once)."""
    sops: set[str] = set()
    for obj in store.list(segment_prefix(study_uid)):
        if obj.key.endswith(".json"):
            data, _ = store.get_json(obj.key)
            sops.update(d["entry"]["sop_uid"] for d in data["instances"])
    for obj in store.list(study_prefix(study_uid)):
        sops.add(obj.key.rsplit("/", 1)[-1].removesuffix(".dcm"))
    return sops


def stored_keys(store: Store) -> list[str]:
    """Every key that holds received instances (segments, indexes, old instance objects)."""
    return [o.key for p in ("segments/", "instances/") for o in store.list(p)]

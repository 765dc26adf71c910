"""Compare a stored instance with the PACS's copy, element by element."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset


def _elements(ds: Dataset) -> dict[int, object]:
    return {int(e.tag): e.value for e in ds if e.tag.group != 0x0002}


def same_dataset(ours: bytes, theirs: bytes) -> list[str]:
    """Return the differences (empty when equal): every non-group-0002 element, pixel bytes too."""
    a = pydicom.dcmread(io.BytesIO(ours))
    b = pydicom.dcmread(io.BytesIO(theirs))
    ea, eb = _elements(a), _elements(b)
    problems = [f"only in ours: {t:08X}" for t in ea.keys() - eb.keys()]
    problems += [f"only in PACS: {t:08X}" for t in eb.keys() - ea.keys()]
    problems += [f"differs: {t:08X}" for t in ea.keys() & eb.keys() if ea[t] != eb[t]]
    if "PixelData" in b and a.PixelData != b.PixelData:
        problems.append("pixel data bytes differ")
    return problems

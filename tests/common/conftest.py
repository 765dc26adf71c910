"""Fixtures for libs/common tests."""

from __future__ import annotations

import pytest

from dicomiso_common.store import Store


@pytest.fixture
def store(s3_bucket) -> Store:  # type: ignore[no-untyped-def]
    """A Store on a fresh bucket of the session's moto server."""
    return Store(s3_bucket.client, s3_bucket.name)

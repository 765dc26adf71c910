"""Fixtures for libs/common tests."""

from __future__ import annotations

from typing import Any

import pytest

from dicomiso_common.settings import CommonSettings
from dicomiso_common.store import Store


@pytest.fixture
def store(s3_bucket: Any) -> Store:
    """A Store, built the way services build it, on a fresh bucket of the moto server."""
    return Store.from_settings(
        CommonSettings(s3_endpoint_url=s3_bucket.endpoint_url, s3_bucket=s3_bucket.name)
    )

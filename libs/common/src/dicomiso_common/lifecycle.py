"""Expiry of what the services write: each service puts the rules for its own prefixes.

Packages expire after `DICOMISO_PACKAGE_EXPIRY_DAYS`, job records (and the forwarder's
per-job results) after `DICOMISO_JOB_EXPIRY_DAYS`. A live job's record is rewritten every
heartbeat, so only finished records ever reach that age. Where the services may not set
lifecycle rules (`DICOMISO_MANAGE_LIFECYCLE=false`), deploy/bucket_init.py sets them all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .errors import DicomisoError
from .settings import CommonSettings
from .store import Store

log = logging.getLogger(__name__)


def ensure_lifecycle(store: Store, settings: CommonSettings, rules: Mapping[str, int]) -> None:
    """Put each `prefix: days` expiry rule on the bucket (best effort: may lack the right)."""
    if not settings.manage_lifecycle:
        return
    for prefix, days in rules.items():
        try:
            store.ensure_expiry(prefix, days)
        except DicomisoError as exc:
            log.warning(
                "lifecycle rule not set; set it on the bucket yourself",
                extra={"prefix": prefix, "error": str(exc)},
            )

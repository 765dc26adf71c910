"""Create the bucket and its lifecycle rules (the lab Job; admins may run it once, too).

Uses the services' own settings and store, so it reads the same DICOMISO_* / AWS_* variables:
`packages/` objects expire after DICOMISO_PACKAGE_EXPIRY_DAYS, job records (`jobs/{kind}/`)
and forward results (`forwards/`) after DICOMISO_JOB_EXPIRY_DAYS, and incomplete multipart
uploads are aborted after a day. These are the rules each service would set itself at
start-up (`lifecycle_rules` in each app). Idempotent: run it again and nothing changes.
"""

from __future__ import annotations

import logging
import sys
import time

from dicomiso_common.errors import DicomisoError
from dicomiso_common.logs import configure_logging
from dicomiso_common.store import Store
from dicomiso_forwarder.app import lifecycle_rules as forwarder_rules
from dicomiso_packager.app import lifecycle_rules as packager_rules
from dicomiso_packager.settings import PackagerSettings
from dicomiso_retriever.app import lifecycle_rules as retriever_rules

log = logging.getLogger("dicomiso.bucket_init")


def all_rules(settings: PackagerSettings) -> dict[str, int]:
    """Every service's expiry rules, `prefix: days`."""
    return {**packager_rules(settings), **retriever_rules(settings), **forwarder_rules(settings)}


def init_bucket(settings: PackagerSettings) -> None:
    """Make sure the bucket exists and carries every service's expiry rule."""
    store = Store.from_settings(settings)
    store.ensure_bucket()
    for prefix, days in all_rules(settings).items():
        store.ensure_expiry(prefix, days)
    log.info(
        "bucket ready",
        extra={
            "bucket": settings.s3_bucket,
            "expiry_days": settings.package_expiry_days,
            "job_expiry_days": settings.job_expiry_days,
        },
    )


def main(attempts: int = 30, delay: float = 2.0) -> int:
    settings = PackagerSettings()
    configure_logging(settings.log_level, "bucket-init")
    for attempt in range(1, attempts + 1):
        try:
            init_bucket(settings)
            return 0
        except DicomisoError as exc:  # S3 not up yet: try again
            log.warning("bucket not ready", extra={"attempt": attempt, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - botocore's own errors: report and retry
            log.warning("bucket not ready", extra={"attempt": attempt, "error": type(exc).__name__})
        time.sleep(delay)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Create the bucket and its lifecycle rule (the lab Job; admins may run it once, too).

Uses the services' own settings and store, so it reads the same DICOMISO_* / AWS_* variables:
`packages/` objects expire after DICOMISO_PACKAGE_EXPIRY_DAYS, and incomplete multipart uploads
are aborted after a day. Idempotent: run it again and nothing changes.
"""

from __future__ import annotations

import logging
import sys
import time

from dicomiso_common.errors import DicomisoError
from dicomiso_common.logs import configure_logging
from dicomiso_common.store import Store
from dicomiso_packager.settings import PackagerSettings

log = logging.getLogger("dicomiso.bucket_init")

PACKAGES_PREFIX = "packages/"  # = dicomiso_packager.app.PACKAGES_PREFIX (tests/deploy checks)


def init_bucket(settings: PackagerSettings) -> None:
    """Make sure the bucket exists and carries the packages/ expiry rule."""
    store = Store.from_settings(settings)
    store.ensure_bucket()
    store.ensure_expiry(PACKAGES_PREFIX, settings.package_expiry_days)
    log.info(
        "bucket ready",
        extra={"bucket": settings.s3_bucket, "expiry_days": settings.package_expiry_days},
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

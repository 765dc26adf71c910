"""DICOM helpers shared by the services: validators, key builders, pynetdicom set-up.

Every value that reaches a C-FIND key or a bucket key passes through these validators first.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import warnings
from collections.abc import Callable

from pydicom import config
from pynetdicom import _config, evt

from .errors import InvalidInput

log = logging.getLogger(__name__)

# Accession numbers are SH (PS3.5 6.2: 16 characters, no backslash). We accept a stricter set,
# letters, digits, "." and "-", starting with a letter or digit, because the value becomes a
# C-FIND key and a bucket key: "*" and "?" are wildcards (PS3.4 C.2.2.2.4), "\" separates
# values (a list match, C.2.2.2.2), an empty key is a universal match (C.2.2.2.3), and "%",
# "_", quotes and spaces mean something to the SQL and shells the legacy scripts fed it to.
_ACCESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,15}")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_NOT_DIGIT = re.compile(r"[^0-9]")
AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 6.2 AE: no backslash, no controls


def validate_accession(value: object) -> str:
    """Return the accession number unchanged, or raise InvalidInput saying why.

    The reason never repeats the value: error texts end up in logs.
    """
    if not isinstance(value, str):
        raise InvalidInput("accession number must be a string")
    if value == "":
        raise InvalidInput("accession number is empty (an empty key would match every study)")
    if len(value) > 16:
        raise InvalidInput(f"accession number is {len(value)} characters long; at most 16")
    if value != value.strip():
        raise InvalidInput("accession number has leading or trailing spaces")
    if any(c in value for c in "*?"):
        raise InvalidInput("accession number contains a wildcard (* or ?)")
    if "\\" in value:
        raise InvalidInput("accession number contains a backslash (a DICOM value separator)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput("accession number contains control characters")
    if not _ACCESSION.fullmatch(value):
        raise InvalidInput("accession number may hold only letters, digits, '.' and '-'")
    return value


def validate_uid(value: object, what: str = "UID") -> str:
    """Return a UID unchanged if it is digits and dots (PS3.5 9.1), at most 64 characters."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} is empty")
    if len(value) > 64:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most 64")
    if not _UID.fullmatch(value):
        raise InvalidInput(f"{what} may hold only digits separated by single dots")
    return value


def is_valid_uid(value: object) -> bool:
    try:
        validate_uid(value)
    except InvalidInput:
        return False
    return True


def instance_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Return the bucket key for one stored instance.

    Callers validate UIDs first; the substitution is a second line of defence, so a
    malformed UID can never add a path separator.
    """
    parts = (_key_part(u) for u in (study_uid, series_uid, sop_uid))
    return "instances/{}/{}/{}.dcm".format(*parts)


def _key_part(uid: str) -> str:
    """A legal UID as is; anything else with every non-digit (dots too) replaced by '_'."""
    return uid if is_valid_uid(uid) else _NOT_DIGIT.sub("_", uid)


def study_prefix(study_uid: str) -> str:
    return f"instances/{_key_part(study_uid)}/"


def segment_prefix(study_uid: str) -> str:
    """Where a study's segments and their indexes are (docs/architecture.md, bucket layout)."""
    return f"segments/{_key_part(study_uid)}/"


def segment_key(study_uid: str, segment_id: str) -> str:
    """One segment: received Part 10 files, concatenated (`segment_id`: hex, ours)."""
    return f"{segment_prefix(study_uid)}{segment_id}.seg"


def segment_index_key(study_uid: str, segment_id: str) -> str:
    """The segment's index, written after the segment: what makes its instances count."""
    return f"{segment_prefix(study_uid)}{segment_id}.json"


def manifest_key(study_uid: str) -> str:
    return f"studies/{_key_part(study_uid)}/manifest.json"


def accession_key(accession: str) -> str:
    return f"accessions/{validate_accession(accession)}.json"


# -- pydicom and pynetdicom set-up -----------------------------------------------------------

_configure_lock = threading.Lock()
_configured = False


def quiet_pynetdicom() -> None:
    """Stop pynetdicom from logging query identifiers (patient data) and PDU dumps.

    pynetdicom logs every C-FIND/C-MOVE identifier at INFO unless these flags are off.
    `pynetdicom._config` is pynetdicom's documented configuration module despite its name
    (pynetdicom docs, "Configuration Options"); tests/common/test_pinned_internals.py
    fails if a flag we set moves.
    """
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def quiet_pydicom() -> None:
    """Stop pydicom from quoting element values (names, dates, IDs) in warnings and logs.

    pydicom's validation warns with the offending value ("Invalid value for VR DA: ..."),
    which for legacy data is often a birth date or a name. Values are read as they are.
    """
    config.settings.reading_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def configure() -> None:
    """Set pydicom and pynetdicom up for this process, once: call it at start-up.

    Each service's app calls it before it serves (and the tests' session fixture does);
    a second call does nothing, and concurrent first calls are serialised. Besides the
    quieting above: a received C-STORE data set is written straight to a file
    (STORE_RECV_CHUNKED_DATASET, the SCP spools it to S3) and a C-STORE from a file path
    is sent from the file, never loaded whole (STORE_SEND_CHUNKED_DATASET, the forwarder).
    """
    global _configured
    with _configure_lock:
        if _configured:
            return
        quiet_pynetdicom()
        quiet_pydicom()
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        _configured = True


def _nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY on the association's socket.

    Nagle's algorithm plus the peer's delayed ACK stalls each small PDU (the C-STORE-RSP)
    by up to ~40 ms, which costs 25-35x on a study of small instances (measured with dcmtk).
    pynetdicom has no socket-option setting; the connection-open event (public) hands us
    the association, whose public `dul.socket.socket` is the TCP socket.
    """
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not a TCP socket (e.g. a socketpair in tests)
        log.debug("TCP_NODELAY not set", exc_info=True)


# Pass with every association and server: `evt_handlers=[*CONNECTION_HANDLERS, ...]`.
CONNECTION_HANDLERS: list[tuple[evt.EventType, Callable[[evt.Event], None]]] = [
    (evt.EVT_CONN_OPEN, _nodelay)
]


def status_text(status: int) -> str:
    return f"0x{status:04X}"

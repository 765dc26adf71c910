"""The PACS side of a retrieval over DICOMweb: QIDO-RS to find, WADO-RS to fetch a study.

No inbound port: we call the archive's DICOMweb root (`DICOMISO_PACS_DICOMWEB_URL`) over HTTP(S).
QIDO-RS asks at exact-match keys only (PS3.18 8.3.4.1: a value without wildcards matches
exactly), with the same validation as the C-FIND, and every answer is checked again on our
side: an answer naming another accession number or study fails the job, it is not dropped.
WADO-RS asks for the study as stored (`transfer-syntax=*`, PS3.18 8.7.3.5.2) and reads the
multipart body as a stream (`multipart`) in a reader thread, one spool file per instance, and
hands each complete part over a bounded queue to the job's thread, which runs the Storage SCP's
own checks and segment writer (`StorageSCP.accept_file`): the bucket and the manifest are the
same as after a C-MOVE. Any refusal, a broken body or an HTTP error ends the study's
transfer with a `DicomError`: no manifest, so nothing partial is ever called complete.

httpx is called directly (docs/architecture.md says why not `dicomweb-client`). Error texts
name the archive by scheme, host and port and never carry a credential or a query key.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from dicomiso_common.dicom import is_valid_uid, validate_accession, validate_uid
from dicomiso_common.errors import DicomError
from dicomiso_common.pacs import StudyAnswer, unpadded

from .multipart import MultipartError, Part, iter_parts, media_type_params
from .query import Inventory
from .settings import RetrieverSettings
from .transfer import Progress, TransferResult

log = logging.getLogger(__name__)

ACCEPT_STUDY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MAX_QIDO_BYTES = 16 * 1024 * 1024  # a QIDO answer larger than this is not one accession's
_CHUNK = 256 * 1024
_QUEUED_PARTS = 4  # complete parts (spool files, not memory) read ahead of the checks
# PS3.18 8.3.4.3 includefield: what StudyAnswer carries, beyond the archive's defaults
_STUDY_FIELDS = "00201208,00080061,00080062,00081030,00100030,00100040"
Accept = Callable[[Path], str | None]  # a spool file -> None (stored) or why it was refused


def describe(s: RetrieverSettings) -> str:
    """Name the archive for error messages: scheme, host and port, nothing else."""
    parts = urlsplit(s.pacs_dicomweb_url or "")
    return f"DICOMweb archive {parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


def _secret(value: Any, path: Path | None, variable: str) -> str | None:
    """A credential from its variable, else from its mounted file (read now: rotation)."""
    if value is not None:
        return str(value.get_secret_value())
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DicomError(f"cannot read {variable} ({type(exc).__name__})") from None


def _auth_headers(s: RetrieverSettings) -> tuple[httpx.BasicAuth | None, dict[str, str]]:
    token = _secret(
        s.pacs_dicomweb_token, s.pacs_dicomweb_token_file, "DICOMISO_PACS_DICOMWEB_TOKEN_FILE"
    )
    if token:
        return None, {"Authorization": f"Bearer {token}"}
    if s.pacs_dicomweb_username is None:
        return None, {}
    password = _secret(
        s.pacs_dicomweb_password,
        s.pacs_dicomweb_password_file,
        "DICOMISO_PACS_DICOMWEB_PASSWORD_FILE",
    )
    return httpx.BasicAuth(s.pacs_dicomweb_username, password or ""), {}


def _verify(s: RetrieverSettings) -> ssl.SSLContext | bool:
    if not s.pacs_dicomweb_tls_verify:
        return False
    ca = s.pacs_dicomweb_ca_file
    return ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()


@contextmanager
def client(s: RetrieverSettings) -> Iterator[httpx.Client]:
    """An HTTP client for the archive: credentials, TLS verification, timeouts.

    `trust_env=False`: no proxy or .netrc from the environment can add or leak credentials.
    """
    if not s.pacs_dicomweb_url:
        raise DicomError("method dicomweb needs DICOMISO_PACS_DICOMWEB_URL")
    auth, headers = _auth_headers(s)
    timeout = httpx.Timeout(s.pacs_dicomweb_timeout, connect=s.dicom_acse_timeout)
    with httpx.Client(
        base_url=s.pacs_dicomweb_url.rstrip("/") + "/",
        auth=auth,
        headers={**headers, "Accept-Encoding": "identity"},
        verify=_verify(s),
        timeout=timeout,
        trust_env=False,
        follow_redirects=False,  # a redirect could carry our Authorization elsewhere
    ) as http:
        yield http


def _transport_error(s: RetrieverSettings, exc: httpx.TransportError, doing: str) -> DicomError:
    """Translate an httpx failure without its text (it may hold the URL and its query)."""
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return DicomError(
            f"{describe(s)}: TLS certificate not trusted during {doing} "
            "(DICOMISO_PACS_DICOMWEB_CA_FILE names the CA that signs it)"
        )
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return DicomError(f"{describe(s)} unreachable during {doing} ({type(exc).__name__})")
    return DicomError(f"{describe(s)}: {type(exc).__name__} during {doing}")


def _check_status(s: RetrieverSettings, response: httpx.Response, doing: str) -> None:
    code = response.status_code
    if code < 300:
        return
    if code == 401:
        why = "refused our credentials (HTTP 401): check the DICOMweb username/password or token"
    elif code == 403:
        why = "forbids this request (HTTP 403): the account lacks the permission"
    elif code == 404:
        why = "does not know this resource (HTTP 404)"
    elif code >= 500:
        why = f"failed (HTTP {code}); try again later"
    else:
        why = f"answered HTTP {code}"
    raise DicomError(f"{describe(s)} {why} during {doing}")


def _value(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute (PS3.18 F.2), or None."""
    attr = item.get(tag)
    if not isinstance(attr, dict):
        return None
    values = attr.get("Value")
    return values[0] if isinstance(values, list) and values else None


def _values(item: dict[str, Any], tag: str) -> list[str]:
    attr = item.get(tag)
    values = attr.get("Value") if isinstance(attr, dict) else None
    return [str(v) for v in values if v is not None] if isinstance(values, list) else []


def _text(item: dict[str, Any], tag: str) -> str | None:
    value = _value(item, tag)
    if isinstance(value, dict):  # PN: {"Alphabetic": ...} (PS3.18 F.2.2)
        value = value.get("Alphabetic")
    return None if value in (None, "") else str(value)


def _answer(item: dict[str, Any], uid: str) -> StudyAnswer:
    raw = _value(item, "00201208")
    try:
        instances = None if raw in (None, "") else int(raw)
    except (TypeError, ValueError):
        instances = None
    return StudyAnswer(
        study_uid=uid,
        instances=instances,
        patient_id=_text(item, "00100020"),
        patient_name=_text(item, "00100010"),
        study_date=_text(item, "00080020"),
        study_description=_text(item, "00081030"),
        modalities=_values(item, "00080061"),
        accession_number=_text(item, "00080050"),
        sop_classes=[c for c in _values(item, "00080062") if is_valid_uid(c)],
        patient_birth_date=_text(item, "00100030"),
        patient_sex=_text(item, "00100040"),
    )


def _qido(s: RetrieverSettings, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """GET one QIDO-RS resource; its JSON array (bounded in size), [] for 204 No Content."""
    doing = "QIDO-RS"
    try:
        with (
            client(s) as http,
            http.stream(
                "GET", path, params=params, headers={"Accept": "application/dicom+json"}
            ) as response,
        ):
            _check_status(s, response, doing)
            body = bytearray()
            for chunk in response.iter_bytes(_CHUNK):
                body += chunk
                if len(body) > MAX_QIDO_BYTES:
                    raise DicomError(f"{describe(s)}: QIDO-RS answer larger than expected")
    except httpx.TransportError as exc:
        raise _transport_error(s, exc, doing) from None
    if response.status_code == 204 or not body.strip():
        return []
    try:
        answers = json.loads(body)
    except ValueError:
        raise DicomError(f"{describe(s)}: QIDO-RS answer is not JSON") from None
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        raise DicomError(f"{describe(s)}: QIDO-RS answer is not a list of DICOM JSON objects")
    return answers


def _studies(
    s: RetrieverSettings, params: dict[str, str], key: str, wanted: str
) -> list[StudyAnswer]:
    """QIDO-RS at study level; every answer must carry `wanted` at `key` and a legal UID."""
    found: dict[str, StudyAnswer] = {}
    for item in _qido(s, "studies", {**params, "includefield": _STUDY_FIELDS}):
        if unpadded(_text(item, key)) != wanted:
            raise DicomError(
                f"{describe(s)}: QIDO-RS answered a study that does not match the query "
                f"({'AccessionNumber' if key == '00080050' else 'StudyInstanceUID'} differs)"
            )
        uid = unpadded(_text(item, "0020000D"))
        if not is_valid_uid(uid):
            raise DicomError(f"{describe(s)}: QIDO-RS answered a study without a legal UID")
        found[uid] = _answer(item, uid)
    return list(found.values())


def find_by_accession(s: RetrieverSettings, accession: str) -> list[StudyAnswer]:
    """The studies whose AccessionNumber equals `accession` exactly (QIDO-RS).

    Raises:
        InvalidInput: The accession is empty or holds a wildcard; the archive was not asked.
        DicomError: The archive failed, refused us, or answered another accession's study.
    """
    accession = validate_accession(accession)
    return _studies(s, {"AccessionNumber": accession}, "00080050", accession)


def find_by_study_uid(s: RetrieverSettings, study_uid: str) -> list[StudyAnswer]:
    """The study with this StudyInstanceUID ([] when the archive has none)."""
    study_uid = validate_uid(study_uid, "StudyInstanceUID")
    return _studies(s, {"StudyInstanceUID": study_uid}, "0020000D", study_uid)


def take_inventory(s: RetrieverSettings, hit: StudyAnswer) -> Inventory:
    """The study's instances by series (QIDO-RS `studies/{uid}/instances`), for completeness
    when the study-level answer lacks NumberOfStudyRelatedInstances."""
    uid = validate_uid(hit.study_uid, "StudyInstanceUID")
    found: Inventory = {}
    params = {"includefield": "0020000E,00080016,00080018"}
    for item in _qido(s, f"studies/{quote(uid)}/instances", params):
        study = unpadded(_text(item, "0020000D"))
        if study not in (uid, ""):
            raise DicomError(f"{describe(s)}: QIDO-RS listed an instance of another study")
        series, sop = unpadded(_text(item, "0020000E")), unpadded(_text(item, "00080018"))
        if is_valid_uid(series) and is_valid_uid(sop):
            sop_class = unpadded(_text(item, "00080016"))
            found.setdefault(series, {})[sop] = sop_class if is_valid_uid(sop_class) else None
    return found


def _boundary(s: RetrieverSettings, response: httpx.Response) -> str:
    media, params = media_type_params(response.headers.get("content-type", ""))
    kind = params.get("type", "application/dicom").lower()
    if media != "multipart/related" or kind != "application/dicom" or not params.get("boundary"):
        raise DicomError(
            f"{describe(s)}: WADO-RS answered {media or 'no content type'}, "
            'not multipart/related; type="application/dicom" with a boundary'
        )
    return params["boundary"]


def _read_parts(
    s: RetrieverSettings,
    response: httpx.Response,
    boundary: str,
    parts: queue.Queue[Part | BaseException | None],
    stop: threading.Event,
) -> None:
    """The reader thread: parse the body into spool files and queue each complete part.

    Ends with None on the queue (the close delimiter was read) or the exception that ended
    it. `stop` (the checking side failed) ends it at the next chunk; a part it cannot hand
    over is removed here.
    """

    def chunks() -> Iterator[bytes]:
        for chunk in response.iter_bytes(_CHUNK):
            if stop.is_set():
                return
            yield chunk

    def hand_over(item: Part | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                parts.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    body = iter_parts(chunks(), boundary, max_part_bytes=s.scp_max_instance_bytes)
    try:
        for part in body:
            if not hand_over(part):
                part.path.unlink(missing_ok=True)
                return
    except Exception as exc:  # noqa: BLE001 - the thread's edge: the checking side raises it
        hand_over(exc)
        return
    finally:
        body.close()  # removes the spool file of a part cut off by `stop`
    hand_over(None)


def retrieve_study(
    s: RetrieverSettings, hit: StudyAnswer, accept: Accept, progress: Progress
) -> TransferResult:
    """WADO-RS of one study as stored; each part goes through `accept` as it arrives.

    A reader thread parses the body into spool files and hands complete parts over a queue
    of `_QUEUED_PARTS`; this thread checks and stores them, so the socket keeps being read
    while an instance is checked, hashed and appended to its segment (as pynetdicom's
    reader thread does for a C-MOVE). A failure on either side ends both; the parts still
    queued are removed, none counted.

    Raises:
        DicomError: HTTP error, broken connection, a malformed multipart body, a part that
            is not application/dicom, or one `accept` refused (another study, unreadable).
    """
    uid = validate_uid(hit.study_uid, "StudyInstanceUID")
    doing = f"WADO-RS of study {uid}"
    result = TransferResult()
    try:
        with (
            client(s) as http,
            http.stream(
                "GET", f"studies/{quote(uid)}", headers={"Accept": ACCEPT_STUDY}
            ) as response,
        ):
            _check_status(s, response, doing)
            boundary = _boundary(s, response)
            parts: queue.Queue[Part | BaseException | None] = queue.Queue(_QUEUED_PARTS)
            stop = threading.Event()
            reader = threading.Thread(
                target=_read_parts,
                args=(s, response, boundary, parts, stop),
                name="wado-reader",
                daemon=True,
            )
            reader.start()
            try:
                while (part := parts.get()) is not None:
                    if isinstance(part, BaseException):
                        raise part
                    try:
                        media, _ = media_type_params(part.headers.get("content-type", ""))
                        if media != "application/dicom":
                            raise DicomError(
                                f"{describe(s)}: part {part.index} of {doing} is "
                                f"{media or 'untyped'}"
                            )
                        refused = accept(part.path)
                    finally:
                        part.path.unlink(missing_ok=True)  # accepted: already renamed
                    if refused is not None:
                        raise DicomError(
                            f"{describe(s)}: part {part.index} of {doing} refused: {refused}"
                        )
                    result.completed += 1
                    progress(result)
            finally:
                stop.set()
                reader.join()  # a silent archive: at most the read timeout
                while not parts.empty():  # parts read but never checked: not stored
                    left = parts.get_nowait()
                    if isinstance(left, Part):
                        left.path.unlink(missing_ok=True)
    except httpx.TransportError as exc:
        raise _transport_error(s, exc, f"{doing} after {result.completed} instance(s)") from None
    except MultipartError as exc:
        raise DicomError(
            f"{describe(s)}: malformed multipart body in {doing} after "
            f"{result.completed} instance(s): {exc}"
        ) from None
    result.status = 0x0000
    progress(result)
    return result

"""A cheaper C-STORE-RSP and spool file meta, encoded straight to bytes (DICOMISO_SCP_FAST_DIMSE).

pynetdicom sends every DIMSE response by building a DIMSE message whose command set is a
pydicom Dataset, encoding it once to learn the Command Group Length and once more to send it
(`DIMSEServiceProvider.send_msg` -> `primitive_to_message` -> `encode_msg`): ~0.45 ms of GIL per
received instance, a tenth of the retriever's CPU (docs/benchmarks.md, "Lever: C-STORE-RSP
and spool file meta encoded directly"). A C-STORE-RSP is a fixed small structure (PS3.7
9.3.1.2, Implicit VR Little Endian), so `send_msg` is wrapped: a C-STORE response whose
fields we can encode goes out as the same bytes pynetdicom would send
(tests/retriever/test_fastdimse.py compares them),
in one P-DATA, through the same `dul.send_pdu`; everything else goes to pynetdicom's own
`send_msg`, unchanged. Used only when nobody listens to EVT_DIMSE_SENT (our services bind
no pynetdicom logging handlers), the response fits one PDV, and it carries no Offending
Element.

The same for the spool file of a received C-STORE-RQ: `decode_msg` builds its File Meta
Information as a pydicom FileMetaDataset (`create_file_meta`) and has pydicom write it
(`write_file_meta_info`), ~0.13 ms of GIL per instance; the two names it calls are replaced
in `pynetdicom.dimse_messages` (only `decode_msg` uses them) by a pair that writes the same
bytes directly (and hands anything unusual, e.g. a missing UID, to pydicom as before).

The wrappers rely on how pynetdicom 3.0.4 encodes messages, so the functions it stands in
for are pinned by the SHA-256 of their source: another pynetdicom leaves stock behaviour in
place, with a warning.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import pydicom.filewriter
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    dimse_messages,
    dsutils,
    evt,
)
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

log = logging.getLogger(__name__)

# The source of each function whose behaviour the fast path reproduces (pynetdicom 3.0.4).
PINNED: dict[str, tuple[Callable[..., Any], str]] = {
    "DIMSEServiceProvider.send_msg": (
        DIMSEServiceProvider.send_msg,
        "a839cf2fb46976d9da29cf06fea41c04416b38d14fab612af12e5d869bd5b3f0",
    ),
    "DIMSEMessage.primitive_to_message": (
        DIMSEMessage.primitive_to_message,
        "71fd61d5997f0f0c38abc2d383c4c6457f9c770468288aab04eb82a04d00ce00",
    ),
    "DIMSEMessage.encode_msg": (
        DIMSEMessage.encode_msg,
        "73000c902c52832dab302ddb3bc274ea93d205a810a197225dd87d4c1212ba57",
    ),
    "DIMSEMessage._set_command_group_length": (
        DIMSEMessage._set_command_group_length,
        "c3057c97344d5db3dc7a084ca5520ff7e04bbc8a07f3738295362c97718e3085",
    ),
    "DIMSEMessage.decode_msg": (
        DIMSEMessage.decode_msg,
        "f51c777e841a76beeaadfe3015bd4f4a68387229a72f13f3a3b7846d01d72284",
    ),
    "pynetdicom.dsutils.create_file_meta": (
        dsutils.create_file_meta,
        "035ed415f5aeea15543cca3b0b7b2b6d5a3189bc807a0211f5c633bb356ab9e3",
    ),
    "pydicom.filewriter.write_file_meta_info": (
        pydicom.filewriter.write_file_meta_info,
        "0568f3155349513bbef9976e179831f8aa76591e0adaa36566a1a17947c667e5",
    ),
}

_STOCK_SEND_MSG = DIMSEServiceProvider.send_msg
_MESSAGES: Any = dimse_messages  # the two names below are its imports, not its exports
_STOCK_CREATE_FILE_META = _MESSAGES.create_file_meta
_STOCK_WRITE_FILE_META = _MESSAGES.write_file_meta_info
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def source_sha256(func: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()


def _element(tag_element: int, value: bytes) -> bytes:
    """One command element, group 0000, Implicit VR Little Endian."""
    return struct.pack("<HHI", 0, tag_element, len(value)) + value


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")  # UnicodeEncodeError: the caller falls back
    return raw + pad if len(raw) % 2 else raw


def encode_c_store_rsp(primitive: C_STORE) -> bytes | None:
    """The command set of this C-STORE response, as pynetdicom encodes it; None when it has
    something this encoder does not handle (pynetdicom's own encoding is used then)."""
    if primitive.OffendingElement is not None or primitive._dataset_path is not None:
        return None
    message_id = primitive.MessageIDBeingRespondedTo
    status = primitive.Status
    if not isinstance(message_id, int) or not isinstance(status, int):
        return None
    if not (0 <= message_id < 0x10000 and 0 <= status < 0x10000):
        return None
    try:
        parts = []
        if primitive.AffectedSOPClassUID is not None:
            parts.append(_element(0x0002, _padded(str(primitive.AffectedSOPClassUID), b"\x00")))
        parts.append(_element(0x0100, struct.pack("<H", _C_STORE_RSP)))
        parts.append(_element(0x0120, struct.pack("<H", message_id)))
        parts.append(_element(0x0800, struct.pack("<H", _NO_DATA_SET)))
        parts.append(_element(0x0900, struct.pack("<H", status)))
        comment = primitive.ErrorComment
        if comment is not None:
            if not isinstance(comment, str):
                return None
            parts.append(_element(0x0902, _padded(comment, b" ")))
        instance = primitive.AffectedSOPInstanceUID
        if instance is not None:
            parts.append(_element(0x1000, _padded(str(instance), b"\x00")))
    except UnicodeEncodeError:
        return None
    body = b"".join(parts)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """`DIMSEServiceProvider.send_msg`, with C-STORE responses encoded directly."""
    if (
        type(primitive) is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
    ):
        encoded = encode_c_store_rsp(primitive)
        max_pdu = self.maximum_pdu_size
        if encoded is not None and (max_pdu == 0 or len(encoded) <= max_pdu - 6):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
            self.dul.send_pdu(pdata)
            return
    _STOCK_SEND_MSG(self, primitive, context_id)


class SpoolMeta(NamedTuple):
    """What `decode_msg` asks `create_file_meta` for; written by `write_spool_meta`."""

    sop_class_uid: Any
    sop_instance_uid: Any
    transfer_syntax: Any
    implementation_uid: Any
    implementation_version: Any


def create_spool_meta(
    *,
    sop_class_uid: Any,
    sop_instance_uid: Any,
    transfer_syntax: Any,
    implementation_uid: Any = PYNETDICOM_IMPLEMENTATION_UID,
    implementation_version: Any = PYNETDICOM_IMPLEMENTATION_VERSION,
) -> SpoolMeta:
    """`create_file_meta` as `decode_msg` calls it, the values kept for `write_spool_meta`."""
    return SpoolMeta(
        sop_class_uid, sop_instance_uid, transfer_syntax, implementation_uid, implementation_version
    )


def _explicit(tag_element: int, vr: bytes, value: bytes) -> bytes:
    """One file meta element, group 0002, Explicit VR Little Endian (short-length VRs)."""
    return struct.pack("<HH", 2, tag_element) + vr + struct.pack("<H", len(value)) + value


def encode_spool_meta(meta: SpoolMeta) -> bytes | None:
    """The File Meta Information group as pydicom's `write_file_meta_info` writes it for
    pynetdicom's `create_file_meta` (after the preamble and "DICM"); None: not handled here."""
    values = (
        meta.sop_class_uid,
        meta.sop_instance_uid,
        meta.transfer_syntax,
        meta.implementation_uid,
    )
    version = meta.implementation_version
    if not all(isinstance(v, str) and v for v in (*values, version)):
        return None
    try:
        uids = [_padded(str(v), b"\x00") for v in values]
        name = _padded(version, b" ")
    except UnicodeEncodeError:
        return None
    if max(map(len, uids)) > 64 or len(name) > 16:
        return None
    body = b"".join(
        [
            struct.pack("<HH", 2, 0x0001) + b"OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01",
            _explicit(0x0002, b"UI", uids[0]),
            _explicit(0x0003, b"UI", uids[1]),
            _explicit(0x0010, b"UI", uids[2]),
            _explicit(0x0012, b"UI", uids[3]),
            _explicit(0x0013, b"SH", name),
        ]
    )
    return _explicit(0x0000, b"UL", struct.pack("<I", len(body))) + body


def write_spool_meta(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """`write_file_meta_info` for `decode_msg`: a `SpoolMeta` written directly, anything
    it does not handle by pydicom (from the data set pynetdicom would have built)."""
    if isinstance(file_meta, SpoolMeta):
        encoded = encode_spool_meta(file_meta) if enforce_standard else None
        if encoded is not None:
            fp.write(encoded)
            return
        file_meta = _STOCK_CREATE_FILE_META(**file_meta._asdict())
    _STOCK_WRITE_FILE_META(fp, file_meta, enforce_standard)


def pin_mismatches() -> list[str]:
    """Names of the pinned functions whose source differs from the pin (empty: all match)."""
    return [name for name, (func, digest) in PINNED.items() if source_sha256(func) != digest]


def install(enabled: bool = True) -> bool:
    """Wrap pynetdicom's `send_msg` if `enabled` and the pins match; True when installed."""
    if not enabled:
        uninstall()
        return False
    if DIMSEServiceProvider.send_msg is _send_msg:
        return True
    changed = pin_mismatches()
    if changed:
        log.warning(
            "pynetdicom differs from the version the fast C-STORE-RSP was checked against; "
            "using pynetdicom's own encoding",
            extra={"changed": ",".join(changed)},
        )
        return False
    DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]
    # Only decode_msg (the spool file of a received C-STORE-RQ) uses these two names there.
    _MESSAGES.create_file_meta = create_spool_meta
    _MESSAGES.write_file_meta_info = write_spool_meta
    return True


def uninstall() -> None:
    DIMSEServiceProvider.send_msg = _STOCK_SEND_MSG  # type: ignore[method-assign]
    _MESSAGES.create_file_meta = _STOCK_CREATE_FILE_META
    _MESSAGES.write_file_meta_info = _STOCK_WRITE_FILE_META

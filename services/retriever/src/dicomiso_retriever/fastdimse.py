"""A cheaper C-STORE-RSP: its command set encoded straight to bytes (DICOMISO_SCP_FAST_DIMSE).

pynetdicom sends every DIMSE response by building a DIMSE message whose command set is a
pydicom Dataset, encoding it once to learn the Command Group Length and once more to send it
(`DIMSEServiceProvider.send_msg` -> `primitive_to_message` -> `encode_msg`): ~0.45 ms of GIL per
received instance, a tenth of the retriever's CPU (docs/benchmarks.md, "Lever: C-STORE-RSP
encoded directly"). A C-STORE-RSP is a fixed small structure (PS3.7 9.3.1.2, Implicit VR
Little Endian), so `send_msg` is wrapped: a C-STORE response whose fields we can encode goes
out as the same bytes pynetdicom would send (tests/retriever/test_fastdimse.py compares them),
in one P-DATA, through the same `dul.send_pdu`; everything else goes to pynetdicom's own
`send_msg`, unchanged. Used only when nobody listens to EVT_DIMSE_SENT (our services bind
no pynetdicom logging handlers), the response fits one PDV, and it carries no Offending
Element.

The wrapper relies on how pynetdicom 3.0.4 encodes messages, so the functions it stands in
for are pinned by the SHA-256 of their source: another pynetdicom leaves stock behaviour in
place, with a warning.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import struct
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
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
}

_STOCK_SEND_MSG = DIMSEServiceProvider.send_msg
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


def pins_match() -> list[str]:
    """Names of the pinned functions whose source differs from the pin (empty: all match)."""
    return [name for name, (func, digest) in PINNED.items() if source_sha256(func) != digest]


def install(enabled: bool = True) -> bool:
    """Wrap pynetdicom's `send_msg` if `enabled` and the pins match; True when installed."""
    if not enabled:
        uninstall()
        return False
    if DIMSEServiceProvider.send_msg is _send_msg:
        return True
    changed = pins_match()
    if changed:
        log.warning(
            "pynetdicom differs from the version the fast C-STORE-RSP was checked against; "
            "using pynetdicom's own encoding",
            extra={"changed": ",".join(changed)},
        )
        return False
    DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    DIMSEServiceProvider.send_msg = _STOCK_SEND_MSG  # type: ignore[method-assign]

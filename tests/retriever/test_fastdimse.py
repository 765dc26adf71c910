"""The directly encoded C-STORE-RSP is byte for byte what pynetdicom itself would send."""

from __future__ import annotations

import io
import itertools
import logging
from typing import Any

import pytest
from pydicom.tag import Tag
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from dicomiso_retriever import fastdimse

CT = "1.2.840.10008.5.1.4.1.1.2"  # 25 characters: odd
MR = "1.2.840.10008.5.1.4.1.1.4.1"  # 27: odd
EVEN = "1.2.826.0.1.3680043.8.498.12"  # 28: even
ODD = "1.2.826.0.1.3680043.8.498.123"  # 29: odd
STATUSES = [0x0000, 0xA700, 0xA900, 0xC000, 0xB007, 0xC211]
COMMENTS = [None, "", "x", "data set unreadable or missing UIDs", "pixel data " + "9" * 53]


def _rsp(
    status: int, comment: str | None, cls: str | None, inst: str | None, msg_id: int
) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageID = msg_id
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.AffectedSOPClassUID = cls
    rsp.AffectedSOPInstanceUID = inst
    rsp.Status = status
    if comment is not None:
        rsp.ErrorComment = comment  # type: ignore[assignment]  # typed None in pynetdicom
    return rsp


def _stock_pdvs(rsp: C_STORE, context_id: int, max_pdu: int) -> list[list[tuple[int, bytes]]]:
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    return [p.presentation_data_value_list for p in msg.encode_msg(context_id, max_pdu)]


CASES = list(
    itertools.product(STATUSES, COMMENTS, [CT, MR, EVEN, None], [ODD, EVEN, None], [1, 65535])
)


@pytest.mark.parametrize(("status", "comment", "cls", "inst", "msg_id"), CASES)
def test_command_set_matches_pynetdicom(
    status: int, comment: str | None, cls: str | None, inst: str | None, msg_id: int
) -> None:
    rsp = _rsp(status, comment, cls, inst, msg_id)
    [[(cx, stock)]] = _stock_pdvs(rsp, 7, 16384)
    assert cx == 7
    assert stock[:1] == b"\x03"
    assert fastdimse.encode_c_store_rsp(rsp) == stock[1:]


class _Dul:
    def __init__(self) -> None:
        self.sent: list[list[tuple[int, bytes]]] = []

    def send_pdu(self, primitive: Any) -> None:
        self.sent.append(primitive.presentation_data_value_list)


class _Assoc:
    def __init__(self, handlers: list[Any] | None = None) -> None:
        self.handlers = handlers or []
        self._abort_nonblocking = self._abort_blocking = self.abort = lambda: None

    def get_handlers(self, event: Any) -> list[Any]:
        return self.handlers if event is evt.EVT_DIMSE_SENT else []


class _Provider(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider on a stand-in association that records what is sent."""

    def __init__(self, max_pdu: int, handlers: list[Any] | None = None) -> None:
        self._fake_assoc = _Assoc(handlers)
        self._fake_dul = _Dul()
        self._max = max_pdu

    @property
    def assoc(self) -> Any:
        return self._fake_assoc

    @property
    def dul(self) -> Any:
        return self._fake_dul

    @property
    def maximum_pdu_size(self) -> int:
        return self._max


def _provider(max_pdu: int, handlers: list[Any] | None = None) -> _Provider:
    return _Provider(max_pdu, handlers)


@pytest.mark.parametrize("max_pdu", [0, 16384, 1_048_576, 64])
@pytest.mark.parametrize("status", [0x0000, 0xA900])
def test_send_msg_sends_what_stock_sends(max_pdu: int, status: int) -> None:
    """Through `send_msg`: the same P-DATA list, stock and wrapped (64: several fragments,
    the wrapper hands it to pynetdicom)."""
    rsp = _rsp(status, "SOP class differs from the request" if status else None, CT, ODD, 3)
    stock = _provider(max_pdu)
    fastdimse._STOCK_SEND_MSG(stock, rsp, 5)
    fast = _provider(max_pdu)
    fastdimse._send_msg(fast, rsp, 5)
    assert fast.dul.sent == stock.dul.sent
    assert (len(stock.dul.sent) > 1) == (max_pdu == 64)


def test_offending_element_and_listeners_take_pynetdicom_path() -> None:
    rsp = _rsp(0xA900, "bad", CT, ODD, 3)
    rsp.OffendingElement = [Tag(0x00080016)]  # type: ignore[assignment]
    assert fastdimse.encode_c_store_rsp(rsp) is None
    stock, fast = _provider(16384), _provider(16384)
    fastdimse._STOCK_SEND_MSG(stock, rsp, 1)
    fastdimse._send_msg(fast, rsp, 1)
    assert fast.dul.sent == stock.dul.sent

    seen: list[Any] = []
    listened = _provider(16384, handlers=[(lambda e: seen.append(e.message), None)])
    fastdimse._send_msg(listened, _rsp(0, None, CT, ODD, 4), 1)
    assert len(seen) == 1  # the EVT_DIMSE_SENT handler saw pynetdicom's message


def test_pins_match_installed_pynetdicom() -> None:
    assert fastdimse.pin_mismatches() == []


def test_changed_pynetdicom_falls_back_with_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(DIMSEServiceProvider, "send_msg", fastdimse._STOCK_SEND_MSG)
    func, _ = fastdimse.PINNED["DIMSEMessage.encode_msg"]
    monkeypatch.setitem(fastdimse.PINNED, "DIMSEMessage.encode_msg", (func, "0" * 64))
    with caplog.at_level(logging.WARNING, logger="dicomiso_retriever.fastdimse"):
        assert fastdimse.install() is False
    assert DIMSEServiceProvider.send_msg is fastdimse._STOCK_SEND_MSG
    assert "pynetdicom's own encoding" in caplog.text
    assert fastdimse.install(enabled=False) is False


@pytest.mark.parametrize("cls", [CT, MR, EVEN])
@pytest.mark.parametrize("inst", [ODD, EVEN])
@pytest.mark.parametrize(
    "syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70"]
)
def test_spool_file_meta_matches_pydicom(cls: str, inst: str, syntax: str) -> None:
    """The spool file's meta group: the bytes pydicom writes for pynetdicom's file meta."""
    kwargs = {
        "sop_class_uid": UID(cls),
        "sop_instance_uid": UID(inst),
        "transfer_syntax": UID(syntax),
    }
    stock: Any = io.BytesIO()
    fastdimse._STOCK_WRITE_FILE_META(stock, fastdimse._STOCK_CREATE_FILE_META(**kwargs))
    fast: Any = io.BytesIO()
    fastdimse.write_spool_meta(fast, fastdimse.create_spool_meta(**kwargs))
    assert fast.getvalue() == stock.getvalue()


def test_spool_file_meta_it_cannot_encode_goes_to_pydicom() -> None:
    """A missing UID: pydicom's own validation answers, as without the wrapper."""
    kwargs: dict[str, Any] = {"sop_class_uid": None, "sop_instance_uid": UID(ODD)}
    kwargs["transfer_syntax"] = UID("1.2.840.10008.1.2")
    with pytest.raises(AttributeError) as stock:
        fastdimse._STOCK_WRITE_FILE_META(
            io.BytesIO(),
            fastdimse._STOCK_CREATE_FILE_META(**kwargs),
        )
    with pytest.raises(AttributeError) as fast:
        fastdimse.write_spool_meta(io.BytesIO(), fastdimse.create_spool_meta(**kwargs))
    assert str(fast.value) == str(stock.value)


def test_install_and_uninstall_swap_all_three(monkeypatch: pytest.MonkeyPatch) -> None:
    dimse_messages: Any = fastdimse._MESSAGES
    monkeypatch.setattr(DIMSEServiceProvider, "send_msg", fastdimse._STOCK_SEND_MSG)
    monkeypatch.setattr(dimse_messages, "create_file_meta", fastdimse._STOCK_CREATE_FILE_META)
    monkeypatch.setattr(dimse_messages, "write_file_meta_info", fastdimse._STOCK_WRITE_FILE_META)
    assert fastdimse.install() is True
    assert dimse_messages.write_file_meta_info is fastdimse.write_spool_meta
    assert fastdimse.install(enabled=False) is False
    assert DIMSEServiceProvider.send_msg is fastdimse._STOCK_SEND_MSG
    assert dimse_messages.create_file_meta is fastdimse._STOCK_CREATE_FILE_META

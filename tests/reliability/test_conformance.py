"""docs/conformance.md cannot drift from the code: its tables are built from the live objects.

Each table sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`. The tables
come from what the code really negotiates: the retriever's Storage SCP is started (its
`start_server` captured, nothing listens) and its supported contexts read; every SCU path
(lookup's and the retriever's C-FIND, C-MOVE, C-GET, the forwarder's C-STORE) builds its AE
for real and is stopped at `associate`, where the requested contexts are read; the media
profiles are `media.PROFILES`. `python tests/reliability/test_conformance.py --write`
rewrites the tables in place after a deliberate change.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE

from dicomiso_common import pacs
from dicomiso_common.store import Store
from dicomiso_forwarder import commitment
from dicomiso_forwarder.send import EXPLICIT_LE, MAX_CONTEXTS, Item, Sender
from dicomiso_forwarder.settings import ForwarderSettings
from dicomiso_lookup.settings import LookupSettings
from dicomiso_packager.media import PROFILES
from dicomiso_retriever import negotiation, query, transfer
from dicomiso_retriever.scp import StorageSCP
from dicomiso_retriever.settings import RetrieverSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
CT = "1.2.840.10008.5.1.4.1.1.2"
_BLOCK = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.S)


class _Stop(Exception):
    """Raised in place of opening an association: the AE has been read."""


@contextmanager
def _captured(target: Any, name: str) -> Iterator[list[AE]]:
    """Replace `target.name` (an AE method) so it records the AE and stops there."""
    seen: list[AE] = []
    original = getattr(target, name)

    def capture(self: AE, *args: Any, **kwargs: Any) -> Any:
        seen.append(self)
        self._captured_ext_neg = kwargs.get("ext_neg") or []  # type: ignore[attr-defined]
        raise _Stop

    setattr(target, name, capture)
    try:
        yield seen
    finally:
        setattr(target, name, original)


def _requested(call: Callable[[], Any]) -> AE:
    with _captured(AE, "associate") as seen, pytest.raises(_Stop):
        call()
    return seen[0]


def _name(uid: str | None) -> str:
    return UID(uid or "").name


def _syntaxes(uids: list[str]) -> str:
    return "<br>".join(f"{_name(u)} `{u}`" for u in uids)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- the live objects -----------------------------------------------------------------------


def retriever_scp() -> AE:
    """The Storage SCP's AE exactly as `StorageSCP.start` configures it."""
    settings = RetrieverSettings()
    scp = StorageSCP(settings, Store(None, "conformance"), None)  # type: ignore[arg-type]
    try:
        with _captured(AE, "start_server") as seen, pytest.raises(_Stop):
            scp.start()
    finally:
        scp.uploads.close()
    return seen[0]


def commitment_aes() -> tuple[AE, AE]:
    """The N-ACTION association's AE, and our commitment SCP's, as the forwarder builds them."""
    settings = ForwarderSettings(
        peers={"p": {"aet": "PEER", "host": "127.0.0.1", "port": 104, "commitment": True}}
    )
    peer = pacs.PacsPeer(aet="PEER", calling_aet=settings.calling_aet)
    request = Dataset()
    request.TransactionUID = "1.2.3"
    store = Store(None, "conformance")
    scu = _requested(
        lambda: commitment._ask(
            store,
            settings,
            peer,
            [],
            request,
            0.0,
            threading.Event(),
            lambda _e: (0, None),
            lambda: None,
        )
    )
    with _captured(AE, "start_server") as seen, pytest.raises(_Stop):
        commitment.CommitmentScp(settings, store).start()
    return scu, seen[0]


def scu_contexts() -> dict[str, AE]:
    s = RetrieverSettings()
    lookup = LookupSettings()
    lookup_peer = pacs.PacsPeer(
        aet=lookup.pacs_aet, host="127.0.0.1", port=lookup.pacs_port, calling_aet=lookup.calling_aet
    )
    sender = Sender(None, lookup_peer, lambda _i, _o: None)  # type: ignore[arg-type]
    study = pacs.StudyAnswer("1.2.3.4", instances=1, sop_classes=[CT])
    return {
        "lookup-find": _requested(lambda: pacs.find_studies_by_accession(lookup_peer, "A1")),
        "retriever-find": _requested(lambda: query.find_by_accession(s, "A1")),
        "retriever-find-image": _requested(lambda: query.take_inventory(s, study)),
        "retriever-move": _requested(lambda: transfer.move_study(s, study, lambda _r: None)),
        "retriever-get": _requested(
            lambda: transfer.get_study(
                s, study, negotiation.plan([CT], {}), lambda _e: 0, lambda _r: None
            )
        ),
        "forwarder-store": _requested(
            lambda: sender.send_batch([Item("k", "1.2.3.4.5", CT, "1.2.840.10008.1.2.4.90")])
        ),
    }


# -- the tables -----------------------------------------------------------------------------


def _scp_tables(ae: AE) -> dict[str, str]:
    storage = [cx for cx in ae.supported_contexts if cx.abstract_syntax != "1.2.840.10008.1.1"]
    syntax_sets = {tuple(cx.transfer_syntax) for cx in storage}
    assert len(syntax_sets) == 1, "every storage SOP class accepts the same transfer syntaxes"
    rows = [
        [_name(cx.abstract_syntax), f"`{cx.abstract_syntax}`", "SCP"]
        for cx in sorted(ae.supported_contexts, key=lambda c: _name(c.abstract_syntax))
    ]
    return {
        "retriever-scp": _table(["SOP class", "UID", "Role"], rows),
        "retriever-scp-syntaxes": _table(
            ["Transfer syntax", "UID"], [[_name(t), f"`{t}`"] for t in sorted(syntax_sets.pop())]
        ),
        "retriever-scp-policy": _table(
            ["Setting", "Value"],
            [
                ["AE title (DICOMISO_SCP_AET)", f"`{RetrieverSettings().scp_aet}`"],
                ["Port (DICOMISO_SCP_PORT)", str(RetrieverSettings().scp_port)],
                ["Maximum PDU received (DICOMISO_SCP_MAX_PDU)", str(ae.maximum_pdu_size)],
                ["Maximum concurrent associations", str(ae.maximum_associations)],
                [
                    "Calling AE titles accepted (DICOMISO_SCP_CALLING_AETS)",
                    "the PACS's AE title (default); `*` = any; a list = those",
                ],
                ["SOP classes accepted", f"{len(storage)} storage + Verification"],
            ],
        ),
    }


def _scu_rows(ae: AE, what: str) -> list[list[str]]:
    roles = {str(r.sop_class_uid): r for r in getattr(ae, "_captured_ext_neg", [])}
    rows = []
    for cx in ae.requested_contexts:
        uid = str(cx.abstract_syntax)
        if uid in roles:
            role = "SCP (SCP/SCU role selection)"
            sop = f"any storage SOP class found in the study (example: {_name(uid)})"
        elif uid == CT:
            role, sop = "SCU", f"each storage SOP class of the instances (example: {_name(uid)})"
        else:
            role, sop = "SCU", _name(uid)
        rows.append(
            [
                what,
                sop,
                f"`{uid}`" if sop == _name(uid) else "",
                role,
                _syntaxes(list(cx.transfer_syntax)),
            ]
        )
    return rows


def tables() -> dict[str, str]:
    """Every generated table of docs/conformance.md, by marker name."""
    scus = scu_contexts()
    header = ["Operation", "SOP class", "UID", "Role", "Transfer syntaxes proposed"]
    retriever = (
        _scu_rows(scus["retriever-find"], "C-FIND (STUDY, by accession / UID)")
        + _scu_rows(scus["retriever-find-image"], "C-FIND (SERIES/IMAGE, for C-GET)")
        + _scu_rows(scus["retriever-move"], "C-MOVE (to our own SCP)")
        + _scu_rows(scus["retriever-get"], "C-GET")
    )
    forwarder = _scu_rows(scus["forwarder-store"], "C-STORE")
    commit_scu, commit_scp = commitment_aes()
    commit_rows = _scu_rows(
        commit_scu,
        "N-ACTION (Request Storage Commitment), then N-EVENT-REPORT on the same association",
    )
    commit_rows += [
        [
            "N-EVENT-REPORT on a new association the peer opens (our commitment SCP)",
            _name(str(cx.abstract_syntax)),
            f"`{cx.abstract_syntax}`",
            "SCU, accepting the peer's SCP role (SCP/SCU role selection)"
            if cx.scp_role and cx.scu_role
            else "SCU",
            _syntaxes(list(cx.transfer_syntax)),
        ]
        for cx in commit_scp.supported_contexts
    ]
    fwd = ForwarderSettings()
    profiles = [
        [p.name, p.medium, f"{p.capacity:,}", _syntaxes(sorted(p.syntaxes)), _name(EXPLICIT_LE)]
        for p in PROFILES.values()
    ]
    retr, look = RetrieverSettings(), LookupSettings()
    return {
        **_scp_tables(retriever_scp()),
        "retriever-scu": _table(header, retriever),
        "lookup-scu": _table(header, _scu_rows(scus["lookup-find"], "C-FIND (STUDY)")),
        "forwarder-scu": _table(header, forwarder)
        + (
            f"\nContexts are planned per association: one per (SOP class, transfer syntax) "
            f"pair present, plus {_name(EXPLICIT_LE)} per SOP class as the fallback, at most "
            f"{MAX_CONTEXTS} per association.\n"
        ),
        "forwarder-commitment": _table(header, commit_rows),
        "media-profiles": _table(
            [
                "Profile",
                "Medium",
                "Capacity (bytes)",
                "Transfer syntaxes written byte-exact",
                "Any other syntax is re-encoded to",
            ],
            profiles,
        ),
        "ae-titles": _table(
            ["Application entity", "Default AE title", "Port", "Setting"],
            [
                [
                    "Retriever Storage SCP",
                    f"`{retr.scp_aet}`",
                    str(retr.scp_port),
                    "DICOMISO_SCP_AET, DICOMISO_SCP_PORT",
                ],
                [
                    "Retriever Q/R SCU (calling)",
                    f"`{retr.our_calling_aet}`",
                    "ephemeral",
                    "DICOMISO_CALLING_AET (default: the SCP's)",
                ],
                [
                    "Lookup Q/R FIND SCU (calling)",
                    f"`{look.calling_aet}`",
                    "ephemeral",
                    "DICOMISO_CALLING_AET",
                ],
                [
                    "Forwarder Storage SCU (calling)",
                    f"`{ForwarderSettings().calling_aet}`",
                    "ephemeral",
                    "DICOMISO_CALLING_AET",
                ],
                [
                    "Forwarder commitment SCP (N-EVENT-REPORTs; only with a commitment peer)",
                    f"`{fwd.calling_aet}`",
                    str(fwd.commitment_port),
                    "DICOMISO_CALLING_AET, DICOMISO_COMMITMENT_HOST, DICOMISO_COMMITMENT_PORT",
                ],
                [
                    "PACS (called, retriever and lookup)",
                    f"`{retr.pacs_aet}`",
                    str(retr.pacs_port),
                    "DICOMISO_PACS_AET, DICOMISO_PACS_HOST, DICOMISO_PACS_PORT",
                ],
            ],
        ),
    }


def render(text: str, generated: dict[str, str]) -> str:
    def block(m: re.Match[str]) -> str:
        if m.group(2) not in generated:
            return m.group(0)  # another test's block (test_interop.py: interop-matrix)
        return m.group(1) + generated[m.group(2)] + m.group(4)

    return _BLOCK.sub(block, text)


def test_conformance_tables_are_those_the_code_negotiates() -> None:
    """Every generated table is in the document, and each is exactly what the code builds
    (after a change: python tests/reliability/test_conformance.py --write)."""
    text = DOC.read_text("utf-8")
    generated = tables()
    names = [m.group(2) for m in _BLOCK.finditer(text) if m.group(2) != "interop-matrix"]
    assert sorted(names) == sorted(generated)
    assert render(text, generated) == text


def test_the_statement_follows_the_ps3_2_outline() -> None:
    headings = re.findall(r"^## (\d+) (.+)$", DOC.read_text("utf-8"), re.M)
    assert [n for n, _ in headings] == [str(i) for i in range(1, 9)]
    assert [t for _, t in headings] == [
        "Overview",
        "Table of contents",
        "Introduction",
        "Networking",
        "Media interchange",
        "Support of character sets",
        "Security",
        "Annexes",
    ]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/reliability/test_conformance.py --write")
    DOC.write_text(render(DOC.read_text("utf-8"), tables()), "utf-8")

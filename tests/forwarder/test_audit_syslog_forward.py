"""A forward's DICOM audit messages reach a real syslog receiver over TLS, once and in order:
Begin Transferring when asked, DICOM Instances Transferred when it ended."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from dicomiso_common import audit
from dicomiso_common.store import Store
from support.atna import valid
from support.dcmtk import StoreSCP
from support.syslogd import Rsyslog

from .conftest import seed
from .test_audit_messages import SMALL

BOM = "\ufeff"


def test_a_forward_reaches_the_audit_record_repository(
    make_forwarder: Any,
    study_factory: Any,
    store: Store,
    tmp_path: Path,
    syslog_receiver: Rsyslog,
) -> None:
    study = study_factory(**SMALL)
    seed(store, study.files, study.accession)
    with StoreSCP(tmp_path / "recv", aet="PLAINSCP") as scp:
        forwarder = make_forwarder(
            {"plain": {"aet": "PLAINSCP", "host": "127.0.0.1", "port": scp.port}},
            audit_syslog_url=syslog_receiver.url,
            audit_syslog_ca_file=syslog_receiver.pki.ca,
            audit_syslog_interval=0.2,
            audit_syslog_timeout=3.0,
        )
        status = forwarder.run({"accession_numbers": [study.accession], "destination": "plain"})
    assert status["state"] == "succeeded", status

    deadline = time.monotonic() + 60
    while list(store.list(audit.OUTBOX)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(store.list(audit.OUTBOX)) == []
    events = sorted(
        (store.get_json(o.key)[0] for o in store.list("audit/")), key=lambda e: (e["at"], e["id"])
    )
    got = syslog_receiver.wait_for(len(events), timeout=30)
    time.sleep(0.5)  # a duplicate would come now
    got = syslog_receiver.messages()
    ids = [re.search(r'eventId="(\w+)"', m["sd"]).group(1) for m in got]  # type: ignore[union-attr]
    assert ids == [e["id"] for e in events]
    codes = [
        valid(m["msg"].removeprefix(BOM).encode())
        .find("EventIdentification/EventID")
        .get(  # type: ignore[union-attr]
            "csd-code"
        )
        for m in got
    ]
    assert codes == ["110102", "110104"]

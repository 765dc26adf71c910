"""A real package run's DICOM audit messages reach a real syslog receiver over TLS.

The packager and the retriever both have DICOMISO_AUDIT_SYSLOG_URL: both queue their events in
the bucket's outbox and run a shipper, and the one holding the deployment's lease sends every
event of both services to rsyslogd, each once, in the order of the events.
"""

from __future__ import annotations

import re
import time
from typing import Any

from dicomiso_common import atna, audit
from support.atna import valid
from support.mariadb import add_patient
from support.syslogd import Rsyslog

BOM = "\ufeff"


def test_every_event_of_a_package_run_arrives_once_in_order(
    make_stack: Any, orthanc: Any, study_factory: Any, syslog_receiver: Rsyslog
) -> None:
    rsyslog, pki = syslog_receiver, syslog_receiver.pki
    syslog = {
        "audit_syslog_url": rsyslog.url,
        "audit_syslog_ca_file": pki.ca,
        "audit_syslog_interval": 0.2,
        "audit_syslog_timeout": 3.0,  # inside the stack's short job_stale_after
    }
    study = study_factory(ct=2, with_ko=False, with_pr=False, with_multiframe=False)
    orthanc.upload(study.files)
    stack = make_stack(retriever=syslog, **syslog)
    add_patient(stack.his, study.patient_id, "Dewi Anggraini", [study.accession])

    status = stack.run({"accession_numbers": [study.accession]})
    assert status["state"] == "succeeded", status
    assert stack.packager.post(f"/v1/packages/{status['id']}/link").status_code == 200

    deadline = time.monotonic() + 60
    while stack.keys(audit.OUTBOX) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.keys(audit.OUTBOX) == []
    events = [stack.store.get_json(k)[0] for k in stack.keys("audit/")]
    events.sort(key=lambda e: (e["at"], e["id"]))
    expected = [e for e in events if atna.render(e) is not None]
    assert {e["service"] for e in expected} == {"packager", "retriever"}
    rsyslog.wait_for(len(expected), timeout=30)
    time.sleep(0.5)  # a duplicate would come now
    got = rsyslog.messages()
    ids = [re.search(r'eventId="(\w+)"', m["sd"]).group(1) for m in got]  # type: ignore[union-attr]
    assert ids == [e["id"] for e in expected]
    for message in got:
        assert message["msgid"] == "IHE+RFC-3881" and message["msg"].startswith(BOM)
        valid(message["msg"].removeprefix(BOM).encode())
    text = "".join(m["msg"] for m in got)
    assert study.patient_name not in text and "Dewi" not in text

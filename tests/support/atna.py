"""The DICOM Audit Message schema of PS3.15 A.5.1 (RELAX NG, XML form), for every test that
renders audit messages (`dicomiso_common.atna`)."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).with_name("dicom-audit-message.rng"))))


def valid(xml: bytes | None) -> etree._Element:
    """The parsed message; fails the test if there is none or the schema refuses it."""
    assert xml is not None, "no audit message"
    doc = etree.fromstring(xml)
    assert SCHEMA.validate(doc), SCHEMA.error_log
    return doc

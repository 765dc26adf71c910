"""A small pynetdicom Q/R SCP for PACS behaviours no real server here offers on demand.

Orthanc and dcmqrscp answer correctly; a site's archive sometimes does not. This one serves
a set of Part 10 files (C-FIND at STUDY/SERIES/IMAGE, C-MOVE, C-GET, Study and Patient Root)
and can be told to misbehave the ways integration engineers meet: pad the accession
differently, answer with other accessions, wildcards or another patient's study, name the
wrong SOP classes, drop an instance silently, send an instance of another study on a C-GET,
abort mid-study, or offer the Patient Root models only (no real server here refuses a Study
Root C-FIND: dcmqrscp `-QS` drops Study Root for move and get only). Each quirk is a field of
:class:`Quirks`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from support.net import LOOPBACK, free_port, nodelay_server


@dataclass
class Quirks:
    accession_as: str | None = None  # the AccessionNumber value the STUDY answer carries
    extra_answers: list[dict[str, Any]] = field(default_factory=list)  # more STUDY answers
    count_instances: bool = True  # send NumberOfStudyRelatedInstances
    sop_classes_in_study: list[str] | None = None  # None: the true ones
    drop: set[str] = field(default_factory=set)  # SOP UIDs listed but never sent
    foreign: list[Path] = field(default_factory=list)  # sent too, on C-GET and C-MOVE
    abort_after: int | None = None  # abort the association after this many C-STOREs
    move_syntaxes: list[str] | None = None  # transfer syntaxes proposed on C-MOVE sub-assocs
    # Accept only the Patient Root FIND/MOVE/GET models, and hold them to the hierarchy
    # (PS3.4 C.4.1.2.1): PatientID is a key of every query; below STUDY level, and on every
    # C-MOVE and C-GET, it must carry the patient's ID, else status A900. A STUDY-level
    # C-FIND may match PatientID universally (empty), as the archives we know allow.
    patient_root_only: bool = False


class QuirkyPacs:
    """The SCP, on a free loopback port; `register_modality` sets C-MOVE destinations."""

    name = "pynetdicom"

    def __init__(self, aet: str = "QUIRKY", quirks: Quirks | None = None) -> None:
        self.aet, self.host, self.dicom_port = aet, LOOPBACK, free_port()
        self.quirks = quirks or Quirks()
        self._files: list[Path] = []
        self._headers: list[Dataset] = []
        self._dest: dict[str, tuple[str, int]] = {}
        self._server: Any = None
        self.requests: dict[str, int] = {"Find": 0, "Move": 0, "Get": 0}
        self.models: set[str] = set()  # the Q/R models requests came on
        self._lock = threading.Lock()

    def upload(self, paths: list[Path]) -> list[str]:
        for p in paths:
            self._files.append(p)
            self._headers.append(dcmread(p, stop_before_pixels=True))
        return [str(h.SOPInstanceUID) for h in self._headers[-len(paths) :]]

    def register_modality(self, aet: str, host: str, port: int, **_: object) -> None:
        self._dest[aet] = (host, port)

    def start(self) -> None:
        ae = AE(ae_title=self.aet)
        study_root = (
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelMove,
            StudyRootQueryRetrieveInformationModelGet,
        )
        for model in (
            *(() if self.quirks.patient_root_only else study_root),
            PatientRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelMove,
            PatientRootQueryRetrieveInformationModelGet,
        ):
            ae.add_supported_context(model)
        for cx in AllStoragePresentationContexts:  # C-GET: the caller stores (SCP role)
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, scp_role=True, scu_role=False)
        handlers: list[Any] = [
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_GET, self._get),
            (evt.EVT_C_MOVE, self._move),
        ]
        server = ae.start_server((self.host, self.dicom_port), block=False, evt_handlers=handlers)
        assert server is not None  # block=False always returns the server
        self._server = nodelay_server(server)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> QuirkyPacs:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ answers

    def _count(self, kind: str, event: evt.Event) -> None:
        with self._lock:
            self.requests[kind] += 1
            self.models.add(str(event.request.AffectedSOPClassUID))

    def _breaks_hierarchy(self, ident: Dataset, find: bool) -> bool:
        """Patient Root only: the identifier lacks the PatientID the hierarchy needs."""
        if not self.quirks.patient_root_only:
            return False
        if "PatientID" not in ident:
            return True
        study_find = find and str(ident.get("QueryRetrieveLevel")) == "STUDY"
        return not study_find and not str(ident.PatientID or "")

    def _matching(self, ident: Dataset) -> list[int]:
        """Indexes of the files matching the identifier's non-empty UID/accession keys."""
        keys = {
            k: str(ident.get(k))
            for k in (
                "PatientID",
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "SOPInstanceUID",
                "AccessionNumber",
            )
            if k in ident and str(ident.get(k))
        }
        return [
            i
            for i, h in enumerate(self._headers)
            if all(str(h.get(k)) == v for k, v in keys.items())
        ]

    def _study_answer(self, h: Dataset, n: int) -> Dataset:
        q = self.quirks
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = h.StudyInstanceUID
        ds.AccessionNumber = q.accession_as if q.accession_as is not None else h.AccessionNumber
        ds.PatientID = h.PatientID
        ds.PatientName = h.PatientName
        if q.count_instances:
            ds.NumberOfStudyRelatedInstances = n
        classes = q.sop_classes_in_study
        if classes is None:
            classes = sorted(
                {
                    str(x.SOPClassUID)
                    for x in self._headers
                    if x.StudyInstanceUID == h.StudyInstanceUID
                }
            )
        ds.SOPClassesInStudy = classes
        return ds

    def _find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        self._count("Find", event)
        ident = event.identifier
        if self._breaks_hierarchy(ident, find=True):
            yield 0xA900, None
            return
        level = str(ident.QueryRetrieveLevel)
        if level == "STUDY":
            # Match on the study keys only: the quirks decide what else is answered.
            wanted = Dataset()
            for k in ("PatientID", "StudyInstanceUID", "AccessionNumber"):
                if k in ident:
                    setattr(wanted, k, ident.get(k))
            hits = self._matching(wanted)
            seen: set[str] = set()
            for i in hits:
                h = self._headers[i]
                if h.StudyInstanceUID not in seen:
                    seen.add(h.StudyInstanceUID)
                    n = sum(1 for x in self._headers if x.StudyInstanceUID == h.StudyInstanceUID)
                    yield 0xFF00, self._study_answer(h, n)
            for extra in self.quirks.extra_answers:
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                for k, v in extra.items():
                    setattr(ds, k, v)
                yield 0xFF00, ds
            return
        done: set[str] = set()
        for i in self._matching(ident):
            h = self._headers[i]
            ds = Dataset()
            ds.QueryRetrieveLevel = level
            ds.StudyInstanceUID = h.StudyInstanceUID
            ds.SeriesInstanceUID = h.SeriesInstanceUID
            if level == "SERIES":
                if h.SeriesInstanceUID in done:
                    continue
                done.add(h.SeriesInstanceUID)
            else:
                ds.SOPInstanceUID = h.SOPInstanceUID
                ds.SOPClassUID = h.SOPClassUID
            yield 0xFF00, ds

    def _to_send(self, ident: Dataset) -> list[Path]:
        files = [self._files[i] for i in self._matching(ident)]
        files = [
            p
            for p in files
            if str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) not in self.quirks.drop
        ]
        return files + list(self.quirks.foreign)

    def _send(self, event: evt.Event, files: list[Path]) -> Iterator[Any]:
        yield len(files)
        for sent, path in enumerate(files):
            if self.quirks.abort_after is not None and sent >= self.quirks.abort_after:
                event.assoc.abort()
                return
            yield 0xFF00, dcmread(path)

    def _get(self, event: evt.Event) -> Iterator[Any]:
        self._count("Get", event)
        if self._breaks_hierarchy(event.identifier, find=False):
            yield 1
            yield 0xA900, None
            return
        yield from self._send(event, self._to_send(event.identifier))

    def _move(self, event: evt.Event) -> Iterator[Any]:
        self._count("Move", event)
        raw = event.move_destination
        dest = self._dest.get((raw.decode() if isinstance(raw, bytes) else str(raw)).strip())
        if dest is None:
            yield None, None
            return
        files = self._to_send(event.identifier)
        classes = sorted({str(dcmread(p, stop_before_pixels=True).SOPClassUID) for p in files})
        contexts = [build_context(c, self.quirks.move_syntaxes) for c in classes]
        yield dest[0], dest[1], {"contexts": contexts or [build_context(Verification)]}
        if self._breaks_hierarchy(event.identifier, find=False):
            yield 1
            yield 0xA900, None
            return
        yield from self._send(event, files)

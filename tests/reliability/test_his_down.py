"""MariaDB (the HIS) unreachable: a package request is refused with 503 + Retry-After and
starts nothing; once the path is back, the same request packages the study."""

from __future__ import annotations

from typing import Any

from reliability.helpers import plain_study

from support.mariadb import MARIADB_PORT
from support.tcpproxy import TcpProxy


def test_his_cut_is_503_with_retry_after_and_starts_nothing(
    make_system: Any, study_factory: Any
) -> None:
    """The TCP path lookup -> MariaDB is cut: 503, Retry-After, no job, no C-MOVE; restored:
    the same POST succeeds."""
    study = plain_study(study_factory, "RM-R-HIS", ct=3, rows=64, cols=64)
    proxy = TcpProxy(MARIADB_PORT).start()
    try:
        system = make_system(his_port=proxy.port)
        system.pacs.upload(study.files)
        system.register("RM-R-HIS", "Sri Wahyuni", study)
        body = {"accession_numbers": [study.accession]}
        system.pacs.mark()

        proxy.stop()  # fault 1 of 1: the database is gone for every client of the lookup
        down = [system.post(body) for _ in range(3)]

        for response in down:
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) > 0
            assert "lookup" in response.json()["detail"]
        assert system.keys("jobs/") == []  # no package, no retrieval job
        assert system.pacs.count("Move") == 0 and system.pacs.count("Find") == 0

        proxy.start()
        accepted = system.post(body)
        assert accepted.status_code == 202, accepted.text
        done = system.wait(accepted.json()["id"])
        assert done["state"] == "succeeded", done
        assert done["attempt"] == 1  # the refused requests never made a job
        job = done["id"]
        assert sorted(system.keys("packages/")) == [  # both images, manifest, online page
            f"packages/{job}/{job}.iso",
            f"packages/{job}/{job}.json",
            f"packages/{job}/{job}.zip",
            f"packages/{job}/view.html",
        ]
    finally:
        proxy.stop()

"""schemathesis over every service's OpenAPI, with auth, against the real wired system: no 5xx.

Each operation gets a bounded, deterministic set of generated requests (hypothesis,
derandomised), in both of schemathesis's modes: values the schema allows (positive) and
values it does not (negative). Job-starting POSTs really
start jobs against real Orthanc / MariaDB / moto; the forwarder's only peer is a loopback port
nothing listens on, so forwards fail fast. (Driven programmatically: schemathesis's pytest
plugin does not work under this suite's `--import-mode=importlib`.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from reliability.hostile_support import SERVICES, Wired
from schemathesis import GenerationMode
from schemathesis.core.result import Err

EXAMPLES = 20  # per operation


def _exercise(wired: Wired, service: str) -> tuple[int, int, list[str]]:
    """(operations, requests sent, problems) for one service's whole OpenAPI."""
    url = wired.urls[service]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {wired.tokens[service]}"}
    problems: list[str] = []
    sent = [0]
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=url, headers=headers, timeout=30)
                sent[0] += 1
                if response.status_code >= 500:
                    problems.append(
                        f"{case.method} {case.formatted_path} -> "
                        f"{response.status_code}: {response.text[:200]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # No invalid request exists for an operation without inputs (/healthz).
                assert mode is GenerationMode.NEGATIVE, operation.label
    return operations, sent[0], problems


@pytest.mark.parametrize("service", SERVICES)
def test_no_generated_request_gets_a_server_error(wired: Wired, service: str) -> None:
    """Every operation of the service, with the service's token: nothing answers 5xx."""
    operations, sent, problems = _exercise(wired, service)

    assert operations >= 2 and sent >= operations
    assert problems == [], problems[:5]

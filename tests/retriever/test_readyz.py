"""Readiness of the retriever follows its Storage SCP, not its configuration."""

from __future__ import annotations

from typing import Any


def test_readyz_fails_when_the_scp_is_not_listening(retriever: Any) -> None:
    """Ready while the SCP accepts associations; 503 naming `scp` once it has stopped (the
    configured port used to stand in for the listening one, so this was always ready)."""
    ready = retriever.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert "scp" in ready.json()["checks"]

    retriever.app.state.scp.stop()
    down = retriever.client.get("/readyz")

    assert down.status_code == 503
    assert "scp" in down.json()["checks"]
    assert "not listening" in down.json()["checks"]["scp"]

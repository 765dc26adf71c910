"""The packager caps glibc's malloc arenas at start-up (DICOMISO_MALLOC_ARENAS)."""

from __future__ import annotations

import platform

import pytest

from dicomiso_packager import app, malloc
from dicomiso_packager.settings import PackagerSettings


def test_the_arena_limit_is_set_on_glibc_and_zero_leaves_the_default() -> None:
    assert malloc.limit_arenas(0) is False
    assert malloc.limit_arenas(2) is (platform.libc_ver()[0] == "glibc")


def test_the_service_applies_the_setting_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(app, "limit_arenas", calls.append)
    monkeypatch.setattr(app, "serve_run", lambda *a, **k: calls.append("served"))
    monkeypatch.setattr(app, "create_app", lambda settings: None)
    monkeypatch.setattr(app, "configure_logging", lambda *a: None)
    monkeypatch.setattr(app, "load_settings", lambda cls: PackagerSettings(malloc_arenas=3))
    app.main()
    assert calls == [3, "served"]
    assert PackagerSettings().malloc_arenas == 2

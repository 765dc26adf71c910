"""The CLI settings: DICOMISO_* variables, URL options over them, one error per bad value."""

from __future__ import annotations

import pytest

from dicomiso_tools.settings import ClientSettings, SettingError


def test_defaults_environment_and_options_in_that_order() -> None:
    env = {"DICOMISO_PACKAGER_URL": "http://127.0.0.1:9003/", "DICOMISO_POLL_INTERVAL": "0.5"}
    s = ClientSettings.from_env({"lookup_url": "http://127.0.0.1:7001/", "packager_url": None}, env)
    assert s.lookup_url == "http://127.0.0.1:7001"  # the option, without its trailing slash
    assert s.packager_url == "http://127.0.0.1:9003"  # the variable
    assert s.retriever_url == "http://127.0.0.1:8002"  # the default
    assert (s.poll_interval, s.http_timeout) == (0.5, 30.0)


def test_call_token_wins_over_api_token_and_neither_is_shown() -> None:
    env = {"DICOMISO_API_TOKEN": "api-secret", "DICOMISO_CALL_TOKEN": "call-secret"}
    s = ClientSettings.from_env(env=env)
    assert s.token() == "call-secret"
    assert ClientSettings.from_env(env={"DICOMISO_API_TOKEN": "api-secret"}).token() == "api-secret"
    assert "secret" not in repr(s) and "secret" not in str(s)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_number_names_its_variable(value: str) -> None:
    with pytest.raises(SettingError, match="^DICOMISO_HTTP_TIMEOUT: "):
        ClientSettings.from_env(env={"DICOMISO_HTTP_TIMEOUT": value})

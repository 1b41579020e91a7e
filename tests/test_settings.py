"""Settings: env vars with DISCO_ prefix, comma lists, config files, prod refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import DEV_JWT_SECRET, Settings, load_settings


def test_defaults_are_the_embedded_dev_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("DISCO_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.dev and s.database_url.startswith("sqlite") and s.redis_url is None
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.placeholder_secrets() == ["jwt_secret"]


def test_env_vars_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_PORT", "9000")
    monkeypatch.setenv("DISCO_TURN_URLS", "turn:a:3478, turn:b:3478?transport=tcp")
    monkeypatch.setenv("DISCO_RTC_HOST_ADDRESSES", "127.0.0.1")
    s = Settings()
    assert s.port == 9000
    assert s.turn_urls == ["turn:a:3478", "turn:b:3478?transport=tcp"]
    assert s.rtc_host_addresses == ["127.0.0.1"]


def test_config_file(tmp_path: Path) -> None:
    config = tmp_path / "disco.env"
    config.write_text("DISCO_PORT=9123\nDISCO_NODE_ID=edge-7\n")
    s = load_settings(config)
    assert (s.port, s.node_id) == (9123, "edge-7")
    with pytest.raises(SystemExit, match="not found"):
        load_settings(tmp_path / "missing.env")


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(SystemExit, match="DISCO_JWT_SECRET"):
        Settings(dev=False, jwt_secret=DEV_JWT_SECRET).check_production_ready()
    with pytest.raises(SystemExit, match="DISCO_TURN_SECRET"):
        Settings(dev=False, jwt_secret="x" * 32, turn_urls=["turn:a"]).check_production_ready()
    Settings(dev=False, jwt_secret="a-real-secret-of-some-length").check_production_ready()
    Settings(dev=True).check_production_ready()  # dev mode says so, but starts


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        Settings(port=70000)


def test_a_bad_setting_stops_the_process_with_its_name_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISCO_RTC_POLLED_RECEIVE", "maybe")
    monkeypatch.setenv("DISCO_DATABASE_URL", "postgresql://disco:hunter2@db/disco")
    monkeypatch.setenv("DISCO_RTC_PORT_MIN", "5000")
    with pytest.raises(SystemExit) as stopped:
        load_settings(port=99_999)
    message = str(stopped.value)
    assert message.startswith("refusing to start: bad settings")
    assert "DISCO_RTC_POLLED_RECEIVE: Input should be a valid boolean" in message
    assert "DISCO_PORT: Input should be less than or equal to 65535" in message
    assert "hunter2" not in message and "maybe" not in message  # values are not echoed
    monkeypatch.delenv("DISCO_RTC_POLLED_RECEIVE")
    config = tmp_path / "disco.env"
    config.write_text("DISCO_RTC_PORT_MAX=4000\n")
    with pytest.raises(SystemExit, match="RTC_PORT_MIN"):
        load_settings(config)

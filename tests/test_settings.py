"""Settings: flags, then RTFORGE_* variables, then the contract's defaults."""

from __future__ import annotations

import pytest

from service import Settings, SettingsError
from service.settings import OPTIONS, mask_url

CONTRACT_DEFAULTS = {
    "host": "127.0.0.1",
    "port": 3000,
    "backend": "memory",
    "nats_url": "nats://127.0.0.1:4222",
    "redis_url": "redis://127.0.0.1:6379/0",
    "heartbeat_interval": 30.0,
    "heartbeat_timeout": 60.0,
    "max_message_size": 65536,
    "lease_ttl": 15.0,
}


def build(flags: dict[str, str | None] | None = None, **env: str) -> Settings:
    return Settings.from_sources(flags or {}, env)


def test_defaults_are_the_contracts() -> None:
    settings = build()
    for name, value in CONTRACT_DEFAULTS.items():
        assert getattr(settings, name) == value, name


def test_every_contract_setting_has_a_flag_and_an_rtforge_variable() -> None:
    by_name = {o.name: o for o in OPTIONS}
    for name in [*CONTRACT_DEFAULTS, "node_id"]:
        assert by_name[name].flag == "--" + name.replace("_", "-")
        assert by_name[name].env == "RTFORGE_" + name.upper()


def test_environment_variables_override_defaults() -> None:
    settings = build(
        RTFORGE_PORT="4100",
        RTFORGE_BACKEND="redis",
        RTFORGE_NODE_ID="node-a",
        RTFORGE_HEARTBEAT_INTERVAL="0.25",
        RTFORGE_HEARTBEAT_TIMEOUT="1.5",
        RTFORGE_MAX_MESSAGE_SIZE="1024",
    )
    assert settings.port == 4100
    assert settings.backend == "redis"
    assert settings.node_id == "node-a"
    assert settings.heartbeat_interval == 0.25
    assert settings.heartbeat_timeout == 1.5
    assert settings.max_message_size == 1024


def test_flags_override_environment_variables() -> None:
    settings = build({"port": "4200", "node_id": None}, RTFORGE_PORT="4100", RTFORGE_NODE_ID="env")
    assert settings.port == 4200
    assert settings.node_id == "env"


def test_unrelated_variables_are_ignored() -> None:
    assert build(PORT="1", RTFORGE="x", rtforge_port="2").port == 3000


def test_node_id_is_generated_and_unique_when_not_given() -> None:
    first, second = build().node_id, build().node_id
    assert first and second and first != second


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("port", "abc"),
        ("port", "70000"),
        ("port", "-1"),
        ("backend", "kafka"),
        ("heartbeat_interval", "0"),
        ("heartbeat_interval", "-2"),
        ("heartbeat_interval", "nan"),
        ("heartbeat_timeout", "inf"),
        ("max_message_size", "0"),
        ("max_message_size", "1.5"),
        ("lease_ttl", "soon"),
        ("node_id", "has space"),
        ("node_id", "x" * 65),
        ("nats_url", "http://example.com"),
        ("redis_url", "not a url"),
        ("host", ""),
    ],
)
def test_bad_flag_values_raise_settings_error_naming_the_flag(flag: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        build({flag: value})
    assert "--" + flag.replace("_", "-") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_variable_values_raise_settings_error_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="RTFORGE_PORT"):
        build(RTFORGE_PORT="http")


def test_heartbeat_timeout_must_exceed_the_interval() -> None:
    with pytest.raises(SettingsError, match="heartbeat"):
        build({"heartbeat_interval": "10", "heartbeat_timeout": "5"})
    assert build({"heartbeat_interval": "0.2", "heartbeat_timeout": "0.6"}).heartbeat_timeout == 0.6


def test_a_bad_secret_url_is_not_echoed_in_the_error() -> None:
    with pytest.raises(SettingsError) as caught:
        build({"redis_url": "redis://user:hunter2@:notaport/0"})
    assert "hunter2" not in str(caught.value)


def test_effective_settings_mask_passwords() -> None:
    shown = build(
        {"redis_url": "redis://user:s3cret@db:6379/0", "nats_url": "nats://tok3n@broker:4222"}
    ).effective()
    assert "s3cret" not in str(shown)
    assert "tok3n" not in str(shown)
    assert shown["redis_url"] == "redis://user:***@db:6379/0"
    assert shown["port"] == 3000


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:6379/1", "redis://:***@host:6379/1"),
        ("rediss://user:pw@host/0", "rediss://user:***@host/0"),
        ("nats://user:pw@host:4222", "nats://user:***@host:4222"),
        ("nats://token@host:4222", "nats://***@host:4222"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_settings_error_is_a_value_error_with_a_code() -> None:
    with pytest.raises(ValueError) as caught:
        build({"port": "x"})
    assert isinstance(caught.value, SettingsError)
    assert caught.value.code == "bad_setting"

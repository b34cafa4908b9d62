from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dealer.settings import Settings, SettingsError, load_daemon_secrets, load_settings


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.data_dir == Path("./var")
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.ledger_backend == "local"
    assert settings.connector_for("BINANCE") == "paper"
    assert settings.demo is False


def test_environment_values_are_parsed() -> None:
    settings = load_settings({
        "DEALER_HTTP_PORT": "9001",
        "DEALER_DEMO": "1",
        "DEALER_VENUE_CONNECTORS": '{"binance": "paper", "okx": "cadenza"}',
        "DEALER_DATABASE_URL": "postgresql://u@localhost/db",
    })
    assert settings.http_port == 9001
    assert settings.demo is True
    assert settings.venue_connectors == {"BINANCE": "paper", "OKX": "cadenza"}
    assert settings.connector_for("okx") == "cadenza"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEALER_HTTP_PORT": "eighty"}, "DEALER_HTTP_PORT"),
        ({"DEALER_HTTP_PORT": "70000"}, "DEALER_HTTP_PORT"),
        ({"DEALER_LEDGER_BACKEND": "sqlite"}, "DEALER_LEDGER_BACKEND"),
        ({"DEALER_VENUE_CONNECTORS": "{not json"}, "not valid JSON"),
        ({"DEALER_VENUE_CONNECTORS": '{"BINANCE": "ccxt"}'}, "DEALER_VENUE_CONNECTORS.BINANCE"),
        ({"DEALER_JWT_SECRET": "short"}, "at least 32 characters"),
        ({"DEALER_SECRETS_KEY": "not-a-key"}, "Fernet key"),
        ({"DEALER_DATABASE_URL": "mysql://x"}, "postgresql://"),
        ({"DEALER_DEMO": "perhaps"}, "DEALER_DEMO"),
        ({"DEALER_HTTP_POTR": "1"}, "unknown setting(s): DEALER_HTTP_POTR"),
        ({"DEALER_DB_POOL_MIN": "20"}, "DEALER_DB_POOL_MIN (20) is more than DEALER_DB_POOL_MAX"),
        ({"DEALER_ASSET_SCALES": '{"SOL": 19}'}, "DEALER_ASSET_SCALES: invalid scale 19"),
        ({"DEALER_ASSET_SCALES": '{"sol": 9}'}, "DEALER_ASSET_SCALES: invalid asset code"),
        ({"DEALER_PAPER_BALANCES": '{"BTC": "-1"}'}, "DEALER_PAPER_BALANCES: balances must be"),
        ({"DEALER_CADENZA_URL": "cadenza.example"}, "DEALER_CADENZA_URL: must start with http"),
        ({"DEALER_CADENZA_WS_URL": "https://x"}, "DEALER_CADENZA_WS_URL: must start with ws"),
        ({"DEALER_FORMANCE_URL": "gateway:8090"}, "DEALER_FORMANCE_URL: must start with http"),
        ({"DEALER_PUBLIC_URL": "desk.example"}, "DEALER_PUBLIC_URL: must start with http"),
        ({"DEALER_HTTP_HOST": ""}, "DEALER_HTTP_HOST: String should have at least 1"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_them(env: dict[str, str],
                                                           message: str) -> None:
    with pytest.raises(SettingsError, match=r".*") as caught:
        load_settings(env)
    assert message in str(caught.value)


def test_toml_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "dealer.toml"
    config.write_text('http_port = 9100\nlog_level = "DEBUG"\n[venue_connectors]\nOKX = "paper"\n')
    settings = load_settings({"DEALER_CONFIG_FILE": str(config), "DEALER_HTTP_PORT": "9200"})
    assert settings.http_port == 9200
    assert settings.log_level == "DEBUG"
    assert settings.venue_connectors == {"OKX": "paper"}


def test_missing_or_broken_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({}, config_file=tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("http_port = = 1")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, config_file=broken)


def test_secrets_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(SettingsError, match="does not exist"):
        load_daemon_secrets(settings, create=False)
    first = load_daemon_secrets(settings)
    second = load_daemon_secrets(settings, create=False)
    assert (first.jwt_secret, first.secrets_key) == (second.jwt_secret, second.secrets_key)
    assert len(first.jwt_secret) >= 32
    for name in ("jwt_secret", "secrets_key"):
        mode = stat.S_IMODE(os.stat(tmp_path / "secrets" / name).st_mode)
        assert mode == 0o600
    assert "redacted" in repr(first)


def test_configured_secrets_win_over_kept_ones(tmp_path: Path) -> None:
    load_daemon_secrets(Settings(data_dir=tmp_path))
    configured = Settings(data_dir=tmp_path, jwt_secret="j" * 40)
    assert load_daemon_secrets(configured).jwt_secret == "j" * 40


def test_a_check_across_settings_is_one_line_naming_the_variables() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"DEALER_LEDGER_BACKEND": "formance"})
    assert str(caught.value) == ("invalid settings:\n"
                                 "  DEALER_LEDGER_BACKEND=formance needs DEALER_FORMANCE_URL")


def test_empty_urls_are_unset_as_a_compose_file_passes_them() -> None:
    settings = load_settings({"DEALER_CADENZA_URL": "", "DEALER_CADENZA_WS_URL": "",
                              "DEALER_PUBLIC_URL": "", "DEALER_VENUE_CONNECTORS": ""})
    assert not settings.cadenza_url
    assert settings.venue_connectors == {}


def test_a_bad_toml_value_or_key_is_named_as_the_file_spells_it(tmp_path: Path) -> None:
    config = tmp_path / "dealer.toml"
    config.write_text('http_port = "eighty"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings({}, config_file=config)
    assert f"http_port (config file {config}): Input should be a valid integer" in str(
        caught.value)
    assert "DEALER_HTTP_PORT" not in str(caught.value)
    # the environment wins, so a bad value there is the environment's
    with pytest.raises(SettingsError, match="DEALER_HTTP_PORT: Input should be a valid"):
        load_settings({"DEALER_HTTP_PORT": "x"}, config_file=config)
    config.write_text("htp_port = 9000\n[dealer]\nhttp_port = 9000\n")
    with pytest.raises(SettingsError) as caught:
        load_settings({}, config_file=config)
    assert str(caught.value) == f"config file {config}: unknown setting(s): dealer, htp_port"


def test_an_unreadable_toml_file_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot be read: Is a directory"):
        load_settings({}, config_file=tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe http_port = 1")
    with pytest.raises(SettingsError, match="is not UTF-8 text"):
        load_settings({"DEALER_CONFIG_FILE": str(binary)})


def test_a_data_directory_that_cannot_keep_the_secrets_is_named(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(SettingsError, match=f"cannot keep the secrets in {not_a_folder}"):
        load_daemon_secrets(Settings(data_dir=not_a_folder / "var"))


def test_kept_secrets_are_held_to_the_rules_of_their_settings(tmp_path: Path) -> None:
    load_daemon_secrets(Settings(data_dir=tmp_path))
    kept = tmp_path / "secrets"
    (kept / "jwt_secret").write_text("short\n")
    with pytest.raises(SettingsError, match="jwt_secret must hold at least 32 characters"):
        load_daemon_secrets(Settings(data_dir=tmp_path), create=False)
    (kept / "jwt_secret").write_text("j" * 40 + "\n")
    (kept / "secrets_key").write_text("\n")
    with pytest.raises(SettingsError, match="secrets_key: must be a url-safe base64 Fernet"):
        load_daemon_secrets(Settings(data_dir=tmp_path))
    (kept / "secrets_key").write_bytes(b"\xff\n")
    with pytest.raises(SettingsError, match="is not ASCII text"):
        load_daemon_secrets(Settings(data_dir=tmp_path))

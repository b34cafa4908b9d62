"""Daemon settings: `DEALER_*` environment variables over an optional TOML file over defaults."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dealer.logs import LogFormat
from ledger.assets import Asset

ConnectorKind = Literal["paper", "cadenza"]
LedgerBackendName = Literal["local", "formance"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class SettingsError(Exception):
    """Settings are invalid; the message says which and why, one line per problem."""


class Settings(BaseModel):
    """Everything the daemon reads at start. Field names map to `DEALER_<NAME>`."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset starts an embedded PostgreSQL in the data directory.",
    )
    data_dir: Path = Field(default=Path("./var"), description="Where generated secrets and the "
                           "embedded database live.")
    # not empty: aiohttp binds every interface for "" (0.0.0.0 must be asked for by name)
    http_host: str = Field(default="127.0.0.1", min_length=1, description="Listen address.")
    http_port: int = Field(default=8080, ge=0, le=65535, description="Listen port (0: any free).")
    http_max_body_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024,
                                     description="Largest accepted request body.")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="Event loop of `dealerd run`: uvloop (faster; not on "
        "Windows, where asyncio is used) or the standard asyncio loop")
    jwt_secret: str | None = Field(default=None, description="HS256 secret for bearer tokens; "
                                   "unset: generated once and kept in the data directory.")
    secrets_key: str | None = Field(default=None, description="Fernet key encrypting credential "
                                    "secrets at rest; unset: generated once and kept in the data "
                                    "directory.")
    demo: bool = Field(default=False, description="Seed an empty database with a demo dealer.")
    ledger_backend: LedgerBackendName = Field(default="local", description="`local` or `formance`.")
    venue_connectors: dict[str, ConnectorKind] = Field(
        default_factory=dict,
        description='JSON map venue → "paper"|"cadenza"; venues not listed use paper.',
    )
    ledger_relay_linger_ms: int = Field(
        default=20, ge=0, le=10000, description="How long the ledger relay, woken by a new "
        "outbox entry, waits for more to join its batch")
    db_pool_min: int = Field(default=1, ge=1, le=100, description="Smallest database pool.")
    db_pool_max: int = Field(default=10, ge=1, le=200, description="Largest database pool.")
    paper_books_dir: Path | None = Field(
        default=None, description="Folder of `<venue>_<base>_<quote>.jsonl` snapshot files the "
        "paper connector replays instead of simulating")
    paper_seed: int = Field(default=7, description="Seed of the paper connector's random walks "
                            "and fault injection")
    paper_book_interval_ms: int = Field(default=100, ge=10, le=60000,
                                        description="How often paper books change")
    paper_latency_ms: int = Field(default=0, ge=0, le=60000,
                                  description="Latency added to every paper order call")
    paper_reject_ratio: float = Field(default=0.0, ge=0.0, le=1.0,
                                      description="Share of paper orders rejected at random")
    paper_timeout_ratio: float = Field(default=0.0, ge=0.0, le=1.0,
                                       description="Share of paper order submits that time out "
                                       "(the order may still fill; status tells)")
    paper_journal: bool = Field(default=False, description="The paper connector journals its "
                                "orders and balances under <data dir>/paper and reloads them at "
                                "start")
    paper_balances: dict[str, Decimal] = Field(
        default_factory=lambda: {"USDT": Decimal(1_000_000), "USDC": Decimal(1_000_000),
                                 "BTC": Decimal(20), "ETH": Decimal(300)},
        description="Starting balance of every paper account, per asset")
    cadenza_url: str | None = Field(default=None, description="Cadenza v3 REST base URL "
                                    "(for venues served by the cadenza connector)")
    cadenza_ws_url: str | None = Field(default=None, description="Cadenza websocket URL "
                                       "(Centrifugo)")
    cadenza_token: str | None = Field(default=None, description="Bearer token for Cadenza")
    cadenza_timeout_ms: int = Field(default=5000, ge=100, le=120000,
                                    description="Timeout of one Cadenza REST call")
    cadenza_rate_limit: float = Field(default=20.0, gt=0, le=10000,
                                      description="Cadenza REST calls per second, at most")
    book_max_age_ms: int = Field(default=3000, ge=100, le=600000,
                                 description="Older LP books are stale: never priced from")
    subscription_refresh_ms: int = Field(default=1000, ge=100, le=60000,
                                         description="How often book subscriptions are "
                                         "reconciled with links (changes made through this "
                                         "daemon apply at once)")
    instrument_sync_interval_s: int = Field(default=3600, ge=10, le=7 * 24 * 3600,
                                            description="How often instruments of linked "
                                            "venues are synchronised")
    formance_url: str | None = Field(default=None, description="Formance stack URL (the ledger "
                                     "API is under /api/ledger/v2)")
    formance_ledger: str = Field(default="fermata", pattern=r"^[A-Za-z0-9_-]{1,63}$",
                                 description="Formance ledger name (created if missing)")
    formance_client_id: str | None = Field(default=None, description="OAuth client id for "
                                           "Formance (optional)")
    formance_client_secret: str | None = Field(default=None, description="OAuth client secret "
                                               "for Formance (optional)")
    asset_scales: dict[str, int] = Field(
        default_factory=dict, description="JSON map asset → scale added to the defaults (BTC 8, "
        "ETH 8, USDT 6, USDC 6, USD 2); a scale cannot change once the ledger used it")
    reconciliation_interval_s: int = Field(default=60, ge=5, le=86400,
                                           description="How often LP balances are reconciled "
                                           "with the ledger")
    pnl_fold_interval_s: int = Field(default=60, ge=1, le=86400,
                                     description="How often final fills and hedge orders are "
                                     "folded into each dealer's PnL totals")
    hedge_enabled: bool = Field(default=True, description="Run the hedge worker (hedging of "
                                "client fills on the LPs)")
    hedge_poll_ms: int = Field(default=100, ge=10, le=60000,
                               description="How often an idle hedge worker looks for jobs "
                               "(it is woken at once when a job is written)")
    hedge_max_attempts: int = Field(default=3, ge=1, le=100,
                                    description="Attempts per hedge job before it is FAILED")
    quote_expiry_ms: int = Field(
        default=200, ge=50, le=60000, description="How often quotes past expireAt are marked "
        "EXPIRED (often, so each run has few rows to write)")
    quote_retention_hours: int = Field(
        default=0, ge=0, le=876000, description="Delete EXPIRED quotes no order refers to once "
        "they are this old (hours); 0 keeps every quote")
    exposure_check_ms: int = Field(default=1000, ge=100, le=60000,
                                   description="How often every dealer's unhedged exposure is "
                                   "valued and the kill switch checked (and draining LP links "
                                   "unlinked once idle)")
    kill_switch_failure_rate: float = Field(default=0.5, gt=0.0, le=1.0,
                                            description="Share of FAILED among a dealer's last "
                                            "finished hedge jobs that pauses its quoting")
    kill_switch_failure_window: int = Field(default=20, ge=1, le=10000,
                                            description="How many of a dealer's last finished "
                                            "hedge jobs (newest client fills first) the failure "
                                            "rate looks at")
    kill_switch_min_jobs: int = Field(default=5, ge=1, le=10000,
                                      description="Finished hedge jobs needed before the failure "
                                      "rate can pause a dealer")
    hedge_concurrency: int = Field(default=4, ge=1, le=64,
                                   description="Lanes (dealer and symbol) a hedge worker sizes "
                                   "at once")
    hedge_lease_ms: int = Field(default=10000, ge=1000, le=600000,
                                description="Lease of a hedge worker's claim on a lane or a job; "
                                "a crashed worker's claims are taken over after it")
    hedge_backoff_ms: int = Field(default=200, ge=10, le=60000,
                                  description="Backoff before a hedge's second attempt, doubling "
                                  "(at most 5 s)")
    hedge_netting_threshold: float = Field(default=0.5, ge=0.0, le=1.0,
                                           description="Share of the dealer's unhedged limits at "
                                           "which a NETTED window closes early (0: never)")
    hedge_unknown_grace_ms: int = Field(default=5000, ge=100, le=600000,
                                        description="How long a venue may not know a hedge "
                                        "order sent to it before it counts as never received")
    hedge_balance_ttl_ms: int = Field(default=5000, ge=100, le=600000,
                                      description="Age after which cached LP balances are "
                                      "refreshed (in the background)")
    hedge_inline: bool = Field(default=True, description="Size a fill's first hedge in the "
                               "accepting daemon (when it runs the hedge worker, for an "
                               "IMMEDIATE dealer) and record its orders in the fill's own "
                               "statement: they go out as the fill commits")
    hedge_carry_check_ms: int = Field(default=1000, ge=100, le=600000,
                                      description="How often the hedge worker looks for idle "
                                      "lanes whose carry an LP would take (and soon after an "
                                      "answer moved a carry)")
    log_level: LogLevel = Field(default="INFO", description="Log level.")
    log_format: LogFormat = Field(default="json", description="`json` (one object per line, "
                                  "with request id, dealer id and quote id when known) or "
                                  "`text`.")
    public_url: str | None = Field(default=None, description="URL printed in the banner; "
                                   "defaults to http://<host>:<port>.")

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_strength(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key_is_fernet(cls, value: str | None) -> str | None:
        if value is not None:
            check_fernet_key(value)
        return value

    @field_validator("venue_connectors")
    @classmethod
    def _venue_names_upper(cls, value: dict[str, ConnectorKind]) -> dict[str, ConnectorKind]:
        normalised: dict[str, ConnectorKind] = {}
        for venue, kind in value.items():
            if not venue or not venue.replace("_", "").isalnum():
                raise ValueError(f"invalid venue name {venue!r}")
            normalised[venue.upper()] = kind
        return normalised

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return value

    @field_validator("cadenza_url", "formance_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # empty (a compose file's `${VAR:-}`) is the same as unset
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("cadenza_ws_url")
    @classmethod
    def _websocket_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("asset_scales")
    @classmethod
    def _asset_scales_the_ledger_takes(cls, value: dict[str, int]) -> dict[str, int]:
        for code, scale in value.items():
            Asset(code, scale)  # InvalidAsset (a ValueError) says what the ledger would refuse
        return value

    @field_validator("paper_balances")
    @classmethod
    def _paper_balances_not_negative(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        negative = sorted(asset for asset, amount in value.items() if not amount >= 0)
        if negative:
            raise ValueError("balances must be 0 or more: " + ", ".join(negative))
        return value

    @model_validator(mode="after")
    def _formance_needs_a_url(self) -> Settings:
        if self.ledger_backend == "formance" and not self.formance_url:
            raise ValueError("DEALER_LEDGER_BACKEND=formance needs DEALER_FORMANCE_URL")
        if (self.formance_client_id is None) != (self.formance_client_secret is None):
            raise ValueError("set both DEALER_FORMANCE_CLIENT_ID and "
                             "DEALER_FORMANCE_CLIENT_SECRET, or neither")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(f"DEALER_DB_POOL_MIN ({self.db_pool_min}) is more than "
                             f"DEALER_DB_POOL_MAX ({self.db_pool_max})")
        return self

    def connector_for(self, venue: str) -> ConnectorKind:
        """Which connector serves a venue (paper unless configured)."""
        return self.venue_connectors.get(venue.upper(), "paper")

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.http_host}:{self.http_port}"


def check_fernet_key(value: str) -> None:
    """Raise ValueError unless `value` is a url-safe base64 encoding of 32 bytes."""
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("must be a url-safe base64 Fernet key (44 characters)") from exc
    if len(raw) != 32:
        raise ValueError("must be a url-safe base64 Fernet key encoding 32 bytes")


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Read settings from `environ` (default: the process environment) and an optional TOML file.

    The TOML file is `config_file`, or `DEALER_CONFIG_FILE`; its keys are the setting names
    without the prefix (`http_port = 9000`). Raises SettingsError with one line per bad value.
    """
    env = dict(os.environ if environ is None else environ)
    named = env.get("DEALER_CONFIG_FILE")
    path = config_file or (Path(named) if named else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise SettingsError(f"config file {path} is not UTF-8 text") from exc
        except OSError as exc:  # a directory, no permission, …
            raise SettingsError(f"config file {path} cannot be read: "
                                f"{exc.strerror or exc}") from exc
        unknown_keys = sorted(set(file_values) - set(Settings.model_fields))
        if unknown_keys:
            raise SettingsError(f"config file {path}: unknown setting(s): "
                                + ", ".join(unknown_keys))
    env.pop("DEALER_CONFIG_FILE", None)
    dealer_env = {k: v for k, v in env.items() if k.startswith("DEALER_")}
    known = {f"DEALER_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(set(dealer_env) - known)
    if unknown:
        raise SettingsError("unknown setting(s): " + ", ".join(unknown))
    try:
        return _build(dealer_env, file_values)
    except ValidationError as exc:
        from_file = {name for name in file_values
                     if f"DEALER_{name.upper()}" not in dealer_env}
        raise SettingsError(_describe(exc, from_file, path)) from None


def _build(dealer_env: dict[str, str], file_values: dict[str, Any]) -> Settings:
    values = dict(file_values)
    for key, raw in dealer_env.items():
        name = key.removeprefix("DEALER_").lower()
        values[name] = _decode_env(name, raw)
    return Settings.model_validate(values)


_JSON_SETTINGS = {
    "venue_connectors": '{"BINANCE": "paper"}',
    "paper_balances": '{"USDT": "1000000", "BTC": "20"}',
    "asset_scales": '{"SOL": 9}',
}


def _decode_env(name: str, raw: str) -> Any:
    example = _JSON_SETTINGS.get(name)
    if example is None:
        return raw
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise SettingsError(
            f"DEALER_{name.upper()}: not valid JSON (example: {example}): {raw!r}"
        ) from None


def _describe(exc: ValidationError, from_file: set[str], path: Path | None) -> str:
    """One line per problem, naming the variable (or the config file's key) it came from."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across settings: its message names them
            lines.append(message)
            continue
        field, *inner = (str(part) for part in err["loc"])
        if field in from_file:
            name = ".".join([field, *inner]) + f" (config file {path})"
        else:
            name = ".".join([f"DEALER_{field.upper()}", *inner])
        lines.append(f"{name}: {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)


class DaemonSecrets:
    """The JWT secret and the credential encryption key, from settings or the data directory."""

    def __init__(self, jwt_secret: str, secrets_key: str) -> None:
        self.jwt_secret = jwt_secret
        self.secrets_key = secrets_key

    def __repr__(self) -> str:
        return "DaemonSecrets(<redacted>)"


def load_daemon_secrets(settings: Settings, *, create: bool = True) -> DaemonSecrets:
    """Secrets from settings, else from `<data_dir>/secrets/`, generated once when `create`."""
    folder = settings.data_dir / "secrets"
    try:
        jwt_secret = settings.jwt_secret or _kept_secret(
            folder / "jwt_secret", lambda: secrets.token_urlsafe(48), create
        )
        secrets_key = settings.secrets_key or _kept_secret(
            folder / "secrets_key", lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
            create
        )
    except UnicodeDecodeError as exc:
        raise SettingsError(f"a secret in {folder} is not ASCII text") from exc
    except OSError as exc:  # the data directory is a file, read-only, not ours, …
        raise SettingsError(f"cannot keep the secrets in {folder}: "
                            f"{exc.strerror or exc}") from exc
    # A kept secret is held to the same rules as the setting it stands for.
    if settings.jwt_secret is None and len(jwt_secret) < 32:
        raise SettingsError(f"{folder / 'jwt_secret'} must hold at least 32 characters "
                            "(or set DEALER_JWT_SECRET)")
    try:
        check_fernet_key(secrets_key)
    except ValueError as exc:
        raise SettingsError(f"{folder / 'secrets_key'}: {exc} (or set DEALER_SECRETS_KEY)"
                            ) from exc
    return DaemonSecrets(jwt_secret, secrets_key)


def _kept_secret(path: Path, generate: Any, create: bool) -> str:
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    if not create:
        raise SettingsError(f"{path} does not exist: start the daemon once, or set the secret")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(generate() + "\n")
    try:
        # link() fails when another daemon won the race: both then read the winner's secret.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text(encoding="ascii").strip()

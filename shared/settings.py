"""Configuration: the environment (and a `.env` file), named exactly as the public contract says.

Every setting is read once at start-up into an immutable `Settings`; nothing else in the
code reads the environment. Variables the contract names keep their names; the tuning
knobs b24pipe adds all start with `B24PIPE_` and are documented in the README.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.ackmode import ACK_MODES
from shared.errors import ConfigurationError
from shared.rateplan import parse_plan
from shared.redisurl import parse_redis_url


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """All configuration of one b24pipe process."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # --- the public contract -------------------------------------------------------------
    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    client_id: str | None = Field(default=None, validation_alias=_env("B24_CLIENT_ID"))
    client_secret: str | None = Field(default=None, validation_alias=_env("B24_CLIENT_SECRET"), repr=False)
    client_secret_file: Path | None = Field(default=None, validation_alias=_env("B24_CLIENT_SECRET_FILE"))
    oauth_url: str = Field(default="https://oauth.bitrix.info", validation_alias=_env("B24_OAUTH_URL"))
    token_keys: Annotated[list[bytes], NoDecode] = Field(
        default_factory=list, validation_alias=_env("B24PIPE_TOKEN_KEYS"), repr=False
    )
    handlers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("B24PIPE_HANDLERS")
    )
    public_url: str | None = Field(default=None, validation_alias=_env("B24PIPE_PUBLIC_URL"))
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("B24PIPE_ALLOWED_HOSTS")
    )
    allow_http: bool = Field(default=False, validation_alias=_env("B24PIPE_ALLOW_HTTP"))
    namespace: str = Field(
        default="b24pipe", validation_alias=_env("B24PIPE_NAMESPACE"), pattern=r"^[A-Za-z0-9_.-]{1,64}$"
    )

    # --- ingress -------------------------------------------------------------------------
    max_body_bytes: int = Field(default=1 << 20, ge=1024, validation_alias=_env("B24PIPE_MAX_BODY_BYTES"))
    max_form_keys: int = Field(default=1000, ge=10, validation_alias=_env("B24PIPE_MAX_FORM_KEYS"))
    max_form_depth: int = Field(default=8, ge=2, le=64, validation_alias=_env("B24PIPE_MAX_FORM_DEPTH"))
    max_inflight: int = Field(default=2048, ge=1, validation_alias=_env("B24PIPE_MAX_INFLIGHT"))
    enqueue_timeout: float = Field(default=1.5, gt=0, le=30, validation_alias=_env("B24PIPE_ENQUEUE_TIMEOUT"))
    read_timeout: float = Field(default=5.0, gt=0, le=300, validation_alias=_env("B24PIPE_READ_TIMEOUT"))
    dedupe_window: int = Field(default=300, ge=0, validation_alias=_env("B24PIPE_DEDUPE_WINDOW"))
    token_grace: int = Field(default=600, ge=0, validation_alias=_env("B24PIPE_TOKEN_GRACE"))
    quarantine_max: int = Field(default=1000, ge=0, validation_alias=_env("B24PIPE_QUARANTINE_MAX"))
    quarantine_ttl: int = Field(default=3600, ge=1, validation_alias=_env("B24PIPE_QUARANTINE_TTL"))
    pending_max: int = Field(default=100, ge=1, validation_alias=_env("B24PIPE_PENDING_MAX"))
    quarantine_bytes: int = Field(
        default=64 << 20, ge=1 << 20, validation_alias=_env("B24PIPE_QUARANTINE_BYTES")
    )
    quarantine_share: float = Field(
        default=0.25, gt=0, le=1, validation_alias=_env("B24PIPE_QUARANTINE_SHARE")
    )
    http_timeout: float = Field(default=10.0, gt=0, le=120, validation_alias=_env("B24PIPE_HTTP_TIMEOUT"))
    # what a 200 waits for: written (Redis ran the write), fsync (it is on disk), replica
    # (a replica has it); one wait per enqueue batch (shared/ackmode.py)
    ack: str = Field(default="written", validation_alias=_env("B24PIPE_ACK"))
    shutdown_delay: float = Field(default=0.0, ge=0, le=300, validation_alias=_env("B24PIPE_SHUTDOWN_DELAY"))
    durability_strict: bool = Field(default=False, validation_alias=_env("B24PIPE_DURABILITY_STRICT"))

    # --- workers -------------------------------------------------------------------------
    max_attempts: int = Field(default=5, ge=1, le=100, validation_alias=_env("B24PIPE_MAX_ATTEMPTS"))
    retry_base: float = Field(default=2.0, gt=0, validation_alias=_env("B24PIPE_RETRY_BASE"))
    retry_max: float = Field(default=3600.0, gt=0, validation_alias=_env("B24PIPE_RETRY_MAX"))
    failed_ttl: int = Field(default=14 * 86400, ge=60, validation_alias=_env("B24PIPE_FAILED_TTL"))
    job_timeout: int = Field(default=300, ge=1, validation_alias=_env("B24PIPE_JOB_TIMEOUT"))
    recovery_after: int = Field(default=60, ge=2, le=600, validation_alias=_env("B24PIPE_RECOVERY_AFTER"))
    fetch_batch: int = Field(default=32, ge=1, le=1000, validation_alias=_env("B24PIPE_FETCH_BATCH"))
    # Seconds handled events stay in RQ's FinishedJobRegistry for `b24pipe replay --handled`
    # (0: off, RQ's result TTL applies).
    event_log_ttl: int = Field(default=0, ge=0, validation_alias=_env("B24PIPE_EVENT_LOG_TTL"))

    # --- REST client and limiter ---------------------------------------------------------
    rate_plan: str = Field(default="standard", validation_alias=_env("B24PIPE_RATE_PLAN"))
    rate_scope: str = Field(default="shared", validation_alias=_env("B24PIPE_RATE_SCOPE"))
    max_inplace_wait: float = Field(default=5.0, ge=0, validation_alias=_env("B24PIPE_MAX_INPLACE_WAIT"))
    operating_pause_at: float = Field(
        default=420.0, gt=0, validation_alias=_env("B24PIPE_OPERATING_PAUSE_AT")
    )
    # Refresh tokens live 180 days (28 in older docs): a portal idle this long is refreshed.
    keepalive_after: int = Field(default=20 * 86400, ge=1, validation_alias=_env("B24PIPE_KEEPALIVE_AFTER"))
    keepalive_interval: int = Field(
        default=3600, ge=1, le=86400, validation_alias=_env("B24PIPE_KEEPALIVE_INTERVAL")
    )
    # Bindings vanish without notice (app updates): reconciled and probed this often (0 = off).
    bind_check_interval: int = Field(
        default=900, ge=0, le=86400, validation_alias=_env("B24PIPE_BIND_CHECK_INTERVAL")
    )
    probe_interval: int = Field(default=900, ge=0, le=86400, validation_alias=_env("B24PIPE_PROBE_INTERVAL"))

    # --- offline events (workers/portals/offline.py) ---------------------------------------------
    offline_events: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("B24PIPE_OFFLINE_EVENTS")
    )
    offline_poll: float = Field(default=60.0, gt=0, le=86400, validation_alias=_env("B24PIPE_OFFLINE_POLL"))

    # --- loop guards and coalescing ------------------------------------------------------
    echo_ttl: int = Field(default=900, ge=1, le=86400, validation_alias=_env("B24PIPE_ECHO_TTL"))
    loop_bound: int = Field(default=10, ge=1, validation_alias=_env("B24PIPE_LOOP_BOUND"))
    loop_window: int = Field(default=300, ge=1, le=86400, validation_alias=_env("B24PIPE_LOOP_WINDOW"))
    coalesce_delay: float = Field(default=2.0, ge=0, le=3600, validation_alias=_env("B24PIPE_COALESCE_DELAY"))
    coalesce_max_wait: float = Field(
        default=30.0, gt=0, le=3600, validation_alias=_env("B24PIPE_COALESCE_MAX_WAIT")
    )
    coalesce_ttl: int = Field(default=3600, ge=10, validation_alias=_env("B24PIPE_COALESCE_TTL"))
    # read again by shared.logs.configure_logging in every process; validated here
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", validation_alias=_env("B24PIPE_LOG_FORMAT")
    )

    @field_validator("handlers", "allowed_hosts", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("offline_events", mode="before")
    @classmethod
    def _event_names(cls, value: object) -> object:
        parts = _split_csv(value)
        if isinstance(parts, list):
            for part in parts:
                if not str(part).replace("_", "").isalnum():
                    raise ValueError(f"{part!r} is not an event name")
            return [str(part).upper() for part in parts]
        return parts

    @field_validator("token_keys", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        parts = _split_csv(value)
        if not isinstance(parts, list):
            return parts
        keys: list[bytes] = []
        for position, part in enumerate(parts, start=1):
            if isinstance(part, bytes):
                raw = part
            else:
                try:
                    raw = base64.b64decode(str(part), validate=True)
                except (binascii.Error, ValueError):
                    raise ValueError(f"key {position} is not valid base64") from None
            if len(raw) != 32:
                raise ValueError(f"key {position} must decode to 32 bytes, not {len(raw)}")
            keys.append(raw)
        return keys

    @field_validator("oauth_url", "public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// or http://")
        return value.rstrip("/")

    @field_validator("rate_plan")
    @classmethod
    def _plan(cls, value: str) -> str:
        parse_plan(value)  # a PlanError is a ValueError: refused at start-up, not in every job
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_redis_url(value)
        return value

    @field_validator("ack")
    @classmethod
    def _ack(cls, value: str) -> str:
        if value not in ACK_MODES:
            raise ValueError(f"must be one of {', '.join(ACK_MODES)}")
        return value

    @field_validator("rate_scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value not in ("shared", "namespace"):
            raise ValueError("must be 'shared' or 'namespace'")
        return value

    @model_validator(mode="after")
    def _http_only_when_allowed(self) -> Settings:
        if self.oauth_url.startswith("http://") and not self.allow_http:
            raise ValueError("B24_OAUTH_URL uses http:// but B24PIPE_ALLOW_HTTP is off")
        return self

    @model_validator(mode="after")
    def _groups_outlive_their_wait(self) -> Settings:
        # a group that expired while its leader was held would lose the events merged into it
        if self.coalesce_ttl < self.coalesce_max_wait + 60:
            raise ValueError("B24PIPE_COALESCE_TTL must exceed B24PIPE_COALESCE_MAX_WAIT by 60 s at least")
        return self

    # --- derived -------------------------------------------------------------------------
    def secret(self) -> str | None:
        """The OAuth client secret, from the variable or the file it names."""
        if self.client_secret:
            return self.client_secret
        if self.client_secret_file is not None:
            try:
                return self.client_secret_file.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ConfigurationError(
                    f"B24_CLIENT_SECRET_FILE: cannot read {self.client_secret_file}: {exc.strerror}"
                ) from None
        return None

    def redis_url_or_default(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"


_ENV_NAMES = {
    name: (field.validation_alias.choices[0] if isinstance(field.validation_alias, AliasChoices) else name)
    for name, field in Settings.model_fields.items()
}


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = _ENV_NAMES.get(field, field)
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"invalid setting {name}: {message}") from None


def require_token_keys(settings: Settings) -> list[bytes]:
    """`ingress` and `worker` refuse to start without an encryption key (the contract)."""
    if not settings.token_keys:
        raise ConfigurationError("B24PIPE_TOKEN_KEYS is not set: give at least one base64 32-byte key")
    return settings.token_keys

"""All of Disco's settings in one class, built once in ``main()``.

Values come from (highest first): keyword arguments, ``DISCO_*`` environment
variables, an optional env-style config file (``disco serve --config FILE``),
then the defaults below, which are the embedded dev defaults: SQLite, the
in-process bus, and placeholder secrets that are only accepted in dev mode.
See ``disco.example.env`` for a commented example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "dev-insecure-jwt-secret-change-me"
DEV_TURN_SECRET = "dev-insecure-turn-secret-change-me"
PLACEHOLDER_SECRETS = frozenset({DEV_JWT_SECRET, DEV_TURN_SECRET, "", "change-me"})

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Server settings. Every field is also ``DISCO_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="DISCO_", extra="ignore")

    # --- process ---------------------------------------------------------
    dev: bool = Field(True, description="Dev mode: placeholder secrets allowed (and printed).")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    log_level: str = "info"
    # Browsers give microphone and location only to https:// pages (or
    # localhost): serve TLS directly with these, or put a TLS proxy in front.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    node_id: str = Field("node-1", description="Name of this node in a multi-node deployment.")
    node_url: str | None = Field(
        None, description="This node's own address for clients (an `elsewhere` error names it)."
    )
    node_capacity: int = Field(
        60, ge=1, description="Participants this node hosts before new rooms go to other nodes.",
    )
    node_region: str = Field("", max_length=64, description="Region label in the heartbeat.")
    media_metrics_port: int | None = Field(
        None, ge=1, le=65535,
        description="A media node (disco media) serves Prometheus /metrics on this port of "
                    "DISCO_HOST; media worker i of --media-workers uses this port + i.",
    )

    # --- storage -----------------------------------------------------------
    database_url: str = "sqlite+aiosqlite:///./disco.db"
    redis_url: str | None = Field(None, description="redis://... to share state between nodes.")
    redis_prefix: str = Field(
        "disco:", min_length=1, max_length=64,
        description="Prefix of every Redis channel and key: deployments sharing one Redis "
                    "must each use their own.",
    )

    # --- auth --------------------------------------------------------------
    jwt_secret: str = DEV_JWT_SECRET
    jwt_audience: str = "disco"
    jwt_issuer: str = "disco"
    jwt_ttl_s: int = Field(7 * 24 * 3600, gt=0)
    guest_ttl_s: int = Field(4 * 3600, gt=0)
    invite_ttl_s: int = Field(7 * 24 * 3600, gt=0)
    # Password attempts (login, register, password change, deletion): a token
    # bucket per account and per client address, shared via Redis if set.
    login_account_burst: int = Field(10, ge=1)
    login_account_per_min: float = Field(5.0, gt=0)
    login_address_burst: int = Field(30, ge=1)
    login_address_per_min: float = Field(30.0, gt=0)
    password_workers: int | None = Field(
        None, ge=1, description="argon2 threads at once (default: half the cores)."
    )

    # --- signaling ---------------------------------------------------------
    max_message_bytes: int = Field(64 * 1024, gt=0)
    ws_compression: bool = Field(
        False, description="permessage-deflate on WebSockets. Off: a room's events are small "
        "JSON, and deflating one for each of 200 listeners held the event loop ~20 ms, "
        "which every sender's playout then buffered (bench.voice --sizes 200).")

    # --- WebRTC / TURN -----------------------------------------------------
    turn_secret: str | None = None
    turn_urls: CommaList = Field(default_factory=list)
    turn_ttl_s: int = Field(24 * 3600, gt=0)
    stun_urls: CommaList = Field(default_factory=list)
    rtc_host_addresses: CommaList = Field(
        default_factory=list, description="Host addresses offered as ICE candidates."
    )
    rtc_public_ip: str | None = Field(None, description="Address announced behind 1:1 NAT.")
    # The UDP ports the media binds (what a firewall opens for this node); both or neither.
    rtc_port_min: int | None = Field(None, ge=1024, le=65535)
    rtc_port_max: int | None = Field(None, ge=1024, le=65535)

    # --- voice -------------------------------------------------------------
    music_dir: Path | None = Field(None, description="Server-side music folder (read-only).")
    upload_dir: Path = Path("./disco-uploads")
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0)
    music_duck_db: float = Field(-12.0, le=0)
    opus_bitrate_bps: int = Field(32_000, ge=6_000, le=510_000)
    rtc_fast_send: bool = Field(
        True, description="Send the mix's RTP straight to the socket (false: aiortc's sender)."
    )
    rtc_polled_receive: bool = Field(
        True, description="Read each connected peer's UDP socket once a tick, with the "
        "kernel's arrival times, instead of waking for every packet (Linux; false: the "
        "event loop reads it)."
    )
    # How many of a room's talkers are decoded and mixed at once: the loudest by the
    # RFC 6464 level their packets carry (sfu.speakers), as conference mixers do.
    voice_top_n: int = Field(3, ge=1, le=32)

    # --- location ----------------------------------------------------------
    location_retention_days: int = Field(30, ge=1)
    # The web client's basemap: a MapLibre style URL, or one local .pmtiles file
    # the server serves itself (with HTTP range requests). Neither: a plain map.
    map_style_url: str | None = Field(None, description="MapLibre style JSON URL for the web map.")
    map_pmtiles_file: Path | None = Field(None, description="A local .pmtiles basemap to serve.")
    map_attribution: str = Field("", description="Attribution shown on the web map.")
    # Nearby voice gain over a pair's range: full volume up to this fraction of
    # the range, then fading (linear for exponent 1) to the floor at the edge.
    nearby_full_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    nearby_gain_floor: float = Field(0.15, gt=0.0, le=1.0)
    nearby_gain_exponent: float = Field(1.0, gt=0.0, le=4.0)

    # --- billing -----------------------------------------------------------
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = Field(None, description="Override Stripe's API URL (tests).")
    plans_file: Path | None = None
    # Each node re-reads the plans behind its live group rooms this often, so a
    # change made elsewhere (``disco admin grant`` without Redis) lands anyway.
    entitlements_recheck_s: float = Field(3.0, gt=0)
    public_url: str = "http://127.0.0.1:8080"

    # --- push --------------------------------------------------------------
    apns_key_file: Path | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_use_sandbox: bool = True
    fcm_service_account_file: Path | None = None
    fcm_project_id: str | None = None
    # Web Push (browsers): a VAPID key pair's private half, base64url of the raw
    # 32-byte P-256 key. `disco serve` in dev mode generates one and prints it.
    vapid_private_key: str | None = None
    vapid_subject: str | None = Field(
        None, description="mailto: or https:// contact for push services (default: public_url)."
    )

    @field_validator("turn_urls", "stun_urls", "rtc_host_addresses", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @model_validator(mode="after")
    def _port_range(self) -> Settings:
        low, high = self.rtc_port_min, self.rtc_port_max
        if (low is None) != (high is None):
            raise ValueError("set DISCO_RTC_PORT_MIN and DISCO_RTC_PORT_MAX together")
        if low is not None and high is not None and low > high:
            raise ValueError(f"DISCO_RTC_PORT_MIN ({low}) is above DISCO_RTC_PORT_MAX ({high})")
        return self

    def placeholder_secrets(self) -> list[str]:
        """Names of secrets still set to a placeholder value."""
        found = []
        if self.jwt_secret in PLACEHOLDER_SECRETS or len(self.jwt_secret) < 16:
            found.append("jwt_secret")
        if self.turn_urls and (self.turn_secret or "") in PLACEHOLDER_SECRETS:
            found.append("turn_secret")
        return found

    def check_production_ready(self) -> None:
        """Refuse placeholder secrets outside dev mode."""
        if not self.dev and (bad := self.placeholder_secrets()):
            names = ", ".join(f"DISCO_{n.upper()}" for n in bad)
            raise SystemExit(
                f"refusing to start: {names} still set to a placeholder; "
                "set real secrets or run with DISCO_DEV=true"
            )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, optionally reading an env-style config file first. A bad value
    stops the process with one line per setting, named as the operator sets it."""
    if config_file is not None and not config_file.is_file():
        raise SystemExit(f"config file not found: {config_file}")
    try:
        if config_file is not None:
            return Settings(_env_file=config_file, **overrides)  # type: ignore[call-arg]
        return Settings(**overrides)
    except ValidationError as exc:
        # the values are not echoed: a secret or a database URL may be among them
        lines = [f"  DISCO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"]
                 else f"  {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise SystemExit("refusing to start: bad settings\n" + "\n".join(lines)) from None

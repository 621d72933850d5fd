"""Collector configuration: a YAML file, overridden by PILOT_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.catalog import BUNDLED_PROFILES
from adapters.influxdb import InfluxSettings
from adapters.mqtt import MqttSettings
from adapters.settings_file import load_settings
from pilot_core.contract import MAX_BATCH_RECORDS, SUBSCRIPTION
from pilot_core.sparkplug import NAMESPACE, SparkplugDeviceMap


class SparkplugSettings(BaseModel):
    """The collector as a Sparkplug B 3.0 host application (docs/sparkplug.md), beside the pilot/v1 contract."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Subscribe to Sparkplug B and act as a host application")
    host_id: str = Field(
        default="pilot-collector",
        pattern=r"^[^/+#]+$",
        description="The host id of spBv1.0/STATE/{host_id}; edge nodes that wait for a primary host name it",
    )
    groups: list[str] = Field(
        default_factory=list, description="Sparkplug group ids to subscribe to; empty: every group (spBv1.0/#)"
    )
    rebirth_interval_s: float = Field(
        default=10.0, ge=0, allow_inf_nan=False, description="Least time between two rebirth requests to one edge node"
    )
    devices: list[SparkplugDeviceMap] = Field(
        default_factory=list,
        description="Edge nodes and devices mapped otherwise than group → site, edge node → line, device → device,"
        " and their metric names, states and production",
    )

    @property
    def state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.host_id}"

    @property
    def subscriptions(self) -> list[str]:
        """The groups' topics, and our own STATE (to answer an offline one, a will outliving its session)."""
        if not self.groups:
            return [f"{NAMESPACE}/#"]
        return [*(f"{NAMESPACE}/{group}/#" for group in self.groups), self.state_topic]


# Bounds of the roll-up job's periods: beyond them a timer cannot wait, nor a time be counted back.
ROLLUP_EVERY_MAX_S = 7 * 86_400
ROLLUP_LATE_DAYS_MAX = 3660


class CollectorSettings(BaseSettings):
    """Everything the collector needs. Nested keys map to PILOT_MQTT__HOST and the like."""

    model_config = SettingsConfigDict(env_prefix="PILOT_", env_nested_delimiter="__", extra="forbid")

    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    profiles_dir: Path = BUNDLED_PROFILES
    devices_file: Path = Path("devices.yaml")
    database_url: str = Field(
        default="sqlite:///pilot.db",
        description="SQLAlchemy URL of the demonstrations database: a SQLite file (relative to the working"
        " directory), or PostgreSQL shared by several processes, e.g. postgresql+psycopg://user@host/db",
        repr=False,  # it may hold a password
    )
    signing_key_file: Path = Field(
        default=Path("pilot-signing.key"),
        description="The deployment's Ed25519 key that signs evidence bundles; made (mode 0600) on first use",
    )
    max_window_days: float = Field(
        default=400,
        gt=0,
        le=3660,
        description="The API refuses a plan whose windows together cover more days: evaluating a plan reads them",
    )
    rollup_every_s: float = Field(
        default=0,
        ge=0,
        le=ROLLUP_EVERY_MAX_S,
        description="The API builds every demonstration's device-hours (and picks up late data) this often,"
        " in the background; 0: never (run `pilot rollups --every` on a schedule instead)",
    )
    rollup_late_days: float = Field(
        default=14,
        ge=0,
        le=ROLLUP_LATE_DAYS_MAX,
        description="The roll-up job counts InfluxDB's values of the settled hours of this many last days and reads"
        " again those whose count moved (late data); 0: it does not look (an agent's backlog is days, not months)",
    )

    client_id: str = Field(
        default="pilot-collector",
        description="MQTT client id; the broker keeps this session. With mqtt.username it is the username, which"
        " the broker (use_username_as_clientid) makes every client's id",
    )
    share_group: str | None = Field(default=None, description="Join $share/<group>/… to split load between collectors")
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="How long the broker keeps our queue while we are away"
    )
    batch_size: int = Field(default=5000, ge=1, le=65535, description="Messages per InfluxDB write")
    batch_max_bytes: int = Field(
        default=1024 * 1024,
        ge=64 * 1024,
        description="Payload bytes per batch, at most: messages carrying many records fill a batch sooner",
    )
    flush_interval_s: float = Field(default=1.0, gt=0, description="Longest a message waits for its batch to fill")
    receive_maximum: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Most unacknowledged QoS 1 messages the broker sends at once (MQTT 5 Receive Maximum), which"
        " with batch_max_bytes bounds the collector's memory; by default 3 batches, at most 65,535",
    )
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    max_clock_skew_s: float = Field(
        default=600.0,
        ge=0,
        allow_inf_nan=False,
        description="Refuse records whose ts is further ahead of the collector's clock than this; 0 turns it off",
    )
    max_record_age_s: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="Refuse records older than this; 0 (the default) accepts any age, since backfills are legitimate",
    )
    rate_limit_records_per_s: float = Field(
        default=5000.0,
        ge=0,
        allow_inf_nan=False,
        description="Records one device may send per second, on average; 0 turns the quota off",
    )
    rate_limit_burst_records: int = Field(
        default=1_000_000,
        ge=MAX_BATCH_RECORDS,
        description="Records one device may send at once, beyond its rate; at least one full batch message",
    )
    dead_letter_topic: str = Field(
        default="pilot/deadletter/v1", description="Refused messages are republished below this"
    )
    spool_dir: Path = Field(
        default=Path("spool"), description="Where batches wait, durable, while InfluxDB cannot take them"
    )
    spool_quota_mb: int = Field(default=1024, ge=1, description="Disk the spool may use; when full, acks wait")
    spool_after_s: float = Field(
        default=10.0, gt=0, description="How long a batch retries InfluxDB before it goes to the spool"
    )
    watchdog_s: float = Field(
        default=60.0,
        ge=0,
        description="Reconnect when the collector's own heartbeat has not come back for this long; 0 turns it off",
    )
    health_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="Seconds between the collector's health points in InfluxDB (collector_health, with the"
        " dead_letter points of the messages refused meanwhile), which the API's live line reads; 0 turns them off",
    )
    sparkplug: SparkplugSettings = SparkplugSettings()
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, description="Prometheus /metrics; 0 turns it off")
    shutdown_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _a_batch_fits_in_flight(self) -> CollectorSettings:
        if self.receive_maximum is not None and self.receive_maximum < self.batch_size:
            raise ValueError(
                f"receive_maximum ({self.receive_maximum}) is below batch_size ({self.batch_size}): a batch could"
                " never fill, since the broker sends no more until the collector acknowledges"
            )
        return self

    @model_validator(mode="after")
    def _sparkplug_sees_whole_nodes(self) -> CollectorSettings:
        if self.sparkplug.enabled and self.share_group:
            raise ValueError(
                "sparkplug.enabled with share_group: a Sparkplug host must see every message of an edge node (its"
                " births, aliases and seq), which a shared subscription splits between collectors; run the"
                " Sparkplug host in a collector of its own, without share_group"
            )
        return self

    @model_validator(mode="after")
    def _client_id_is_the_username(self) -> CollectorSettings:
        """The broker replaces a client's id with its username, so the heartbeat topic must use that name."""
        username = self.mqtt.username
        if not username:
            return self
        if "client_id" not in self.model_fields_set:
            self.client_id = username
        elif self.client_id != username:
            raise ValueError(
                f"client_id {self.client_id!r} differs from mqtt.username {username!r}: the broker gives every"
                " client its username as client id (use_username_as_clientid; docs/broker.md), so leave client_id"
                " out or set it to the username; each collector process needs its own account"
            )
        return self

    @property
    def in_flight_limit(self) -> int:
        """The Receive Maximum asked of the broker: enough for one batch in hand and the next two arriving."""
        return self.receive_maximum or min(3 * self.batch_size, 65535)

    @property
    def subscription(self) -> str:
        return f"$share/{self.share_group}/{SUBSCRIPTION}" if self.share_group else SUBSCRIPTION

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> CollectorSettings:
        """Settings from ``config_file`` (default ./pilot.yaml if present), the environment and ``overrides``."""
        return load_settings(cls, config_file, **overrides)

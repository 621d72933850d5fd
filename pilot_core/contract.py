"""Device contract v1: the MQTT topics and JSON payloads that devices publish.

Topic: ``pilot/v1/{site}/{line}/{device_id}/{channel}``.

Every payload carries ``seq``, an integer that grows by one with each message
a device publishes on a channel, and either one record inline (with its
``ts``) or a ``batch`` of records. ``ts`` is an RFC 3339 timestamp with an
offset, or integer epoch milliseconds. See docs/contract.md.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from pilot_core.ids import InvalidIdError, check_id

CONTRACT_VERSION = "v1"
TOPIC_ROOT = "pilot"
SUBSCRIPTION = f"{TOPIC_ROOT}/{CONTRACT_VERSION}/+/+/+/+"

MAX_BATCH_RECORDS = 10_000
# Epoch milliseconds before 2001-09-09 are almost always epoch *seconds* sent by mistake.
_MIN_EPOCH_MS = 1_000_000_000_000
_MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Channel(enum.StrEnum):
    TELEMETRY = "telemetry"
    STATE = "state"
    PRODUCTION = "production"
    STATUS = "status"


class TimeClass(enum.StrEnum):
    """Where a machine state falls in the ISO 22400-2 time model."""

    PRODUCTION = "production"  # APT: value-adding work
    SETUP = "setup"  # ASUT
    UNPLANNED_DELAY = "unplanned_delay"  # ADET: faults, breakdowns, starvation
    MINOR_STOP = "minor_stop"  # ADET: short stops, jams
    IDLE = "idle"  # ADOT: available, but no order
    PLANNED_DOWNTIME = "planned_downtime"  # outside PBT: breaks, planned maintenance


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    line: str
    device: str
    channel: Channel

    def __str__(self) -> str:
        return topic_for(self.site, self.line, self.device, self.channel)


class TopicError(ValueError):
    pass


def topic_for(site: str, line: str, device: str, channel: Channel | str) -> str:
    """The topic a device publishes on. Raises InvalidIdError for an unusable id."""
    check_id(site, "site id")
    check_id(line, "line id")
    check_id(device, "device id")
    return f"{TOPIC_ROOT}/{CONTRACT_VERSION}/{site}/{line}/{device}/{Channel(channel).value}"


@functools.lru_cache(maxsize=65536)
def parse_topic(topic: str) -> Topic:
    """Parse and check a topic. Cached: a line has a few thousand topics, each seen over and over."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != TOPIC_ROOT or parts[1] != CONTRACT_VERSION:
        raise TopicError(f"topic {topic!r} is not pilot/v1/{{site}}/{{line}}/{{device_id}}/{{channel}}")
    _, _, site, line, device, channel = parts
    try:
        kind = Channel(channel)
    except ValueError:
        raise TopicError(
            f"unknown channel {channel!r}; expected one of {', '.join(c.value for c in Channel)}"
        ) from None
    try:
        check_id(site, "site id")
        check_id(line, "line id")
        check_id(device, "device id")
    except InvalidIdError as exc:
        raise TopicError(str(exc)) from None
    return Topic(site, line, device, kind)


def parse_timestamp(value: object) -> int:
    """Epoch milliseconds from an RFC 3339 string or an integer of epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds, not a boolean")
    if isinstance(value, int):
        if value < _MIN_EPOCH_MS:
            raise ValueError(f"ts {value} is before 2001 in epoch milliseconds; was it sent in seconds?")
        if value > _MAX_EPOCH_MS:
            raise ValueError(f"ts {value} is after 2100 in epoch milliseconds; was it sent in micro- or nanoseconds?")
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"ts {value!r} is not an RFC 3339 timestamp") from None
        if moment.tzinfo is None:
            raise ValueError(f"ts {value!r} has no UTC offset; RFC 3339 requires 'Z' or '+09:00' and the like")
        # Exact integer arithmetic: float seconds would round some milliseconds wrongly.
        return parse_timestamp((moment - _EPOCH) // timedelta(milliseconds=1))
    raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")


Timestamp = Annotated[
    int,
    BeforeValidator(parse_timestamp, json_schema_input_type=str | int),
    Field(description="RFC 3339 with an offset (e.g. 2026-11-02T09:00:00.250+09:00), or integer epoch milliseconds"),
]
Seq = Annotated[
    StrictInt,
    Field(ge=0, le=2**63 - 1, description="Grows by one with each message a device publishes on this channel"),
]
MetricValue = StrictBool | StrictInt | StrictFloat
Id = Annotated[str, Field(min_length=1, max_length=128)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TelemetryRecord(_Record):
    ts: Timestamp
    metrics: dict[str, MetricValue] = Field(
        min_length=1, description="Metric name → value, as declared in the device profile"
    )


class StateRecord(_Record):
    ts: Timestamp
    state: Id = Field(description="A state declared in the device profile")
    reason: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Why the machine entered this state, e.g. a fault code"
    )


class ProductionRecord(_Record):
    ts: Timestamp = Field(description="When the cycle completed")
    product: Id = Field(description="Product or SKU id")
    produced: StrictInt = Field(ge=0, description="Units produced by this cycle (PQ)")
    good: StrictInt = Field(ge=0, description="Good units (GQ)")
    scrap: StrictInt = Field(default=0, ge=0, description="Scrapped units (SQ)")
    rework: StrictInt = Field(default=0, ge=0, description="Units sent to rework (RQ)")
    cycle_time_s: StrictFloat | StrictInt | None = Field(
        default=None,
        gt=0,
        description="Cycle duration in seconds; required when the profile's production mode is 'cycle'",
    )

    @model_validator(mode="after")
    def _counts_add_up(self) -> ProductionRecord:
        if self.good + self.scrap + self.rework != self.produced:
            parts = f"good ({self.good}) + scrap ({self.scrap}) + rework ({self.rework})"
            raise ValueError(f"{parts} must equal produced ({self.produced})")
        return self


class StatusRecord(_Record):
    ts: Timestamp
    status: Literal["online", "offline"]
    agent_version: Annotated[str, Field(max_length=64)] | None = None
    profile: Id | None = Field(default=None, description="Device profile id the agent publishes by")
    profile_version: Annotated[str, Field(max_length=32)] | None = None


class _Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: Seq


class TelemetryMessage(TelemetryRecord):
    """One telemetry sample."""

    seq: Seq


class TelemetryBatchMessage(_Batch):
    """Several telemetry samples sharing one seq."""

    batch: list[TelemetryRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class StateMessage(StateRecord):
    """One machine state change."""

    seq: Seq


class StateBatchMessage(_Batch):
    """Several state changes sharing one seq."""

    batch: list[StateRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class ProductionMessage(ProductionRecord):
    """One cycle completion."""

    seq: Seq


class ProductionBatchMessage(_Batch):
    """Several cycle completions sharing one seq."""

    batch: list[ProductionRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class StatusMessage(StatusRecord):
    """A birth (online) or last-will (offline) message."""

    seq: Seq


class StatusBatchMessage(_Batch):
    """Several status records sharing one seq (rare; accepted for uniformity)."""

    batch: list[StatusRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


RECORD_TYPES: dict[Channel, type[_Record]] = {
    Channel.TELEMETRY: TelemetryRecord,
    Channel.STATE: StateRecord,
    Channel.PRODUCTION: ProductionRecord,
    Channel.STATUS: StatusRecord,
}
_MESSAGE_TYPES: dict[Channel, tuple[type[BaseModel], type[_Batch]]] = {
    Channel.TELEMETRY: (TelemetryMessage, TelemetryBatchMessage),
    Channel.STATE: (StateMessage, StateBatchMessage),
    Channel.PRODUCTION: (ProductionMessage, ProductionBatchMessage),
    Channel.STATUS: (StatusMessage, StatusBatchMessage),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message: its seq and its records, whether sent singly or batched."""

    seq: int
    records: tuple[Any, ...]


def decode_payload(channel: Channel, payload: bytes | str) -> Envelope:
    """Decode and schema-check a payload. Raises pydantic.ValidationError."""
    single, batch = _MESSAGE_TYPES[channel]
    # Cheap test that avoids parsing twice on the common path. The text "batch" can
    # also be a value in a single record (a reason, a product), so a payload that
    # fails as a batch is tried as a single record before its batch error is raised.
    if b'"batch"' in (payload if isinstance(payload, bytes) else payload.encode()):
        try:
            batched = batch.model_validate_json(payload)
        except ValidationError as batch_error:
            try:
                message = single.model_validate_json(payload)
            except ValidationError:
                raise batch_error from None
            return Envelope(message.seq, (message,))  # type: ignore[attr-defined]
        return Envelope(batched.seq, tuple(batched.batch))  # type: ignore[attr-defined]
    message = single.model_validate_json(payload)
    return Envelope(message.seq, (message,))  # type: ignore[attr-defined]


def json_schema() -> dict[str, Any]:
    """The contract as one JSON Schema document: a payload schema per channel."""
    channels = {}
    for channel, (single, batch) in _MESSAGE_TYPES.items():
        adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, single) | batch)
        channels[channel.value] = adapter.json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = {}
    for schema in channels.values():
        defs.update(schema.pop("$defs", {}))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pilot-telemetry.dev/contract/v1.json",
        "title": "pilot-telemetry device contract v1",
        "description": (
            "Payloads published to pilot/v1/{site}/{line}/{device_id}/{channel}. "
            "Each channel accepts one record inline or a batch of records sharing one seq."
        ),
        "topic": "pilot/v1/{site}/{line}/{device_id}/{channel}",
        "channels": channels,
        "$defs": defs,
    }

"""Device contract v1: the MQTT topics and JSON payloads that devices publish.

Topic: ``pilot/v1/{site}/{line}/{device_id}/{channel}``.

Every payload carries ``seq``, an integer that grows by one with each message
a device publishes on a channel, optionally the ``device`` id of its topic,
and either one record inline (with its ``ts``) or a ``batch`` of records.
``ts`` is an RFC 3339 timestamp with an offset, or integer epoch
milliseconds. See docs/contract.md.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast

import jiter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    model_validator,
)
from pydantic_core import CoreSchema

from pilot_core.ids import InvalidIdError, check_id
from pilot_core.line_protocol import INT64_MAX

CONTRACT_VERSION = "v1"
TOPIC_ROOT = "pilot"
SUBSCRIPTION = f"{TOPIC_ROOT}/{CONTRACT_VERSION}/+/+/+/+"

MAX_BATCH_RECORDS = 10_000
# Epoch milliseconds before 2001-09-09 are almost always epoch *seconds* sent by mistake.
_MIN_EPOCH_MS = 1_000_000_000_000
_MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UTF8_BOM = b"\xef\xbb\xbf"
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


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


def _no_control_characters(text: str) -> str:
    found = _CONTROL_CHARACTER.search(text)
    if found:
        raise ValueError(
            f"contains the control character U+{ord(found.group()):04X}; text fields may not contain control"
            " characters (newlines, tabs, NUL)"
        )
    return text


Seq = Annotated[
    StrictInt,
    Field(ge=0, le=INT64_MAX, description="Grows by one with each message a device publishes on this channel"),
]
METRIC_VALUE_ERROR = "metric_value"


class _OneErrorForTheUnion:
    """A value that is none of bool, int, float gets one error, not one per member ("metrics.power.bool: Input
    should be a valid boolean" for the string "410"); validation names the type the profile declares."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = cast(dict[str, Any], handler(source))
        schema["custom_error_type"] = METRIC_VALUE_ERROR
        schema["custom_error_message"] = "expected a number (true or false for a bool metric)"
        return cast(CoreSchema, schema)


MetricValue = Annotated[StrictBool | StrictInt | StrictFloat, _OneErrorForTheUnion()]
Id = Annotated[str, Field(min_length=1, max_length=128)]
# Counts become signed 64-bit integer fields: anything larger could not be stored.
Count = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
_NO_CONTROL_CHARACTERS = AfterValidator(_no_control_characters)


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
    reason: Annotated[str, Field(max_length=256), _NO_CONTROL_CHARACTERS] | None = Field(
        default=None, description="Why the machine entered this state, e.g. a fault code"
    )


class ProductionRecord(_Record):
    ts: Timestamp = Field(description="When the cycle completed")
    product: Id = Field(description="Product or SKU id")
    produced: Count = Field(description="Units produced by this cycle (PQ)")
    good: Count = Field(description="Good units (GQ)")
    scrap: Count = Field(default=0, description="Scrapped units (SQ)")
    rework: Count = Field(default=0, description="Units sent to rework (RQ)")
    cycle_time_s: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
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
    agent_version: Annotated[str, Field(max_length=64), _NO_CONTROL_CHARACTERS] | None = None
    profile: Id | None = Field(default=None, description="Device profile id the agent publishes by")
    profile_version: Annotated[str, Field(max_length=32), _NO_CONTROL_CHARACTERS] | None = None


class _Envelope(BaseModel):
    """What every message carries besides its records, whether sent singly or batched."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: Seq
    device: Id | None = Field(
        default=None, description="The device id of the topic, repeated; when given, it must equal the topic's"
    )


class _Batch(_Envelope):
    pass


class TelemetryMessage(TelemetryRecord, _Envelope):
    """One telemetry sample."""


class TelemetryBatchMessage(_Batch):
    """Several telemetry samples sharing one seq."""

    batch: list[TelemetryRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class StateMessage(StateRecord, _Envelope):
    """One machine state change."""


class StateBatchMessage(_Batch):
    """Several state changes sharing one seq."""

    batch: list[StateRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class ProductionMessage(ProductionRecord, _Envelope):
    """One cycle completion."""


class ProductionBatchMessage(_Batch):
    """Several cycle completions sharing one seq."""

    batch: list[ProductionRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class StatusMessage(StatusRecord, _Envelope):
    """A birth (online) or last-will (offline) message."""


class StatusBatchMessage(_Batch):
    """Several status records sharing one seq (rare; accepted for uniformity)."""

    batch: list[StatusRecord] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


RECORD_TYPES: dict[Channel, type[_Record]] = {
    Channel.TELEMETRY: TelemetryRecord,
    Channel.STATE: StateRecord,
    Channel.PRODUCTION: ProductionRecord,
    Channel.STATUS: StatusRecord,
}
_MESSAGE_TYPES: dict[Channel, tuple[type[_Envelope], type[_Batch]]] = {
    Channel.TELEMETRY: (TelemetryMessage, TelemetryBatchMessage),
    Channel.STATE: (StateMessage, StateBatchMessage),
    Channel.PRODUCTION: (ProductionMessage, ProductionBatchMessage),
    Channel.STATUS: (StatusMessage, StatusBatchMessage),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message: its seq, the device id it names (if any) and its records, sent singly or batched."""

    seq: int
    device: str | None
    records: tuple[Any, ...]


class PayloadError(ValueError):
    """A payload that is not one readable JSON document: bad bytes, bad JSON, or a key given twice."""

    def __init__(self, detail: str, *, duplicate_key: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.duplicate_key = duplicate_key


def decode_payload(channel: Channel, payload: bytes | str) -> Envelope:
    """Decode and schema-check a payload. Raises PayloadError or pydantic.ValidationError, nothing else."""
    document = parse_json(payload)
    single, batch = _MESSAGE_TYPES[channel]
    if isinstance(document, dict) and "batch" in document:
        batched = batch.model_validate(document)
        return Envelope(batched.seq, batched.device, tuple(batched.batch))  # type: ignore[attr-defined]
    message = single.model_validate(document)
    return Envelope(message.seq, message.device, (message,))


def parse_json(payload: bytes | str) -> Any:
    """Parse one JSON document strictly: UTF-8 only, no byte order mark, no key twice in one object.

    JSON leaves duplicate keys to the reader (most keep the last one); a
    payload that says two things must not be stored as one of them. jiter is
    the parser inside pydantic, standalone, with the same nesting and number limits.
    """
    if isinstance(payload, str):
        try:
            payload = payload.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PayloadError(f"payload is not valid Unicode: {exc.reason} at character {exc.start}") from None
    try:
        document = jiter.from_json(payload, catch_duplicate_keys=True, cache_mode="keys")
    except ValueError as exc:
        message = str(exc)
        duplicate = message.startswith("Detected duplicate key")
        raise PayloadError(_json_problem(payload, message, duplicate), duplicate_key=duplicate) from None
    if len(payload) > MAX_NUMBER_DIGITS and _NUMBER_RUN.search(payload):  # only then can a number be that long
        _refuse_long_numbers(jiter.from_json(payload, float_mode="lossless-float"))
    return document


# jiter refuses integers of more digits (Python's int_max_str_digits); a fraction of as many is as malformed,
# though a float would parse it (a million digits of 0.000…1 as 0.0). A float holds 17 significant digits.
MAX_NUMBER_DIGITS = 4300
_NUMBER_RUN = re.compile(rb"[-+.eE0-9]{%d,}" % (MAX_NUMBER_DIGITS + 1))


def _refuse_long_numbers(value: Any) -> None:
    if isinstance(value, jiter.LosslessFloat):
        text = bytes(value)
        if len(text.translate(None, b"-+.eE")) > MAX_NUMBER_DIGITS:
            raise PayloadError(
                f"not valid JSON: a number of {len(text):,} characters ({text[:12].decode()}…); numbers may have"
                f" at most {MAX_NUMBER_DIGITS:,} digits"
            )
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_long_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_long_numbers(item)


def _json_problem(payload: bytes, message: str, duplicate: bool) -> str:
    """What is wrong with a payload the parser refused, in words a device developer can act on."""
    if not payload.strip():
        return "payload is empty; expected one JSON object"
    if payload.startswith(_UTF8_BOM):
        return "payload starts with a UTF-8 byte order mark (EF BB BF); send the JSON without it"
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"payload is not valid UTF-8: byte 0x{payload[exc.start]:02X} at offset {exc.start} ({exc.reason})"
    if duplicate:
        return f"{message}; a key may appear only once in a JSON object"
    if "recursion limit" in message:
        return f"not valid JSON: nested too deeply ({message})"
    if "surrogate" in message or "hex escape" in message:
        return f"not valid JSON: {message} (a \\uD800-\\uDFFF escape is only valid as half of a surrogate pair)"
    return f"not valid JSON: {message}"


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

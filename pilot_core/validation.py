"""From one MQTT message to InfluxDB points, or to the reason it was refused.

Validation is all or nothing per message: if one record of a batch is bad,
the whole message goes to the dead-letter topic, so that a publisher can
resend it as it was. It is pure: the caller passes the clock in.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pilot_core.contract import (
    METRIC_VALUE_ERROR,
    Channel,
    PayloadError,
    ProductionRecord,
    StateRecord,
    StatusRecord,
    TelemetryRecord,
    Topic,
    TopicError,
    decode_payload,
    parse_topic,
)
from pilot_core.ids import InvalidIdError, check_id
from pilot_core.line_protocol import (
    FieldValue,
    LineProtocolError,
    encode_point,
    escape_key,
    format_field_value,
    series_key,
)
from pilot_core.profiles import DeviceProfile, Metric, MetricType, ProductionMode, metric_value_problem
from pilot_core.registry import DeviceKey, DeviceRegistry, RegisteredDevice

STATE_MEASUREMENT = "state"
PRODUCTION_MEASUREMENT = "production"
STATUS_MEASUREMENT = "status"


class RejectReason(enum.StrEnum):
    TOO_LARGE = "too_large"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    MALFORMED_JSON = "malformed_json"
    DUPLICATE_KEY = "duplicate_key"
    SCHEMA = "schema"
    DEVICE_MISMATCH = "device_mismatch"
    MISSING_TIMESTAMP = "missing_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    NON_FINITE = "non_finite"
    UNKNOWN_STATE = "unknown_state"
    INVALID_ID = "invalid_id"
    NOT_IN_PROFILE = "not_in_profile"
    PROFILE_MISMATCH = "profile_mismatch"
    RATE_LIMITED = "rate_limited"
    SEQ_REGRESSION = "seq_regression"
    STORE_REJECTED = "store_rejected"
    INTERNAL_ERROR = "internal_error"
    # Sparkplug B (pilot_core.sparkplug): what a host application cannot interpret.
    SPARKPLUG_UNDECODABLE = "sparkplug_undecodable"
    SPARKPLUG_NO_BIRTH = "sparkplug_no_birth"
    SPARKPLUG_UNKNOWN_ALIAS = "sparkplug_unknown_alias"
    SPARKPLUG_UNSUPPORTED = "sparkplug_unsupported"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str
    topic: Topic | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    topic: Topic
    seq: int
    lines: list[str]
    birth: bool = False  # an agent announcing itself online: its seq may start again


@dataclass(frozen=True, slots=True)
class ClockCheck:
    """The collector's clock, and how far from it a record's ts may lie; None leaves that side open."""

    now_ms: int
    max_ahead_ms: int | None = None
    max_age_ms: int | None = None

    def problem(self, ts: int) -> tuple[RejectReason, str] | None:
        if self.max_ahead_ms is not None and ts - self.now_ms > self.max_ahead_ms:
            return RejectReason.FUTURE_TIMESTAMP, (
                f"ts {_utc(ts)} is {_duration(ts - self.now_ms)} ahead of the collector's clock ({_utc(self.now_ms)});"
                f" at most {_duration(self.max_ahead_ms)} is allowed (max_clock_skew_s). Is the device's clock set"
                " (NTP)? A device sending local time marked as UTC is 9 h ahead in Korea (UTC+09:00):"
                " send the offset, e.g. 2026-11-02T09:00:00+09:00"
            )
        if self.max_age_ms is not None and self.now_ms - ts > self.max_age_ms:
            return RejectReason.STALE_TIMESTAMP, (
                f"ts {_utc(ts)} is {_duration(self.now_ms - ts)} behind the collector's clock ({_utc(self.now_ms)});"
                f" records older than {_duration(self.max_age_ms)} are refused (max_record_age_s)"
            )
        return None


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(ms: int) -> str:
    """A span for people: 3.2 s, 12 min 5 s, 9 h, 3 d 4 h."""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days >= 2:
        parts = [(days, "d"), (hour, "h")]
    elif hours:
        parts = [(hours, "h"), (minute, "min")]
    else:
        parts = [(minutes, "min"), (second, "s")]
    return " ".join(f"{value} {unit}" for value, unit in parts if value) or "0 s"


class _Refused(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class StatusTimes:
    """When each birth and will is stored: a will at the time the collector receives it, after its birth.

    A last will is fixed when its connection is made, so the ``ts`` it carries is older than the birth
    published just after. The broker publishes it when the connection is lost: the collector receives it
    then, and that is when the device went offline. So a will is stored at ``received_ms`` (never before its
    own ``ts``), and the same will received again keeps the time it was given first. A will older than a
    birth already received (both were queued while the collector was away: the device has reconnected since)
    keeps its own ``ts``, so it cannot hide that birth; and a birth newer than the last will (by seq) is never
    stored before it.

    An agent states its state again with each birth, stamped with the birth's own ``ts`` (the broker, not the
    agent, may have gone away: the agent recorded on, and its state is known). Such a state is stored where its
    birth was, so a birth moved after its will does not leave the state behind the will, unknown.
    """

    def __init__(self) -> None:
        self._birth_seq: dict[tuple[str, str, str], int] = {}
        self._will: dict[tuple[str, str, str], tuple[int, int]] = {}  # the last will stored: seq, time
        self._birth_time: dict[tuple[str, str, str], tuple[int, int]] = {}  # the last birth: its ts, stored at

    def stored_at(self, topic: Topic, seq: int, record: StatusRecord, received_ms: int) -> int:
        device = (topic.site, topic.line, topic.device)
        will = self._will.get(device)
        if record.status == "online":
            previous = self._birth_seq.get(device)
            self._birth_seq[device] = seq
            newer = will is not None and seq > will[0]  # not an older birth received again
            at = max(record.ts, will[1] + 1) if will is not None and newer else record.ts
            if previous is None or seq >= previous:
                self._birth_time[device] = (record.ts, at)
            return at
        if will is not None and will[0] == seq:
            return will[1]
        birth_seq = self._birth_seq.get(device)
        if birth_seq is not None and seq < birth_seq:
            return record.ts
        at = max(received_ms, record.ts)
        self._will[device] = (seq, at)
        return at

    def state_stored_at(self, topic: Topic, ts: int) -> int:
        """Where a state record of ``ts`` is stored: with the device's last birth if it carries that birth's ts."""
        birth = self._birth_time.get((topic.site, topic.line, topic.device))
        return birth[1] if birth is not None and birth[0] == ts else ts


def validate_message(
    topic_name: str,
    payload: bytes,
    registry: DeviceRegistry,
    max_payload_bytes: int,
    clock: ClockCheck | None = None,
    statuses: StatusTimes | None = None,
    received_ms: int = 0,
) -> Accepted | Rejection:
    """Check one message against the contract, its device's profile and, if given, the clock.

    With ``statuses``, a status record is stored at the time they give it for ``received_ms`` (when the
    message was received); without, at its own ``ts``. Never raises for any topic or payload: every problem
    is a Rejection.
    """
    topic: Topic | None = None
    try:
        try:
            topic = parse_topic(topic_name)
        except TopicError as exc:
            raise _Refused(RejectReason.BAD_TOPIC, str(exc)) from None
        if len(payload) > max_payload_bytes:
            raise _Refused(RejectReason.TOO_LARGE, f"payload is {len(payload)} bytes; the limit is {max_payload_bytes}")
        device = registry.get(DeviceKey(topic.site, topic.line, topic.device))
        if device is None:
            raise _Refused(
                RejectReason.UNKNOWN_DEVICE,
                f"device {topic.device!r} on site {topic.site!r}, line {topic.line!r} is not in the device registry",
            )
        try:
            envelope = decode_payload(topic.channel, payload)
        except PayloadError as exc:
            reason = RejectReason.DUPLICATE_KEY if exc.duplicate_key else RejectReason.MALFORMED_JSON
            raise _Refused(reason, exc.detail) from None
        except ValidationError as exc:
            raise _schema_refusal(exc, device.profile) from None
        if envelope.device is not None and envelope.device != topic.device:
            raise _Refused(
                RejectReason.DEVICE_MISMATCH,
                f"payload says device {envelope.device!r} but was published on the topic of device {topic.device!r};"
                " a device publishes only under its own id",
            )
        records = envelope.records
        if statuses is not None and topic.channel is Channel.STATUS:
            records = tuple(
                r.model_copy(update={"ts": statuses.stored_at(topic, envelope.seq, r, received_ms)}) for r in records
            )
        elif statuses is not None and topic.channel is Channel.STATE:
            records = tuple(
                r if (at := statuses.state_stored_at(topic, r.ts)) == r.ts else r.model_copy(update={"ts": at})
                for r in records
            )
        lines = _encode(device, topic, envelope.seq, records, clock)
        birth = topic.channel is Channel.STATUS and any(r.status == "online" for r in envelope.records)
        return Accepted(topic, envelope.seq, lines, birth)
    except _Refused as refused:
        return Rejection(refused.reason, refused.detail, topic)


def encode_records(
    device: RegisteredDevice, topic: Topic, seq: int, records: list[Any], clock: ClockCheck | None = None
) -> list[str] | Rejection:
    """Lines for records another intake (Sparkplug) made, checked as the contract's are; or why not."""
    try:
        return _encode(device, topic, seq, tuple(records), clock)
    except _Refused as refused:
        return Rejection(refused.reason, refused.detail, topic)


def _encode(
    device: RegisteredDevice, topic: Topic, seq: int, records: tuple[Any, ...], clock: ClockCheck | None
) -> list[str]:
    tags = (("site", topic.site), ("line", topic.line), ("device", topic.device))
    encode = _ENCODERS[topic.channel]
    lines = []
    for index, record in enumerate(records):
        problem = clock.problem(record.ts) if clock is not None else None
        if problem is not None:
            where = f"batch.{index}: " if len(records) > 1 else ""
            raise _Refused(problem[0], where + problem[1])
        try:
            lines.append(encode(device, tags, record, seq))
        except LineProtocolError as exc:  # the contract should have refused it already; never crash on it
            raise _Refused(RejectReason.SCHEMA, f"cannot be stored in InfluxDB: {exc}") from None
    return lines


def _schema_refusal(exc: ValidationError, profile: DeviceProfile) -> _Refused:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "model_type" and not first["loc"]:
        return _Refused(RejectReason.SCHEMA, f"payload must be a JSON object, not {_json_type(first['input'])}")
    loc = [p for p in first["loc"] if not isinstance(p, int)]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    if first["type"] == METRIC_VALUE_ERROR:
        return _Refused(RejectReason.WRONG_TYPE, f"{where}: {_expected_metric(profile, str(loc[-1]), first['input'])}")
    if loc and loc[-1] == "ts":
        if first["type"] == "missing":
            return _Refused(RejectReason.MISSING_TIMESTAMP, f"{where} is missing; every record needs a timestamp")
        return _Refused(RejectReason.BAD_TIMESTAMP, f"{where}: {first['msg'].removeprefix('Value error, ')}")
    if first["type"] == "finite_number":
        return _Refused(RejectReason.NON_FINITE, f"{where} is not a finite number")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return _Refused(RejectReason.SCHEMA, f"{where}: {first['msg'].removeprefix('Value error, ')}{more}")


def _expected_metric(profile: DeviceProfile, name: str, value: object) -> str:
    got = f"the string {value!r}" if isinstance(value, str) else _json_type(value)
    metric = next((m for m in profile.metrics if m.name == name), None)
    if metric is None:
        return f"expected a number (true or false for a bool metric), got {got}"
    expected = {MetricType.BOOL: "true or false", MetricType.INT: "an integer"}.get(metric.type, "a number")
    return f"metric {name!r} is {metric.type.value}: expected {expected}, got {got}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return "an array" if isinstance(value, list) else type(value).__name__


Tags = tuple[tuple[str, str], ...]


def _telemetry(device: RegisteredDevice, tags: Tags, record: TelemetryRecord, seq: int) -> str:
    profile = device.profile
    encoders = _field_encoders(profile)
    fields: list[str] = []
    for name, value in record.metrics.items():
        found = encoders.get(name)
        if found is None:
            raise _Refused(
                RejectReason.UNKNOWN_METRIC, f"metric {name!r} is not in profile {profile.id} {profile.version}"
            )
        metric, encode = found
        text = encode(value)
        if text is None:  # not the common case: say why it does not fit, or encode it the long way
            problem = metric_value_problem(metric, value)
            if problem is not None:
                raise _Refused(RejectReason(problem[0]), problem[1])
            # The declared type decides the stored type, so 3 and 3.5 never conflict.
            stored = _as_float(name, value) if metric.type is MetricType.FLOAT else value
            text = f"{escape_key(name)}={format_field_value(stored)}"
        fields.append(text)
    fields.append(f"seq={format_field_value(seq)}")
    return f"{series_key(profile.measurement, tags)} {','.join(fields)} {record.ts}"


FieldEncoder = Callable[[Any], str | None]


def _field_encoders(profile: DeviceProfile) -> dict[str, tuple[Metric, FieldEncoder]]:
    """Per metric of ``profile``: a check-and-encode for values that plainly fit (None for any other).

    Telemetry is most of what a collector does, and most values fit: one call per
    value instead of the general checks and encoder. Anything the fast check does
    not pass goes through ``metric_value_problem`` and ``format_field_value``, so
    what is refused, and how, is decided in one place.
    """
    cached: dict[str, tuple[Metric, FieldEncoder]] | None = profile.__dict__.get("_field_encoders")
    if cached is None:
        cached = {m.name: (m, _fast_encoder(m)) for m in profile.metrics}
        object.__setattr__(profile, "_field_encoders", cached)  # frozen model: cache outside the fields
    return cached


def _fast_encoder(metric: Metric) -> FieldEncoder:
    key, low, high = escape_key(metric.name), metric.min, metric.max
    if metric.type is MetricType.BOOL:
        return lambda value: (f"{key}=t" if value else f"{key}=f") if type(value) is bool else None
    if metric.type is MetricType.INT:

        def encode_int(value: Any) -> str | None:
            if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
                return None
            if (low is not None and value < low) or (high is not None and value > high):
                return None
            return f"{key}={value}i"

        return encode_int

    def encode_float(value: Any) -> str | None:
        kind = type(value)
        if kind is int and -_EXACT_INT <= value <= _EXACT_INT:
            value = float(value)  # exact, so comparing it gives what comparing the integer would
        elif kind is not float or value - value != 0.0:  # inf and nan: only the general check names them
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            return None
        return f"{key}={value!r}"

    return encode_float


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_INT = 2**53  # integers up to this convert to float exactly


def _as_float(name: str, value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        digits = int(int(value).bit_length() * 0.30103) + 1
        raise _Refused(
            RejectReason.OUT_OF_RANGE, f"metric {name!r} is an integer of about {digits} digits, too large for a float"
        ) from None


def _state(device: RegisteredDevice, tags: Tags, record: StateRecord, seq: int) -> str:
    state = device.profile.state(record.state)
    if state is None:
        known = ", ".join(s.name for s in device.profile.states) or "none"
        raise _Refused(
            RejectReason.UNKNOWN_STATE,
            f"state {record.state!r} is not in profile {device.profile.id} (states: {known})",
        )
    fields: list[tuple[str, FieldValue]] = [("state", state.name), ("time_class", state.time_class.value)]
    if record.reason:
        fields.append(("reason", record.reason))
    fields.append(("seq", seq))
    return encode_point(STATE_MEASUREMENT, tags, fields, record.ts)


def _production(device: RegisteredDevice, tags: Tags, record: ProductionRecord, seq: int) -> str:
    mode = device.profile.production.mode
    if mode is ProductionMode.NONE:
        raise _Refused(RejectReason.NOT_IN_PROFILE, f"profile {device.profile.id} does not report production")
    if mode is ProductionMode.CYCLE and record.cycle_time_s is None:
        raise _Refused(RejectReason.SCHEMA, f"cycle_time_s is required: profile {device.profile.id} reports per cycle")
    try:
        product = check_id(record.product, "product id")
    except InvalidIdError as exc:
        raise _Refused(RejectReason.INVALID_ID, str(exc)) from None
    fields: list[tuple[str, FieldValue]] = [
        ("produced", record.produced),
        ("good", record.good),
        ("scrap", record.scrap),
        ("rework", record.rework),
    ]
    if record.cycle_time_s is not None:
        fields.append(("cycle_time_s", float(record.cycle_time_s)))
    fields.append(("seq", seq))
    return encode_point(PRODUCTION_MEASUREMENT, (*tags, ("product", product)), fields, record.ts)


def _status(device: RegisteredDevice, tags: Tags, record: StatusRecord, seq: int) -> str:
    if record.profile is not None and record.profile != device.profile.id:
        raise _Refused(
            RejectReason.PROFILE_MISMATCH,
            f"agent says profile {record.profile!r}; the registry has {device.profile.id!r} for this device",
        )
    fields: list[tuple[str, FieldValue]] = [("online", record.status == "online")]
    for name in ("agent_version", "profile_version"):
        value = getattr(record, name)
        if value:
            fields.append((name, value))
    fields.append(("seq", seq))
    return encode_point(STATUS_MEASUREMENT, tags, fields, record.ts)


_ENCODERS: dict[Channel, Callable[[RegisteredDevice, Tags, Any, int], str]] = {
    Channel.TELEMETRY: _telemetry,
    Channel.STATE: _state,
    Channel.PRODUCTION: _production,
    Channel.STATUS: _status,
}


class SeqVerdict(enum.Enum):
    NEXT = "next"  # the expected one, the first seen, or a late one filling a gap
    GAP = "gap"  # later than expected: messages are missing
    DUPLICATE = "duplicate"  # accepted before: a QoS 1 redelivery or a replay
    REGRESSION = "regression"  # older than anything this stream has shown


@dataclass(frozen=True, slots=True)
class SeqObservation:
    verdict: SeqVerdict
    missing: int = 0  # for GAP: how many seqs were skipped


@dataclass(slots=True)
class _Stream:
    first: int
    last: int
    gaps: deque[tuple[int, int]] = field(default_factory=deque)  # inclusive ranges never seen


class SeqTracker:
    """Per (device, channel) accounting of seq: gaps, duplicates and regressions.

    MQTT delivers one topic's messages in order, so a stream is described by
    its first and last seq and the gaps between them; memory stays small
    however long the stream runs.
    """

    def __init__(self, max_gaps_per_stream: int = 1024) -> None:
        self._max_gaps = max_gaps_per_stream
        self._streams: dict[tuple[str, str, str, str], _Stream] = {}

    def restart_device(self, topic: Topic) -> None:
        """Forget a device's streams: its agent restarted and may count seq from 0 again."""
        for key in [k for k in self._streams if k[:3] == (topic.site, topic.line, topic.device)]:
            del self._streams[key]

    def observe(self, topic: Topic, seq: int) -> SeqObservation:
        key = (topic.site, topic.line, topic.device, topic.channel.value)
        stream = self._streams.get(key)
        if stream is None:
            self._streams[key] = _Stream(seq, seq)
            return SeqObservation(SeqVerdict.NEXT)
        if seq > stream.last:
            missing = seq - stream.last - 1
            if missing:
                stream.gaps.append((stream.last + 1, seq - 1))
                if len(stream.gaps) > self._max_gaps:
                    stream.gaps.popleft()
            stream.last = seq
            return SeqObservation(SeqVerdict.GAP, missing) if missing else SeqObservation(SeqVerdict.NEXT)
        if seq < stream.first:
            return SeqObservation(SeqVerdict.REGRESSION)
        for index, (low, high) in enumerate(stream.gaps):
            if low <= seq <= high:
                self._fill(stream, index, seq)
                return SeqObservation(SeqVerdict.NEXT)
        return SeqObservation(SeqVerdict.DUPLICATE)

    @staticmethod
    def _fill(stream: _Stream, index: int, seq: int) -> None:
        low, high = stream.gaps[index]
        del stream.gaps[index]
        # Re-insert what is left of the gap where it was, keeping order.
        for part in reversed([(low, seq - 1), (seq + 1, high)]):
            if part[0] <= part[1]:
                stream.gaps.insert(index, part)

"""Fuzzing the contract parser: validate_message and decode_payload never raise, and what they accept is sound.

Three kinds of input: anything at all (topics and bytes), payloads built from
the contract and then damaged (a field dropped, added, of the wrong type, an
extreme value, the bytes cut or spliced), and valid ones. Whatever is accepted
must encode to line protocol that a strict parser reads back, with the topic's
ids as tags, the message's seq, and each metric with the type its profile declares.
"""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from pilot_core.contract import Channel, PayloadError, decode_payload, topic_for
from pilot_core.profiles import MetricType, ProfileCatalog, parse_profile
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import Accepted, ClockCheck, Rejection, RejectReason, validate_message
from tests.strategies import free_text, ids, timestamps
from tests.strict_line_protocol import parse_line

PROFILE = parse_profile(
    """
id: fuzz_press
version: "1.2.0"
name: Fuzz press
metrics:
  - {name: temperature_c, unit: "°C", type: float, min: -40, max: 200, interval_s: 1}
  - {name: pressure, unit: bar, type: float, interval_s: 1}
  - {name: strokes, unit: "1", type: int, min: 0, interval_s: 1}
  - {name: offset, unit: "1", type: int, interval_s: 1}
  - {name: door_open, unit: "1", type: bool, interval_s: 1}
states:
  - {name: running, time_class: production}
  - {name: fault, time_class: unplanned_delay}
production: {mode: cycle, unit: part}
""",
    "fuzz_press.yaml",
)
DEVICES = [("판교 site,=1", r"line\1 'A'", 'press "1"'), ("시화", "조립 1라인", "프레스-02"), ("s", "l", "d=1 ,x")]
REGISTRY = DeviceRegistry(
    [DeviceEntry(site=s, line=li, device=d, profile=PROFILE.id) for s, li, d in DEVICES], ProfileCatalog([PROFILE])
)
MEASUREMENTS = {
    Channel.TELEMETRY: PROFILE.measurement,
    Channel.STATE: "state",
    Channel.PRODUCTION: "production",
    Channel.STATUS: "status",
}
MAX_PAYLOAD_BYTES = 64 * 1024
EXTREMES: list[Any] = [
    None, True, False, 0, -1, 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400,
    0.5, -0.0, 1e-320, 1.7976931348623157e308, float("nan"), float("inf"), float("-inf"),
    "", "x", "0", "1", "true", "null", "\u0000", "a\nb", "\t", "é", "🏭", "x" * 300, "2026-11-02T09:00:00",
    "2026-11-02T09:00:00+09:00", "2026-13-45T99:00:00Z", [], [1], {}, {"a": 1}, [[[[]]]],
]  # fmt: skip
CLOCKS = st.one_of(
    st.none(),
    st.builds(
        ClockCheck,
        now_ms=timestamps,
        max_ahead_ms=st.one_of(st.none(), st.integers(0, 10**10)),
        max_age_ms=st.one_of(st.none(), st.integers(0, 10**12)),
    ),
)


def check(topic: str, payload: bytes, clock: ClockCheck | None) -> Accepted | Rejection:
    result = validate_message(topic, payload, REGISTRY, MAX_PAYLOAD_BYTES, clock)
    event(result.reason.value if isinstance(result, Rejection) else "accepted")  # --hypothesis-show-statistics
    if isinstance(result, Rejection):
        assert isinstance(result.reason, RejectReason)
        assert result.detail.strip()
        assert result.reason is not RejectReason.INTERNAL_ERROR  # that one only the processor's safety net gives
        return result
    assert isinstance(result, Accepted)
    assert result.lines
    return result


def assert_sound(accepted: Accepted, body: Any, clock: ClockCheck | None) -> None:
    """What was accepted is what was sent, in line protocol a strict parser reads back."""
    topic = accepted.topic
    records = body.get("batch", [body])
    assert accepted.seq == body["seq"]
    assert len(accepted.lines) == len(records)
    for line, record in zip(accepted.lines, records, strict=True):
        point = parse_line(line)
        assert point.measurement == MEASUREMENTS[topic.channel]
        assert {k: point.tags[k] for k in ("site", "line", "device")} == {
            "site": topic.site,
            "line": topic.line,
            "device": topic.device,
        }
        assert point.fields["seq"] == body["seq"]
        assert 10**12 <= point.timestamp <= 4_102_444_800_000
        if clock is not None and clock.max_ahead_ms is not None:
            assert point.timestamp - clock.now_ms <= clock.max_ahead_ms
        if clock is not None and clock.max_age_ms is not None:
            assert clock.now_ms - point.timestamp <= clock.max_age_ms
        if topic.channel is Channel.TELEMETRY:
            for name, value in record["metrics"].items():
                metric = PROFILE.metric(name)
                assert metric is not None
                stored = point.fields[name]
                expected_type = {MetricType.FLOAT: float, MetricType.INT: int, MetricType.BOOL: bool}[metric.type]
                # A float metric stores an integer as the nearest float: the declared type decides.
                assert type(stored) is expected_type and stored == expected_type(value)
                assert not (isinstance(stored, float) and not math.isfinite(stored))


# --- anything at all -----------------------------------------------------------


topics = st.one_of(
    st.text(max_size=80),
    st.lists(st.text(max_size=12), min_size=4, max_size=5).map(lambda levels: "pilot/v1/" + "/".join(levels)),
    st.tuples(st.sampled_from(DEVICES), st.text(max_size=12)).map(lambda d: "pilot/v1/" + "/".join([*d[0], d[1]])),
)


@given(topic=topics, payload=st.binary(max_size=300), clock=CLOCKS)
def test_arbitrary_topics_and_bytes_never_raise(topic: str, payload: bytes, clock: ClockCheck | None) -> None:
    check(topic, payload, clock)


@given(
    device=st.sampled_from(DEVICES),
    channel=st.sampled_from(Channel),
    payload=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))),
)
def test_arbitrary_bytes_on_a_registered_device_never_raise(
    device: tuple[str, str, str], channel: Channel, payload: bytes
) -> None:
    check(topic_for(*device, channel), payload, None)


@given(channel=st.sampled_from(Channel), payload=st.one_of(st.binary(max_size=300), st.text(max_size=200)))
def test_decode_payload_raises_only_its_two_documented_errors(channel: Channel, payload: bytes | str) -> None:
    with contextlib.suppress(PayloadError, ValidationError):
        decode_payload(channel, payload)


# --- payloads built from the contract --------------------------------------------

metric_values = {
    MetricType.FLOAT: st.one_of(st.floats(-40, 200), st.integers(-40, 200)),
    MetricType.INT: st.integers(0, 2**63 - 1),
    MetricType.BOOL: st.booleans(),
}
# Of the right JSON type, but as large, small or odd as JSON allows.
_SPECIAL_NUMBERS = st.sampled_from(
    [2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**308, 10**400, math.inf, -math.inf, math.nan, 1.7976931348623157e308]
)
extreme_numbers = st.one_of(_SPECIAL_NUMBERS, _SPECIAL_NUMBERS, st.floats(), st.integers())  # specials twice as often
extreme_counts = st.one_of(st.integers(0, 2**64), st.sampled_from([2**63 - 1, 2**63, 2**64, 10**400]))
# In an extreme message one number is extreme and the rest valid, so that each extreme reaches the encoder.
WILD_FIELDS = {
    Channel.TELEMETRY: ["seq", "ts", "metric", "metric"],
    Channel.STATE: ["seq", "ts"],
    Channel.PRODUCTION: ["seq", "ts", "counts", "cycle_time_s"],
    Channel.STATUS: ["seq", "ts"],
}


def _rfc3339(ms: int, offset_min: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(timezone(timedelta(minutes=offset_min)))
    return moment.isoformat(timespec="milliseconds")


rfc3339 = st.builds(_rfc3339, timestamps, st.sampled_from([0, 540, -300, 330, 765]))


@st.composite
def records(draw: st.DrawFn, channel: Channel, wild: str | None = None) -> dict[str, Any]:
    """A valid record of the channel, but for its ``wild`` number, which is any size JSON can write."""
    record: dict[str, Any] = {"ts": draw(extreme_numbers if wild == "ts" else st.one_of(timestamps, rfc3339))}
    if channel is Channel.TELEMETRY:
        chosen = draw(st.lists(st.sampled_from(PROFILE.metrics), min_size=1, max_size=5, unique_by=lambda m: m.name))
        record["metrics"] = {m.name: draw(metric_values[m.type]) for m in chosen}
        if wild == "metric":
            record["metrics"][draw(st.sampled_from([m.name for m in chosen]))] = draw(extreme_numbers)
    elif channel is Channel.STATE:
        record["state"] = draw(st.sampled_from(["running", "fault"]))
        if draw(st.booleans()):
            record["reason"] = draw(free_text.filter(lambda t: len(t) <= 256))
    elif channel is Channel.PRODUCTION:
        good, scrap, rework = (draw(st.integers(0, 10**6)) for _ in range(3))
        if wild == "counts":
            good = draw(extreme_counts)
        record.update(product=draw(ids), produced=good + scrap + rework, good=good, scrap=scrap, rework=rework)
        cycle_time = extreme_numbers if wild == "cycle_time_s" else st.floats(min_value=1e-3, max_value=1e6)
        record["cycle_time_s"] = draw(cycle_time)
    else:
        record["status"] = draw(st.sampled_from(["online", "offline"]))
        record["agent_version"] = draw(free_text.filter(lambda t: len(t) <= 64))
        record["profile"] = PROFILE.id
        record["profile_version"] = PROFILE.version
    return record


@st.composite
def messages(draw: st.DrawFn, extreme: bool = False) -> tuple[str, dict[str, Any]]:
    """A valid message; ``extreme`` makes one number in it any size JSON can write."""
    site, line, device = draw(st.sampled_from(DEVICES))
    channel = draw(st.sampled_from(Channel))
    wild = draw(st.sampled_from(WILD_FIELDS[channel])) if extreme else None
    body: dict[str, Any] = {"seq": draw(extreme_numbers if wild == "seq" else st.integers(0, 2**63 - 1))}
    if draw(st.booleans()):
        body["device"] = device
    if draw(st.booleans()):
        size = draw(st.integers(1, 4))
        at = draw(st.integers(0, size - 1))
        body["batch"] = [draw(records(channel, wild if index == at else None)) for index in range(size)]
    else:
        body.update(draw(records(channel, wild)))
    return topic_for(site, line, device, channel), body


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document where a value sits."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _objects(value: Any) -> list[dict[str, Any]]:
    """Every JSON object in a document, the document first."""
    if isinstance(value, dict):
        return [value, *(found for item in value.values() for found in _objects(item))]
    if isinstance(value, list):
        return [found for item in value for found in _objects(item)]
    return []


def _container(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        body = body[step]
    return body


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, Any, bytes]:
    """A message from the contract, damaged one way or another; returns (topic, document or None, payload)."""
    topic, body = draw(messages(extreme=draw(st.booleans())))
    document: Any = json.loads(json.dumps(body))
    kind = draw(st.sampled_from(["none", "replace", "drop", "add", "wrap", "device", "bytes"]))
    paths = _paths(document)
    if kind == "replace":
        path = draw(st.sampled_from(paths))
        _container(document, path)[path[-1]] = draw(st.sampled_from(EXTREMES) | free_text | st.integers())
    elif kind == "drop":
        path = draw(st.sampled_from(paths))
        del _container(document, path)[path[-1]]
    elif kind == "add":
        target = draw(st.sampled_from(_objects(document)))
        target[draw(st.sampled_from(["extra", "seq", "batch", "ts", "device", "metrics", "strokes"]))] = draw(
            st.sampled_from(EXTREMES)
        )
    elif kind == "wrap":
        document = draw(st.sampled_from([[document], {"batch": document}, {"seq": 1, "batch": [document] * 3}]))
    elif kind == "device":
        document["device"] = draw(ids | st.sampled_from(EXTREMES))
    payload = json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8")
    if kind == "bytes":
        document = None
        cut = draw(st.integers(0, len(payload)))
        payload = draw(
            st.sampled_from(
                [
                    payload[:cut],
                    payload[:cut] + draw(st.binary(min_size=1, max_size=8)) + payload[cut:],
                    payload[:cut] + payload[cut + 1 :],
                    b"\xef\xbb\xbf" + payload,
                    payload.replace(b'{"seq": ', b'{"seq": 0, "seq": ', 1),
                    payload.replace(b'"', b"'"),
                ]
            )
        )
    return topic, document, payload


@given(message=messages(), clock=CLOCKS)
def test_valid_messages_are_accepted_and_stored_as_sent(
    message: tuple[str, dict[str, Any]], clock: ClockCheck | None
) -> None:
    topic, body = message
    result = check(topic, json.dumps(body).encode("utf-8"), clock)
    if isinstance(result, Rejection):
        # Only the clock may refuse a message built from the contract.
        assert clock is not None and result.reason in (RejectReason.FUTURE_TIMESTAMP, RejectReason.STALE_TIMESTAMP)
        return
    assert_sound(result, body, clock)


# Each of these once raised out of validate_message, which failed its whole batch.
_CYCLE = {"seq": 1, "ts": 10**12, "product": "p", "produced": 1, "good": 1, "cycle_time_s": 1.0}
REGRESSIONS = [
    (topic_for(*DEVICES[0], "telemetry"), {"seq": 1, "ts": 10**12, "metrics": {"pressure": 10**400}}),
    (topic_for(*DEVICES[1], "production"), {**_CYCLE, "produced": 2**63, "good": 2**63}),
    (topic_for(*DEVICES[2], "production"), {**_CYCLE, "cycle_time_s": math.inf}),
]


@given(message=messages(extreme=True), clock=CLOCKS)
@example(message=REGRESSIONS[0], clock=None)
@example(message=REGRESSIONS[1], clock=None)
@example(message=REGRESSIONS[2], clock=None)
def test_extreme_values_never_raise_and_what_is_accepted_is_sound(
    message: tuple[str, dict[str, Any]], clock: ClockCheck | None
) -> None:
    topic, body = message
    result = check(topic, json.dumps(body).encode("utf-8"), clock)
    if isinstance(result, Accepted):
        assert_sound(result, body, clock)


@given(message=damaged(), clock=CLOCKS)
def test_damaged_messages_never_raise_and_what_is_accepted_is_sound(
    message: tuple[str, Any, bytes], clock: ClockCheck | None
) -> None:
    topic, document, payload = message
    result = check(topic, payload, clock)
    if isinstance(result, Accepted):
        if document is None:  # bytes were damaged: read back what the collector read
            document = json.loads(payload)
        assert_sound(result, document, clock)

"""Hostile and careless payloads, one by one, through validation: each gets its own clear reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilot_core.contract import MAX_BATCH_RECORDS, Channel, PayloadError, decode_payload, topic_for
from pilot_core.profiles import ProfileCatalog, parse_profile
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import Accepted, ClockCheck, Rejection, RejectReason, validate_message

PROFILE = """
id: test_press
version: "1.0.0"
name: Test press
metrics:
  - {name: temperature_c, unit: "°C", type: float, min: -40, max: 200, interval_s: 1}
  - {name: strokes, unit: "1", type: int, min: 0, interval_s: 1}
  - {name: door_open, unit: "1", type: bool, interval_s: 1}
states:
  - {name: running, time_class: production}
production: {mode: cycle, unit: part}
"""
TS = 1_793_577_600_000  # 2026-11-02T00:00:00Z
SITE, LINE, DEVICE = "판교", "조립 1", "press-01"
REGISTRY = DeviceRegistry(
    [DeviceEntry(site=SITE, line=LINE, device=DEVICE, profile="test_press")],
    ProfileCatalog([parse_profile(PROFILE, "test_press.yaml")]),
)
TELEMETRY = topic_for(SITE, LINE, DEVICE, "telemetry")
STATE = topic_for(SITE, LINE, DEVICE, "state")
PRODUCTION = topic_for(SITE, LINE, DEVICE, "production")
STATUS = topic_for(SITE, LINE, DEVICE, "status")
ROOT = Path(__file__).resolve().parents[2]


def refusal(topic: str, payload: bytes, clock: ClockCheck | None = None) -> Rejection:
    result = validate_message(topic, payload, REGISTRY, 2 * 1024 * 1024, clock)
    assert isinstance(result, Rejection), result
    assert result.detail
    return result


def accepted(topic: str, payload: bytes, clock: ClockCheck | None = None) -> Accepted:
    result = validate_message(topic, payload, REGISTRY, 2 * 1024 * 1024, clock)
    assert isinstance(result, Accepted), result
    return result


def cycle(**fields: object) -> bytes:
    body = {"seq": 1, "ts": TS, "product": "A", "produced": 1, "good": 1, "cycle_time_s": 2.5, **fields}
    return json.dumps(body).encode()


HOSTILE = [
    ("deep array", TELEMETRY, b"[" * 50_000, RejectReason.MALFORMED_JSON, "nested too deeply"),
    (
        "deep inside a valid start",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"strokes": ' % TS + b"[" * 20_000,
        RejectReason.MALFORMED_JSON,
        "nested too deeply",
    ),
    ("empty", TELEMETRY, b"", RejectReason.MALFORMED_JSON, "payload is empty"),
    ("blank", TELEMETRY, b" \n\t", RejectReason.MALFORMED_JSON, "payload is empty"),
    (
        "byte order mark",
        TELEMETRY,
        b'\xef\xbb\xbf{"seq": 1, "ts": %d, "metrics": {"strokes": 1}}' % TS,
        RejectReason.MALFORMED_JSON,
        "byte order mark",
    ),
    (
        "invalid UTF-8",
        STATE,
        b'{"seq": 1, "ts": %d, "state": "runn\xffing"}' % TS,
        RejectReason.MALFORMED_JSON,
        "not valid UTF-8: byte 0xFF at offset",
    ),
    (
        "overlong UTF-8",
        STATE,
        b'{"seq": 1, "ts": %d, "state": "\xc0\xafrunning"}' % TS,
        RejectReason.MALFORMED_JSON,
        "not valid UTF-8",
    ),
    (
        "lone surrogate in a string",
        STATE,
        b'{"seq": 1, "ts": %d, "state": "running", "reason": "\\ud800"}' % TS,
        RejectReason.MALFORMED_JSON,
        "surrogate pair",
    ),
    (
        "lone surrogate in a metric name",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"\\udc00x": 1}}' % TS,
        RejectReason.MALFORMED_JSON,
        "surrogate",
    ),
    (
        "raw NUL inside a string",
        STATE,
        b'{"seq": 1, "ts": %d, "state": "run\x00ning"}' % TS,
        RejectReason.MALFORMED_JSON,
        "control character",
    ),
    (
        "escaped NUL in a reason",
        STATE,
        b'{"seq": 1, "ts": %d, "state": "running", "reason": "E\\u0000301"}' % TS,
        RejectReason.SCHEMA,
        "U+0000",
    ),
    (
        "tab in an agent version",
        STATUS,
        b'{"seq": 1, "ts": %d, "status": "online", "agent_version": "1.0\\t"}' % TS,
        RejectReason.SCHEMA,
        "U+0009",
    ),
    (
        "escaped NUL in a metric name",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"strokes\\u0000": 1}}' % TS,
        RejectReason.UNKNOWN_METRIC,
        "strokes\\x00",
    ),
    (
        "duplicate top-level key",
        TELEMETRY,
        b'{"seq": 1, "seq": 2, "ts": %d, "metrics": {"strokes": 1}}' % TS,
        RejectReason.DUPLICATE_KEY,
        'duplicate key "seq"',
    ),
    (
        "duplicate metric",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"strokes": 1, "strokes": 9}}' % TS,
        RejectReason.DUPLICATE_KEY,
        'duplicate key "strokes"',
    ),
    (
        "duplicate key inside a batch record",
        TELEMETRY,
        b'{"seq": 1, "batch": [{"ts": %d, "ts": %d, "metrics": {"strokes": 1}}]}' % (TS, TS + 1),
        RejectReason.DUPLICATE_KEY,
        'duplicate key "ts"',
    ),
    (
        "1e400 metric",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"temperature_c": 1e400}}' % TS,
        RejectReason.NON_FINITE,
        "temperature_c",
    ),
    (
        "NaN metric",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"temperature_c": NaN}}' % TS,
        RejectReason.NON_FINITE,
        "temperature_c",
    ),
    (
        "-Infinity metric",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"temperature_c": -Infinity}}' % TS,
        RejectReason.NON_FINITE,
        "temperature_c",
    ),
    ("1e400 cycle time", PRODUCTION, cycle().replace(b"2.5", b"1e400"), RejectReason.NON_FINITE, "cycle_time_s"),
    ("Infinity cycle time", PRODUCTION, cycle().replace(b"2.5", b"Infinity"), RejectReason.NON_FINITE, "cycle_time_s"),
    ("NaN cycle time", PRODUCTION, cycle().replace(b"2.5", b"NaN"), RejectReason.NON_FINITE, "cycle_time_s"),
    ("count beyond int64", PRODUCTION, cycle(produced=2**63, good=2**63), RejectReason.SCHEMA, "produced"),
    (
        "int metric beyond int64",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"strokes": %d}}' % (TS, 2**64),
        RejectReason.OUT_OF_RANGE,
        "64 bits",
    ),
    (
        "float metric of 400 digits",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"temperature_c": %s}}' % (TS, b"9" * 400),
        RejectReason.OUT_OF_RANGE,
        "temperature_c",
    ),
    (
        "seq beyond int64",
        TELEMETRY,
        b'{"seq": %d, "ts": %d, "metrics": {"strokes": 1}}' % (2**63, TS),
        RejectReason.SCHEMA,
        "seq",
    ),
    (
        "ts beyond int64",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"strokes": 1}}' % 2**70,
        RejectReason.BAD_TIMESTAMP,
        "after 2100",
    ),
    (
        "number of 5000 digits",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"strokes": %s}}' % (TS, b"9" * 5000),
        RejectReason.MALFORMED_JSON,
        "number",
    ),
    (
        "fraction of a million digits",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"temperature_c": 0.%s1}}' % (TS, b"0" * 1_000_000),
        RejectReason.MALFORMED_JSON,
        "a number of 1,000,003 characters",
    ),
    (
        "digits on both sides of the point",
        PRODUCTION,
        cycle(cycle_time_s=0).replace(b'"cycle_time_s": 0', b'"cycle_time_s": %s.%s' % (b"1" * 3000, b"1" * 3000)),
        RejectReason.MALFORMED_JSON,
        "at most 4,300 digits",
    ),
    (
        "a number as a string, for a float metric",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"temperature_c": "410"}}' % TS,
        RejectReason.WRONG_TYPE,
        "metrics.temperature_c: metric 'temperature_c' is float: expected a number, got the string '410'",
    ),
    (
        "a string in a batch, for an int metric",
        TELEMETRY,
        b'{"seq": 1, "batch": [{"ts": %d, "metrics": {"strokes": 3}}, {"ts": %d, "metrics": {"strokes": null}}]}'
        % (TS, TS + 1),
        RejectReason.WRONG_TYPE,
        "batch.1.metrics.strokes: metric 'strokes' is int: expected an integer, got null",
    ),
    (
        "a string for a bool metric",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"door_open": "true"}}' % TS,
        RejectReason.WRONG_TYPE,
        "metric 'door_open' is bool: expected true or false, got the string 'true'",
    ),
    (
        "an object for a metric the profile does not have",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"power": {"kw": 4}}}' % TS,
        RejectReason.WRONG_TYPE,
        "metrics.power: expected a number (true or false for a bool metric), got an object",
    ),
    ("null", TELEMETRY, b"null", RejectReason.SCHEMA, "must be a JSON object, not null"),
    ("array", TELEMETRY, b"[1, 2]", RejectReason.SCHEMA, "must be a JSON object, not an array"),
    ("string", TELEMETRY, b'"hello"', RejectReason.SCHEMA, "must be a JSON object, not a string"),
    (
        "trailing bytes",
        TELEMETRY,
        b'{"seq": 1, "ts": %d, "metrics": {"strokes": 1}} {}' % TS,
        RejectReason.MALFORMED_JSON,
        "trailing",
    ),
    (
        "one record too many",
        TELEMETRY,
        json.dumps(
            {"seq": 1, "batch": [{"ts": TS + i, "metrics": {"strokes": 1}} for i in range(MAX_BATCH_RECORDS + 1)]}
        ).encode(),
        RejectReason.SCHEMA,
        f"at most {MAX_BATCH_RECORDS}",
    ),
    (
        "another device's id",
        TELEMETRY,
        b'{"seq": 1, "device": "press-02", "ts": %d, "metrics": {"strokes": 1}}' % TS,
        RejectReason.DEVICE_MISMATCH,
        "'press-02'",
    ),
    (
        "another device's id on a batch",
        STATE,
        b'{"seq": 1, "device": "PRESS-01", "batch": [{"ts": %d, "state": "running"}]}' % TS,
        RejectReason.DEVICE_MISMATCH,
        "'press-01'",
    ),
]


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_hostile_payloads_are_refused_with_a_reason_of_their_own(
    topic: str, payload: bytes, reason: RejectReason, detail: str
) -> None:
    rejection = refusal(topic, payload)
    assert rejection.reason is reason
    assert detail in rejection.detail


def test_the_device_field_is_accepted_when_it_names_the_topics_device() -> None:
    single = accepted(TELEMETRY, json.dumps({"seq": 1, "device": DEVICE, "ts": TS, "metrics": {"strokes": 1}}).encode())
    batch = accepted(
        STATE, json.dumps({"seq": 2, "device": DEVICE, "batch": [{"ts": TS, "state": "running"}] * 2}).encode()
    )
    assert len(single.lines) == 1 and len(batch.lines) == 2
    assert "device=press-01" in single.lines[0]
    # A record inside a batch does not carry it.
    inner = json.dumps({"seq": 3, "batch": [{"ts": TS, "device": DEVICE, "state": "running"}]}).encode()
    assert refusal(STATE, inner).reason is RejectReason.SCHEMA


def test_decode_payload_raises_payload_errors_for_bad_json() -> None:
    with pytest.raises(PayloadError) as duplicate:
        decode_payload(Channel.TELEMETRY, b'{"seq": 1, "seq": 1}')
    assert duplicate.value.duplicate_key
    with pytest.raises(PayloadError) as surrogate:
        decode_payload(Channel.TELEMETRY, '{"seq": 1, "x": "\ud800"}')
    assert not surrogate.value.duplicate_key
    assert "not valid Unicode" in surrogate.value.detail


class TestClock:
    CLOCK = ClockCheck(now_ms=TS, max_ahead_ms=600_000, max_age_ms=None)

    def sample(self, ts: int | str) -> bytes:
        return json.dumps({"seq": 1, "ts": ts, "metrics": {"strokes": 1}}).encode()

    def test_local_time_sent_as_utc_in_korea_is_refused_with_the_hint(self) -> None:
        rejection = refusal(TELEMETRY, self.sample("2026-11-02T09:00:00Z"), self.CLOCK)
        assert rejection.reason is RejectReason.FUTURE_TIMESTAMP
        assert "is 9 h ahead of the collector's clock (2026-11-02T00:00:00.000Z)" in rejection.detail
        assert "max_clock_skew_s" in rejection.detail and "9 h ahead in Korea" in rejection.detail
        accepted(TELEMETRY, self.sample("2026-11-02T09:00:00+09:00"), self.CLOCK)

    def test_the_bound_is_inclusive_and_only_what_is_beyond_it_is_refused(self) -> None:
        accepted(TELEMETRY, self.sample(TS + 600_000), self.CLOCK)
        assert refusal(TELEMETRY, self.sample(TS + 600_001), self.CLOCK).reason is RejectReason.FUTURE_TIMESTAMP
        # Any age passes when no age bound is set: backfills are legitimate.
        accepted(TELEMETRY, self.sample(1_000_000_000_000), self.CLOCK)

    def test_an_age_bound_refuses_old_records_and_names_the_record_of_a_batch(self) -> None:
        clock = ClockCheck(now_ms=TS, max_ahead_ms=None, max_age_ms=86_400_000)
        records = [{"ts": TS, "metrics": {"strokes": 1}}, {"ts": TS - 3 * 86_400_000, "metrics": {"strokes": 2}}]
        batch = {"seq": 1, "batch": records}
        rejection = refusal(TELEMETRY, json.dumps(batch).encode(), clock)
        assert rejection.reason is RejectReason.STALE_TIMESTAMP
        assert rejection.detail.startswith("batch.1: ts 2026-10-30T00:00:00.000Z is 3 d behind")
        assert "max_record_age_s" in rejection.detail
        accepted(TELEMETRY, self.sample(TS + 3 * 86_400_000), clock)  # no bound ahead


def test_contract_doc_lists_every_reject_reason() -> None:
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    table = text[text.index("### Reject reasons") :]
    for reason in RejectReason:
        assert f"| `{reason.value}` |" in table, reason.value

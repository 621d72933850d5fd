"""The pure core: contract, ids, line protocol, InfluxQL quoting, seq accounting, profiles."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pilot_core.contract import (
    Channel,
    TopicError,
    decode_payload,
    json_schema,
    parse_timestamp,
    parse_topic,
    topic_for,
)
from pilot_core.ids import InvalidIdError, check_id
from pilot_core.influxql import quote_identifier, quote_literal
from pilot_core.line_protocol import LineProtocolError, encode_point, format_field_value
from pilot_core.profiles import ProfileErrors, parse_profile
from pilot_core.validation import SeqTracker, SeqVerdict


class TestTimestamps:
    def test_rfc3339_with_offset_and_epoch_ms_agree(self) -> None:
        assert parse_timestamp("2026-11-02T09:00:00.250+09:00") == parse_timestamp("2026-11-02T00:00:00.250Z")
        assert parse_timestamp(1_793_577_600_250) == 1_793_577_600_250

    def test_sub_millisecond_digits_are_truncated_exactly(self) -> None:
        assert parse_timestamp("2026-11-02T00:00:00.250999Z") == parse_timestamp("2026-11-02T00:00:00.250Z")

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("2026-11-02T09:00:00", "no UTC offset"),
            ("yesterday", "not an RFC 3339"),
            (1_700_000_000, "seconds"),
            (1_700_000_000_000_000, "micro- or nanoseconds"),
            (True, "boolean"),
            (1.5e12, "RFC 3339 string or integer"),
        ],
    )
    def test_bad_timestamps_say_what_is_wrong(self, value: object, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_timestamp(value)


class TestTopics:
    def test_round_trip_with_unicode_ids(self) -> None:
        topic = parse_topic(topic_for("시화", "조립 1라인", "cobot,01", Channel.STATE))
        assert (topic.site, topic.line, topic.device, topic.channel) == (
            "시화",
            "조립 1라인",
            "cobot,01",
            Channel.STATE,
        )

    @pytest.mark.parametrize(
        "name",
        [
            "pilot/v1/a/b/c",
            "pilot/v2/a/b/c/telemetry",
            "pilot/v1/a/b/c/video",
            "pilot/v1//b/c/telemetry",
            "x/v1/a/b/c/state",
        ],
    )
    def test_bad_topics(self, name: str) -> None:
        with pytest.raises(TopicError):
            parse_topic(name)

    @pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#", "new\nline", "tab\there", "ends\\", "$SYS", "x" * 129])
    def test_unusable_ids(self, bad: str) -> None:
        with pytest.raises(InvalidIdError):
            check_id(bad)


class TestPayloads:
    def test_single_and_batch(self) -> None:
        single = decode_payload(Channel.TELEMETRY, b'{"seq": 4, "ts": 1793577600000, "metrics": {"a": 1}}')
        batch = decode_payload(
            Channel.TELEMETRY,
            json.dumps({"seq": 5, "batch": [{"ts": 1793577600000, "metrics": {"a": 1}}] * 3}).encode(),
        )
        assert single.seq == 4 and len(single.records) == 1
        assert batch.seq == 5 and len(batch.records) == 3

    def test_the_word_batch_as_a_value_is_still_a_single_record(self) -> None:
        payload = b'{"seq": 2, "ts": 1793577600000, "state": "setup", "reason": "batch"}'
        assert decode_payload(Channel.STATE, payload).records[0].reason == "batch"
        with pytest.raises(ValidationError, match="batch"):
            decode_payload(Channel.STATE, b'{"seq": 2, "batch": []}')

    def test_unknown_fields_are_refused(self) -> None:
        with pytest.raises(ValidationError, match="Extra inputs"):
            decode_payload(Channel.STATE, b'{"seq": 1, "ts": 1793577600000, "state": "run", "colour": "red"}')

    def test_production_counts_must_add_up(self) -> None:
        payload = b'{"seq": 1, "ts": 1793577600000, "product": "A", "produced": 3, "good": 1, "scrap": 1}'
        with pytest.raises(ValidationError, match="must equal produced"):
            decode_payload(Channel.PRODUCTION, payload)

    def test_json_schema_covers_every_channel(self) -> None:
        schema = json_schema()
        assert set(schema["channels"]) == {c.value for c in Channel}
        assert "TelemetryRecord" in schema["$defs"]


class TestLineProtocol:
    def test_escaping(self) -> None:
        line = encode_point("m s", [("b", "x y"), ("a", "1,2=3")], [("f k", 'say "hi" \\ ok'), ("n", 3)], 5)
        assert line == 'm\\ s,a=1\\,2\\=3,b=x\\ y f\\ k="say \\"hi\\" \\\\ ok",n=3i 5'

    def test_types_are_never_inferred(self) -> None:
        assert format_field_value(3) == "3i"
        assert format_field_value(3.0) == "3.0"
        assert format_field_value(True) == "t"
        assert format_field_value(1e20) == "1e+20"

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**63, "two\nlines"])
    def test_unrepresentable_values_are_refused(self, value: object) -> None:
        with pytest.raises(LineProtocolError):
            format_field_value(value)  # type: ignore[arg-type]

    def test_empty_tags_and_no_fields_are_refused(self) -> None:
        with pytest.raises(LineProtocolError, match="empty"):
            encode_point("m", [("t", "")], [("f", 1)], 1)
        with pytest.raises(LineProtocolError, match="at least one field"):
            encode_point("m", [], [], 1)


def test_influxql_quoting() -> None:
    assert quote_literal("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert quote_identifier('my "db"') == '"my \\"db\\""'
    with pytest.raises(ValueError):
        quote_literal("a\nb")


class TestSeqTracker:
    def test_gaps_duplicates_late_arrivals_and_regressions(self) -> None:
        topic = parse_topic("pilot/v1/s/l/d/telemetry")
        tracker = SeqTracker()
        verdicts = [(s, tracker.observe(topic, s)) for s in [5, 6, 9, 7, 7, 6, 4, 10]]
        assert [(s, o.verdict) for s, o in verdicts] == [
            (5, SeqVerdict.NEXT),
            (6, SeqVerdict.NEXT),
            (9, SeqVerdict.GAP),
            (7, SeqVerdict.NEXT),  # late, fills part of the gap
            (7, SeqVerdict.DUPLICATE),
            (6, SeqVerdict.DUPLICATE),
            (4, SeqVerdict.REGRESSION),
            (10, SeqVerdict.NEXT),
        ]
        assert verdicts[2][1].missing == 2

    def test_channels_are_separate_streams(self) -> None:
        tracker = SeqTracker()
        assert tracker.observe(parse_topic("pilot/v1/s/l/d/telemetry"), 10).verdict is SeqVerdict.NEXT
        assert tracker.observe(parse_topic("pilot/v1/s/l/d/state"), 0).verdict is SeqVerdict.NEXT


class TestProfiles:
    def test_errors_name_the_line(self) -> None:
        text = """id: broken
version: "1.0.0"
name: Broken
metrics:
  - name: ok_metric
    unit: "1"
    interval_s: 1
  - name: Bad-Name
    unit: "1"
    interval_s: 1
states:
  - {name: running, time_class: producing}
"""
        with pytest.raises(ProfileErrors) as raised:
            parse_profile(text, "broken.yaml")
        messages = [str(e) for e in raised.value.errors]
        assert any(m.startswith("broken.yaml:8: metrics.1.name") for m in messages), messages
        assert any(m.startswith("broken.yaml:12: states.0.time_class") for m in messages), messages

    def test_yaml_syntax_errors_name_the_line(self) -> None:
        with pytest.raises(Exception, match=r"bad.yaml:2: not valid YAML"):
            parse_profile("id: x\n  version: [1\n", "bad.yaml")

    @pytest.mark.parametrize("name", ["site", "device", "seq", "product"])
    def test_metric_names_may_not_clash_with_tags(self, name: str) -> None:
        text = f'id: p1\nversion: "1.0.0"\nname: P\nmetrics:\n  - {{name: {name}, unit: "1", interval_s: 1}}\n'
        with pytest.raises(ProfileErrors, match="reserved"):
            parse_profile(text, "p.yaml")

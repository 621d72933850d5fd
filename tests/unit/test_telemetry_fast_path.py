"""The telemetry fast path encodes and refuses exactly as the general checks and encoder do."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from pilot_core.line_protocol import LineProtocolError, encode_point
from pilot_core.profiles import MetricType, metric_value_problem
from pilot_core.validation import Accepted, Rejection, validate_message
from tests.unit.test_hostile_payloads import DEVICE, LINE, REGISTRY, SITE, TELEMETRY, TS

PROFILE = REGISTRY.catalog.get("test_press")
assert PROFILE is not None
METRICS = {m.name: m for m in PROFILE.metrics}
MEASUREMENT = PROFILE.measurement

values = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 200, 200.0, 200.0000001, -40, -40.5, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63)]),
)


def reference(metrics: dict[str, Any]) -> str | tuple[str, str]:
    """What the general path makes of these metrics: a line, or (reason, detail) for the first misfit."""
    fields: list[tuple[str, Any]] = []
    for name, value in metrics.items():
        metric = METRICS[name]
        problem = metric_value_problem(metric, value)
        if problem is not None:
            return problem
        stored = value
        if metric.type is MetricType.FLOAT:
            try:
                stored = float(value)
            except OverflowError:
                return ("out_of_range", "")
        fields.append((name, stored))
    fields.append(("seq", 7))
    tags = (("device", DEVICE), ("line", LINE), ("site", SITE))
    try:
        return encode_point(MEASUREMENT, tags, fields, TS)
    except LineProtocolError as exc:
        return ("line_protocol", str(exc))


@given(st.dictionaries(st.sampled_from(sorted(METRICS)), values, min_size=1))
@example({"temperature_c": 2**53 + 1})
@example({"strokes": 2**63})
@example({"temperature_c": True, "strokes": 1.5})
@example({"door_open": 1})
def test_the_fast_path_agrees_with_the_general_checks(metrics: dict[str, Any]) -> None:
    payload = json.dumps({"seq": 7, "ts": TS, "metrics": metrics}).encode()
    result = validate_message(TELEMETRY, payload, REGISTRY, 1024 * 1024)
    expected = reference(metrics)
    if isinstance(expected, str):
        assert isinstance(result, Accepted), result
        assert result.lines == [expected]
    else:
        assert isinstance(result, Rejection), (metrics, result)
        assert result.reason.value == expected[0] or expected[0] == "line_protocol"
        if expected[1] and expected[0] != "line_protocol":
            assert result.detail == expected[1]


def test_non_finite_values_are_refused_by_name() -> None:
    # JSON has no NaN or infinity, but a lenient agent may send them, or an exponent past a float's range.
    for text, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf")):
        payload = f'{{"seq": 1, "ts": {TS}, "metrics": {{"temperature_c": {text}}}}}'.encode()
        result = validate_message(TELEMETRY, payload, REGISTRY, 1024 * 1024)
        assert isinstance(result, Rejection) and result.reason.value == "non_finite"
        assert result.detail == f"metric 'temperature_c' is {shown}; only finite numbers are stored"


@given(
    st.sampled_from(["temperature_c", "strokes"]),
    st.integers(min_value=1, max_value=6000),
    st.integers(min_value=0, max_value=6000),
)
@example("temperature_c", 1, 1_000_000)  # 0.000…1 of a million digits was stored as 0
@example("temperature_c", 4300, 0)
@example("strokes", 4301, 0)
@example("temperature_c", 2150, 2150)
@example("temperature_c", 2150, 2151)
def test_a_number_of_more_than_4300_digits_is_malformed_whatever_its_form(
    metric: str, whole_digits: int, fraction_digits: int
) -> None:
    """An integer or a fraction: beyond 4,300 digits the payload is malformed, on the fast path and off it."""
    literal = "0" if whole_digits == 1 else "1" + "0" * (whole_digits - 1)
    if fraction_digits:
        literal += "." + "0" * (fraction_digits - 1) + "1"
    payload = f'{{"seq": 1, "ts": {TS}, "metrics": {{"{metric}": {literal}}}}}'.encode()
    result = validate_message(TELEMETRY, payload, REGISTRY, 4 * 1024 * 1024)
    too_long = whole_digits + fraction_digits > 4300
    assert (isinstance(result, Rejection) and result.reason.value == "malformed_json") == too_long, result

"""Round trip of the line-protocol encoder against a strict parser written from InfluxDB's documented rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pilot_core.line_protocol import encode_point, escape_field_key, escape_key, escape_measurement
from tests.strategies import PointSpec, ids, names, points
from tests.strict_line_protocol import LineSyntaxError, parse_line


def same_value(a: object, b: object) -> bool:
    """Equal and of the same type: 1, 1.0 and True are three different field values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def assert_round_trip(spec: PointSpec) -> None:
    line = encode_point(spec.measurement, spec.tags.items(), spec.fields.items(), spec.timestamp)
    parsed = parse_line(line)
    assert parsed.measurement == spec.measurement
    assert parsed.tags == spec.tags
    assert parsed.fields.keys() == spec.fields.keys()
    for key, value in spec.fields.items():
        assert same_value(parsed.fields[key], value), (key, value, parsed.fields[key])
    assert parsed.timestamp == spec.timestamp


@given(points())
@example(PointSpec("m", {"k": "a\\,b"}, {"f": 'say "hi" \\'}, 10**12))
@example(PointSpec("m\\ x", {"k\\x": "\\\\=\\ x"}, {"a b,c=d": -0.0}, 10**12))
@example(PointSpec("조립,라인 = 1", {"판교 site,=1": "line\\1 'A'"}, {"x": 2**63 - 1, "y": -(2**63)}, 10**12))
def test_every_point_of_contract_text_encodes_to_a_line_that_parses_back_equal(spec: PointSpec) -> None:
    assert_round_trip(spec)


@given(points(keys=names))
def test_points_as_the_profiles_name_them_round_trip(spec: PointSpec) -> None:
    assert_round_trip(spec)


@given(st.lists(st.tuples(ids, ids), min_size=2, max_size=6, unique_by=lambda kv: kv[0]))
def test_tags_come_out_sorted_whatever_order_they_go_in(tags: list[tuple[str, str]]) -> None:
    line = encode_point("m", tags, [("f", 1)], 10**12)
    assert list(parse_line(line).tags) == sorted(key for key, _ in tags)
    assert line == encode_point("m", reversed(tags), [("f", 1)], 10**12)


@given(ids)
def test_escaping_is_undone_exactly(text: str) -> None:
    line = f"{escape_measurement(text)},{escape_key(text)}={escape_key(text)} {escape_field_key(text)}=1i 0"
    point = parse_line(line)
    assert (point.measurement, point.tags, point.fields) == (text, {text: text}, {text: 1})


@pytest.mark.parametrize(
    "line",
    [
        "m f=1u 0",  # unsigned integers: InfluxDB 1.x has none
        "m,t=a=b f=1i 0",  # an unescaped '=' in a tag value
        "m,b=1,a=2 f=1i 0",  # tags not sorted
        'm f="open 0',
        "m f=1i",
        "m f=inf 0",
        "m f=1e400 0",
        "m f=9223372036854775808i 0",
        "m,t= f=1i 0",
        "m  f=1i 0",
        "#m f=1i 0",
    ],
)
def test_the_oracle_is_strict(line: str) -> None:
    with pytest.raises(LineSyntaxError):
        parse_line(line)

"""What Grafana does to a dashboard's InfluxQL before InfluxDB sees it, so that tests can run the same text.

Written from Grafana's InfluxDB datasource: the frontend replaces template
variables, escaping a single value with ``influxRegularEscape`` in panel
queries and with ``escapeStringForRegex`` in variable queries; the backend
(``pkg/tsdb/influxdb/models/query.go``) then replaces ``$timeFilter`` with
``time >= <from>ms and time <= <to>ms``, ``$interval`` and ``$__interval`` with
the interval's text and ``$__interval_ms`` with its milliseconds. The interval
is the time range over the panel's data points, rounded as Grafana rounds it,
and never below the panel's minimum interval.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Grafana's roundInterval: (below this many ms, use this interval).
_ROUNDING = [
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
    (3_628_800_000, 2_592_000_000),
]
_UNITS = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)]
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")  # escapeRegex
_STRING_FOR_REGEX = re.compile(r"([()\[\]{}\\|*+\-.?<>#&^$])")  # escapeStringForRegex
_JS_FLOAT_PREFIX = re.compile(r"\s*[+-]?(Infinity|\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?)", re.IGNORECASE)
MAX_DATA_POINTS = 1000  # about a panel's width in pixels


@dataclass(frozen=True)
class TimeRange:
    start_ms: int
    end_ms: int

    @property
    def time_filter(self) -> str:
        return f"time >= {self.start_ms}ms and time <= {self.end_ms}ms"

    def interval_ms(self, minimum: str | None = None) -> int:
        raw = max(1, (self.end_ms - self.start_ms) // MAX_DATA_POINTS)
        rounded = next((value for limit, value in _ROUNDING if raw < limit), 31_536_000_000)
        return max(rounded, duration_ms(minimum) if minimum else 0)


def duration_ms(text: str) -> int:
    for unit, ms in _UNITS:
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * ms
    raise ValueError(f"not a Grafana interval: {text!r}")


def format_interval(ms: int) -> str:
    """gtime.FormatInterval: the largest whole unit."""
    for unit, size in _UNITS:
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def influx_regular_escape(value: str) -> str:
    """A single value in a panel query: regex-escaped unless JavaScript's parseFloat reads a number from it."""
    return value if _JS_FLOAT_PREFIX.match(value) else _REGEX_SPECIAL.sub(r"\\\g<0>", value)


def escape_string_for_regex(value: str) -> str:
    return _STRING_FOR_REGEX.sub(r"\\\1", value)


def _variables(query: str, values: Mapping[str, str], escape: Callable[[str], str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            return match.group(0)  # not a template variable: Grafana leaves it
        return escape(values[name])

    return _VARIABLE.sub(replace, query)


def panel_query(query: str, values: Mapping[str, str], time_range: TimeRange, min_interval: str | None = None) -> str:
    text = _variables(query, values, influx_regular_escape)
    interval = time_range.interval_ms(min_interval)
    text = text.replace("$timeFilter", time_range.time_filter)
    text = text.replace("$interval", format_interval(interval))
    text = text.replace("$__interval_ms", str(interval))
    return text.replace("$__interval", format_interval(interval))


def variable_query(query: str, values: Mapping[str, str], time_range: TimeRange) -> str:
    return _variables(query, values, escape_string_for_regex).replace("$timeFilter", time_range.time_filter)

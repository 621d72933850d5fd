"""InfluxDB line protocol encoding, for the subset every InfluxDB version accepts.

Types are the caller's decision and never inferred from a value's history:
``int`` is written as a signed integer (``i``), ``float`` always as a float,
``bool`` as ``t``/``f`` and ``str`` as a quoted string. Unsigned (``u``)
integers are never written: InfluxDB 1.x rejects them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

FieldValue = int | float | bool | str

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
# InfluxDB reads \" in a field key (and only there) as a quote, so a quote in a field key is escaped too:
# unescaped, a key holding backslash-quote would be stored without its backslash.
_FIELD_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", '"': r"\""})


class LineProtocolError(ValueError):
    """A point that cannot be encoded faithfully."""


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT_ESCAPES)


@functools.lru_cache(maxsize=4096)
def escape_key(text: str) -> str:
    """Escape a tag key or tag value."""
    return text.translate(_KEY_ESCAPES)


@functools.lru_cache(maxsize=4096)
def escape_field_key(text: str) -> str:
    return text.translate(_FIELD_KEY_ESCAPES)


def escape_string_field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field_value(value: FieldValue) -> str:
    # bool before int: bool is a subclass of int in Python.
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise LineProtocolError(f"integer {value} does not fit in a signed 64-bit field")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"{value} is not a finite number; InfluxDB cannot store it")
        return repr(value)
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            # Newlines are legal inside quoted fields, but some InfluxDB 1.x
            # versions mis-split them; refuse rather than risk a partial write.
            raise LineProtocolError("string field values may not contain newlines")
        return escape_string_field(value)
    raise LineProtocolError(f"unsupported field type {type(value).__name__}")


def encode_point(
    measurement: str,
    tags: Iterable[tuple[str, str]],
    fields: Iterable[tuple[str, FieldValue]],
    timestamp: int,
) -> str:
    """Encode one point. Tags must be non-empty strings; fields must not be empty.

    Tags are written sorted by key, as InfluxDB recommends, so the same point
    always encodes to the same line (a replayed point is byte-identical).
    """
    field_text = ",".join(f"{escape_field_key(k)}={format_field_value(v)}" for k, v in fields)
    if not field_text:
        raise LineProtocolError("a point needs at least one field")
    return f"{series_key(measurement, tuple(tags))} {field_text} {timestamp}"


@functools.lru_cache(maxsize=65536)
def series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """Measurement and sorted tags, escaped. Cached: every point of a series repeats them."""
    parts = [escape_measurement(measurement)]
    for key, value in sorted(tags):
        if not value:
            raise LineProtocolError(f"tag {key!r} is empty; InfluxDB does not store empty tag values")
        parts.append(f"{escape_key(key)}={escape_key(value)}")
    return ",".join(parts)

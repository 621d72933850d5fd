"""A small, strict InfluxDB line protocol parser: the oracle the encoder is tested against.

Written from InfluxDB's documented rules, not from our encoder:

- ``measurement[,tag_key=tag_value...] field_key=field_value[,...] timestamp``
- measurements: ``\\,`` and ``\\ `` are a comma and a space;
- tag keys, tag values and field keys: ``\\,``, ``\\=`` and ``\\ ``; in field keys also ``\\"``
  (InfluxDB 1.6 stores a field key written ``a\\"b`` as ``a"b``, a tag value as ``a\\"b``);
- a backslash before any other character is that backslash itself;
- string field values are double-quoted, with ``\\"`` and ``\\\\`` inside;
- integers end in ``i``; unsigned ``u`` integers are refused (InfluxDB 1.x has
  none); floats are Go ``ParseFloat`` numbers; booleans are
  ``t T true True TRUE f F false False FALSE``; the timestamp is an integer.

Anything else is an error, including what InfluxDB would forgive: an unescaped
``=`` inside a tag value, or a tag set that is not sorted by key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FieldValue = int | float | bool | str

_MEASUREMENT_ESCAPES = frozenset(", ")
_KEY_ESCAPES = frozenset(",= ")
_FIELD_KEY_ESCAPES = frozenset(',= "')
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)i")
_FLOAT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
_TIMESTAMP = re.compile(r"-?(0|[1-9][0-9]*)")
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class LineSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    timestamp: int


def parse_line(line: str) -> Point:
    if "\n" in line or "\r" in line:
        raise LineSyntaxError("a line may not contain a newline")
    if line.startswith("#"):
        raise LineSyntaxError("a line starting with '#' is a comment")
    reader = _Reader(line)
    measurement = reader.token(_MEASUREMENT_ESCAPES, stops=", ")
    if not measurement:
        raise LineSyntaxError("empty measurement")
    tags: dict[str, str] = {}
    while reader.take(","):
        key = reader.token(_KEY_ESCAPES, stops=",= ")
        reader.expect("=")
        value = reader.token(_KEY_ESCAPES, stops=",= ")
        if not key or not value:
            raise LineSyntaxError(f"empty tag key or value at {reader.at}")
        if key in tags:
            raise LineSyntaxError(f"tag {key!r} twice")
        if tags and key < list(tags)[-1]:
            raise LineSyntaxError(f"tags not sorted by key: {key!r} after {list(tags)[-1]!r}")
        tags[key] = value
    reader.expect(" ")
    fields: dict[str, FieldValue] = {}
    while True:
        key = reader.token(_FIELD_KEY_ESCAPES, stops=",= ")
        if not key:
            raise LineSyntaxError(f"empty field key at {reader.at}")
        reader.expect("=")
        if key in fields:
            raise LineSyntaxError(f"field {key!r} twice")
        fields[key] = reader.field_value()
        if not reader.take(","):
            break
    reader.expect(" ")
    timestamp = reader.rest()
    if not _TIMESTAMP.fullmatch(timestamp):
        raise LineSyntaxError(f"timestamp {timestamp!r} is not an integer")
    return Point(measurement, tags, fields, int(timestamp))


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def take(self, char: str) -> bool:
        if self.text.startswith(char, self.at):
            self.at += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.take(char):
            found = self.text[self.at : self.at + 1] or "the end"
            raise LineSyntaxError(f"expected {char!r} at {self.at}, found {found!r}")

    def token(self, escapes: frozenset[str], stops: str) -> str:
        out: list[str] = []
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char == "\\" and self.at + 1 < len(text) and text[self.at + 1] in escapes:
                out.append(text[self.at + 1])
                self.at += 2
                continue
            if char in stops:  # an unescaped '=' inside a tag value stops it too, and the line fails after
                break
            out.append(char)
            self.at += 1
        return "".join(out)

    def field_value(self) -> FieldValue:
        if self.take('"'):
            out: list[str] = []
            text = self.text
            while True:
                if self.at >= len(text):
                    raise LineSyntaxError("unterminated string field")
                char = text[self.at]
                if char == "\\" and self.at + 1 < len(text) and text[self.at + 1] in '"\\':
                    out.append(text[self.at + 1])
                    self.at += 2
                elif char == '"':
                    self.at += 1
                    return "".join(out)
                else:
                    out.append(char)
                    self.at += 1
        start = self.at
        while self.at < len(self.text) and self.text[self.at] not in ", ":
            self.at += 1
        raw = self.text[start : self.at]
        if _INTEGER.fullmatch(raw):
            value = int(raw[:-1])
            if not INT64_MIN <= value <= INT64_MAX:
                raise LineSyntaxError(f"integer {raw} out of signed 64-bit range")
            return value
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        if _FLOAT.fullmatch(raw):
            number = float(raw)
            if number in (float("inf"), float("-inf")):
                raise LineSyntaxError(f"float {raw} out of range")
            return number
        raise LineSyntaxError(f"field value {raw!r} is not an integer, float, boolean or string")

    def rest(self) -> str:
        value = self.text[self.at :]
        self.at = len(self.text)
        return value

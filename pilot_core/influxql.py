"""Quoting for InfluxQL. Every value that reaches a query goes through here."""

from __future__ import annotations


def quote_literal(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    if "\n" in value or "\r" in value:
        raise ValueError("InfluxQL string literals cannot contain newlines")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    """A double-quoted InfluxQL identifier (measurement, tag, field or database)."""
    if "\n" in name or "\r" in name:
        raise ValueError("InfluxQL identifiers cannot contain newlines")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

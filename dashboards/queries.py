"""InfluxQL for dashboard panels, within the subset InfluxDB 1.x, 2.x and 3.x share.

Every query is bounded by Grafana's ``$timeFilter``; time series are
aggregated per ``$__interval``. Tags chosen in a template variable are
matched as regular expressions (``=~ /^$site$/``), the form Grafana escapes
a variable's value for; values fixed when the dashboard is generated are
quoted with ``pilot_core.influxql``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pilot_core.influxql import quote_identifier, quote_literal

TIME_FILTER = "$timeFilter"
PER_INTERVAL = "time($__interval)"


def chosen(tag: str, variable: str | None = None) -> str:
    """The tag equals the value picked in the template variable (named like the tag by default)."""
    return f"{quote_identifier(tag)} =~ /^${variable or tag}$/"


def equals(tag: str, value: str) -> str:
    return f"{quote_identifier(tag)} = {quote_literal(value)}"


def field(name: str) -> str:
    return quote_identifier(name)


def select(
    columns: str,
    measurements: str | Sequence[str],
    conditions: Sequence[str] = (),
    *,
    group_by: Sequence[str] = (),
    per_interval: bool = False,
    fill: str = "none",
    tail: str = "",
) -> str:
    """SELECT … FROM … WHERE conditions AND $timeFilter [GROUP BY time($__interval), tags fill(…)] tail."""
    sources = [measurements] if isinstance(measurements, str) else list(measurements)
    where = " AND ".join([*conditions, TIME_FILTER])
    query = f"SELECT {columns} FROM {', '.join(quote_identifier(m) for m in sources)} WHERE {where}"
    groups = ([PER_INTERVAL] if per_interval else []) + [quote_identifier(t) for t in group_by]
    if groups:
        query += f" GROUP BY {', '.join(groups)}"
    if per_interval:
        query += f" fill({fill})"
    return query + (f" {tail}" if tail else "")


def tag_values(measurement: str, key: str, conditions: Sequence[str] = ()) -> str:
    """A template variable's values: the tag's values in the chosen time range."""
    where = " AND ".join([*conditions, TIME_FILTER])
    return f"SHOW TAG VALUES FROM {quote_identifier(measurement)} WITH KEY = {quote_identifier(key)} WHERE {where}"

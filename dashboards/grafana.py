"""Grafana's dashboard JSON model, as far as the generated dashboards use it.

Panels are laid out left to right on Grafana's 24-column grid and numbered in
order, so that a dashboard's JSON is the same on every export.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilot_core.contract import TimeClass
from pilot_core.profiles import DeviceProfile

JSON = dict[str, Any]

DATASOURCE_UID = "pilot-influxdb"
DATASOURCE: JSON = {"type": "influxdb", "uid": DATASOURCE_UID}
# Grafana 10.4 / 11 write this version; older ones migrate what they read, newer ones too.
SCHEMA_VERSION = 39
GRID_COLUMNS = 24
UID_LENGTH = 40  # Grafana's limit
TAGS = ["pilot-telemetry"]

# Colours of machine states by their ISO 22400-2 time class, the same on every dashboard.
TIME_CLASS_COLOURS = {
    TimeClass.PRODUCTION: "green",
    TimeClass.SETUP: "blue",
    TimeClass.UNPLANNED_DELAY: "red",
    TimeClass.MINOR_STOP: "orange",
    TimeClass.IDLE: "yellow",
    TimeClass.PLANNED_DOWNTIME: "purple",
}

# Profile unit symbols that Grafana has a unit for; any other is shown as a suffix.
_GRAFANA_UNITS = {
    "°C": "celsius",
    "%": "percent",
    "%RH": "humidity",
    "W": "watt",
    "kW": "kwatt",
    "kWh": "kwatth",
    "V": "volt",
    "A": "amp",
    "rpm": "rotrpm",
    "ms": "ms",
    "s": "s",
    "h": "h",
    "m": "lengthm",
    "kg": "masskg",
    "m/s": "velocityms",
    "1": "none",
    "ratio": "percentunit",
}


def grafana_unit(unit: str) -> str:
    return _GRAFANA_UNITS.get(unit) or f"suffix: {unit}"


def uid(prefix: str, name: str) -> str:
    """A dashboard uid: readable where the name allows, else the name's digest (Grafana allows 40 characters)."""
    readable = f"{prefix}-{name}"
    if len(readable) <= UID_LENGTH and re.fullmatch(r"[A-Za-z0-9_-]+", readable):
        return readable
    return f"{prefix}-{hashlib.sha256(name.encode()).hexdigest()[: UID_LENGTH - len(prefix) - 1]}"


@dataclass(frozen=True)
class Query:
    influxql: str
    alias: str = ""  # Grafana's alias patterns: $tag_device, $col
    table: bool = False  # result format: a table instead of time series

    def target(self, ref_id: str) -> JSON:
        target: JSON = {
            "refId": ref_id,
            "datasource": DATASOURCE,
            "rawQuery": True,
            "query": self.influxql,
            "resultFormat": "table" if self.table else "time_series",
        }
        if self.alias:
            target["alias"] = self.alias
        return target


@dataclass
class Panel:
    kind: str  # Grafana panel type: timeseries, state-timeline, stat, table, text
    title: str
    queries: Sequence[Query] = ()
    width: int = 12
    height: int = 8
    description: str = ""
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    interval: str | None = None  # the shortest $__interval this panel asks for
    options: JSON = field(default_factory=dict)
    custom: JSON = field(default_factory=dict)  # fieldConfig.defaults.custom
    mappings: list[JSON] = field(default_factory=list)
    transformations: list[JSON] = field(default_factory=list)

    def json(self, panel_id: int, x: int, y: int) -> JSON:
        defaults: JSON = {}
        if self.unit:
            defaults["unit"] = self.unit
        if self.minimum is not None:
            defaults["min"] = self.minimum
        if self.maximum is not None:
            defaults["max"] = self.maximum
        if self.mappings:
            defaults["mappings"] = self.mappings
        if self.custom:
            defaults["custom"] = self.custom
        panel: JSON = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
        }
        if self.description:
            panel["description"] = self.description
        if self.queries:
            panel["datasource"] = DATASOURCE
            panel["targets"] = [q.target(chr(ord("A") + i)) for i, q in enumerate(self.queries)]
        if self.interval:
            panel["interval"] = self.interval
        panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
        panel["options"] = self.options
        if self.transformations:
            panel["transformations"] = self.transformations
        return panel


def layout(panels: Iterable[Panel]) -> list[JSON]:
    """Panels in rows, left to right, ids from 1."""
    placed: list[JSON] = []
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        if x + panel.width > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        placed.append(panel.json(number, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return placed


def query_variable(name: str, label: str, query: str, *, hide: bool = False, sort: int = 1) -> JSON:
    """A template variable filled by an InfluxQL query when the time range changes (refresh 2)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": sort,  # 1: alphabetical; 4: numerical, descending
        "multi": False,
        "includeAll": False,
        "current": {},  # Grafana then picks the first value
        "options": [],
        "regex": "",
        "hide": 2 if hide else 0,
    }


def dashboard(
    uid: str,
    title: str,
    panels: Iterable[Panel],
    variables: Sequence[JSON] = (),
    *,
    description: str = "",
    time_from: str = "now-24h",
    time_to: str = "now",
    refresh: str = "1m",
    tags: Sequence[str] = (),
) -> JSON:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [*TAGS, *tags],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,  # a shared crosshair
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": time_to},
        "refresh": refresh,
        "templating": {"list": list(variables)},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": TAGS, "asDropdown": True, "title": "pilot-telemetry"}],
        "panels": layout(panels),
    }


def state_mappings(profiles: Iterable[DeviceProfile]) -> list[JSON]:
    """Each state's colour by its time class; a state name shared by profiles keeps its first class."""
    options: JSON = {}
    for profile in profiles:
        for state in profile.states:
            if state.name not in options:
                options[state.name] = {
                    "index": len(options),
                    "text": state.name,
                    "color": TIME_CLASS_COLOURS[state.time_class],
                }
    return [{"type": "value", "options": options}] if options else []


BOOL_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "true": {"index": 0, "text": "true", "color": "orange"},
            "false": {"index": 1, "text": "false", "color": "green"},
        },
    }
]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_panel(title: str, markdown: str, *, width: int = 24, height: int = 8) -> Panel:
    return Panel("text", title, width=width, height=height, options={"mode": "markdown", "content": markdown})

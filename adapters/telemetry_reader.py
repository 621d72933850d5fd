"""Reading device-hours back from InfluxDB with InfluxQL.

Every query covers at most one day of one device (two days for the counts of
points per hour), so no query comes near InfluxDB 3 Core's limit on the time
range a query may scan, and each hour is read once: the KPI engine works on the
stored device-hours afterwards. A day with no point in it, nor in the lookback
before it, is not read at all: its hours are built empty, as reading them would.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from adapters.influxdb import InfluxClient, Series
from pilot_core.contract import TimeClass
from pilot_core.device_hours import HOUR_MS, DeviceHour
from pilot_core.device_rows import (
    ENERGY_LOOKBACK_MS,
    STATE_LOOKBACK_MS,
    DeviceRows,
    ProductionRow,
    StateRow,
    StatusRow,
    TelemetryRow,
    build_hours,
    chunks,
)
from pilot_core.influxql import quote_identifier, quote_literal
from pilot_core.live import COLLECTOR_HEALTH_MEASUREMENT, DEAD_LETTER_MEASUREMENT, CollectorHealth, StateSample
from pilot_core.profiles import DeviceProfile, ProductionMode
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT, STATUS_MEASUREMENT

ENERGY_UNIT = "kWh"
AMBIENT_UNIT = "°C"
# The span of one query counting points per hour: well within the ~72 hours InfluxDB 3 Core lets a query read.
COUNT_SPAN_MS = 48 * HOUR_MS


class TelemetryReader:
    def __init__(self, client: InfluxClient) -> None:
        self.client = client

    def device_hours(
        self, site: str, line: str, device: str, profile: DeviceProfile, start_ms: int, end_ms: int
    ) -> Iterator[DeviceHour]:
        """Whole hours from the hour containing ``start_ms`` up to ``end_ms``, in order."""
        for rows in self.device_rows(site, line, device, profile, start_ms, end_ms):
            yield from build_hours(rows)

    def device_rows(
        self,
        site: str,
        line: str,
        device: str,
        profile: DeviceProfile,
        start_ms: int,
        end_ms: int,
        hours_with_data: Container[int] | None = None,
    ) -> Iterator[DeviceRows]:
        """The rows those hours are built from, a day at a time: what an evidence bundle carries.

        With ``hours_with_data`` (``hours_with_data()`` of this device, over the range and the lookback before
        it), a day none of whose hours nor of the lookback's has data is given empty, without a query.
        """
        where = f"{_tag('site', site)} AND {_tag('line', line)} AND {_tag('device', device)}"
        for chunk_start, chunk_end in chunks(start_ms, end_ms):
            if hours_with_data is not None and not any(
                t in hours_with_data for t in range(chunk_start - STATE_LOOKBACK_MS, chunk_end, HOUR_MS)
            ):
                yield DeviceRows(device, bool(profile.states), chunk_start, chunk_end)
                continue
            yield _Chunk(self.client, where, device, profile, chunk_start, chunk_end).rows()

    def hours_with_data(
        self, site: str, line: str, measurements: dict[str, str], start_ms: int, end_ms: int
    ) -> dict[str, set[int]]:
        """Per device of ``measurements`` (device → its telemetry measurement), the starts of the hours in
        [start_ms − the lookback, end_ms) holding any of its points: one aggregate query per two days for them all.

        Cheap where there is no data: InfluxDB answers a count over an empty range from its index.
        """
        counted = self.values_per_hour(site, line, measurements, start_ms, end_ms)
        return {device: set(hours) for device, hours in counted.items()}

    def values_per_hour(
        self, site: str, line: str, measurements: dict[str, str], start_ms: int, end_ms: int
    ) -> dict[str, dict[int, int]]:
        """``hours_with_data`` with, for each hour, how many field values its points hold (``count(*)`` summed
        over the measurements): a hour whose count moves after it was read took in late data."""
        found: dict[str, dict[int, int]] = {device: {} for device in measurements}
        if not measurements:
            return found
        sources = ", ".join(
            quote_identifier(m)
            for m in sorted({STATE_MEASUREMENT, STATUS_MEASUREMENT, PRODUCTION_MEASUREMENT, *measurements.values()})
        )
        devices = " OR ".join(_tag("device", d) for d in sorted(measurements))
        where = f"{_tag('site', site)} AND {_tag('line', line)} AND ({devices})"
        first = start_ms - start_ms % HOUR_MS - STATE_LOOKBACK_MS
        end_ms += -end_ms % HOUR_MS  # the whole hour, as device_rows reads it
        for span_start in range(first, end_ms, COUNT_SPAN_MS):
            span_end = min(span_start + COUNT_SPAN_MS, end_ms)
            query = (
                f"SELECT count(*) FROM {sources} WHERE {where} AND time >= {span_start}ms AND time < {span_end}ms"
                ' GROUP BY time(1h), "device" fill(none)'
            )
            for series in self.client.query(query):
                device = (series.tags or {}).get("device", "")
                if device in found:
                    hours = found[device]
                    for row in series.values:
                        values = sum(n for n in row[1:] if isinstance(n, int))
                        if values:
                            hours[int(row[0])] = hours.get(int(row[0]), 0) + values
        return found


def _tag(name: str, value: str) -> str:
    return f"{quote_identifier(name)} = {quote_literal(value)}"


def energy_metric(profile: DeviceProfile) -> str | None:
    """The cumulative energy register of a meter's profile, if it has one."""
    return next((m.name for m in profile.metrics if m.unit == ENERGY_UNIT and m.type.value == "float"), None)


def ambient_metric(profile: DeviceProfile) -> str | None:
    """A sensor's temperature in °C, the ambient an adjusted baseline may regress on. Only on a sensor (no states,
    no production): a machine's temperatures (motor, coolant, camera) are its own, not the room's."""
    if profile.states or profile.production.mode is not ProductionMode.NONE:
        return None
    return next((m.name for m in profile.metrics if m.unit == AMBIENT_UNIT and m.type.value == "float"), None)


class _Chunk:
    def __init__(
        self, client: InfluxClient, where: str, device: str, profile: DeviceProfile, start_ms: int, end_ms: int
    ) -> None:
        self.client = client
        self.where = where
        self.profile = profile
        self.result = DeviceRows(device, bool(profile.states), start_ms, end_ms)

    def rows(self) -> DeviceRows:
        self._states()
        if self.profile.production.mode is not ProductionMode.NONE:
            self._production()
        self._telemetry()
        return self.result

    def _time(self, start_ms: int | None = None, end_ms: int | None = None) -> str:
        start = self.result.start_ms if start_ms is None else start_ms
        end = self.result.end_ms if end_ms is None else end_ms
        return f"time >= {start}ms AND time < {end}ms"

    def _before(self, lookback_ms: int) -> str:
        return f"{self._time(self.result.start_ms - lookback_ms, self.result.start_ms)} ORDER BY time DESC LIMIT 1"

    def _select(self, fields: str, measurement: str, extra: str = "") -> list[list[Any]]:
        query = f"SELECT {fields} FROM {quote_identifier(measurement)} WHERE {self.where} AND {extra or self._time()}"
        series = self.client.query(query)
        return [row for s in series for row in s.values]

    def _states(self) -> None:
        before = self._select(
            '"state", "time_class", "reason", "seq"', STATE_MEASUREMENT, self._before(STATE_LOOKBACK_MS)
        )
        self.result.state_before = _state(before[0]) if before else None
        self.result.states = [
            _state(row) for row in self._select('"state", "time_class", "reason", "seq"', STATE_MEASUREMENT)
        ]
        self.result.statuses = [
            StatusRow(int(ts), online if isinstance(online, bool) else None, _int(seq))
            for ts, online, seq in self._select('"online", "seq"', STATUS_MEASUREMENT)
        ]

    def _production(self) -> None:
        fields = '"produced", "good", "scrap", "rework", "cycle_time_s", "seq"'
        query = (
            f"SELECT {fields} FROM {quote_identifier(PRODUCTION_MEASUREMENT)} "
            f'WHERE {self.where} AND {self._time()} GROUP BY "product"'
        )
        self.result.production = [
            ProductionRow(
                int(ts),
                series.tags["product"],
                int(produced or 0),
                int(good or 0),
                int(scrap or 0),
                int(rework or 0),
                _float(cycle_time),
                _int(seq),
            )
            for series in self.client.query(query)
            for ts, produced, good, scrap, rework, cycle_time, seq in series.values
        ]

    def _telemetry(self) -> None:
        energy = energy_metric(self.profile)
        measurement = self.profile.measurement
        if energy is None:
            ambient = ambient_metric(self.profile)
            if ambient is not None:
                self.result.telemetry = [
                    TelemetryRow(int(ts), None, _int(seq), _float(value))
                    for ts, value, seq in self._select(f'{quote_identifier(ambient)}, "seq"', measurement)
                ]
                return
            self.result.telemetry = [
                TelemetryRow(int(ts), None, _int(seq)) for ts, seq in self._select('"seq"', measurement)
            ]
            return
        register = quote_identifier(energy)
        self.result.telemetry = [
            TelemetryRow(int(ts), _float(value), _int(seq))
            for ts, value, seq in self._select(f'{register}, "seq"', measurement)
        ]
        before = self._select(register, measurement, self._before(ENERGY_LOOKBACK_MS))
        if before and _float(before[0][1]) is not None:
            self.result.energy_before = TelemetryRow(int(before[0][0]), _float(before[0][1]), None)


def _state(row: list[Any]) -> StateRow:
    ts, state, time_class, reason, seq = row
    return StateRow(
        int(ts), str(state), TimeClass(time_class) if time_class else None, str(reason) if reason else None, _int(seq)
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    """InfluxDB's JSON writes a float field holding 40.0 as 40: a float field is a float, whatever the JSON says."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class DeviceActivity:
    """When a device was last heard from, and its last birth or will, within a lookback."""

    site: str
    line: str
    device: str
    last_seen_ms: int | None = None
    online: bool | None = None  # None: no status message in the lookback
    status_at_ms: int | None = None
    agent_version: str | None = None
    profile_version: str | None = None


def device_activity(
    client: InfluxClient, measurements: Iterable[str], since_ms: int, line: tuple[str, str] | None = None
) -> list[DeviceActivity]:
    """Every device with a point since ``since_ms`` (on ``line``, a site and line, if given): two small queries,
    grouped by device.

    Bounded in time, so that no query scans more than InfluxDB 3 Core allows. The newest point is selected
    as a raw point (``ORDER BY time DESC LIMIT 1``), whose time is its own on every InfluxDB version: a
    selector such as ``last()`` answers with its point's time on some versions and queries, and with the
    start of the range or of a window on others.
    """
    group = ", ".join(quote_identifier(k) for k in ("site", "line", "device"))
    where = f"time >= {since_ms}ms" + (f" AND {_tag('site', line[0])} AND {_tag('line', line[1])}" if line else "")
    seen: dict[tuple[str, str, str], int] = {}
    sources = ", ".join(
        quote_identifier(m)
        for m in sorted({STATUS_MEASUREMENT, STATE_MEASUREMENT, PRODUCTION_MEASUREMENT, *measurements})
    )
    # One query for every measurement: a series per measurement and device, each its newest point.
    query = f'SELECT "seq" FROM {sources} WHERE {where} GROUP BY {group} ORDER BY time DESC LIMIT 1'
    for series in client.query(query):
        key = _device_key(series)
        seen[key] = max(seen.get(key, 0), int(series.values[0][0]))
    status: dict[tuple[str, str, str], list[Any]] = {}
    query = (
        f'SELECT "online", "agent_version", "profile_version" FROM {quote_identifier(STATUS_MEASUREMENT)}'
        f" WHERE {where} GROUP BY {group} ORDER BY time DESC LIMIT 1"
    )
    for series in client.query(query):
        status[_device_key(series)] = series.values[0]
    activity = []
    for key in sorted(seen):
        row = status.get(key)
        activity.append(
            DeviceActivity(
                *key,
                last_seen_ms=seen[key],
                online=None if row is None else bool(row[1]),
                status_at_ms=None if row is None else int(row[0]),
                agent_version=None if row is None else row[2],
                profile_version=None if row is None else row[3],
            )
        )
    return activity


def _device_key(series: Series) -> tuple[str, str, str]:
    tags = series.tags or {}
    return tags.get("site", ""), tags.get("line", ""), tags.get("device", "")


def recent_states(
    client: InfluxClient, site: str, line: str, since_ms: int, per_device: int = 20
) -> dict[str, list[StateSample]]:
    """Per device of the line, its latest ``per_device`` state records since ``since_ms``, newest first."""
    query = (
        f'SELECT "state", "time_class", "reason" FROM {quote_identifier(STATE_MEASUREMENT)}'
        f" WHERE {_tag('site', site)} AND {_tag('line', line)} AND time >= {since_ms}ms"
        f' GROUP BY "device" ORDER BY time DESC LIMIT {per_device}'
    )
    return {
        (series.tags or {}).get("device", ""): [
            StateSample(int(ts), str(state), str(time_class) if time_class else None, str(reason) if reason else None)
            for ts, state, time_class, reason in series.values
        ]
        for series in client.query(query)
    }


def collector_health(client: InfluxClient, since_ms: int) -> list[CollectorHealth]:
    """Each collector's latest health point since ``since_ms``."""
    query = (
        'SELECT "backlog", "spool_batches", "spool_bytes", "connected", "healthy"'
        f" FROM {quote_identifier(COLLECTOR_HEALTH_MEASUREMENT)} WHERE time >= {since_ms}ms"
        ' GROUP BY "collector" ORDER BY time DESC LIMIT 1'
    )
    found = []
    for series in client.query(query):
        ts, backlog, spool_batches, spool_bytes, connected, healthy = series.values[0]
        found.append(
            CollectorHealth(
                (series.tags or {}).get("collector", ""),
                int(ts),
                int(backlog or 0),
                int(spool_batches or 0),
                int(spool_bytes or 0),
                bool(connected),
                bool(healthy),
            )
        )
    return sorted(found, key=lambda h: h.collector)


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """A line's messages refused for one reason since some time, and the latest of them."""

    reason: str
    count: int
    last_at_ms: int
    last_device: str
    last_detail: str


def dead_letters(client: InfluxClient, site: str, line: str, since_ms: int) -> list[DeadLetters]:
    """Per reason, the line's refused messages since ``since_ms``: two aggregate queries, whatever their number."""
    where = f"{_tag('site', site)} AND {_tag('line', line)} AND time >= {since_ms}ms"
    source = quote_identifier(DEAD_LETTER_MEASUREMENT)
    counts = {
        (series.tags or {}).get("reason", ""): int(series.values[0][1] or 0)
        for series in client.query(f'SELECT sum("count") FROM {source} WHERE {where} GROUP BY "reason"')
    }
    found = []
    latest = f'SELECT "detail", "device" FROM {source} WHERE {where} GROUP BY "reason" ORDER BY time DESC LIMIT 1'
    for series in client.query(latest):
        reason = (series.tags or {}).get("reason", "")
        ts, detail, device = series.values[0]
        found.append(DeadLetters(reason, counts.get(reason, 0), int(ts), str(device or ""), str(detail or "")))
    return sorted(found, key=lambda d: (-d.count, d.reason))

"""Reading device-hours back from InfluxDB with InfluxQL.

Every query covers at most one day of one device, so no query comes near
InfluxDB 3 Core's limit on the time range a query may scan, and each hour is
read once: the KPI engine works on the stored device-hours afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from adapters.influxdb import InfluxClient, Series
from pilot_core.contract import TimeClass
from pilot_core.device_hours import HOUR_MS, DeviceHour, SeqSpan, StateEvent
from pilot_core.influxql import quote_identifier, quote_literal
from pilot_core.profiles import DeviceProfile, ProductionMode
from pilot_core.time_accounting import ProductionTotals
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT, STATUS_MEASUREMENT

CHUNK_MS = 24 * HOUR_MS
# How far back to look for the state in force when a chunk begins. Bounded, so
# the query stays small; a device silent for longer starts its chunk unknown.
STATE_LOOKBACK_MS = 48 * HOUR_MS
ENERGY_UNIT = "kWh"


class TelemetryReader:
    def __init__(self, client: InfluxClient) -> None:
        self.client = client

    def device_hours(
        self, site: str, line: str, device: str, profile: DeviceProfile, start_ms: int, end_ms: int
    ) -> Iterator[DeviceHour]:
        """Whole hours from the hour containing ``start_ms`` up to ``end_ms``, in order."""
        start_ms -= start_ms % HOUR_MS
        where = f"{_tag('site', site)} AND {_tag('line', line)} AND {_tag('device', device)}"
        for chunk_start in range(start_ms, end_ms, CHUNK_MS):
            chunk_end = min(chunk_start + CHUNK_MS, end_ms + (-end_ms % HOUR_MS))
            yield from _Chunk(self.client, where, device, profile, chunk_start, chunk_end).hours()


def _tag(name: str, value: str) -> str:
    return f"{quote_identifier(name)} = {quote_literal(value)}"


class _Chunk:
    def __init__(
        self, client: InfluxClient, where: str, device: str, profile: DeviceProfile, start_ms: int, end_ms: int
    ) -> None:
        self.client = client
        self.where = where
        self.profile = profile
        self.start_ms = start_ms
        self.end_ms = end_ms
        machine = bool(profile.states)
        self.hours_by_start = {t: DeviceHour(device, t, machine) for t in range(start_ms, end_ms, HOUR_MS)}

    def hours(self) -> list[DeviceHour]:
        self._states()
        if self.profile.production.mode is not ProductionMode.NONE:
            self._production()
        self._telemetry()
        return list(self.hours_by_start.values())

    def _time(self, start_ms: int | None = None, end_ms: int | None = None) -> str:
        start = self.start_ms if start_ms is None else start_ms
        end = self.end_ms if end_ms is None else end_ms
        return f"time >= {start}ms AND time < {end}ms"

    def _select(self, fields: str, measurement: str, extra: str = "") -> list[list[Any]]:
        query = f"SELECT {fields} FROM {quote_identifier(measurement)} WHERE {self.where} AND {extra or self._time()}"
        series = self.client.query(query)
        return [row for s in series for row in s.values]

    def _hour(self, ts: int) -> DeviceHour:
        return self.hours_by_start[ts - (ts - self.start_ms) % HOUR_MS]

    def _states(self) -> None:
        previous = self._select(
            '"state", "time_class", "reason"',
            STATE_MEASUREMENT,
            f"{self._time(self.start_ms - STATE_LOOKBACK_MS, self.start_ms)} ORDER BY time DESC LIMIT 1",
        )
        rows = self._select('"state", "time_class", "reason", "seq"', STATE_MEASUREMENT)
        events = [_state_event(row) for row in rows]
        statuses = self._select('"online", "seq"', STATUS_MEASUREMENT)
        # The last will says the device is gone: nothing is known until its next state.
        events += [StateEvent(int(row[0]), None, None) for row in statuses if row[1] is False]
        events.sort(key=lambda e: e.ts_ms)
        current = _state_event(previous[0]) if previous else None
        for hour in self.hours_by_start.values():
            hour.state_at_start = current
            hour.events = [e for e in events if hour.start_ms <= e.ts_ms < hour.end_ms]
            if hour.events:
                current = hour.events[-1]
        self._seq_spans("state", rows)
        self._seq_spans("status", statuses)

    def _production(self) -> None:
        rows = self.client.query(
            'SELECT sum("produced"), sum("good"), sum("scrap"), sum("rework"), sum("cycle_time_s"), '
            f'count("cycle_time_s") FROM {quote_identifier(PRODUCTION_MEASUREMENT)} '
            f'WHERE {self.where} AND {self._time()} GROUP BY time(1h), "product" fill(none)'
        )
        for series in rows:
            product = series.tags["product"]
            for ts, produced, good, scrap, rework, cycle_sum, cycles in series.values:
                if not produced and not cycles:
                    continue
                self._hour(ts).production[product] = ProductionTotals(
                    int(produced or 0),
                    int(good or 0),
                    int(scrap or 0),
                    int(rework or 0),
                    float(cycle_sum or 0.0),
                    int(cycles or 0),
                )
        # Percentiles do not add up across hours; a histogram of the hour's cycle times does.
        records = self._select('"cycle_time_s", "seq"', PRODUCTION_MEASUREMENT)
        for ts, cycle_time, _ in records:
            if isinstance(cycle_time, int | float) and cycle_time > 0:
                self._hour(ts).cycle_times.add(float(cycle_time))
        self._seq_spans("production", records)

    def _telemetry(self) -> None:
        energy = next((m.name for m in self.profile.metrics if m.unit == ENERGY_UNIT and m.type.value == "float"), None)
        if energy is None:
            rows = self._select('"seq"', self.profile.measurement)
        else:
            rows = self._select(f'{quote_identifier(energy)}, "seq"', self.profile.measurement)
            previous = self._select(
                quote_identifier(energy),
                self.profile.measurement,
                f"{self._time(self.start_ms - HOUR_MS, self.start_ms)} ORDER BY time DESC LIMIT 1",
            )
            self._energy([*previous, *rows])
        for row in rows:
            self._hour(row[0]).telemetry_points += 1
        self._seq_spans("telemetry", rows)

    def _energy(self, rows: list[list[Any]]) -> None:
        """Energy used per hour from a cumulative register: the rise between readings, in the later hour."""
        readings = [(row[0], row[1]) for row in rows if isinstance(row[1], int | float)]
        for (_, before), (ts, after) in itertools.pairwise(readings):
            if after >= before and ts >= self.start_ms:  # a fall is a register reset: that interval is unknown
                self._hour(ts).energy_kwh += after - before

    def _seq_spans(self, channel: str, rows: list[list[Any]]) -> None:
        by_hour: dict[int, list[int]] = {}
        for row in rows:
            seq = row[-1]
            if isinstance(seq, int):
                by_hour.setdefault(self._hour(row[0]).start_ms, []).append(seq)
        for start, seqs in by_hour.items():
            self.hours_by_start[start].seq[channel] = SeqSpan(len(seqs), min(seqs), max(seqs))


def _state_event(row: list[Any]) -> StateEvent:
    ts, state, time_class, reason = row[0], row[1], row[2], row[3]
    return StateEvent(
        int(ts), str(state), TimeClass(time_class) if time_class else None, str(reason) if reason else None
    )


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


def device_activity(client: InfluxClient, measurements: Iterable[str], since_ms: int) -> list[DeviceActivity]:
    """Every device with a point since ``since_ms``: one small query per measurement, grouped by device.

    Bounded in time, so that no query scans more than InfluxDB 3 Core allows.
    """
    group = ", ".join(quote_identifier(k) for k in ("site", "line", "device"))
    seen: dict[tuple[str, str, str], int] = {}
    for measurement in sorted({STATUS_MEASUREMENT, STATE_MEASUREMENT, PRODUCTION_MEASUREMENT, *measurements}):
        query = f'SELECT last("seq") FROM {quote_identifier(measurement)} WHERE time >= {since_ms}ms GROUP BY {group}'
        for series in client.query(query):
            key = _device_key(series)
            seen[key] = max(seen.get(key, 0), int(series.values[0][0]))
    status: dict[tuple[str, str, str], list[Any]] = {}
    query = (
        f'SELECT "online", "agent_version", "profile_version" FROM {quote_identifier(STATUS_MEASUREMENT)}'
        f" WHERE time >= {since_ms}ms GROUP BY {group} ORDER BY time DESC LIMIT 1"
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

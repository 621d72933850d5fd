"""The stored points a device's hours are built from, and the building.

The telemetry reader fetches these rows from InfluxDB a day at a time; an
evidence bundle carries the same rows, so that an evaluator rebuilds the very
device-hours, and from them every KPI, without our servers. One function builds
hours from rows for both, which is what makes the two agree bit for bit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pilot_core.contract import TimeClass
from pilot_core.device_hours import EXACT_CYCLE_TIMES_PER_HOUR, HOUR_MS, DeviceHour, SeqSpan, StateEvent
from pilot_core.time_accounting import ProductionTotals

CHUNK_MS = 24 * HOUR_MS
# How far back to look for the state in force when a chunk begins. Bounded, so
# the query stays small; a device silent for longer starts its chunk unknown.
STATE_LOOKBACK_MS = 48 * HOUR_MS
ENERGY_LOOKBACK_MS = HOUR_MS


class StateRow(NamedTuple):
    ts_ms: int
    state: str
    time_class: TimeClass | None
    reason: str | None
    seq: int | None


class StatusRow(NamedTuple):
    ts_ms: int
    online: bool | None
    seq: int | None


class ProductionRow(NamedTuple):
    ts_ms: int
    product: str
    produced: int
    good: int
    scrap: int
    rework: int
    cycle_time_s: float | None
    seq: int | None


class TelemetryRow(NamedTuple):
    ts_ms: int
    energy_kwh: float | None  # the cumulative register, on energy meters; None elsewhere
    seq: int | None
    ambient_c: float | None = None  # the ambient temperature, on environment sensors; None elsewhere


@dataclass
class DeviceRows:
    """One device's rows for [start_ms, end_ms), with what came just before: the state in force and the last
    energy reading, which the first hours need."""

    device: str
    machine: bool  # has states (a machine), or not (a meter, a sensor)
    start_ms: int
    end_ms: int
    state_before: StateRow | None = None  # the last within STATE_LOOKBACK_MS before start_ms
    energy_before: TelemetryRow | None = None  # the last reading within ENERGY_LOOKBACK_MS before start_ms
    states: list[StateRow] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    production: list[ProductionRow] = field(default_factory=list)
    telemetry: list[TelemetryRow] = field(default_factory=list)


def chunks(start_ms: int, end_ms: int) -> Iterable[tuple[int, int]]:
    """Whole hours from the hour containing ``start_ms`` to the one containing ``end_ms``, a day at a time."""
    start_ms -= start_ms % HOUR_MS
    last = end_ms + (-end_ms % HOUR_MS)
    for chunk_start in range(start_ms, end_ms, CHUNK_MS):
        yield chunk_start, min(chunk_start + CHUNK_MS, last)


def build_hours(rows: DeviceRows) -> list[DeviceHour]:
    """The device-hours of ``rows``' span, in order."""
    hours = {t: DeviceHour(rows.device, t, rows.machine) for t in range(rows.start_ms, rows.end_ms, HOUR_MS)}

    def hour_of(ts_ms: int) -> DeviceHour:
        return hours[ts_ms - (ts_ms - rows.start_ms) % HOUR_MS]

    events = [_event(row) for row in rows.states]
    # The last will says the device is gone: nothing is known until its next state.
    events += [StateEvent(row.ts_ms, None, None) for row in rows.statuses if row.online is False]
    events.sort(key=lambda e: e.ts_ms)
    current = _event(rows.state_before) if rows.state_before else None
    for hour in hours.values():
        hour.state_at_start = current
        hour.events = [e for e in events if hour.start_ms <= e.ts_ms < hour.end_ms]
        if hour.events:
            current = hour.events[-1]

    sums: dict[tuple[int, str], list[Any]] = {}
    for record in rows.production:
        hour = hour_of(record.ts_ms)
        total = sums.setdefault((hour.start_ms, record.product), [0, 0, 0, 0, 0.0, 0])
        total[0] += record.produced
        total[1] += record.good
        total[2] += record.scrap
        total[3] += record.rework
        if record.cycle_time_s is not None:
            total[4] += record.cycle_time_s
            total[5] += 1
            if record.cycle_time_s > 0:
                # Percentiles do not add up across hours; a histogram of the hour's cycle times does.
                hour.cycle_times.add(record.cycle_time_s)
                hour.cycle_time_values.append(record.cycle_time_s)
    for hour in hours.values():
        if len(hour.cycle_time_values) > EXACT_CYCLE_TIMES_PER_HOUR:
            hour.cycle_time_values = []  # too many to keep: the histogram stands for them
    for (start, product), (produced, good, scrap, rework, cycle_sum, cycles) in sums.items():
        if produced or cycles:
            hours[start].production[product] = ProductionTotals(produced, good, scrap, rework, cycle_sum, cycles)

    readings = [
        r for r in ([rows.energy_before] if rows.energy_before else []) + rows.telemetry if r.energy_kwh is not None
    ]
    for before, after in itertools.pairwise(readings):
        assert before.energy_kwh is not None and after.energy_kwh is not None
        # The rise between readings, in the later hour; a fall is a register reset, so that interval is unknown.
        if after.energy_kwh >= before.energy_kwh and after.ts_ms >= rows.start_ms:
            hour_of(after.ts_ms).energy_kwh += after.energy_kwh - before.energy_kwh
    ambient: dict[int, list[float]] = {}
    for point in rows.telemetry:
        hour = hour_of(point.ts_ms)
        hour.telemetry_points += 1
        if point.ambient_c is not None:
            ambient.setdefault(hour.start_ms, []).append(point.ambient_c)
    for start, temperatures in ambient.items():
        hours[start].ambient_c = math.fsum(temperatures) / len(temperatures)

    for channel, seqs in (
        ("state", rows.states),
        ("status", rows.statuses),
        ("production", rows.production),
        ("telemetry", rows.telemetry),
    ):
        _seq_spans(hours, hour_of, channel, seqs)
    return list(hours.values())


def _event(row: StateRow) -> StateEvent:
    return StateEvent(row.ts_ms, row.state, row.time_class, row.reason)


def _seq_spans(
    hours: dict[int, DeviceHour],
    hour_of: Any,
    channel: str,
    rows: Sequence[StateRow | StatusRow | ProductionRow | TelemetryRow],
) -> None:
    by_hour: dict[int, list[int]] = {}
    for row in rows:
        if row.seq is not None:
            by_hour.setdefault(hour_of(row.ts_ms).start_ms, []).append(row.seq)
    for start, seqs in by_hour.items():
        hours[start].seq[channel] = SeqSpan(len(seqs), min(seqs), max(seqs))

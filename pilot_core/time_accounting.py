"""From one device's events in a time bucket to its KPI components.

The shift calendar says which time is planned busy time; the device's state
changes say where that time went (ISO 22400-2 time elements); its production
records give the quantities. Buckets are small (an hour), so these roll up
exactly into any window by summing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pilot_core.calendar import Shift, Window
from pilot_core.contract import TimeClass
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import TIME_ELEMENT_OF, Components


@dataclass(frozen=True, slots=True)
class StateChange:
    ts_ms: int
    time_class: TimeClass | None  # None: nothing is known from here on (the device went offline)


@dataclass(frozen=True, slots=True)
class CycleRecord:
    ts_ms: int
    product: str
    produced: int
    good: int
    scrap: int = 0
    rework: int = 0
    cycle_time_s: float | None = None


@dataclass
class BucketAccount:
    components: Components
    cycle_times: LogHistogram
    products_without_ideal_time: set[str] = field(default_factory=set)


def account_bucket(
    start_ms: int,
    end_ms: int,
    shifts: Sequence[Shift],
    state_at_start: TimeClass | None,
    changes: Sequence[StateChange],
    cycles: Sequence[CycleRecord],
    ideal_cycle_time_s: Mapping[str, float],
    *,
    energy_kwh: float = 0.0,
    is_output: bool = False,
) -> BucketAccount:
    """Components of one device for [start_ms, end_ms).

    ``changes`` are the state changes inside the bucket in time order, and
    ``state_at_start`` the time class in force when it begins.
    """
    busy = [w for s in shifts for w in s.busy if w[1] > start_ms and w[0] < end_ms]
    in_shifts = sum(_overlap((s.start_ms, s.end_ms), (start_ms, end_ms)) for s in shifts)
    busy_total = sum(_overlap(w, (start_ms, end_ms)) for w in busy)
    times = dict.fromkeys(("apt_s", "asut_s", "adet_s", "adot_s", "planned_down_s", "unknown_s"), 0.0)
    repair_ms = 0
    failures = 0
    current = state_at_start
    cursor = start_ms
    for change in [*changes, StateChange(end_ms, None)]:
        ts = min(max(change.ts_ms, start_ms), end_ms)
        if ts > cursor:
            busy_ms = sum(_overlap(w, (cursor, ts)) for w in busy)
            element = "unknown_s" if current is None else TIME_ELEMENT_OF[current]
            times[element] += busy_ms / 1000
            if current is TimeClass.UNPLANNED_DELAY:
                repair_ms += busy_ms
        if (
            change.time_class is TimeClass.UNPLANNED_DELAY
            and current is not TimeClass.UNPLANNED_DELAY
            and change.ts_ms < end_ms
            and any(a <= change.ts_ms < b for a, b in busy)
        ):
            failures += 1
        current = change.time_class
        cursor = ts
    # Planned downtime the device reports (planned maintenance) leaves planned busy time,
    # as do the calendar's breaks and planned stops.
    pbt_s = busy_total / 1000 - times["planned_down_s"]
    times["planned_down_s"] += (in_shifts - busy_total) / 1000

    histogram = LogHistogram()
    produced = good = scrap = rework = 0
    ideal_s = cycle_time_s = 0.0
    timed = 0
    missing: set[str] = set()
    for cycle in cycles:
        if not start_ms <= cycle.ts_ms < end_ms:
            continue
        produced += cycle.produced
        good += cycle.good
        scrap += cycle.scrap
        rework += cycle.rework
        ideal = ideal_cycle_time_s.get(cycle.product)
        if ideal is None:
            missing.add(cycle.product)
        else:
            ideal_s += ideal * cycle.produced
        if cycle.cycle_time_s is not None:
            cycle_time_s += cycle.cycle_time_s
            timed += 1
            histogram.add(cycle.cycle_time_s)

    components = Components(
        pbt_s=pbt_s,
        produced=produced,
        good=good,
        scrap=scrap,
        rework=rework,
        ideal_s=ideal_s,
        cycle_time_s=cycle_time_s,
        cycles=timed,
        failures=failures,
        repair_s=repair_ms / 1000,
        energy_kwh=energy_kwh,
        output_produced=produced if is_output else 0,
        output_good=good if is_output else 0,
        output_pbt_s=pbt_s if is_output else 0.0,
        **times,
    )
    return BucketAccount(components, histogram, missing)


def _overlap(a: Window, b: Window) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))

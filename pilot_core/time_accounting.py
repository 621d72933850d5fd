"""From one device's events in a time bucket to its KPI components.

The shift calendar says which time is planned busy time; the device's state
changes say where that time went (ISO 22400-2 time elements); its production
records, summed per product, give the quantities. Buckets are small (an hour), so these roll up
exactly into any window by summing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from pilot_core.calendar import Shift
from pilot_core.contract import TimeClass
from pilot_core.kpi import TIME_ELEMENT_OF, Components


class StateChange(NamedTuple):  # a tuple: built by the ten thousand per evaluation
    ts_ms: int
    time_class: TimeClass | None  # None: nothing is known from here on (the device went offline)


# A struct without garbage-collector tracking (it holds numbers only): a month of a line keeps tens of thousands,
# and every tracked object is traversed again by each full collection. Stored as the array of its fields.
class ProductionTotals(msgspec.Struct, array_like=True, gc=False):
    """One product's production records in a bucket, summed."""

    produced: int = 0
    good: int = 0
    scrap: int = 0
    rework: int = 0
    cycle_time_s: float = 0.0  # Σ reported cycle times
    cycles: int = 0  # records with a cycle time

    def add(self, produced: int, good: int, scrap: int = 0, rework: int = 0, cycle_time_s: float | None = None) -> None:
        self.produced += produced
        self.good += good
        self.scrap += scrap
        self.rework += rework
        if cycle_time_s is not None:
            self.cycle_time_s += cycle_time_s
            self.cycles += 1


@dataclass
class BucketAccount:
    components: Components
    products_without_ideal_time: set[str] = field(default_factory=set)


def account_bucket(
    start_ms: int,
    end_ms: int,
    shifts: Sequence[Shift],
    state_at_start: TimeClass | None,
    changes: Sequence[tuple[int, TimeClass | None]],
    production: Mapping[str, ProductionTotals],
    ideal_cycle_time_s: Mapping[str, float],
    *,
    energy_kwh: float = 0.0,
    is_output: bool = False,
    is_meter: bool = False,
) -> BucketAccount:
    """Components of one device for [start_ms, end_ms).

    ``changes`` are the state changes inside the bucket in time order (``StateChange`` or any (ts_ms, time
    class) pairs), ``state_at_start`` the time class in force when it begins, and ``production`` the bucket's
    production records summed per product.
    """
    vector, missing = bucket_vector(
        start_ms,
        end_ms,
        BucketCalendar.of(start_ms, end_ms, shifts),
        state_at_start,
        changes,
        production,
        ideal_cycle_time_s,
        energy_kwh=energy_kwh,
        is_output=is_output,
        is_meter=is_meter,
    )
    return BucketAccount(Components(*vector), missing)


class BucketCalendar(NamedTuple):
    """What the shift calendar says of one bucket, the same for every device in it: worked out once per bucket."""

    busy: tuple[tuple[int, int], ...]  # planned busy windows, clipped to the bucket, in time order
    in_shifts_ms: int
    busy_ms: int

    @classmethod
    def of(cls, start_ms: int, end_ms: int, shifts: Sequence[Shift]) -> BucketCalendar:
        busy = tuple(
            (max(a, start_ms), min(b, end_ms)) for shift in shifts for a, b in shift.busy if b > start_ms and a < end_ms
        )
        in_shifts = sum(max(0, min(s.end_ms, end_ms) - max(s.start_ms, start_ms)) for s in shifts)
        return cls(busy, in_shifts, sum(b - a for a, b in busy))


NO_SHIFTS = BucketCalendar((), 0, 0)  # a bucket outside every shift, or of a device with no time model

# Where each time class's milliseconds are summed in bucket_vector: the order of _ELEMENTS.
_ELEMENTS = ("apt_s", "asut_s", "adet_s", "adot_s", "planned_down_s")
_SLOT_OF = {time_class: _ELEMENTS.index(element) for time_class, element in TIME_ELEMENT_OF.items()}


def bucket_vector(
    start_ms: int,
    end_ms: int,
    calendar: BucketCalendar,
    state_at_start: TimeClass | None,
    changes: Sequence[tuple[int, TimeClass | None]],
    production: Mapping[str, ProductionTotals],
    ideal_cycle_time_s: Mapping[str, float],
    *,
    energy_kwh: float = 0.0,
    is_output: bool = False,
    is_meter: bool = False,
) -> tuple[tuple[float, ...], set[str]]:
    """``account_bucket``'s components as a vector in ``COMPONENT_NAMES`` order, with the products that have
    no ideal cycle time: what an evaluation sums, without building a ``Components`` per bucket."""
    # Written for speed: a month of a line is tens of thousands of calls per evaluation.
    busy = calendar.busy
    elapsed_ms = [0, 0, 0, 0, 0]  # by _ELEMENTS
    unknown_ms = repair_ms = failures = 0
    if busy:  # outside planned busy time no state counts, and no fault starts
        single = busy[0] if len(busy) == 1 else None
        current = state_at_start
        cursor = start_ms
        for change_ts, change_class in (*changes, (end_ms, None)):
            ts = min(max(change_ts, start_ms), end_ms)
            if ts > cursor:
                if single is not None:
                    busy_ms = max(0, min(single[1], ts) - max(single[0], cursor))
                else:
                    busy_ms = sum(max(0, min(b, ts) - max(a, cursor)) for a, b in busy)
                if current is None:
                    unknown_ms += busy_ms
                else:
                    elapsed_ms[_SLOT_OF[current]] += busy_ms
                    if current is TimeClass.UNPLANNED_DELAY:
                        repair_ms += busy_ms
            if (
                change_class is TimeClass.UNPLANNED_DELAY
                and current is not TimeClass.UNPLANNED_DELAY
                and change_ts < end_ms
                and any(a <= change_ts < b for a, b in busy)
            ):
                failures += 1
            current = change_class
            cursor = ts
    apt_ms, asut_ms, adet_ms, adot_ms, reported_planned_ms = elapsed_ms
    busy_total = calendar.busy_ms
    # Planned downtime the device reports (planned maintenance) leaves planned busy time,
    # as do the calendar's breaks and planned stops.
    pbt_s = (busy_total - reported_planned_ms) / 1000

    produced = good = scrap = rework = cycles = 0
    cycle_time_s = ideal_s = 0.0
    missing: set[str] = set()
    for product, totals in production.items():
        produced += totals.produced
        good += totals.good
        scrap += totals.scrap
        rework += totals.rework
        cycle_time_s += totals.cycle_time_s
        cycles += totals.cycles
        ideal = ideal_cycle_time_s.get(product)
        if ideal is None:
            missing.add(product)
        else:
            ideal_s += ideal * totals.produced

    vector = (
        pbt_s,
        apt_ms / 1000,
        asut_ms / 1000,
        adet_ms / 1000,
        adot_ms / 1000,
        unknown_ms / 1000,
        (reported_planned_ms + calendar.in_shifts_ms - busy_total) / 1000,
        produced,
        good,
        scrap,
        rework,
        ideal_s,
        cycle_time_s,
        cycles,
        failures,
        repair_ms / 1000,
        energy_kwh,
        produced if is_output else 0,
        good if is_output else 0,
        pbt_s if is_output else 0.0,
        1.0 if is_meter else 0.0,  # an hour of an energy meter in scope: energy was measured
        cycle_time_s if is_output else 0.0,
        cycles if is_output else 0,
    )
    return vector, missing

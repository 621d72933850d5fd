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
    changes: Sequence[StateChange],
    production: Mapping[str, ProductionTotals],
    ideal_cycle_time_s: Mapping[str, float],
    *,
    energy_kwh: float = 0.0,
    is_output: bool = False,
) -> BucketAccount:
    """Components of one device for [start_ms, end_ms).

    ``changes`` are the state changes inside the bucket in time order,
    ``state_at_start`` the time class in force when it begins, and
    ``production`` the bucket's production records summed per product.
    """
    # Written for speed: a month of a line is tens of thousands of calls per evaluation.
    busy = [
        (max(a, start_ms), min(b, end_ms)) for shift in shifts for a, b in shift.busy if b > start_ms and a < end_ms
    ]
    in_shifts = sum(max(0, min(s.end_ms, end_ms) - max(s.start_ms, start_ms)) for s in shifts)
    busy_total = sum(b - a for a, b in busy)
    elapsed_ms = dict.fromkeys(TIME_ELEMENT_OF.values(), 0)
    unknown_ms = repair_ms = failures = 0
    current = state_at_start
    cursor = start_ms
    for change_ts, change_class in [*changes, (end_ms, None)]:
        ts = min(max(change_ts, start_ms), end_ms)
        if ts > cursor:
            busy_ms = sum(max(0, min(b, ts) - max(a, cursor)) for a, b in busy) if busy else 0
            if current is None:
                unknown_ms += busy_ms
            else:
                elapsed_ms[TIME_ELEMENT_OF[current]] += busy_ms
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
    # Planned downtime the device reports (planned maintenance) leaves planned busy time,
    # as do the calendar's breaks and planned stops.
    reported_planned_ms = elapsed_ms["planned_down_s"]
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

    components = Components(
        pbt_s,
        elapsed_ms["apt_s"] / 1000,
        elapsed_ms["asut_s"] / 1000,
        elapsed_ms["adet_s"] / 1000,
        elapsed_ms["adot_s"] / 1000,
        unknown_ms / 1000,
        (reported_planned_ms + in_shifts - busy_total) / 1000,
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
    )
    return BucketAccount(components, missing)

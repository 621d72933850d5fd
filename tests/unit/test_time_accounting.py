"""Time accounting: shift calendar and state changes into ISO 22400-2 time elements, per hour."""

from __future__ import annotations

import datetime as dt

import pytest

from pilot_core.calendar import Calendar
from pilot_core.contract import TimeClass
from pilot_core.kpi import Components, compute, total
from pilot_core.time_accounting import ProductionTotals, StateChange, account_bucket

SEOUL = dt.timezone(dt.timedelta(hours=9))
DAY = dt.datetime(2026, 11, 2, tzinfo=SEOUL)  # a Monday
HOUR = 3_600_000
CALENDAR = Calendar.model_validate(
    {
        "timezone": "Asia/Seoul",
        "shifts": [{"start": "08:00", "end": "16:00"}],
        "breaks": [
            {"start": "10:00", "end": "10:15"},
            {"start": "12:00", "end": "12:30"},
            {"start": "14:00", "end": "14:15"},
        ],
    }
)


def at(hh: int, mm: int = 0) -> int:
    return int((DAY + dt.timedelta(hours=hh, minutes=mm)).timestamp() * 1000)


Record = tuple[int, int, int, int]  # ts_ms, produced, good, scrap


def hourly(changes: list[StateChange], records: list[Record], first: int = 8, last: int = 16) -> list[Components]:
    """Account each hour with the state in force at its start, as the engine does."""
    buckets = []
    for hh in range(first, last):
        start, end = at(hh), at(hh + 1)
        before = [c for c in changes if c.ts_ms < start]
        inside = [c for c in changes if start <= c.ts_ms < end]
        totals = ProductionTotals()
        for ts, produced, good, scrap in records:
            if start <= ts < end:
                totals.add(produced, good, scrap)
        shifts = list(CALENDAR.shifts_between(start, end))
        state = before[-1].time_class if before else None
        buckets.append(account_bucket(start, end, shifts, state, inside, {"A": totals}, {"A": 1.0}).components)
    return buckets


def worked_example() -> tuple[list[StateChange], list[Record]]:
    """480 min shift, 60 min of breaks, 47 min down, 1 s ideal cycle, 19,271 parts, 423 rejects."""
    changes = [StateChange(at(8), TimeClass.PRODUCTION)]
    for (h, m), minutes in (((9, 0), 20), ((11, 0), 17), ((15, 0), 10)):
        changes += [
            StateChange(at(h, m), TimeClass.UNPLANNED_DELAY),
            StateChange(at(h, m + minutes), TimeClass.PRODUCTION),
        ]
    records = []
    produced, scrap = 19_271, 423
    for i in range(48):  # a count every ten minutes
        share = produced // 48 + (1 if i < produced % 48 else 0)
        bad = scrap // 48 + (1 if i < scrap % 48 else 0)
        records.append((at(8, 10 * i + 5), share, share - bad, bad))
    return changes, records


def test_the_oee_worked_example_from_events() -> None:
    changes, records = worked_example()
    shift = total(hourly(changes, records))
    assert shift.pbt_s == 420 * 60
    assert shift.planned_down_s == 60 * 60
    assert shift.adet_s == 47 * 60
    assert shift.failures == 3
    assert round(compute("availability", shift) * 100, 2) == 88.81  # type: ignore[operator]
    assert round(compute("effectiveness", shift) * 100, 2) == 86.11  # type: ignore[operator]
    assert round(compute("quality_ratio", shift) * 100, 2) == 97.80  # type: ignore[operator]
    assert round(compute("oee", shift) * 100, 2) == 74.79  # type: ignore[operator]


def test_a_fault_across_an_hour_boundary_is_one_failure() -> None:
    changes = [
        StateChange(at(8), TimeClass.PRODUCTION),
        StateChange(at(8, 50), TimeClass.UNPLANNED_DELAY),
        StateChange(at(9, 20), TimeClass.PRODUCTION),
    ]
    hours = hourly(changes, [], last=10)
    assert [h.failures for h in hours] == [1, 0]
    assert [h.repair_s for h in hours] == [600, 1200]
    assert compute("mttr", total(hours)) == pytest.approx(30.0)


def test_silence_is_unknown_time_inside_planned_busy_time() -> None:
    changes = [StateChange(at(8), TimeClass.PRODUCTION), StateChange(at(8, 30), None)]
    (hour,) = hourly(changes, [], last=9)
    assert (hour.apt_s, hour.unknown_s, hour.pbt_s) == (1800, 1800, 3600)
    (before_any_state,) = hourly([], [], last=9)
    assert before_any_state.unknown_s == 3600


def test_planned_maintenance_reported_by_the_device_leaves_planned_busy_time() -> None:
    changes = [
        StateChange(at(8), TimeClass.PRODUCTION),
        StateChange(at(9), TimeClass.PLANNED_DOWNTIME),
        StateChange(at(9, 45), TimeClass.IDLE),
    ]
    (hour,) = hourly(changes, [], first=9, last=10)
    assert hour.pbt_s == 15 * 60
    assert hour.planned_down_s == 45 * 60
    assert hour.adot_s == 15 * 60


def test_time_outside_shifts_counts_for_nothing_and_breaks_are_planned_downtime() -> None:
    changes = [StateChange(at(7), TimeClass.PRODUCTION)]
    hours = hourly(changes, [], first=7, last=11)
    assert hours[0] == Components()  # before the shift
    assert hours[3].pbt_s == 45 * 60 and hours[3].planned_down_s == 15 * 60  # 10:00-10:15 break


def test_products_without_an_ideal_time_are_reported() -> None:
    start, end = at(8), at(9)
    a, b = ProductionTotals(), ProductionTotals()
    b.add(2, 2, cycle_time_s=31.0)
    a.add(1, 1, cycle_time_s=29.0)
    account = account_bucket(
        start,
        end,
        list(CALENDAR.shifts_between(start, end)),
        TimeClass.PRODUCTION,
        [],
        {"A": a, "B": b},
        {"A": 30.0},
        is_output=True,
    )
    assert account.products_without_ideal_time == {"B"}
    assert account.components.ideal_s == 30.0
    assert account.components.output_good == 3 and account.components.output_pbt_s == 3600
    assert (account.components.cycles, account.components.cycle_time_s) == (2, 60.0)

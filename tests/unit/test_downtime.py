"""State reasons in device-hours, downtime by cause, and the breakdown the report's charts are drawn from."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import orjson
import pytest

from kpi_engine.breakdown import breakdown
from kpi_engine.evaluation import evaluate
from pilot_core.calendar import Shift
from pilot_core.contract import TimeClass
from pilot_core.demonstration import Phase, plan_hash
from pilot_core.device_hours import (
    HOUR_MS,
    UNKNOWN_CAUSE,
    DeviceHour,
    DeviceRules,
    DowntimeCause,
    StateEvent,
    account,
    downtime_by_cause,
)
from tests.unit.test_evaluation import START_MS, meter_hours, plan, press_hours

NINE = START_MS + 9 * HOUR_MS  # 09:00 on a Monday, inside the 08:00–16:00 shift
MINUTE = 60_000


def shifts(hour: DeviceHour) -> list[Shift]:
    return list(plan().calendar.shifts_between(hour.start_ms, hour.end_ms))


def lost_in_kpis(hour: DeviceHour, rules: DeviceRules) -> float:
    """PBT − APT of the hour, as the KPIs account it."""
    c = account(hour, rules, shifts(hour)).components
    return c.asut_s + c.adet_s + c.adot_s + c.unknown_s


def test_an_hour_without_reasons_keeps_its_stored_json_and_fingerprint() -> None:
    """Hours stored before reasons were read decode, and re-reading them gives the same content hash."""
    hour = DeviceHour(
        "press",
        NINE,
        state_at_start=StateEvent(NINE - 5, "running", TimeClass.PRODUCTION),
        events=[StateEvent(NINE + 5, "fault", TimeClass.UNPLANNED_DELAY), StateEvent(NINE + 9, None, None)],
    )
    stored = hour.to_json()
    assert stored["state_at_start"] == [NINE - 5, "running", "production"]
    assert stored["events"] == [[NINE + 5, "fault", "unplanned_delay"], [NINE + 9, None, None]]
    old_text = orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)
    again = DeviceHour.from_json(json.loads(old_text))
    assert again == hour
    assert (
        hashlib.sha256(orjson.dumps(again.to_json(), option=orjson.OPT_SORT_KEYS)).digest()
        == hashlib.sha256(old_text).digest()
    )


def test_reasons_survive_json() -> None:
    hour = DeviceHour(
        "press",
        NINE,
        state_at_start=StateEvent(NINE - 5, "fault", TimeClass.UNPLANNED_DELAY, "E301 유압 저하"),
        events=[StateEvent(NINE + 5, "changeover", TimeClass.SETUP, "to P")],
    )
    stored = hour.to_json()
    assert stored["events"] == [[NINE + 5, "changeover", "setup", "to P"]]
    assert DeviceHour.from_json(json.loads(json.dumps(stored))) == hour


def test_downtime_by_cause_adds_up_to_what_the_kpis_lose() -> None:
    """Every second of planned busy time not producing goes to one cause, under the same accounting as the KPIs."""
    hour = DeviceHour(
        "press",
        NINE,
        state_at_start=StateEvent(NINE - MINUTE, "fault", TimeClass.UNPLANNED_DELAY, "E301"),
        events=[
            StateEvent(NINE + 4 * MINUTE, "running", TimeClass.PRODUCTION),
            StateEvent(NINE + 10 * MINUTE, "fault", TimeClass.UNPLANNED_DELAY, "E301"),
            StateEvent(NINE + 12 * MINUTE, "fault", TimeClass.UNPLANNED_DELAY, "E502"),
            StateEvent(NINE + 15 * MINUTE, "changeover", TimeClass.SETUP, "to P"),
            StateEvent(NINE + 25 * MINUTE, "idle", TimeClass.IDLE),
            StateEvent(NINE + 30 * MINUTE, "planned_stop", TimeClass.PLANNED_DOWNTIME),
            StateEvent(NINE + 35 * MINUTE, None, None),  # the last will: nothing known until the next state
            StateEvent(NINE + 40 * MINUTE, "running", TimeClass.PRODUCTION),
        ],
    )
    rules = DeviceRules.of(plan(), "press")
    lost = downtime_by_cause(hour, rules, shifts(hour))
    assert lost == {
        DowntimeCause(TimeClass.UNPLANNED_DELAY, "fault", "E301"): 6 * 60,
        DowntimeCause(TimeClass.UNPLANNED_DELAY, "fault", "E502"): 3 * 60,
        DowntimeCause(TimeClass.SETUP, "changeover", "to P"): 10 * 60,
        DowntimeCause(TimeClass.IDLE, "idle", None): 5 * 60,
        UNKNOWN_CAUSE: 5 * 60,
    }
    assert sum(lost.values()) == pytest.approx(lost_in_kpis(hour, rules))


def test_downtime_follows_the_plan_overrides_and_the_calendar() -> None:
    """An override moves a state's time between classes; time outside the shift is no one's downtime."""
    last = START_MS + 15 * HOUR_MS  # the shift ends at 16:00
    hour = DeviceHour(
        "press",
        last,
        state_at_start=StateEvent(last - MINUTE, "running", TimeClass.PRODUCTION),
        events=[StateEvent(last + 30 * MINUTE, "waiting", TimeClass.IDLE, "no order")],
    )
    overridden = plan(state_overrides=[{"state": "waiting", "time_class": "minor_stop", "reason": "starved"}])
    rules = DeviceRules.of(overridden, "press")
    lost = downtime_by_cause(hour, rules, shifts(hour))
    assert lost == {DowntimeCause(TimeClass.MINOR_STOP, "waiting", "no order"): 30 * 60}
    assert sum(lost.values()) == pytest.approx(lost_in_kpis(hour, rules))
    evening = DeviceHour("press", last + HOUR_MS, state_at_start=hour.events[0])
    assert downtime_by_cause(evening, rules, shifts(evening)) == {}
    assert downtime_by_cause(DeviceHour("meter", NINE, machine=False), rules, shifts(hour)) == {}


def test_the_breakdown_sums_to_the_evaluation() -> None:
    rng = np.random.default_rng(11)
    the_plan = plan()
    press = press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng)
    for hour in press[9::24]:  # a fault at 09:10 for ten minutes every day
        hour.events = [
            StateEvent(hour.start_ms + 10 * MINUTE, "fault", TimeClass.UNPLANNED_DELAY, "E301"),
            StateEvent(hour.start_ms + 20 * MINUTE, "running", TimeClass.PRODUCTION),
        ]
    hours = {"press": press, "meter": meter_hours(range(5)) + meter_hours(range(7, 12))}
    result = evaluate(the_plan, plan_hash(the_plan), hours)
    charts = breakdown(the_plan, hours)
    assert [d.day.isoformat() for d in charts.days[:2]] == ["2026-10-05", "2026-10-06"]
    assert len(charts.days) == 10 and {d.phase for d in charts.days[5:]} == {Phase.PILOT}
    for phase in Phase:
        expected = result.phases[phase].components
        summed = charts.phases[phase].components
        for name in ("pbt_s", "apt_s", "adet_s", "produced", "good", "energy_kwh", "cycles"):
            assert getattr(summed, name) == pytest.approx(getattr(expected, name)), (phase, name)
        assert charts.phases[phase].downtime_s == {
            DowntimeCause(TimeClass.UNPLANNED_DELAY, "fault", "E301"): pytest.approx(5 * 10 * 60)
        }
        assert charts.phases[phase].cycle_times.total == expected.cycles
    one_day = charts.days[0].components
    assert one_day.pbt_s == 8 * 3600 and one_day.adet_s == 10 * 60

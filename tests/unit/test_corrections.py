"""Data corrections in a plan: applied to what the devices recorded, never to the stored data itself."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from kpi_engine.evaluation import evaluate
from pilot_core.calendar import Calendar, Shift
from pilot_core.contract import TimeClass
from pilot_core.demonstration import CountCorrection, Phase, StateCorrection, canonical_json, plan_hash
from pilot_core.device_hours import (
    CORRECTED_STATE,
    HOUR_MS,
    CorrectionOutOfRange,
    DeviceHour,
    DeviceRules,
    DowntimeCause,
    StateEvent,
    account,
    corrected,
    downtime_by_cause,
)
from pilot_core.time_accounting import ProductionTotals
from tests.unit.test_evaluation import START_MS, plan

SEOUL = dt.timezone(dt.timedelta(hours=9))
NINE = START_MS + 9 * HOUR_MS  # 09:00, inside the 08:00–16:00 shift


def at(minutes: int) -> dt.datetime:
    return dt.datetime.fromtimestamp((NINE + minutes * 60_000) / 1000, SEOUL)


def faulty_hour() -> DeviceHour:
    """09:00–10:00: running, a fault 09:10–09:40 (E7), running again."""
    hour = DeviceHour("press", NINE, state_at_start=StateEvent(NINE - 1, "running", TimeClass.PRODUCTION))
    hour.events = [
        StateEvent(NINE + 10 * 60_000, "fault", TimeClass.UNPLANNED_DELAY, "E7"),
        StateEvent(NINE + 40 * 60_000, "running", TimeClass.PRODUCTION),
    ]
    hour.production["P"] = ProductionTotals(100, 98, 2, 0, 1900.0, 100)
    return hour


def shifts() -> list[Shift]:
    calendar = Calendar.model_validate({"timezone": "Asia/Seoul", "shifts": [{"start": "08:00", "end": "16:00"}]})
    return list(calendar.shifts_between(NINE, NINE + HOUR_MS))


def maintenance(start: int, end: int) -> StateCorrection:
    return StateCorrection(
        device="press",
        start=at(start),
        end=at(end),
        time_class=TimeClass.PLANNED_DOWNTIME,
        reason="planned maintenance not logged by the cell",
    )


def test_a_state_correction_moves_its_stretch_to_another_time_class() -> None:
    rules = DeviceRules.of(plan(), "press")
    hour = faulty_hour()
    before = account(hour, rules, shifts()).components
    assert before.adet_s == 30 * 60 and before.planned_down_s == 0

    fixed = corrected(hour, [maintenance(5, 45)])
    after = account(fixed, rules, shifts()).components
    assert after.adet_s == 0 and after.planned_down_s == 40 * 60
    assert after.pbt_s == before.pbt_s - 40 * 60 and after.apt_s == 20 * 60
    assert [e.state for e in fixed.events] == [CORRECTED_STATE, "running"]
    assert fixed.events[-1].ts_ms == NINE + 45 * 60_000
    assert hour.events == faulty_hour().events  # the recorded hour is left as it was


def test_a_correction_in_the_middle_of_a_fault_puts_the_fault_back_after_it() -> None:
    rules = DeviceRules.of(plan(), "press")
    fixed = corrected(faulty_hour(), [maintenance(20, 30)])
    components = account(fixed, rules, shifts()).components
    assert components.adet_s == 20 * 60 and components.planned_down_s == 10 * 60
    restored = fixed.events[2]
    assert (restored.ts_ms, restored.state, restored.reason) == (NINE + 30 * 60_000, "fault", "E7")


def test_a_correction_from_the_hours_start_and_beyond_its_end() -> None:
    rules = DeviceRules.of(plan(), "press")
    fixed = corrected(faulty_hour(), [maintenance(-120, 120)])
    assert fixed.state_at_start is not None and fixed.state_at_start.state == CORRECTED_STATE
    assert fixed.events == []
    assert account(fixed, rules, shifts()).components.pbt_s == 0
    assert corrected(faulty_hour(), [maintenance(90, 120)]) == faulty_hour()  # another hour: untouched


def test_corrected_downtime_shows_as_its_own_cause_with_its_reason() -> None:
    rules = DeviceRules.of(plan(), "press")
    setup = StateCorrection(
        device="press", start=at(10), end=at(40), time_class=TimeClass.SETUP, reason="a changeover, not a fault"
    )
    lost = downtime_by_cause(corrected(faulty_hour(), [setup]), rules, shifts())
    assert lost == {DowntimeCause(TimeClass.SETUP, CORRECTED_STATE, "a changeover, not a fault"): 30 * 60}


def test_a_count_correction_adds_to_the_hour_that_holds_its_moment() -> None:
    scrapped = CountCorrection(
        device="press", at=at(30), product="P", good=-5, scrap=5, reason="inspection scrapped five good parts"
    )
    fixed = corrected(faulty_hour(), [scrapped])
    assert fixed.production["P"] == ProductionTotals(100, 93, 7, 0, 1900.0, 100)
    new_product = CountCorrection(device="press", at=at(30), product="Q", produced=3, good=3, reason="hand count")
    assert corrected(faulty_hour(), [new_product]).production["Q"] == ProductionTotals(3, 3, 0, 0, 0.0, 0)


def test_corrections_are_checked_and_change_the_hash_only_when_present() -> None:
    with pytest.raises(ValidationError, match="good \\+ scrap \\+ rework = produced"):
        CountCorrection(device="press", at=at(0), product="P", good=-5, reason="missing the scrap side")
    with pytest.raises(ValidationError, match="must end after it starts"):
        maintenance(10, 10)
    with pytest.raises(ValidationError, match="corrections must be devices in scope"):
        plan(corrections=[maintenance(0, 10).model_copy(update={"device": "ghost"}).model_dump(mode="json")])
    assert "corrections" not in canonical_json(plan())
    with_one = plan(corrections=[maintenance(0, 10).model_dump(mode="json")])
    assert plan_hash(with_one) != plan_hash(plan()) and '"corrections":[' in canonical_json(with_one)


def test_the_evaluation_applies_the_plans_corrections() -> None:
    hours = {"press": [faulty_hour()], "meter": []}
    raw = evaluate(plan(), "h", hours)
    fixed = evaluate(plan(corrections=[maintenance(10, 40).model_dump(mode="json")]), "h", hours)
    # The 09:00 hour of the first day is in the baseline.
    assert raw.phases[Phase.BASELINE].components.adet_s == 30 * 60
    assert fixed.phases[Phase.BASELINE].components.adet_s == 0
    assert fixed.phases[Phase.BASELINE].components.planned_down_s == 30 * 60


def test_a_count_correction_that_takes_an_hour_below_zero_is_refused_naming_it() -> None:
    # Its hour recorded fewer units than it removes: the wrong hour, device or product. Counted anyway, the phase's
    # KPIs went negative and every evaluation of the plan failed (500: math domain error).
    wrong_hour = CountCorrection(
        device="press", at=at(30), product="P", produced=-1000, good=-1000, reason="entered in the wrong hour"
    )
    with pytest.raises(CorrectionOutOfRange) as refused:
        corrected(faulty_hour(), [wrong_hour])
    message = str(refused.value)
    assert "'entered in the wrong hour'" in message and "device 'press'" in message, message
    assert "the produced count of product 'P' below zero (-900)" in message, message

"""Evaluating a plan over device-hours: windows, phases, exclusions, coverage and targets."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import numpy as np
import pytest
from pydantic import TypeAdapter

from kpi_engine.evaluation import DemonstrationResult, evaluate
from kpi_engine.service import DecodedHours
from pilot_core.comparison import Verdict
from pilot_core.contract import TimeClass
from pilot_core.demonstration import DemonstrationPlan, Phase, plan_hash
from pilot_core.device_hours import EXACT_CYCLE_TIMES_PER_HOUR, HOUR_MS, DeviceHour, SeqSpan, StateEvent
from pilot_core.device_rows import DeviceRows, ProductionRow, StateRow, build_hours
from pilot_core.histogram import RELATIVE_ACCURACY, LogHistogram
from pilot_core.time_accounting import ProductionTotals

START = dt.datetime(2026, 10, 5, tzinfo=dt.timezone(dt.timedelta(hours=9)))  # a Monday, 00:00 in Seoul
START_MS = int(START.timestamp() * 1000)
DAY_MS = 24 * HOUR_MS


def plan(**changes: object) -> DemonstrationPlan:
    document: dict[str, object] = {
        "name": "press line",
        "site": "시화",
        "line": "L1",
        "devices": ["press", "meter"],
        "output_devices": ["press"],
        "energy_meters": ["meter"],
        "calendar": {"timezone": "Asia/Seoul", "shifts": [{"start": "08:00", "end": "16:00"}]},
        "windows": [
            {"name": "before", "phase": "baseline", "start": START.isoformat(), "end": (START + dt.timedelta(days=5))},
            {
                "name": "after",
                "phase": "pilot",
                "start": (START + dt.timedelta(days=7)).isoformat(),
                "end": (START + dt.timedelta(days=12)).isoformat(),
            },
        ],
        "products": [{"id": "P", "ideal_cycle_time_s": 20}],
        "targets": [{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5}],
    }
    document.update(changes)
    return DemonstrationPlan.model_validate(document)


def press_hours(days: range, cycle_s: float, rng: np.random.Generator) -> list[DeviceHour]:
    hours = []
    seq = 0
    for day in days:
        for hh in range(24):
            start = START_MS + day * DAY_MS + hh * HOUR_MS
            hour = DeviceHour("press", start, state_at_start=StateEvent(start - 1, "running", TimeClass.PRODUCTION))
            if 8 <= hh < 16:
                times = rng.normal(cycle_s, cycle_s * 0.05, int(3600 / cycle_s) - 5)
                hour.production["P"] = ProductionTotals(
                    len(times), len(times) - 1, 1, 0, float(times.sum()), len(times)
                )
                hour.cycle_times = LogHistogram.of(times)
                hour.telemetry_points = 60
                skipped = 1 if hh == 9 else 0  # one message lost each morning
                hour.seq["production"] = SeqSpan(len(times), seq + 1, seq + len(times) + skipped)
                seq += len(times) + skipped
            hours.append(hour)
    return hours


def meter_hours(days: range) -> list[DeviceHour]:
    return [
        DeviceHour(
            "meter", START_MS + day * DAY_MS + hh * HOUR_MS, machine=False, energy_kwh=2.0 if 8 <= hh < 16 else 0.1
        )
        for day in days
        for hh in range(24)
    ]


def test_windows_phases_and_comparisons_agree() -> None:
    rng = np.random.default_rng(7)
    the_plan = plan()
    hours = {
        "press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng),
        "meter": meter_hours(range(5)) + meter_hours(range(7, 12)),
    }
    result = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0})
    before, _ = result.windows
    assert before.components.pbt_s == 5 * 8 * 3600
    assert before.components.energy_kwh == pytest.approx(5 * (8 * 2.0 + 16 * 0.1))
    assert before.kpis["cycle_time_mean"] == pytest.approx(30.0, rel=0.01)
    assert before.kpis["cycle_time_p50"] == pytest.approx(30.0, rel=0.02)
    # The comparison's point estimates are the phases' roll-ups, exactly.
    comparison = result.comparisons["cycle_time_mean"]
    assert comparison.baseline.value == pytest.approx(result.phases[Phase.BASELINE].kpis["cycle_time_mean"])
    assert comparison.relative_change == pytest.approx(-1 / 6, rel=0.02)
    assert result.comparisons["energy_per_good_unit"].baseline.value == pytest.approx(
        result.phases[Phase.BASELINE].kpis["energy_per_good_unit"]
    )
    (target,) = result.targets
    assert target.check.verdict is Verdict.MET
    press = next(c for c in before.coverage if c.device == "press")
    assert (press.hours, press.telemetry_expected, press.telemetry_received) == (40, 2400, 2400)
    assert press.messages_missing == 5  # one seq skipped at 09:00 on each of five days


def test_exclusions_take_whole_hours_out() -> None:
    rng = np.random.default_rng(8)
    excluded = plan(
        exclusions=[
            {
                "start": (START + dt.timedelta(hours=9, minutes=10)).isoformat(),
                "end": (START + dt.timedelta(hours=10, minutes=5)).isoformat(),
                "reason": "power cut in the complex",
                "devices": ["press"],
            }
        ]
    )
    hours = {"press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng)}
    result = evaluate(excluded, plan_hash(excluded), hours)
    assert result.windows[0].excluded_hours == 2
    assert result.windows[0].components.pbt_s == (5 * 8 - 2) * 3600


def test_device_hours_survive_json() -> None:
    rng = np.random.default_rng(9)
    hour = press_hours(range(1), 30.0, rng)[9]
    hour.events = [
        StateEvent(hour.start_ms + 5, "fault", TimeClass.UNPLANNED_DELAY),
        StateEvent(hour.start_ms + 9, None, None),
    ]
    again = DeviceHour.from_json(hour.to_json())
    assert again == hour


def test_overrides_change_the_time_class() -> None:
    rng = np.random.default_rng(10)
    hours = {"press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng)}
    overridden = plan(
        state_overrides=[{"state": "running", "time_class": "idle", "reason": "the press only runs trials here"}]
    )
    result = evaluate(overridden, plan_hash(overridden), hours)
    assert result.windows[0].components.apt_s == 0
    assert result.windows[0].components.adot_s == 5 * 8 * 3600


def test_a_result_survives_the_result_cache_json() -> None:
    rng = np.random.default_rng(3)
    the_plan = plan()
    hours = {"press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 27.0, rng)}
    result = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0})
    adapter = TypeAdapter(DemonstrationResult)
    stored = json.loads(json.dumps(adapter.dump_python(result, mode="json"), allow_nan=False))
    assert adapter.validate_python(stored) == result


def test_decoded_hours_keep_the_most_recent_up_to_capacity() -> None:
    decoded = DecodedHours(capacity=2)
    hours = [DeviceHour("press", START_MS + i * HOUR_MS) for i in range(3)]
    decoded.keep([("a", hours[0]), ("b", hours[1])])
    decoded.keep([("a", hours[0])])  # used again: now the most recent
    decoded.keep([("c", hours[2])])
    assert decoded.snapshot() == {"a": hours[0], "c": hours[2]}


def test_hours_accounted_from_the_memo_give_the_result_accounting_them_afresh_gives() -> None:
    """Issue 23: a running server keeps each decoded hour's accounting under the rules and calendar it was done
    with, so a cold evaluation after new data (or a plan change that leaves accounting alone) reuses it; a plan
    that changes the rules is accounted afresh, and every number equals accounting without the memo."""
    rng = np.random.default_rng(5)
    hours = {
        "press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 27.0, rng),
        "meter": meter_hours(range(5)) + meter_hours(range(7, 12)),
    }
    decoded = DecodedHours()
    decoded.keep((f"{d}-{h.start_ms}", h) for d, device_hours in hours.items() for h in device_hours)
    adapter = TypeAdapter(DemonstrationResult)
    overridden = plan(state_overrides=[{"state": "running", "time_class": "idle", "reason": "trials only"}])
    for the_plan in (plan(), plan(), overridden, overridden, plan()):
        fresh = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0, "meter": 10.0})
        memo = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0, "meter": 10.0}, decoded.account)
        assert adapter.dump_json(memo) == adapter.dump_json(fresh)
    assert all(len(by_rules) == 2 for by_rules in decoded._accounted.values())  # two sets of rules, each once


def test_an_hour_replaced_or_dropped_takes_its_accounting_with_it() -> None:
    decoded = DecodedHours(capacity=1)
    first, second = DeviceHour("press", START_MS), DeviceHour("press", START_MS + HOUR_MS)
    decoded.keep([("a", first)])
    decoded.keep([("a", second)])  # the same fingerprint read again as another object
    assert set(decoded._accounted) == {id(second)}
    decoded.keep([("b", first)])
    assert set(decoded._accounted) == {id(first)}


def test_a_device_that_sent_no_telemetry_is_warned_about() -> None:
    """Issue 17 item 8: a silent machine (states unknown) and a silent meter each get a warning per window."""
    rng = np.random.default_rng(21)
    the_plan = plan(devices=["press", "meter", "robot"])
    silent_robot = [
        DeviceHour("robot", START_MS + day * DAY_MS + hh * HOUR_MS)
        for day in [*range(5), *range(7, 12)]
        for hh in range(24)
    ]
    hours = {
        "press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng),
        "meter": meter_hours(range(5)) + meter_hours(range(7, 12)),
        "robot": silent_robot,
    }
    result = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0, "meter": 10.0, "robot": 1.0})
    before = result.windows[0]
    meter = next(c for c in before.coverage if c.device == "meter")
    assert (meter.hours, meter.telemetry_expected, meter.telemetry_received) == (40, 40 * 360, 0)
    assert result.warnings == [
        "device 'meter' sent no telemetry in window 'after' (14,400 samples expected, 0 received)",
        "device 'meter' sent no telemetry in window 'before' (14,400 samples expected, 0 received)",
        "device 'robot' sent no telemetry in window 'after' (144,000 samples expected, 0 received)",
        "device 'robot' sent no telemetry in window 'before' (144,000 samples expected, 0 received)",
    ]


def amr_hours(days: range, trip_s: float) -> list[DeviceHour]:
    """A slow feeder: 17 trips an hour in the shift, each a cycle of ``trip_s``."""
    hours = []
    for day in days:
        for hh in range(24):
            start = START_MS + day * DAY_MS + hh * HOUR_MS
            hour = DeviceHour("amr", start, state_at_start=StateEvent(start - 1, "moving", TimeClass.PRODUCTION))
            if 8 <= hh < 16:
                hour.production["P"] = ProductionTotals(17, 17, 0, 0, 17 * trip_s, 17)
                hour.cycle_times = LogHistogram.of([trip_s] * 17)
            hours.append(hour)
    return hours


def test_the_line_cycle_time_is_its_output_stations_and_each_station_has_its_own() -> None:
    """Issue 17 item 12: a 200 s feeder's trips are not pooled with the output station's 30 s cycles."""
    rng = np.random.default_rng(22)
    the_plan = plan(devices=["press", "amr"], output_devices=["press"], energy_meters=[])
    hours = {
        "press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng),
        "amr": amr_hours(range(5), 200.0) + amr_hours(range(7, 12), 200.0),
    }
    result = evaluate(the_plan, plan_hash(the_plan), hours)
    baseline = result.phases[Phase.BASELINE]
    assert baseline.kpis["cycle_time_mean"] == pytest.approx(30.0, rel=0.01)
    assert baseline.kpis["cycle_time_p95"] == pytest.approx(30.0 * (1 + 1.645 * 0.05), rel=0.02)
    stations = {s.device: s for s in baseline.stations}
    assert stations["amr"].mean_s == pytest.approx(200.0) and not stations["amr"].output
    assert stations["amr"].cycles == 5 * 8 * 17
    assert stations["press"].mean_s == pytest.approx(baseline.kpis["cycle_time_mean"]) and stations["press"].output
    assert {s.device for s in result.windows[0].stations} == {"press", "amr"}
    # Each station's change is its own: the feeder did not change, the press sped up by a sixth.
    assert result.station_comparisons["amr"].relative_change == pytest.approx(0.0, abs=1e-12)
    assert result.station_comparisons["press"].relative_change == pytest.approx(-1 / 6, rel=0.02)
    assert result.station_comparisons["press"].relative_change == result.comparisons["cycle_time_mean"].relative_change
    # Each station's phase value is its comparison's, bit for bit.
    for phase, estimate in ((Phase.BASELINE, "baseline"), (Phase.PILOT, "pilot")):
        for station in result.phases[phase].stations:
            assert station.mean_s == getattr(result.station_comparisons[station.device], estimate).value


def cycle_rows(day: int, cycle_s: float, per_hour: int) -> DeviceRows:
    start = START_MS + day * DAY_MS
    rows = DeviceRows("press", True, start, start + DAY_MS)
    rows.states.append(StateRow(start, "running", TimeClass.PRODUCTION, None, 1))
    seq = 0
    for hh in range(8, 16):
        for i in range(per_hour):
            seq += 1
            ts = start + hh * HOUR_MS + i * (HOUR_MS // per_hour)
            rows.production.append(ProductionRow(ts, "P", 1, 1, 0, 0, cycle_s + 0.001 * (i % 3), seq))
    return rows


def test_cycle_time_percentiles_are_exact_where_every_cycle_is_at_hand() -> None:
    """Issue 17 item 10: two days of 50.372 s and 49.957 s cycles fell in one histogram bin (both 50.1501)."""
    days = plan(
        devices=["press"],
        energy_meters=[],
        windows=[
            {"name": "day 1", "phase": "baseline", "start": START, "end": START + dt.timedelta(days=1)},
            {
                "name": "day 2",
                "phase": "pilot",
                "start": START + dt.timedelta(days=1),
                "end": START + dt.timedelta(days=2),
            },
        ],
    )
    few = {"press": build_hours(cycle_rows(0, 50.372, 60)) + build_hours(cycle_rows(1, 49.957, 60))}
    result = evaluate(days, plan_hash(days), few)
    first, second = result.windows
    assert (first.kpis["cycle_time_p50"], second.kpis["cycle_time_p50"]) == (50.373, 49.958)
    assert first.kpis["cycle_time_p95"] == pytest.approx(50.374)
    assert first.quantiles_exact and second.quantiles_exact and result.phases[Phase.PILOT].quantiles_exact
    assert first.stations[0].p50_s == 50.373 and first.stations[0].quantiles_exact
    # The hours survive storage with their values.
    assert all(DeviceHour.decode(json.dumps(h.to_json())) == h for h in few["press"])
    # More cycles an hour than are kept: the histogram's value, and the document says so.
    many = {"press": build_hours(cycle_rows(0, 50.372, EXACT_CYCLE_TIMES_PER_HOUR + 1))}
    crowded = evaluate(days, plan_hash(days), many).windows[0]
    assert not crowded.quantiles_exact
    assert crowded.kpis["cycle_time_p50"] == pytest.approx(50.372, rel=RELATIVE_ACCURACY)


def test_phase_kpis_and_the_comparison_are_one_number_bit_for_bit() -> None:
    """/kpis shows the phases' values and /comparison the estimates: the same computation, not two summations."""
    rng = np.random.default_rng(11)
    the_plan = plan(devices=["press", "press-2", "meter"], output_devices=["press-2"])
    hours: dict[str, list[DeviceHour]] = {
        "press": press_hours(range(5), 31.3, rng) + press_hours(range(7, 12), 27.1, rng),
        "meter": meter_hours(range(5)) + meter_hours(range(7, 12)),
    }
    second = press_hours(range(5), 29.7, rng) + press_hours(range(7, 12), 26.3, rng)
    hours["press-2"] = [msgspec.structs.replace(h, device="press-2") for h in second]
    result = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0, "press-2": 60.0})
    for kpi, comparison in result.comparisons.items():
        assert comparison.baseline.value == result.phases[Phase.BASELINE].kpis[kpi], kpi
        assert comparison.pilot.value == result.phases[Phase.PILOT].kpis[kpi], kpi


def test_energy_per_good_unit_without_an_energy_meter_has_no_value_and_says_why() -> None:
    rng = np.random.default_rng(12)
    the_plan = plan(devices=["press"], energy_meters=[])
    hours = {"press": press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng)}
    result = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0})
    for phase in Phase:
        assert result.phases[phase].kpis["energy_per_good_unit"] is None
    comparison = result.comparisons["energy_per_good_unit"]
    assert comparison.baseline.value is None and comparison.pilot.value is None
    assert "no energy meter in scope" in comparison.note
    assert "zero" not in comparison.note

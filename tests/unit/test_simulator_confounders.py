"""Scenario files that move conditions between periods (issue 21, item 6): a plant-wide change, a control line
the pilot does not touch, a new product mix; and the truth they write."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.catalog import load_profiles
from pilot_core.profiles import ProfileCatalog, ProfileErrors
from simulators.line_model import render_runs, simulate_periods
from simulators.plan import demonstration_plan
from simulators.scenario import BUNDLED_SCENARIOS, Scenario, load_scenario, parse_scenario
from simulators.truth import scenario_truth


@pytest.fixture(scope="module")
def catalog() -> ProfileCatalog:
    return load_profiles()


def short(scenario: Scenario, days: int = 4) -> Scenario:
    return scenario.model_copy(update={"periods": [p.model_copy(update={"days": days}) for p in scenario.periods]})


def test_a_plant_wide_change_moves_both_cells_and_the_pilot_only_the_treated(catalog: ProfileCatalog) -> None:
    scenario = short(load_scenario(Path("plant_wide_improvement"), catalog))
    runs = simulate_periods(scenario, catalog)
    baseline, pilot = runs
    # Behaviours: the control cell never runs the pilot; both cells get the plant's −8%.
    assert pilot.stations["vision-02"].behaviour.speed_factor == pytest.approx(1.18 * 0.92)
    assert pilot.stations["vision-01"].behaviour.speed_factor == pytest.approx(1.18 * 0.92 * 0.94)
    assert baseline.stations["vision-02"].behaviour == baseline.stations["vision-01"].behaviour
    truth = json.loads(json.dumps(scenario_truth(runs, catalog)))
    assert truth["control_devices"] == ["cobot-02", "vision-02", "meter-02"]
    assert truth["injected_effects"]["cycle_time"] == -0.06
    before, after = truth["periods"]
    assert "plant_effects" not in before and after["plant_effects"]["cycle_time"] == -0.08

    # Cycle time against ideal time (the shifts' products are drawn at random, the same for both cells).
    def pace(period: dict[str, Any], device: str) -> float:
        station = period["stations"][device]
        return float(station["cycle_time_mean_s"] * station["records"] / station["ideal_time_s"])

    treated = pace(after, "vision-01") / pace(before, "vision-01")
    control = pace(after, "vision-02") / pace(before, "vision-02")
    assert control == pytest.approx(0.92, abs=0.01)
    assert treated / control - 1 == pytest.approx(-0.06, abs=0.01)  # the pilot's own effect, net of the plant's
    assert after["control"]["output_device"] == "vision-02"
    # Each meter meters its own cell: together they meter every station.
    everything = sum(s.energy_kwh_until(pilot.end_ms) for s in pilot.stations.values())
    assert after["line"]["energy_kwh"] + after["control"]["energy_kwh"] == pytest.approx(everything)
    assert after["line"]["energy_kwh"] == pytest.approx(
        sum(pilot.stations[d].energy_kwh_until(pilot.end_ms) for d in ("cobot-01", "vision-01"))
    )


def test_the_scenarios_plan_names_its_control_line(catalog: ProfileCatalog) -> None:
    scenario = load_scenario(Path("plant_wide_improvement"), catalog)
    plan = demonstration_plan(scenario, catalog)
    assert plan.control_line is not None
    assert plan.control_line.devices == ["cobot-02", "vision-02", "meter-02"]
    assert plan.control_line.output_devices == ["vision-02"] and plan.control_line.energy_meters == ["meter-02"]
    assert plan.output_devices == ["vision-01"] and plan.energy_meters == ["meter-01"]
    assert plan.treated_devices == ["cobot-01", "vision-01", "meter-01"]
    assert [t.method.value for t in plan.targets] == ["control_line"]


def test_a_period_can_move_the_product_mix(catalog: ProfileCatalog) -> None:
    text = (BUNDLED_SCENARIOS / "no_effect.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "  - {name: pilot, behaviour: pilot, start: 2026-10-26, days: 14}",
        "  - {name: pilot, behaviour: pilot, start: 2026-10-26, days: 14, product_shares: {BRK-100: 1, BRK-200: 3}}",
    )
    scenario = parse_scenario(text, "mix.yaml", catalog)
    runs = simulate_periods(scenario, catalog)
    shares = []
    for run in runs:
        made = [c.product for c in run.stations["vision-01"].cycles]
        shares.append(made.count("BRK-200") / len(made))
    assert shares[0] < 0.4 and shares[1] > 0.6  # 1 in 4 shifts before, 3 in 4 after
    truth = scenario_truth(runs, catalog)
    assert truth["periods"][1]["product_shares"] == {"BRK-100": 1, "BRK-200": 3}


def test_bad_confounders_are_refused_with_the_line(catalog: ProfileCatalog) -> None:
    text = (BUNDLED_SCENARIOS / "plant_wide_improvement.yaml").read_text(encoding="utf-8")
    with pytest.raises(ProfileErrors, match="control devices must be the scenario's devices; not: vision-09"):
        parse_scenario(
            text.replace("control_output_device: vision-02", "control_output_device: vision-09"), "x", catalog
        )
    with pytest.raises(ProfileErrors, match="unknown products: BRK-999"):
        parse_scenario(text.replace("plant_effects: {cycle_time: -0.08}", "product_shares: {BRK-999: 1}"), "x", catalog)


def test_a_period_can_add_a_shift(catalog: ProfileCatalog) -> None:
    scenario = short(load_scenario(Path("energy_volume_change"), catalog), days=2)
    baseline, pilot = simulate_periods(scenario, catalog)
    zone = scenario.calendar.zone

    def evening_cycles(run: Any) -> int:  # cycles that end between 18:00 and 23:00, the added shift's hours
        return sum(
            1
            for c in run.stations["vision-01"].cycles
            if 18 <= dt.datetime.fromtimestamp(c.end_ms / 1000, zone).hour < 23
        )

    assert evening_cycles(baseline) == 0 and evening_cycles(pilot) > 100
    truth = scenario_truth([baseline, pilot], catalog)
    assert [s["name"] for s in truth["periods"][0]["shifts"]] == ["주간"]
    plan = demonstration_plan(scenario, catalog)
    assert [s.name for s in plan.calendar.shifts] == ["주간", "야간"]  # the plan lists every shift worked
    assert plan.adjusted_baseline is not None and plan.targets[0].method.value == "adjusted_baseline"


def test_a_warmer_period_reads_warmer_and_cooling_costs_energy(catalog: ProfileCatalog) -> None:
    text = (BUNDLED_SCENARIOS / "no_effect.yaml").read_text(encoding="utf-8")
    text = text.replace("  off_kw: 0.05\n", "  off_kw: 0.05\n  cooling_kw_per_c: 0.02\n")
    text = text.replace(
        "  - {name: pilot, behaviour: pilot, start: 2026-10-26, days: 14}",
        "  - {name: pilot, behaviour: pilot, start: 2026-10-26, days: 2, ambient_c: 32}",
    )
    text = text.replace("start: 2026-10-05, days: 14}", "start: 2026-10-05, days: 2}")
    scenario = parse_scenario(text, "warm.yaml", catalog)
    baseline, pilot = simulate_periods(scenario, catalog)
    assert pilot.stations["cobot-01"].behaviour.idle_kw == pytest.approx(0.5 + 0.02 * 10)
    assert baseline.stations["cobot-01"].behaviour.idle_kw == 0.5
    messages = [m for m in render_runs([baseline, pilot], catalog) if m.device == "env-01" and m.channel == "telemetry"]
    temperatures = {
        period: [r["metrics"]["temperature"] for m in messages for r in json.loads(m.payload)["batch"]
                 if run.start_ms <= r["ts"] < run.end_ms]
        for period, run in (("baseline", baseline), ("pilot", pilot))
    }  # fmt: skip
    low = sum(temperatures["baseline"]) / len(temperatures["baseline"])
    high = sum(temperatures["pilot"]) / len(temperatures["pilot"])
    assert high - low == pytest.approx(10, abs=1.0)
    assert scenario_truth([baseline, pilot], catalog)["periods"][1]["ambient_c"] == 32


def with_pilot_period(catalog: ProfileCatalog, pilot: str, cooling: float = 0.0) -> Scenario:
    """no_effect.yaml with its periods two days long and the pilot period's line replaced by ``pilot``."""
    text = (BUNDLED_SCENARIOS / "no_effect.yaml").read_text(encoding="utf-8")
    if cooling:
        text = text.replace("  off_kw: 0.05\n", f"  off_kw: 0.05\n  cooling_kw_per_c: {cooling}\n")
    text = text.replace("  - {name: pilot, behaviour: pilot, start: 2026-10-26, days: 14}", pilot)
    text = text.replace("start: 2026-10-05, days: 14}", "start: 2026-10-05, days: 2}")
    return parse_scenario(text, "changed.yaml", catalog)


def test_a_period_can_ramp_demand(catalog: ProfileCatalog) -> None:
    """Orders for half the busy time as the period starts, ramping to all of it: the line idles for want of
    orders early on, makes more each day, and truth.json says so."""
    pilot = "  - {name: pilot, behaviour: baseline, start: 2026-10-26, days: 4, demand: 0.5, demand_ramp_pct: 100}"
    scenario = with_pilot_period(catalog, pilot)
    baseline, ramped = simulate_periods(scenario, catalog)
    output = "vision-01"
    day_ms = 24 * 3600 * 1000

    def produced(run: Any, day: int) -> int:
        start = run.start_ms + day * day_ms
        return sum(c.produced for c in run.stations[output].cycles if start <= c.end_ms < start + day_ms)

    daily = [produced(ramped, day) for day in range(4)]
    assert daily == sorted(daily) and daily[0] < 0.7 * daily[3], daily
    waiting = [i for i in ramped.stations[output].intervals if i.reason == "no orders"]
    assert waiting and all(i.time_class.value == "idle" for i in waiting)
    assert not [i for i in baseline.stations[output].intervals if i.reason == "no orders"]
    truth = json.loads(json.dumps(scenario_truth([baseline, ramped], catalog)))
    assert truth["periods"][1]["demand"] == {"start": 0.5, "end": 1.0, "ramp_pct": 100.0}
    assert "demand" not in truth["periods"][0]


def test_the_weather_can_warm_across_a_period_and_cooling_follows_it(catalog: ProfileCatalog) -> None:
    """Ambient 24 °C warming by 10 °C across two days, with a daily swing: sensors read it hour by hour, every
    metered station draws cooling_kw_per_c per °C above 22 °C at each moment, and truth.json keeps the weather."""
    flat = "  - {name: pilot, behaviour: baseline, start: 2026-10-26, days: 2, ambient_c: 24}"
    warming = flat.replace("ambient_c: 24}", "ambient_c: 24, ambient_ramp_c: 10, ambient_daily_swing_c: 0.0001}")
    swinging = flat.replace("ambient_c: 24}", "ambient_c: 24, ambient_daily_swing_c: 1.5}")
    cooling = 0.02
    runs = {
        name: simulate_periods(with_pilot_period(catalog, text, cooling), catalog)[1]
        for name, text in (("flat", flat), ("warming", warming), ("swinging", swinging))
    }
    warm = runs["warming"]
    assert warm.ambient_c_at(warm.start_ms) == pytest.approx(24, abs=0.01)
    assert warm.ambient_c_at(warm.end_ms - 1) == pytest.approx(34, abs=0.01)
    # Cooling beyond the flat period's: on average 5 °C more, over 48 hours, for each metered station.
    metered = len(warm.metered())
    extra = warm.line_energy_kwh() - runs["flat"].line_energy_kwh()
    assert extra == pytest.approx(metered * cooling * 5 * 48, rel=0.01)
    # A swing around the same mean, never below 22 °C: no more energy over whole days, but more at 15:00 than 03:00.
    swing = runs["swinging"]
    assert swing.line_energy_kwh() == pytest.approx(runs["flat"].line_energy_kwh(), rel=1e-4)
    three, fifteen = swing.start_ms + 3 * 3600_000, swing.start_ms + 15 * 3600_000
    assert swing.ambient_c_at(fifteen) - swing.ambient_c_at(three) == pytest.approx(3.0)
    assert swing.line_power_kw(fifteen) - runs["flat"].line_power_kw(fifteen) == pytest.approx(metered * cooling * 1.5)
    # The environment sensor reads the warming: the same night hours (the cell off), a day apart, 5 °C warmer.
    messages = [m for m in render_runs([warm], catalog) if m.device == "env-01" and m.channel == "telemetry"]
    readings = [(r["ts"], r["metrics"]["temperature"]) for m in messages for r in json.loads(m.payload)["batch"]]
    first = [v for ts, v in readings if ts < warm.start_ms + 6 * 3600_000]
    second = [v for ts, v in readings if 0 <= ts - warm.start_ms - 24 * 3600_000 < 6 * 3600_000]
    assert sum(second) / len(second) - sum(first) / len(first) == pytest.approx(5, abs=0.3)
    truth = scenario_truth([warm], catalog)["periods"][0]
    assert (truth["ambient_c"], truth["ambient_ramp_c"]) == (24, 10)

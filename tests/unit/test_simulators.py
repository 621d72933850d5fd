"""The line model: deterministic, valid under the contract, true to its calendar and effects."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import pytest

from adapters.catalog import load_profiles
from pilot_core.contract import Channel, TimeClass
from pilot_core.demonstration import Design
from pilot_core.profiles import ProfileCatalog, ProfileErrors
from pilot_core.registry import DeviceRegistry, parse_registry
from pilot_core.validation import Accepted, validate_message
from simulators.line_model import LineModel, LineRun, render, render_runs, simulate_periods
from simulators.plan import demonstration_plan
from simulators.scenario import BUNDLED_SCENARIOS, Scenario, load_scenario, parse_scenario
from simulators.truth import scenario_truth


@pytest.fixture(scope="module")
def catalog() -> ProfileCatalog:
    return load_profiles()


@pytest.fixture(scope="module")
def scenario(catalog: ProfileCatalog) -> Scenario:
    return load_scenario(Path("pangyo_cobot_cell"), catalog)


@pytest.fixture(scope="module")
def runs(scenario: Scenario, catalog: ProfileCatalog) -> list[LineRun]:
    return simulate_periods(scenario, catalog)


def one_day(scenario: Scenario, catalog: ProfileCatalog, day: dt.date, behaviour: str = "baseline") -> LineRun:
    zone = scenario.calendar.zone
    start = int(dt.datetime.combine(day, dt.time(), zone).timestamp() * 1000)
    return LineModel(scenario, catalog).simulate(behaviour, start, start + 86_400_000, f"day-{day}")


def test_bundled_scenarios_load(catalog: ProfileCatalog) -> None:
    names = sorted(p.stem for p in BUNDLED_SCENARIOS.glob("*.yaml"))
    assert {"pangyo_cobot_cell", "no_effect"} <= set(names)
    for name in names:
        load_scenario(Path(name), catalog)


def test_same_seed_same_bytes_and_another_seed_differs(scenario: Scenario, catalog: ProfileCatalog) -> None:
    day = dt.date(2026, 10, 6)

    def payloads(s: Scenario) -> list[bytes]:
        return [m.payload for m in render(one_day(s, catalog, day), catalog)]

    first = payloads(scenario)
    assert first == payloads(scenario)
    assert first != payloads(scenario.model_copy(update={"seed": scenario.seed + 1}))


def test_every_message_passes_the_collectors_validation(scenario: Scenario, catalog: ProfileCatalog) -> None:
    registry = DeviceRegistry(scenario.registry_entries(), catalog)
    run = one_day(scenario, catalog, dt.date(2026, 10, 9))  # a Friday, with planned maintenance
    for batch in (1, 50):
        for message in render(run, catalog, batch_records=batch, telemetry_interval_s=10):
            outcome = validate_message(message.topic, message.payload, registry, 256 * 1024)
            assert isinstance(outcome, Accepted), (message.topic, outcome)
            assert len(outcome.lines) == message.records


def test_seq_grows_by_one_per_device_and_channel_across_periods(runs: list[LineRun], catalog: ProfileCatalog) -> None:
    last: dict[tuple[str, Channel], int] = {}
    for message in render_runs(runs, catalog, batch_records=500):
        seq = json.loads(message.payload)["seq"]
        key = (message.device, message.channel)
        assert seq == last.get(key, -1) + 1
        last[key] = seq


def test_no_production_outside_shifts_or_in_breaks(scenario: Scenario, runs: list[LineRun]) -> None:
    zone = scenario.calendar.zone
    calendar = scenario.calendar
    for run in runs:
        for station in run.stations.values():
            for cycle in station.cycles:
                if cycle.cycle_time_s is None:
                    continue  # count-mode totals are stamped at the end of their interval
                start = dt.datetime.fromtimestamp((cycle.end_ms - cycle.cycle_time_s * 1000) / 1000, zone)
                end = dt.datetime.fromtimestamp(cycle.end_ms / 1000, zone)
                assert start.weekday() < 5, f"{station.device.id} produced on a weekend: {start}"
                assert any(s.start <= start.time() and end.time() <= s.end for s in calendar.shifts)
                for pause in calendar.breaks:
                    assert end.time() <= pause.start or start.time() >= pause.end, f"cycle in a break: {start}–{end}"


def test_state_timeline_covers_the_period_without_gaps(runs: list[LineRun]) -> None:
    for run in runs:
        for station in run.stations.values():
            assert station.intervals[0].start_ms == run.start_ms
            assert station.intervals[-1].end_ms == run.end_ms
            for before, after in zip(station.intervals, station.intervals[1:], strict=False):
                assert before.end_ms == after.start_ms


def test_pilot_effects_show_in_the_truth(scenario: Scenario, runs: list[LineRun], catalog: ProfileCatalog) -> None:
    truth = scenario_truth(runs, catalog)
    baseline, pilot = truth["periods"]
    assert truth["injected_effects"]["cycle_time"] == pytest.approx(-0.12)
    for device in ("cobot-01", "cnc-01", "vision-01"):
        b, p = baseline["stations"][device], pilot["stations"][device]
        assert p["cycle_time_mean_s"] / b["cycle_time_mean_s"] - 1 == pytest.approx(-0.12, abs=0.03)
    totals = {
        name: {k: sum(s[k] for s in period["stations"].values()) for k in ("produced", "scrap", "fault_time_ms")}
        for name, period in (("baseline", baseline), ("pilot", pilot))
    }
    scrap_change = (totals["pilot"]["scrap"] / totals["pilot"]["produced"]) / (
        totals["baseline"]["scrap"] / totals["baseline"]["produced"]
    ) - 1
    assert scrap_change == pytest.approx(-0.30, abs=0.10)
    assert totals["pilot"]["fault_time_ms"] < totals["baseline"]["fault_time_ms"]
    assert pilot["line"]["energy_per_good_unit_kwh"] < baseline["line"]["energy_per_good_unit_kwh"]


def test_count_mode_reports_totals_without_cycle_time(runs: list[LineRun]) -> None:
    conveyor = runs[0].stations["conveyor-01"]
    assert conveyor.cycles and all(c.cycle_time_s is None for c in conveyor.cycles)
    assert all(c.produced == c.good + c.scrap + c.rework for c in conveyor.cycles)


def test_energy_register_is_the_integral_of_power(runs: list[LineRun], catalog: ProfileCatalog) -> None:
    run = runs[0]
    readings = [
        json.loads(m.payload)
        for m in render(run, catalog, batch_records=1)
        if m.device == "meter-01" and m.channel is Channel.TELEMETRY
    ]
    first, last = readings[0], readings[-1]
    drawn = last["metrics"]["active_energy_kwh"] - first["metrics"]["active_energy_kwh"]
    assert drawn == pytest.approx(run.line_energy_kwh(last["ts"]), abs=1e-3)


def test_time_classes_add_up_to_the_period(runs: list[LineRun]) -> None:
    for run in runs:
        for station in run.stations.values():
            by_class = station.time_by_class()
            assert sum(by_class.values()) == run.end_ms - run.start_ms
            assert by_class[TimeClass.PRODUCTION.value] > 0


def test_registry_yaml_round_trips(scenario: Scenario, catalog: ProfileCatalog) -> None:
    registry = parse_registry(scenario.registry_yaml(), "devices.yaml", catalog)
    assert {d.entry.device for d in registry} == {d.id for d in scenario.devices}
    assert {d.entry.site for d in registry} == {"판교"}


def test_realtime_span_with_one_record_per_message(scenario: Scenario, catalog: ProfileCatalog) -> None:
    start = int(dt.datetime(2026, 10, 6, 10, 0, tzinfo=scenario.calendar.zone).timestamp() * 1000)
    run = LineModel(scenario, catalog).simulate("pilot", start, start + 600_000, "realtime")
    messages = list(render(run, catalog, batch_records=1, telemetry_interval_s=1))
    assert all(m.records == 1 for m in messages)
    assert [m.ts_ms for m in messages] == sorted(m.ts_ms for m in messages)
    per_device: dict[str, int] = defaultdict(int)
    for m in messages:
        if m.channel is Channel.TELEMETRY:
            per_device[m.device] += 1
    assert set(per_device.values()) == {600}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('start: "08:00"', "write clock times in quotes"),
        ("profile: cobot_arm}", "unknown profile 'robot_x'"),
        ("cycle_time: -0.12", "faster than the ideal cycle time"),
    ],
)
def test_scenario_errors_name_file_and_line(catalog: ProfileCatalog, change: str, message: str) -> None:
    text = (BUNDLED_SCENARIOS / "pangyo_cobot_cell.yaml").read_text(encoding="utf-8")
    broken = {
        'start: "08:00"': text.replace('start: "08:00"', "start: 12:00", 1),
        "profile: cobot_arm}": text.replace("profile: cobot_arm,", "profile: robot_x,", 1),
        "cycle_time: -0.12": text.replace("cycle_time: -0.12", "cycle_time: -0.5"),
    }[change]
    assert broken != text
    with pytest.raises(ProfileErrors) as caught:
        parse_scenario(broken, "line.yaml", catalog)
    assert message in str(caught.value)
    assert "line.yaml:" in str(caught.value)


@pytest.mark.parametrize("path", sorted(BUNDLED_SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_generated_plan_has_a_design_and_standardises_the_mix(path: Path, catalog: ProfileCatalog) -> None:
    # pilot demo and the simulators' plans are pre-registered and standardise a moved mix (issue 21).
    plan = demonstration_plan(load_scenario(path, catalog), catalog)
    assert plan.design == Design() and plan.product_mix

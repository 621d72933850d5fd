"""The ground truth of a simulated run, for checking what KPI work recovers.

Per station and period: counts, cycle times, time per ISO 22400 time class,
faults and repair time; per line: energy. Also the behaviour the period ran
and the effects the pilot injected.
"""

from __future__ import annotations

from typing import Any

from pilot_core.contract import TimeClass
from pilot_core.profiles import ProfileCatalog
from simulators.line_model import LineRun, StationRun
from simulators.scenario import AMBIENT_C, control_output_station, output_station


def station_truth(station: StationRun) -> dict[str, Any]:
    cycles = station.cycles
    by_class = station.time_by_class()
    timed = [c.cycle_time_s for c in cycles if c.cycle_time_s is not None]
    fault_ms = sum(i.end_ms - i.start_ms for i in station.intervals if i.time_class is TimeClass.UNPLANNED_DELAY)
    return {
        "profile": station.profile.id,
        "records": len(cycles),
        "produced": sum(c.produced for c in cycles),
        "good": sum(c.good for c in cycles),
        "scrap": sum(c.scrap for c in cycles),
        "rework": sum(c.rework for c in cycles),
        "ideal_time_s": sum(c.ideal_time_s for c in cycles),
        "cycle_time_mean_s": sum(timed) / len(timed) if timed else None,
        "time_ms_by_class": by_class,
        "faults": station.faults,
        "fault_time_ms": fault_ms,
        "minor_stops": station.minor_stops,
        "setups": station.setups,
        "state_changes": len(station.intervals),
        "energy_kwh": station.energy_kwh_until(station.intervals[-1].end_ms) if station.intervals else 0.0,
    }


def run_truth(run: LineRun, catalog: ProfileCatalog) -> dict[str, Any]:
    stations = {device: station_truth(s) for device, s in run.stations.items()}
    output = output_station(run.scenario, catalog)
    good = stations[output]["good"]
    energy = run.line_energy_kwh()
    period = next((p for p in run.scenario.periods if p.name == run.period), None)
    truth = {
        "period": run.period,
        "behaviour": run.behaviour_name,
        "start_ms": run.start_ms,
        "end_ms": run.end_ms,
        "parameters": run.scenario.behaviour(run.behaviour_name).model_dump(),
        "stations": stations,
        "line": {
            "output_device": output,
            "produced": stations[output]["produced"],
            "good": good,
            "energy_kwh": energy,
            "energy_per_good_unit_kwh": energy / good if good else None,
        },
    }
    if period is not None and (
        period.plant_effects != period.plant_effects.__class__()
        or period.product_shares
        or period.calendar
        or period.ambient_c != AMBIENT_C
        or period.weather_varies
        or period.demand != 1
        or period.demand_ramp_pct
    ):
        # The confounders of this period (issue 21): what changed besides the pilot.
        truth["plant_effects"] = period.plant_effects.model_dump()
        truth["product_shares"] = {p.id: p.share for p in run.scenario.products_in(period)}
        truth["shifts"] = [s.model_dump(mode="json") for s in (period.calendar or run.scenario.calendar).shifts]
        truth["ambient_c"] = period.ambient_c
        truth["ambient_ramp_c"] = period.ambient_ramp_c
        truth["ambient_daily_swing_c"] = period.ambient_daily_swing_c
        # Demand: the share of busy time with orders at the start and at the end of the period.
        truth["demand"] = {
            "start": period.demand_at(0.0),
            "end": period.demand_at(1.0),
            "ramp_pct": period.demand_ramp_pct,
        }
    control = control_output_station(run.scenario, catalog)
    if control is not None:
        control_energy = run.line_energy_kwh(control=True)
        control_good = stations[control]["good"]
        truth["control"] = {
            "devices": list(run.scenario.control_devices),
            "output_device": control,
            "produced": stations[control]["produced"],
            "good": control_good,
            "cycle_time_mean_s": stations[control]["cycle_time_mean_s"],
            "energy_kwh": control_energy,
        }
    return truth


def scenario_truth(runs: list[LineRun], catalog: ProfileCatalog) -> dict[str, Any]:
    if not runs:
        raise ValueError("no runs")
    scenario = runs[0].scenario
    return {
        "scenario": scenario.id,
        "seed": scenario.seed,
        "site": scenario.site,
        "line": scenario.line,
        "injected_effects": scenario.pilot_effects.model_dump(),  # on the treated line; never on a control
        "control_devices": list(scenario.control_devices),
        "products": {p.id: p.ideal_cycle_time_s for p in scenario.products},
        "periods": [run_truth(run, catalog) for run in runs],
    }

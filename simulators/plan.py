"""The demonstration plan a scenario stands for: its windows, scope, ideal times and targets."""

from __future__ import annotations

import datetime as dt

from pilot_core.demonstration import ControlLinePlan, DemonstrationPlan, Design, Phase, Product, Window
from pilot_core.profiles import ProfileCatalog
from simulators.scenario import Role, Scenario, control_output_station, output_station, role_of


def demonstration_plan(scenario: Scenario, catalog: ProfileCatalog) -> DemonstrationPlan:
    zone = scenario.calendar.zone
    windows = [
        Window(
            name=period.name,
            phase=Phase(period.behaviour),
            start=dt.datetime.combine(period.start, dt.time(), zone),
            end=dt.datetime.combine(period.end, dt.time(), zone),
        )
        for period in scenario.periods
    ]
    # The plan's ideal time is per unit; a station making several units per cycle shares the cycle's.
    factors = {
        d.id: d.ideal_cycle_factor / d.units_per_cycle
        for d in scenario.devices
        if d.ideal_cycle_factor / d.units_per_cycle != 1
    }
    return DemonstrationPlan(
        name=scenario.name,
        name_ko=scenario.name_ko,
        site=scenario.site,
        line=scenario.line,
        devices=[d.id for d in scenario.devices],
        output_devices=[output_station(scenario, catalog)],
        energy_meters=[
            d.id for d in scenario.devices if role_of(d, catalog) is Role.METER and d.id not in scenario.control_devices
        ],
        calendar=scenario.calendar,
        windows=windows,
        products=[
            Product(
                id=p.id,
                name=p.name,
                ideal_cycle_time_s=p.ideal_cycle_time_s,
                per_device={device: p.ideal_cycle_time_s * factor for device, factor in factors.items()},
            )
            for p in scenario.products
        ],
        targets=scenario.targets,
        confidence_level=scenario.confidence_level,
        # The simulators sample every device at the scenario's interval, not the profiles' rates.
        telemetry_interval_s={
            d.id: scenario.telemetry_interval_s for d in scenario.devices if catalog[d.profile].metrics
        },
        adjusted_baseline=scenario.adjusted_baseline,
        control_line=_control_line(scenario, catalog),
        # Every plan we generate is pre-registered and standardises a moved mix (issue 21); the plan model keeps
        # both opt-in only so that plans written before them keep their hash.
        design=Design(),
        product_mix=True,
    )


def _control_line(scenario: Scenario, catalog: ProfileCatalog) -> ControlLinePlan | None:
    output = control_output_station(scenario, catalog)
    if output is None:
        return None
    return ControlLinePlan(
        devices=scenario.control_devices,
        output_devices=[output],
        energy_meters=[
            d.id for d in scenario.devices if d.id in scenario.control_devices and role_of(d, catalog) is Role.METER
        ],
        independence=scenario.control_independence,
    )

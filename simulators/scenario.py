"""Scenario files: a line, its calendar and products, and the behaviours to simulate.

A scenario describes one line: its devices and their profiles, the shift
calendar with its planned downtime, the products with their ideal cycle
times, and the periods to simulate. Each period runs one behaviour; the
pilot behaviour is the baseline with known relative effects injected, so
that KPI work can check the effects it recovers against the truth.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from pathlib import Path
from typing import Annotated, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pilot_core.calendar import Calendar
from pilot_core.demonstration import AdjustedBaselinePlan, Target
from pilot_core.ids import check_id
from pilot_core.profiles import ProductionMode, ProfileCatalog, ProfileErrors
from pilot_core.registry import DeviceEntry
from pilot_core.yaml_text import SourceError, parse_yaml

BUNDLED_SCENARIOS = Path(__file__).resolve().parent / "scenarios"

Fraction = Annotated[float, Field(ge=0, le=1)]
Effect = Annotated[float, Field(gt=-1, le=10, description="Relative change, e.g. -0.12 for −12%")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Product(_Strict):
    id: str
    name: str = ""
    ideal_cycle_time_s: float = Field(gt=0, description="ISO 22400 PRU: planned run time per unit")
    share: float = Field(default=1.0, gt=0, description="Relative share of shifts running this product")

    @field_validator("id")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        return check_id(value, "product id")


AMBIENT_C = 22.0  # the ambient temperature a period has unless it says otherwise


class Behaviour(_Strict):
    """How a producing station behaves: speed, losses, quality and energy."""

    speed_factor: float = Field(default=1.15, ge=1, description="Mean actual cycle time ÷ ideal cycle time")
    cycle_time_cv: float = Field(default=0.06, ge=0, le=1, description="Coefficient of variation of cycle time")
    cycle_time_ar1: float = Field(
        default=0.6,
        ge=0,
        lt=1,
        description="Lag-1 autocorrelation of cycle time: real lines drift, they are not i.i.d.",
    )
    scrap_rate: Fraction = 0.04
    rework_rate: Fraction = 0.02
    mtbf_min: float = Field(default=240, gt=0, description="Mean running minutes between unplanned faults")
    mttr_min: float = Field(default=18, gt=0, description="Mean minutes to repair a fault")
    minor_stops_per_hour: float = Field(default=1.5, ge=0)
    minor_stop_s: float = Field(default=45, gt=0)
    setup_min: float = Field(default=12, ge=0, description="Changeover at the start of each shift")
    running_kw: float = Field(default=2.0, ge=0, description="Electrical power while producing")
    idle_kw: float = Field(default=0.4, ge=0, description="Power while in shift but not producing")
    off_kw: float = Field(default=0.05, ge=0, description="Standby power outside the shifts")
    cooling_kw_per_c: float = Field(
        default=0.0, ge=0, description="Power added in and out of shift per °C of ambient above 22 °C (cooling)"
    )


class Effects(_Strict):
    """Relative effects of the pilot, applied to the baseline behaviour."""

    cycle_time: Effect = 0.0
    scrap: Effect = 0.0
    rework: Effect = 0.0
    unplanned_downtime: Effect = Field(default=0.0, description="Applied to fault frequency (MTBF), keeping MTTR")
    minor_stops: Effect = 0.0
    energy_per_unit: Effect = Field(default=0.0, description="Applied to running energy per cycle")

    def apply(self, base: Behaviour) -> Behaviour:
        cycle = 1 + self.cycle_time
        # Running power scales so that running energy per cycle (power × cycle time) changes by energy_per_unit.
        running_kw = base.running_kw * (1 + self.energy_per_unit) / cycle
        return base.model_copy(
            update={
                # Ideal cycle time is fixed by the product, so the pilot's speed shows as a smaller speed factor;
                # it may fall below 1 only if the effect claims better than ideal, which the check below refuses.
                "speed_factor": base.speed_factor * cycle,
                "scrap_rate": min(1.0, base.scrap_rate * (1 + self.scrap)),
                "rework_rate": min(1.0, base.rework_rate * (1 + self.rework)),
                "mtbf_min": base.mtbf_min / (1 + self.unplanned_downtime),
                "minor_stops_per_hour": base.minor_stops_per_hour * (1 + self.minor_stops),
                "running_kw": running_kw,
            }
        )


class Role(enum.StrEnum):
    STATION = "station"  # a producing device: states, production, telemetry
    METER = "meter"  # an energy meter over the line's stations
    SENSOR = "sensor"  # telemetry only


class ScenarioDevice(_Strict):
    id: str
    profile: str
    name: str = ""
    role: Role | None = Field(
        default=None, description="Default: station if the profile reports production, else sensor"
    )
    ideal_cycle_factor: float = Field(
        default=1.0, gt=0, description="This device's ideal cycle time as a multiple of the product's"
    )
    units_per_cycle: int = Field(default=1, ge=1)
    count_interval_s: float = Field(default=60, gt=0, description="Reporting interval for count-mode production")

    @field_validator("id")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        return check_id(value, "device id")


class Period(_Strict):
    name: str
    behaviour: str = Field(description="'baseline' or 'pilot'")
    start: dt.date
    days: int = Field(ge=1, le=366)
    # Confounders (issue 21): what changes between periods besides the pilot.
    plant_effects: Effects = Field(
        default_factory=Effects,
        description="A change of the whole plant in this period, on every station, the control line's too",
    )
    product_shares: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="This period's product mix (relative shares), where not the products'"
    )
    calendar: Calendar | None = Field(
        default=None,
        description="The shifts the line works in this period, where not the scenario's (e.g. a shift added);"
        " the plan keeps the scenario's calendar, so list every shift there",
    )
    ambient_c: float = Field(
        default=AMBIENT_C, ge=-40, le=60, description="The ambient temperature: what °C sensors read at rest"
    )
    ambient_ramp_c: float = Field(
        default=0.0, ge=-40, le=40, description="The ambient changes linearly by this much across the period (°C)"
    )
    ambient_daily_swing_c: float = Field(
        default=0.0, ge=0, le=20, description="Half the day's ambient range: warmest at 15:00, coolest at 03:00 (°C)"
    )
    demand: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of the planned busy time with orders as the period starts; the rest the line idles",
    )
    demand_ramp_pct: float = Field(
        default=0.0,
        ge=-90,
        le=500,
        description="Demand changes linearly by this many percent across the period (capped at full: every"
        " busy minute loaded)",
    )

    def ambient_at(self, fraction: float, hour_of_day: float) -> float:
        """The ambient °C at ``fraction`` of the way through the period, at that local hour of the day."""
        swing = self.ambient_daily_swing_c * math.sin(2 * math.pi * (hour_of_day - 9) / 24)
        return self.ambient_c + self.ambient_ramp_c * fraction + swing

    def demand_at(self, fraction: float) -> float:
        """The share of busy time with orders at ``fraction`` of the way through the period."""
        return min(1.0, self.demand * (1 + self.demand_ramp_pct / 100 * fraction))

    @property
    def weather_varies(self) -> bool:
        return bool(self.ambient_ramp_c or self.ambient_daily_swing_c)

    @field_validator("behaviour")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ("baseline", "pilot"):
            raise ValueError("behaviour must be 'baseline' or 'pilot'")
        return value

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days)


class Scenario(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,47}$")]
    name: str
    name_ko: str = ""
    description: str = ""
    site: str
    line: str
    seed: int = 1
    telemetry_interval_s: float = Field(
        default=60,
        gt=0,
        description="Seconds between telemetry samples (the profiles' rates are the real-time default)",
    )
    calendar: Calendar
    products: list[Product] = Field(min_length=1)
    devices: list[ScenarioDevice] = Field(min_length=1)
    output_device: str | None = Field(
        default=None, description="The station whose good units are the line's output (default: the last station)"
    )
    baseline: Behaviour = Behaviour()
    pilot_effects: Effects = Effects()
    periods: list[Period] = Field(min_length=1)
    targets: list[Target] = Field(
        default_factory=list, description="What the demonstration's plan sets out to show, judged by pilot demo"
    )
    confidence_level: float = 0.90
    control_devices: list[str] = Field(
        default_factory=list,
        description="Devices the pilot does not touch (a control line): they run the baseline behaviour in every"
        " period, with the plant's changes; a meter among them meters them alone",
    )
    control_output_device: str | None = Field(
        default=None, description="The control's output station (default: its last station)"
    )
    control_independence: str = Field(
        default="a separate cell of the simulated line: its own stations, meter and order flow",
        description="Why the control is independent, as the plan must say",
    )
    adjusted_baseline: AdjustedBaselinePlan | None = Field(
        default=None, description="The plan's adjusted baseline, for targets with method adjusted_baseline"
    )

    @field_validator("site", "line")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        return check_id(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for what, ids in (
            ("device", [d.id for d in self.devices]),
            ("product", [p.id for p in self.products]),
            ("period", [p.name for p in self.periods]),
        ):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise ValueError(f"{what} ids must be unique; repeated: {', '.join(repeated)}")
        if self.output_device is not None and self.output_device not in {d.id for d in self.devices}:
            raise ValueError(f"output_device {self.output_device!r} is not one of the scenario's devices")
        if self.behaviour("pilot").speed_factor < 1:
            raise ValueError("pilot_effects.cycle_time makes cycles faster than the ideal cycle time")
        devices = {d.id for d in self.devices}
        stray = [d for d in [*self.control_devices, *filter(None, [self.control_output_device])] if d not in devices]
        if stray:
            raise ValueError(f"control devices must be the scenario's devices; not: {', '.join(stray)}")
        if self.output_device in self.control_devices:
            raise ValueError(f"the output device {self.output_device!r} cannot also be a control device")
        products = {p.id for p in self.products}
        for period in self.periods:
            unknown = [p for p in period.product_shares if p not in products]
            if unknown:
                raise ValueError(f"period {period.name!r}: product_shares names unknown products: {', '.join(unknown)}")
        return self

    def behaviour_of(self, device: str, behaviour: str, period: Period | None) -> Behaviour:
        """A station's behaviour in a period: a control device never gets the pilot's effects; every station gets
        the period's plant-wide change."""
        own = self.behaviour("baseline" if device in self.control_devices else behaviour)
        if period is None:
            return own
        changed = period.plant_effects.apply(own)
        cooling = changed.cooling_kw_per_c * max(0.0, period.ambient_c - AMBIENT_C)
        if not cooling:
            return changed
        return changed.model_copy(
            update={k: getattr(changed, k) + cooling for k in ("running_kw", "idle_kw", "off_kw")}
        )

    def products_in(self, period: Period | None) -> list[Product]:
        """The products with the period's mix, where it sets one."""
        if period is None or not period.product_shares:
            return self.products
        return [p.model_copy(update={"share": period.product_shares.get(p.id, p.share)}) for p in self.products]

    def behaviour(self, name: str) -> Behaviour:
        return self.pilot_effects.apply(self.baseline) if name == "pilot" else self.baseline

    def period(self, name: str) -> Period:
        for period in self.periods:
            if period.name == name:
                return period
        raise KeyError(
            f"scenario {self.id} has no period {name!r} (periods: {', '.join(p.name for p in self.periods)})"
        )

    def registry_entries(self) -> list[DeviceEntry]:
        return [
            DeviceEntry(site=self.site, line=self.line, device=d.id, profile=d.profile, name=d.name)
            for d in self.devices
        ]

    def registry_yaml(self) -> str:
        """A devices.yaml registering this scenario's devices, for the collector."""
        document = {"devices": [e.model_dump(exclude_defaults=True) for e in self.registry_entries()]}
        return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def output_station(scenario: Scenario, catalog: ProfileCatalog) -> str:
    if scenario.output_device is not None:
        return scenario.output_device
    stations = [
        d.id for d in scenario.devices if role_of(d, catalog) is Role.STATION and d.id not in scenario.control_devices
    ]
    if not stations:
        raise ValueError(f"scenario {scenario.id} has no producing station")
    return stations[-1]


def control_output_station(scenario: Scenario, catalog: ProfileCatalog) -> str | None:
    """The control line's output station: None without a control line."""
    if not scenario.control_devices:
        return None
    if scenario.control_output_device is not None:
        return scenario.control_output_device
    stations = [
        d.id for d in scenario.devices if d.id in scenario.control_devices and role_of(d, catalog) is Role.STATION
    ]
    if not stations:
        raise ValueError(f"scenario {scenario.id}: the control devices hold no producing station")
    return stations[-1]


def role_of(device: ScenarioDevice, catalog: ProfileCatalog) -> Role:
    if device.role is not None:
        return device.role
    profile = catalog[device.profile]
    return Role.SENSOR if profile.production.mode is ProductionMode.NONE else Role.STATION


def parse_scenario(text: str, source: str, catalog: ProfileCatalog) -> Scenario:
    """Parse and check a scenario against the profiles. Raises ProfileErrors with file and line."""
    document = parse_yaml(text, source)
    try:
        scenario = Scenario.model_validate(document.data)
    except ValidationError as exc:
        raise ProfileErrors(document.errors(exc)) from None
    problems = []
    for index, device in enumerate(scenario.devices):
        profile = catalog.get(device.profile)
        where = document.line_of(["devices", index, "profile"])
        if profile is None:
            known = ", ".join(p.id for p in catalog)
            problems.append(SourceError(source, where, f"unknown profile {device.profile!r} (loaded: {known})"))
        elif role_of(device, catalog) is Role.STATION and profile.production.mode is ProductionMode.NONE:
            problems.append(
                SourceError(source, where, f"profile {profile.id} does not report production; it cannot be a station")
            )
    if problems:
        raise ProfileErrors(problems)
    return scenario


def load_scenario(path: Path, catalog: ProfileCatalog) -> Scenario:
    """A scenario by file path, or by the name of a bundled scenario."""
    if not path.exists() and path.suffix == "" and (BUNDLED_SCENARIOS / f"{path}.yaml").is_file():
        path = BUNDLED_SCENARIOS / f"{path}.yaml"
    if not path.is_file():
        bundled = ", ".join(sorted(p.stem for p in BUNDLED_SCENARIOS.glob("*.yaml")))
        raise ProfileErrors(
            [SourceError(str(path), None, f"scenario file does not exist (bundled scenarios: {bundled})")]
        )
    return parse_scenario(path.read_text(encoding="utf-8"), str(path), catalog)

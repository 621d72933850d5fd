"""A demonstration's plan: what is measured, when, against which targets.

An evaluator can only trust a before/after result if the plan behind it was
fixed before the pilot ran. A plan is a frozen pydantic model with a
canonical JSON form; its SHA-256 names exactly what a result used. Once a
plan is frozen it never changes: an amendment is a new version with a reason.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import itertools
import json
import math
from collections import Counter
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pilot_core.calendar import Calendar
from pilot_core.comparison import LEVELS
from pilot_core.contract import TimeClass
from pilot_core.ids import check_id
from pilot_core.kpi import KPIS, Better

Id = Annotated[str, AfterValidator(check_id)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


STORED = {"stored": True}
"""Validation context for a plan read back from storage: the checks marked as new plans' only were added after
plans were stored, and a stored plan must always read as it was accepted (its hash names it)."""


def _new_plan(info: ValidationInfo) -> bool:
    return not (isinstance(info.context, dict) and info.context.get("stored"))


# Every moment of a plan lies within these: far outside them a time is a typing error or an attack (some cannot
# even be moved to UTC), and InfluxDB holds no points before 1677 or after 2262 anyway. How long the windows may
# be is the API's setting (max_window_days).
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _aware(value: dt.datetime, info: ValidationInfo) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone offset, e.g. 2026-10-05T00:00:00+09:00")
    if _new_plan(info) and not EARLIEST <= value <= LATEST:
        raise ValueError(f"must lie within {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return value


Moment = Annotated[dt.datetime, AfterValidator(_aware)]
MAX_SECONDS = 366 * 86_400


def _plausible_seconds(value: float, info: ValidationInfo) -> float:
    """Seconds the KPIs multiply counts by: finite and at most a year (beyond, a typing error that overflows them)."""
    if _new_plan(info) and not (math.isfinite(value) and value <= MAX_SECONDS):
        raise ValueError(f"must be a finite number of seconds, at most {MAX_SECONDS:,} (a year)")
    return value


Seconds = Annotated[float, Field(gt=0), AfterValidator(_plausible_seconds)]


MAX_COUNT_CHANGE = 1_000_000_000


def _plausible_count(value: int, info: ValidationInfo) -> int:
    """A change of a count no line makes in an hour is a typing error; summed with others it would overflow."""
    if _new_plan(info) and abs(value) > MAX_COUNT_CHANGE:
        raise ValueError(f"a count correction changes a count by at most {MAX_COUNT_CHANGE:,} either way")
    return value


CountChange = Annotated[int, AfterValidator(_plausible_count)]


class Phase(enum.StrEnum):
    BASELINE = "baseline"
    PILOT = "pilot"


class Window(_Strict):
    name: str = Field(min_length=1, max_length=64)
    phase: Phase
    start: Moment
    end: Moment

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"window {self.name!r} must end after it starts")
        return self

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86_400

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)


class Product(_Strict):
    """Ideal cycle time (ISO 22400 PRU), per product and, where stations differ, per device."""

    id: Id
    name: str = ""
    ideal_cycle_time_s: Seconds
    per_device: dict[Id, Seconds] = Field(default_factory=dict)
    version: int = Field(default=1, ge=1, description="Raise it whenever an ideal time is changed")

    def ideal_for(self, device: str) -> float:
        return self.per_device.get(device, self.ideal_cycle_time_s)


class StateOverride(_Strict):
    """Map a state to another time class than its profile says, for this demonstration."""

    state: str
    time_class: TimeClass
    device: Id | None = Field(default=None, description="Only for this device (default: every device)")
    reason: str = Field(min_length=1)


class Direction(enum.StrEnum):
    INCREASE = "increase"
    DECREASE = "decrease"


# --- Adjustment methods (issue 21, items 3 and 4): chosen in the plan, frozen with it. ---------------------------


class Method(enum.StrEnum):
    BEFORE_AFTER = "before_after"
    ADJUSTED_BASELINE = "adjusted_baseline"  # IPMVP-style regression on the baseline, ASHRAE Guideline 14 acceptance
    CONTROL_LINE = "control_line"  # difference-in-differences against devices the pilot does not touch


class IndependentVariable(enum.StrEnum):
    """What an adjusted baseline may be regressed on, per hour, from the treated line's own data."""

    PRODUCTION_VOLUME = "production_volume"  # units the output stations produced in the hour
    SHIFT_HOURS = "shift_hours"  # planned busy hours of the output stations in the hour (an added shift shows)
    AMBIENT_TEMPERATURE = "ambient_temperature"  # °C, the hour's mean over the plan's ambient sensors


class AdjustedBaselinePlan(_Strict):
    """Regress the treated line's hourly ``response`` on ``variables`` over the baseline, project it onto the pilot."""

    response: Literal["energy_kwh", "adet_s", "scrap", "rework", "produced", "good"] = "energy_kwh"
    variables: list[IndependentVariable] = Field(min_length=1)
    reason: str = Field(min_length=3, description="Why these variables drive the response")
    ambient_sensors: list[Id] = Field(
        default_factory=list,
        description="Environment sensors in scope whose temperature is the ambient (their hourly mean, averaged):"
        " needed for ambient_temperature, and only then",
    )

    @field_validator("variables")
    @classmethod
    def _once(cls, value: list[IndependentVariable]) -> list[IndependentVariable]:
        if len(set(value)) != len(value):
            raise ValueError("an independent variable is listed twice")
        return value

    @model_validator(mode="after")
    def _sensors_for_temperature(self) -> Self:
        ambient = IndependentVariable.AMBIENT_TEMPERATURE in self.variables
        if ambient and not self.ambient_sensors:
            raise ValueError(
                "ambient_temperature needs adjusted_baseline.ambient_sensors: the environment sensors in scope"
                " whose temperature is the ambient"
            )
        if self.ambient_sensors and not ambient:
            raise ValueError("adjusted_baseline.ambient_sensors are given, but ambient_temperature is not a variable")
        if len(set(self.ambient_sensors)) != len(self.ambient_sensors):
            raise ValueError("an ambient sensor is listed twice")
        return self


class ControlLinePlan(_Strict):
    """Devices in scope that the pilot does not touch: they carry what changed for the whole plant."""

    devices: list[Id] = Field(min_length=1)
    output_devices: list[Id] = Field(min_length=1, description="The control's output stations")
    energy_meters: list[Id] = Field(default_factory=list, description="Meters whose energy is the control's")
    independence: str = Field(
        min_length=10,
        description="Why the control is independent: no shared operators, material flow or bottleneck",
    )


class Target(_Strict):
    """E.g. cycle_time_mean, decrease, 10: the mean cycle time falls by at least 10%."""

    kpi: str
    direction: Direction
    change_pct: float = Field(gt=0, lt=1000, description="Size of the relative change asked for, in percent")
    method: Method = Field(
        default=Method.BEFORE_AFTER,
        description="How the verdict is reached: the plain before/after, the plan's adjusted baseline, or its"
        " control line (difference-in-differences)",
    )

    @field_validator("kpi")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in KPIS:
            raise ValueError(f"unknown KPI {value!r}; known: {', '.join(KPIS)}")
        return value

    @model_validator(mode="after")
    def _direction_improves(self) -> Self:
        better = KPIS[self.kpi].better
        wanted = Direction.DECREASE if better is Better.LOWER else Direction.INCREASE
        if self.direction is not wanted:
            raise ValueError(f"{self.kpi} is better when {better.value}: a target for it must {wanted.value}")
        return self

    @property
    def label(self) -> str:
        return f"{self.kpi} {'−' if self.direction is Direction.DECREASE else '+'}{self.change_pct:g}%"


class Exclusion(_Strict):
    """A non-routine event left out of every KPI, e.g. a power cut or a trial of another change."""

    start: Moment
    end: Moment
    reason: str = Field(min_length=3)
    devices: list[Id] = Field(default_factory=list, description="Only these devices (default: all in scope)")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("an exclusion must end after it starts")
        return self


class StateCorrection(_Strict):
    """A device's state was recorded wrongly for a while: that time counts in another time class.

    E.g. planned maintenance the cell forgot to log, recorded as a fault. Applied to the recorded states, so
    the KPIs and the downtime by cause both see it; the original data stays as it was in the store.
    """

    kind: Literal["state"] = "state"
    device: Id
    start: Moment
    end: Moment
    time_class: TimeClass
    reason: str = Field(min_length=3)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("a state correction must end after it starts")
        return self


class CountCorrection(_Strict):
    """Counts recorded wrongly, corrected by adding these to the hour that holds ``at``.

    E.g. five parts counted good that inspection later scrapped: good −5, scrap +5. The changes must keep
    good + scrap + rework = produced.
    """

    kind: Literal["counts"] = "counts"
    device: Id
    at: Moment
    product: Id
    produced: CountChange = 0
    good: CountChange = 0
    scrap: CountChange = 0
    rework: CountChange = 0
    reason: str = Field(min_length=3)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.good + self.scrap + self.rework != self.produced:
            raise ValueError("a count correction must keep good + scrap + rework = produced")
        if not (self.produced or self.good or self.scrap or self.rework):
            raise ValueError("a count correction must change a count")
        return self


Correction = Annotated[StateCorrection | CountCorrection, Field(discriminator="kind")]


class Design(_Strict):
    """Design before data (pre-registration): the power the plan asks for, and what it expects or states.

    Frozen with the plan. The minimum detectable effect of each target is computed from the baseline's hours
    alone (pilot_core.design), so the pilot's data cannot move it; a figure stated here is checked against it.
    """

    power: float = Field(default=0.80, ge=0.5, le=0.99, description="Power at which effects are to be detected")
    expected_change_pct: dict[str, Annotated[float, Field(gt=0, lt=1000)]] = Field(
        default_factory=dict,
        description="Per target KPI: the improvement the team expects, in percent; the design says how long a"
        " pilot must run to show the target met at the power if it holds",
    )
    stated_mde_pct: dict[str, Annotated[float, Field(gt=0, lt=1000)]] = Field(
        default_factory=dict,
        description="Per target KPI: the minimum detectable effect, in percent, as stated when the plan was frozen;"
        " a recomputation from the baseline that differs by more than 0.05 points is flagged",
    )


class DemonstrationPlan(_Strict):
    name: str = Field(min_length=1, max_length=200)
    name_ko: str = ""
    site: Id
    line: Id
    devices: list[Id] = Field(min_length=1, description="Devices in scope")
    output_devices: list[Id] = Field(
        min_length=1, description="Stations whose good units are the line's output (throughput, energy per unit)"
    )
    energy_meters: list[Id] = Field(default_factory=list, description="Meters whose energy is the line's")
    calendar: Calendar
    windows: list[Window] = Field(min_length=2)
    products: list[Product] = Field(min_length=1)
    state_overrides: list[StateOverride] = Field(default_factory=list)
    targets: list[Target] = Field(default_factory=list)
    confidence_level: float = Field(default=0.90, description=f"Two-sided interval level: one of {LEVELS}")
    exclusions: list[Exclusion] = Field(default_factory=list)
    corrections: list[Correction] = Field(
        default_factory=list,
        description="Data corrections, each with its reason; the stored data is never altered",
    )
    telemetry_interval_s: dict[Id, Seconds] = Field(
        default_factory=dict,
        description="Seconds between samples a device's agent is set to, where not its profile's rate;"
        " data coverage is judged against it",
    )
    adjusted_baseline: AdjustedBaselinePlan | None = Field(
        default=None, description="The regression an 'adjusted_baseline' target is judged by"
    )
    control_line: ControlLinePlan | None = Field(
        default=None, description="Devices in scope the pilot does not touch, for 'control_line' targets"
    )
    design: Design | None = Field(
        default=None,
        description="Design before data, chosen in the plan: each target's minimum detectable change from the"
        " baseline alone, at this power (null: none)",
    )
    product_mix: bool = Field(
        default=False,
        description="Also give cycle time, throughput and energy per unit at the baseline's product mix, whenever"
        " the mix moved",
    )

    @field_validator("confidence_level")
    @classmethod
    def _supported_level(cls, value: float) -> float:
        if round(value, 2) not in LEVELS:
            raise ValueError(f"confidence_level must be one of {', '.join(f'{x:g}' for x in LEVELS)}")
        return round(value, 2)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        scope = set(self.devices)
        in_scope = [
            ("output_devices", self.output_devices),
            ("energy_meters", self.energy_meters),
            ("telemetry_interval_s", list(self.telemetry_interval_s)),
            ("corrections", [c.device for c in self.corrections]),
        ]
        if _new_plan(info):  # a misspelt device here used to be stored, and then silently matched nothing
            in_scope += [
                ("exclusions", [d for e in self.exclusions for d in e.devices]),
                ("state_overrides", [o.device for o in self.state_overrides if o.device is not None]),
            ]
        for name, listed in in_scope:
            outside = [d for d in listed if d not in scope]
            if outside:
                raise ValueError(f"{name} must be devices in scope; not in scope: {', '.join(outside)}")
        if len(scope) != len(self.devices):
            raise ValueError("devices are listed twice")
        if _new_plan(info):
            _listed_once(("output_devices", self.output_devices), ("energy_meters", self.energy_meters))
        phases = {w.phase for w in self.windows}
        if phases != {Phase.BASELINE, Phase.PILOT}:
            raise ValueError("a demonstration needs at least one baseline and one pilot window")
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError("window names must be unique")
        ordered = sorted(self.windows, key=lambda w: w.start)
        for earlier, later in itertools.pairwise(ordered):
            if later.start < earlier.end:
                raise ValueError(f"windows {earlier.name!r} and {later.name!r} overlap")
        ids = [p.id for p in self.products]
        if len(set(ids)) != len(ids):
            raise ValueError("product ids must be unique")
        for product in self.products:
            unknown = [d for d in product.per_device if d not in scope]
            if unknown:
                raise ValueError(f"product {product.id}: per_device names devices not in scope: {', '.join(unknown)}")
        kpis = [t.kpi for t in self.targets]
        if len(set(kpis)) != len(kpis):
            raise ValueError("one target per KPI")
        self._check_methods(_new_plan(info))
        design = self.design or Design()
        for name, stated in (
            ("design.expected_change_pct", design.expected_change_pct),
            ("design.stated_mde_pct", design.stated_mde_pct),
        ):
            untargeted = sorted(k for k in stated if k not in kpis)
            if untargeted:
                raise ValueError(f"{name} names KPIs without a target: {', '.join(untargeted)}")
        return self

    def _check_methods(self, new_plan: bool) -> None:
        """The adjustment methods' own consistency: a control is never treated, a method is declared before use."""
        methods = {t.method for t in self.targets}
        if Method.ADJUSTED_BASELINE in methods and self.adjusted_baseline is None:
            raise ValueError("a target uses method adjusted_baseline, but the plan declares no adjusted_baseline")
        if Method.CONTROL_LINE in methods and self.control_line is None:
            raise ValueError("a target uses method control_line, but the plan declares no control_line")
        adjusted = self.adjusted_baseline
        if adjusted is not None and adjusted.response == "energy_kwh" and not self.energy_meters:
            raise ValueError("adjusted_baseline.response energy_kwh needs energy_meters on the treated line")
        outside = [] if adjusted is None else [d for d in adjusted.ambient_sensors if d not in self.devices]
        if outside:
            raise ValueError(
                f"adjusted_baseline.ambient_sensors must be devices in scope; not in scope: {', '.join(outside)}"
            )
        control = self.control_line
        if control is None:
            return
        if new_plan:
            _listed_once(
                ("control_line.devices", control.devices),
                ("control_line.output_devices", control.output_devices),
                ("control_line.energy_meters", control.energy_meters),
            )
        scope = set(self.devices)
        outside = [d for d in control.devices if d not in scope]
        if outside:
            raise ValueError(f"control_line.devices must be devices in scope; not in scope: {', '.join(outside)}")
        line_roles = {*self.output_devices, *self.energy_meters}  # sets: a plan may list thousands of devices
        treated = [d for d in control.devices if d in line_roles]
        if treated:
            raise ValueError(
                f"control device(s) {', '.join(treated)} also treated: a control may not be an output station or"
                " energy meter of the pilot line"
            )
        controls = set(control.devices)
        for name, listed in (("output_devices", control.output_devices), ("energy_meters", control.energy_meters)):
            stray = [d for d in listed if d not in controls]
            if stray:
                raise ValueError(f"control_line.{name} must be control devices; not: {', '.join(stray)}")
        if not self.treated_devices:
            raise ValueError("every device in scope is a control device: nothing is treated")

    @property
    def window_days(self) -> float:
        """Days the windows cover together (they never overlap): what evaluating the plan reads."""
        return sum(w.days for w in self.windows)

    @property
    def treated_devices(self) -> list[Id]:
        """The devices whose sums are the line's KPIs: every device in scope but the control line's."""
        control = set(self.control_line.devices) if self.control_line else set()
        return [d for d in self.devices if d not in control]

    def windows_of(self, phase: Phase) -> list[Window]:
        return [w for w in self.windows if w.phase is phase]

    def ideal_cycle_times(self, device: str) -> dict[str, float]:
        return {p.id: p.ideal_for(device) for p in self.products}


def _listed_once(*roles: tuple[str, list[str]]) -> None:
    """Each device once per role: the hourly units of a role are summed over its list, so one listed twice counted
    twice (the control line's units, the output stations' product totals)."""
    for name, listed in roles:
        twice = sorted(d for d, times in Counter(listed).items() if times > 1)
        if twice:
            raise ValueError(f"{name} lists {', '.join(twice)} twice: list each device once")


def canonical_json(plan: DemonstrationPlan) -> str:
    """One text per plan: its JSON with sorted keys and no spaces.

    A plan without corrections (or a design, or product-mix standardisation) leaves the key out, so plans frozen
    before they existed keep their hash.
    """
    document = plan.model_dump(mode="json")
    if not document["corrections"]:
        del document["corrections"]
    # Likewise issue 21's choices: absent (no design, no product mix, no adjustment method, a target's default
    # method), they leave no key.
    for key in ("adjusted_baseline", "control_line", "design", "product_mix"):
        if not document[key]:
            del document[key]
    if "adjusted_baseline" in document and not document["adjusted_baseline"]["ambient_sensors"]:
        del document["adjusted_baseline"]["ambient_sensors"]  # added later: plans without sensors keep their hash
    for target in document["targets"]:
        if target["method"] == Method.BEFORE_AFTER:
            del target["method"]
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_hash(plan: DemonstrationPlan) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(plan).encode("utf-8")).hexdigest()

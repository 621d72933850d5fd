"""A demonstration's KPIs per window and its before/after comparison.

Applies a plan to stored device-hours: each hour becomes KPI components
under the plan's calendar, state mapping and ideal times; windows and
devices roll up by summing; the phases are compared hour by hour.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Protocol

import numpy as np

from pilot_core.accounted_days import (
    EXACT,
    MACHINE,
    SCHEDULED,
    SEQ_COLUMNS,
    AccountedDay,
    DayDetail,
    ambient_column,
    day_start,
    unpacked_vectors,
)
from pilot_core.adjusted_baseline import REVISION as ADJUSTED_REVISION
from pilot_core.adjusted_baseline import AdjustedResult, adjusted_baseline
from pilot_core.calendar import Shift
from pilot_core.comparison import KpiComparison, TargetCheck, Verdict, check_target, compare, judge_interval
from pilot_core.control_line import ControlLineResult, control_line
from pilot_core.demonstration import DemonstrationPlan, IndependentVariable, Method, Phase, Target, Window
from pilot_core.design import REVISION as DESIGN_REVISION
from pilot_core.design import TargetDesign, design_target
from pilot_core.device_hours import HOUR_MS, DeviceHour, DeviceRules, DowntimeCause, account_vector, corrected
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import COMPONENT_NAMES, KPIS, Components, NoValue, compute, compute_all, no_value_reason, total
from pilot_core.product_mix import MixStandardisation, PhaseTotals, ProductTotals, standardise
from pilot_core.time_accounting import BucketCalendar, ProductionTotals

PERCENTILES = {"cycle_time_p50": 0.50, "cycle_time_p95": 0.95}

# account_vector's answer: components (as a tuple or a numpy row), the products lacking an ideal cycle time.
Accounted = tuple[Sequence[float] | np.ndarray, AbstractSet[str]]


class Accounting(Protocol):
    """Accounts one device's hours under its rules, each with its hour's calendar: ``account_vector`` per hour,
    or a memo of it that a running server keeps (``DecodedHours.account``)."""

    def __call__(
        self, hours: Sequence[DeviceHour], rules: DeviceRules, calendars: Sequence[BucketCalendar]
    ) -> list[Accounted]: ...


def account_all(
    hours: Sequence[DeviceHour], rules: DeviceRules, calendars: Sequence[BucketCalendar]
) -> list[Accounted]:
    return [account_vector(h, rules, c) for h, c in zip(hours, calendars, strict=True)]


@dataclass(frozen=True, slots=True)
class CycleTimes:
    """Some cycles' times: their merged histogram, and every value where each of their hours kept them."""

    histogram: LogHistogram
    values: np.ndarray | None  # None: some hour had too many cycles to keep their values

    @classmethod
    def of(cls, hours: Sequence[DeviceHour]) -> CycleTimes:
        exact = all(h.has_exact_cycle_times for h in hours)
        values = np.fromiter(itertools.chain.from_iterable(h.cycle_time_values for h in hours), dtype=float)
        return cls(_merged([h.cycle_times for h in hours]), values if exact else None)

    @classmethod
    def merged(cls, parts: Sequence[CycleTimes]) -> CycleTimes:
        values = [p.values for p in parts if p.values is not None]
        exact = np.concatenate([np.zeros(0), *values]) if len(values) == len(parts) else None
        return cls(_merged([p.histogram for p in parts]), exact)

    @property
    def exact(self) -> bool:
        return self.values is not None

    def percentiles(self) -> dict[str, float | None]:
        """Exact (linear interpolation between order statistics) where every value is at hand, else from the
        histogram, within its relative accuracy."""
        if self.values is not None:
            if not len(self.values):
                return dict.fromkeys(PERCENTILES)
            return {name: float(np.quantile(self.values, q)) for name, q in PERCENTILES.items()}
        return {name: self.histogram.quantile(q) for name, q in PERCENTILES.items()}


@dataclass(frozen=True, slots=True)
class StationCycleTime:
    """One station's cycle time in a window: its own cycles only, never pooled with other stations'."""

    device: str
    output: bool  # one of the plan's output stations, whose cycles make the line's figure
    cycles: int
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    quantiles_exact: bool  # False: from the histogram, within RELATIVE_ACCURACY of the value


@dataclass(frozen=True, slots=True)
class Coverage:
    """How complete a device's data is in a window, shown beside every result."""

    device: str
    hours: int  # hours of planned busy time in the window
    telemetry_expected: int  # samples the profile's rates promise in those hours
    telemetry_received: int
    messages_missing: int  # by seq: gaps in what reached the store
    unknown_s: float  # planned busy time with no known state

    @property
    def telemetry_ratio(self) -> float | None:
        return min(1.0, self.telemetry_received / self.telemetry_expected) if self.telemetry_expected else None


@dataclass(frozen=True, slots=True)
class WindowResult:
    window: Window
    components: Components  # of every device in scope, summed
    kpis: dict[str, float | None]
    coverage: list[Coverage]
    excluded_hours: int
    stations: list[StationCycleTime] = field(default_factory=list)  # every station with cycles in the window
    quantiles_exact: bool = False  # the line's cycle-time percentiles: exact, or from the histogram


@dataclass(frozen=True, slots=True)
class TargetResult:
    label: str
    comparison: KpiComparison  # the plain before/after, shown whatever the method
    check: TargetCheck  # by the target's method
    method: Method = Method.BEFORE_AFTER


@dataclass(frozen=True, slots=True)
class MethodRevisions:
    """How each method whose computation changed across engine versions is computed: the present engine's, or an
    older one's to verify its bundles (kpi_engine.service.method_revisions)."""

    design: int = DESIGN_REVISION  # the design before data (pilot_core.design.REVISION)
    adjusted_baseline: int = ADJUSTED_REVISION  # pilot_core.adjusted_baseline.REVISION


@dataclass
class DemonstrationResult:
    plan_hash: str
    windows: list[WindowResult]
    phases: dict[Phase, WindowResult]  # the windows of each phase rolled up
    comparisons: dict[str, KpiComparison]
    targets: list[TargetResult]
    warnings: list[str] = field(default_factory=list)
    # Per station with cycles: its own cycle_time_mean compared, as if it were the line's output.
    station_comparisons: dict[str, KpiComparison] = field(default_factory=dict)
    adjusted: AdjustedResult | None = None  # the plan's adjusted baseline, where it declares one
    control_lines: dict[str, ControlLineResult] = field(default_factory=dict)  # per KPI judged against the control
    # Design before data: per target, from the baseline's hours alone.
    design: list[TargetDesign] = field(default_factory=list)
    # The pilot's cycle time, throughput and energy per unit at the baseline's product mix, if the plan asks.
    product_mix: MixStandardisation | None = None
    revisions: MethodRevisions = MethodRevisions()  # how its methods were computed


def evaluate(
    plan: DemonstrationPlan,
    plan_hash: str,
    hours: Mapping[str, Sequence[DeviceHour]],
    telemetry_interval_s: Mapping[str, float] | None = None,
    accounting: Accounting = account_all,
    revisions: MethodRevisions = MethodRevisions(),
) -> DemonstrationResult:
    """``hours`` per device in scope; ``telemetry_interval_s`` per device (its profile's fastest metric);
    ``revisions``: the design before data and the adjusted baseline as those revisions compute them (an older
    engine's, to verify its bundles)."""
    accounted = AccountedHours(plan, hours, accounting)
    return evaluate_accounted(plan, plan_hash, accounted, telemetry_interval_s, revisions=revisions)


class StationMemo(Protocol):
    """A station's comparison by the key naming everything it is computed from (None: no such key), or ``make``'s:
    a running server keeps those of unchanged stations across requests (``kpi_engine.service.StationComparisons``)."""

    def __call__(self, key: str | None, make: Callable[[], KpiComparison]) -> KpiComparison: ...


def _computed(key: str | None, make: Callable[[], KpiComparison]) -> KpiComparison:
    return make()


def _station_key(plan: DemonstrationPlan, device: AccountedDevice) -> str | None:
    """Names what a station's comparison is computed from: its accounted data, the plan's windows, the exclusions
    that apply to it and the confidence level (None where its data have no name: device-hours)."""
    if device.content is None:
        return None
    windows = [(w.phase.value, w.start_ms, w.end_ms) for w in plan.windows]
    exclusions = [(e.start.isoformat(), e.end.isoformat(), sorted(e.devices)) for e in plan.exclusions]
    text = repr(("station cycle_time_mean", device.content, windows, exclusions, plan.confidence_level))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def evaluate_accounted(
    plan: DemonstrationPlan,
    plan_hash: str,
    accounted: AccountedHours,
    telemetry_interval_s: Mapping[str, float] | None = None,
    station_memo: StationMemo = _computed,
    revisions: MethodRevisions = MethodRevisions(),
) -> DemonstrationResult:
    """``evaluate`` of hours already accounted under the plan: from device-hours, or from stored accounted days
    (``AccountedHours.of_stored``), which give the same result to the last bit."""
    intervals = telemetry_interval_s or {}
    windows = [_window(plan, w, accounted, intervals) for w in plan.windows]
    phases: dict[Phase, WindowResult] = {}
    series: dict[Phase, np.ndarray] = {}
    for phase in Phase:
        chosen = [(w, r) for w, r in zip(plan.windows, windows, strict=True) if w.phase is phase]
        rolled = total(r.components for _, r in chosen)
        line_cycles = CycleTimes.merged([accounted.cycle_times(w, plan.output_devices) for w, _ in chosen])
        phases[phase] = WindowResult(
            Window(name=phase.value, phase=phase, start=chosen[0][0].start, end=chosen[-1][0].end),
            rolled,
            _kpis(rolled, line_cycles),
            [c for _, r in chosen for c in r.coverage],
            sum(r.excluded_hours for _, r in chosen),
            _stations(plan, accounted, [w for w, _ in chosen]),
            line_cycles.exact,
        )
        series[phase] = np.vstack([accounted.hourly_units(w, plan.treated_devices) for w, _ in chosen])
    # The phases' roll-ups go in too, so that /comparison's values are /kpis' phase values to the last bit.
    totals = (phases[Phase.BASELINE].components, phases[Phase.PILOT].components)
    comparisons = {
        kpi: compare(kpi, series[Phase.BASELINE], series[Phase.PILOT], plan.confidence_level, totals) for kpi in KPIS
    }
    adjusted = (
        _adjusted(plan, series, accounted, revision=revisions.adjusted_baseline) if plan.adjusted_baseline else None
    )
    controls = _control_lines(plan, accounted)
    targets = [_target(t, comparisons[t.kpi], adjusted, controls) for t in plan.targets]
    warnings = accounted.warnings | {w for result in windows for w in _silence_warnings(result)}
    stations = {s.device for p in phases.values() for s in p.stations}
    station_comparisons = {}
    for device in plan.devices:
        if device in stations:

            def station(device: str = device) -> KpiComparison:
                phases = (Phase.BASELINE, Phase.PILOT)
                units = [accounted.station_units(device, plan.windows_of(phase)) for phase in phases]
                station_totals = (_summed(units[0]), _summed(units[1]))  # as the phases' stations show them
                return compare("cycle_time_mean", units[0], units[1], plan.confidence_level, station_totals)

            station_comparisons[device] = station_memo(_station_key(plan, accounted.by_device[device]), station)
    if adjusted is not None:
        warnings |= set(adjusted.warnings)
    warnings |= {f"control line, {kpi}: {c.pre_trend.note}" for kpi, c in controls.items() if c.pre_trend.note}
    design = plan_design(plan, series[Phase.BASELINE], accounted, revisions.design)
    warnings |= set(stated_design_warnings(plan, design))
    mix = None
    if plan.product_mix:
        mix = standardise(*(_phase_totals(plan, accounted, phases[p]) for p in (Phase.BASELINE, Phase.PILOT)))
    return DemonstrationResult(
        plan_hash,
        windows,
        phases,
        comparisons,
        targets,
        sorted(warnings),
        station_comparisons,
        adjusted,
        controls,
        design,
        mix,
        revisions,
    )


def phase_hours(plan: DemonstrationPlan, phase: Phase) -> float:
    """Hours the plan's windows of ``phase`` span."""
    return sum(w.days for w in plan.windows_of(phase)) * 24


def plan_design(
    plan: DemonstrationPlan, baseline: np.ndarray, accounted: AccountedHours, revision: int = DESIGN_REVISION
) -> list[TargetDesign]:
    """Each target's design by its method from the baseline's hours alone: the pilot's data never enter. None
    without a design in the plan. ``baseline``: the treated line's hourly units; ``revision``: the design's, as the
    engine that made a result computed it (pilot_core.design)."""
    if plan.design is None:
        return []
    design = plan.design
    baseline_hours = phase_hours(plan, Phase.BASELINE)
    pilot_hours = phase_hours(plan, Phase.PILOT)
    methods = {t.method for t in plan.targets} if revision > 1 else set()
    paired = _paired(plan, accounted, Phase.BASELINE) if Method.CONTROL_LINE in methods else None
    # The model on the baseline, projected onto the baseline's own hours: the pilot's conditions are not known yet.
    model = (
        _adjusted(plan, {Phase.BASELINE: baseline}, accounted, (Phase.BASELINE, Phase.BASELINE))
        if Method.ADJUSTED_BASELINE in methods
        else None
    )
    designs = []
    for t in plan.targets:
        units, control = (
            (paired[0], paired[1]) if paired is not None and t.method is Method.CONTROL_LINE else (baseline, None)
        )
        designs.append(
            design_target(
                t.kpi,
                t.change_pct,
                units,
                level=plan.confidence_level,
                power=design.power,
                planned_pilot_hours=pilot_hours,
                coverage=len(units) / baseline_hours if baseline_hours else 0.0,
                expected_change_pct=design.expected_change_pct.get(t.kpi),
                method=t.method,
                control=control,
                adjusted=model,
                revision=revision,
            )
        )
    return designs


def _paired(plan: DemonstrationPlan, accounted: AccountedHours, phase: Phase) -> tuple[np.ndarray, np.ndarray]:
    """The treated and the control line's hourly units over a phase's windows, paired hour by hour."""
    control = plan.control_line
    assert control is not None  # the plan refuses a control-line target without its declaration
    paired = [accounted.paired_units(w, plan.treated_devices, control.devices) for w in plan.windows_of(phase)]
    return np.vstack([t for t, _ in paired]), np.vstack([c for _, c in paired])


def stated_design_warnings(plan: DemonstrationPlan, design: list[TargetDesign]) -> list[str]:
    """A minimum detectable effect the plan states that the baseline's data do not give (to 0.05 points)."""
    warnings: list[str] = []
    if plan.design is None:
        return warnings
    for target in design:
        stated = plan.design.stated_mde_pct.get(target.kpi)
        if stated is None:
            continue
        found = None if target.mde is None else abs(target.mde) * 100
        if found is None or abs(found - stated) > 0.05:
            shown = "no figure" if found is None else f"{found:.2f}%"
            warnings.append(
                f"the plan states a minimum detectable effect of {stated:g}% for {target.kpi};"
                f" the baseline's data give {shown}"
            )
    return warnings


def _phase_totals(plan: DemonstrationPlan, accounted: AccountedHours, phase: WindowResult) -> PhaseTotals:
    """The output stations' production per product in a phase's windows, with what the phase shares among them."""
    products: dict[str, ProductTotals] = {}
    for device in plan.output_devices:
        hours = accounted.by_device[device]
        for window in plan.windows_of(phase.window.phase):
            for i in hours.in_window(window):
                for product, t in hours.production_of(i).items():
                    summed = ProductTotals(t.produced, t.good, t.cycle_time_s, t.cycles)
                    products[product] = products[product] + summed if product in products else summed
    c = phase.components
    return PhaseTotals(products, c.output_pbt_s, c.energy_kwh, c.meter_hours > 0)


# --- Adjustment methods (issue 21, items 3 and 4) -------------------------------------------------------------


def _target(
    target: Target,
    comparison: KpiComparison,
    adjusted: AdjustedResult | None,
    controls: Mapping[str, ControlLineResult],
) -> TargetResult:
    """A target judged by its method; a method whose model or assumption fails gives no verdict, only why."""
    if target.method is Method.BEFORE_AFTER:
        return TargetResult(target.label, comparison, check_target(comparison, target.change_pct))
    if target.method is Method.ADJUSTED_BASELINE:
        assert adjusted is not None  # the plan refuses the method without its declaration
        interval, reason = adjusted.relative_interval, adjusted.refused
    else:
        control = controls[target.kpi]
        interval, reason = control.estimate.relative_interval, control.estimate.note
        if control.pre_trend.parallel is False:
            interval, reason = None, f"the pre-trend check fails: {control.pre_trend.note}"
        elif control.pre_trend.parallel is None and interval is not None:
            interval, reason = None, f"the pre-trend cannot be checked: {control.pre_trend.note}"
    check = judge_interval(target.kpi, interval, target.change_pct, reason or "no interval")
    if check.verdict is Verdict.INCONCLUSIVE and interval is not None:
        check = TargetCheck(check.verdict, check.threshold, f"{check.reason} (by the {target.method.value} method)")
    return TargetResult(target.label, comparison, check, target.method)


def _adjusted(
    plan: DemonstrationPlan,
    series: Mapping[Phase, np.ndarray],
    accounted: AccountedHours,
    phases: tuple[Phase, Phase] = (Phase.BASELINE, Phase.PILOT),
    revision: int = ADJUSTED_REVISION,
) -> AdjustedResult:
    """The plan's regression on the treated line's hourly units: its response and its variables per hour, fitted
    on the first of ``phases`` and projected onto the second (the design projects the baseline onto itself), as
    the method's ``revision`` computes it."""
    declared = plan.adjusted_baseline
    assert declared is not None
    column = COMPONENT_NAMES.index
    sources = {
        IndependentVariable.PRODUCTION_VOLUME: lambda units: units[:, column("output_produced")],
        IndependentVariable.SHIFT_HOURS: lambda units: units[:, column("output_pbt_s")] / 3600,
    }
    periods = []
    unread: dict[str, int] = {}
    for phase in phases:
        units = series[phase]
        variables = {v.value: sources[v](units) for v in declared.variables if v in sources}
        if IndependentVariable.AMBIENT_TEMPERATURE in declared.variables:
            variables[IndependentVariable.AMBIENT_TEMPERATURE.value] = _ambient(plan, accounted, phase, unread)
        periods.append((units[:, column(declared.response)], variables))
    names = [v.value for v in declared.variables]
    result = adjusted_baseline(
        declared.response, names, periods[0], periods[1], plan.confidence_level, revision=revision
    )
    notes = [
        f"ambient sensor {device}: {count} hours with telemetry but no ambient temperature (a device whose profile"
        " has none, or hours condensed before ambient temperatures were kept: read them again with refresh=true)"
        for device, count in sorted(unread.items())
    ]
    return replace(result, warnings=[*result.warnings, *notes]) if notes else result


def _ambient(plan: DemonstrationPlan, accounted: AccountedHours, phase: Phase, unread: dict[str, int]) -> np.ndarray:
    """Per hour of the phase's series (its windows' treated hours, in order): the mean of the plan's ambient sensors'
    hourly temperatures, NaN where none has one. Counts, per sensor, hours with telemetry but no temperature."""
    assert plan.adjusted_baseline is not None
    sensors = plan.adjusted_baseline.ambient_sensors
    starts = np.concatenate(
        [accounted.hour_starts(w, plan.treated_devices) for w in plan.windows if w.phase is phase] or [np.zeros(0)]
    )
    order = np.argsort(starts, kind="stable")  # the windows' hours, in time order to be looked up
    readings = np.full((len(sensors), len(starts)), np.nan)
    for row, sensor in enumerate(sensors):
        device = accounted.by_device[sensor]
        chosen = np.flatnonzero(device.included & np.isin(device.starts, starts))
        kept = np.isfinite(device.ambient_c[chosen])
        unseen = int(np.count_nonzero(~kept & (device.telemetry_points[chosen] > 0)))
        if unseen:
            unread[sensor] = unread.get(sensor, 0) + unseen
        at = order[np.searchsorted(starts[order], device.starts[chosen][kept])]
        readings[row, at] = device.ambient_c[chosen][kept]
    with np.errstate(invalid="ignore"):
        counted = np.sum(np.isfinite(readings), axis=0)
        return np.where(counted > 0, np.nansum(readings, axis=0) / np.maximum(counted, 1), np.nan)


def _control_lines(plan: DemonstrationPlan, accounted: AccountedHours) -> dict[str, ControlLineResult]:
    """Difference-in-differences for each KPI a target judges against the control line."""
    control = plan.control_line
    kpis = [t.kpi for t in plan.targets if t.method is Method.CONTROL_LINE]
    if control is None or not kpis:
        return {}
    (treated_b, control_b), (treated_p, control_p) = (
        _paired(plan, accounted, p) for p in (Phase.BASELINE, Phase.PILOT)
    )
    return {
        kpi: control_line(kpi, (treated_b, treated_p), (control_b, control_p), plan.confidence_level) for kpi in kpis
    }


def window_result(
    plan: DemonstrationPlan,
    window: Window,
    hours: Mapping[str, Sequence[DeviceHour]],
    telemetry_interval_s: Mapping[str, float] | None = None,
) -> WindowResult:
    """One span's KPIs under ``plan``, as ``evaluate`` computes each of its windows: the live line's day so far."""
    return _window(plan, window, AccountedHours(plan, hours), telemetry_interval_s or {})


def _silence_warnings(result: WindowResult) -> list[str]:
    """A device in scope that sent no telemetry at all in a window: its coverage alone would not stand out."""
    return [
        f"device {c.device!r} sent no telemetry in window {result.window.name!r}"
        f" ({c.telemetry_expected:,} samples expected, 0 received)"
        for c in result.coverage
        if c.telemetry_expected > 0 and c.telemetry_received == 0
    ]


def _kpis(components: Components, output_cycles: CycleTimes) -> dict[str, float | None]:
    """The KPIs of summed components, with the cycle-time percentiles of the output stations' cycles."""
    return compute_all(components) | output_cycles.percentiles()


def _summed(units: np.ndarray) -> Components:
    return Components.from_vector(units.sum(axis=0).tolist())


def _stations(plan: DemonstrationPlan, accounted: AccountedHours, windows: Sequence[Window]) -> list[StationCycleTime]:
    stations = []
    for device in plan.devices:
        summed = _summed(accounted.station_units(device, windows))
        if summed.cycles == 0:
            continue
        sample = CycleTimes.merged([accounted.cycle_times(w, [device]) for w in windows])
        quantiles = sample.percentiles()
        stations.append(
            StationCycleTime(
                device,
                device in plan.output_devices,
                round(summed.cycles),
                compute("cycle_time_mean", summed),  # the station as the output: as its comparison computes it
                quantiles["cycle_time_p50"],
                quantiles["cycle_time_p95"],
                sample.exact,
            )
        )
    return stations


def kpi_unit(name: str) -> str:
    """The unit of a KPI in a result: its definition's, and the cycle time's for its percentiles."""
    if name in PERCENTILES:
        return KPIS["cycle_time_mean"].unit
    return KPIS[name].unit  # a KPI without a unit is a defect: no document may show a bare number


def kpi_no_value_reason(name: str, components: Components) -> NoValue | None:
    """Why a KPI of a result computed from ``components`` has no value (None if it has one)."""
    if name in PERCENTILES:
        return NoValue.NO_OUTPUT_CYCLES  # a percentile without value: the output stations reported no cycle time
    return no_value_reason(name, components)


class AccountedDevice:
    """One device's hours in time order, with their components as the rows of a matrix."""

    starts: np.ndarray
    matrix: np.ndarray
    included: np.ndarray  # False: excluded by the plan (its row stays zero)
    scheduled: np.ndarray  # the calendar has planned busy time in the hour
    machine: np.ndarray
    telemetry_points: np.ndarray
    ambient_c: np.ndarray  # an environment sensor's mean temperature per hour, NaN where it kept none
    seq: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    content: str | None = None  # names the accounted data, where they have a name (stored accounted days)

    def __init__(self, hours: list[DeviceHour]) -> None:
        self.hours = hours
        self.starts = np.fromiter((h.start_ms for h in hours), dtype=np.int64, count=len(hours))
        self.matrix = np.zeros((len(hours), len(COMPONENT_NAMES)))
        self.included = np.ones(len(hours), dtype=bool)
        self.scheduled = np.zeros(len(hours), dtype=bool)
        self.machine = np.fromiter((h.machine for h in hours), dtype=bool, count=len(hours))
        self.telemetry_points = np.fromiter((h.telemetry_points for h in hours), dtype=np.int64, count=len(hours))
        self.ambient_c = ambient_column(hours)
        self.seq = _seq_columns(hours)

    def cycle_times(self, chosen: np.ndarray) -> CycleTimes:
        """The cycle times of the ``chosen`` hours."""
        return CycleTimes.of([self.hours[i] for i in chosen])

    def production_of(self, index: int) -> Mapping[str, ProductionTotals]:
        """An hour's production per product (asked of output stations only)."""
        return self.hours[index].production

    def in_window(self, window: Window) -> np.ndarray:
        """Indices of the included hours wholly inside ``window``."""
        inside = (self.starts >= window.start_ms) & (self.starts + HOUR_MS <= window.end_ms)
        return np.flatnonzero(inside & self.included)

    def excluded_in(self, window: Window) -> int:
        inside = (self.starts >= window.start_ms) & (self.starts + HOUR_MS <= window.end_ms)
        return int(np.count_nonzero(inside & ~self.included))

    def messages_missing(self, chosen: np.ndarray) -> int:
        """Messages lost among the ``chosen`` hours, by seq: per channel, the range seen less what was received."""
        wanted = np.zeros(len(self.starts), dtype=bool)
        wanted[chosen] = True
        missing = 0
        for index, received, first, last in self.seq.values():
            picked = wanted[index]
            if picked.any():
                span = int(last[picked].max()) - int(first[picked].min()) + 1
                missing += max(0, span - int(received[picked].sum()))
        return missing


def _seq_columns(hours: Sequence[DeviceHour]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per channel: the indices of the hours with messages on it, and their received, first and last seq."""
    columns: dict[str, tuple[list[int], list[int], list[int], list[int]]] = {}
    for index, hour in enumerate(hours):
        for channel, span in hour.seq.items():
            indices, received, first, last = columns.setdefault(channel, ([], [], [], []))
            indices.append(index)
            received.append(span.received)
            first.append(span.first)
            last.append(span.last)
    return {
        channel: (np.array(indices, dtype=np.intp), np.array(received), np.array(first), np.array(last))
        for channel, (indices, received, first, last) in columns.items()
    }


class StoredDevice(AccountedDevice):
    """One device's hours as stored days accounted under the plan give them (``pilot_core.accounted_days``), with
    no device-hour decoded. Each hour's cycle-time histogram and values (``details``: per day start) are read
    only for the days of which some hours are chosen and others not, or where every chosen hour kept its values."""

    def __init__(
        self,
        days: Sequence[AccountedDay],
        wanted: np.ndarray,
        details: Callable[[list[int]], Mapping[int, DayDetail]],
        content: str | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        """``rows``: zeros, hours × COMPONENT_NAMES, at least the days' hours, for the matrix (a view of it)."""
        self.hours = []
        self.content = content  # e.g. the accounting key and every day's check: equal names, equal data
        self._details = details
        sizes = np.array([d.hours for d in days], dtype=np.int64)
        every_start = np.frombuffer(b"".join(d.starts for d in days), dtype=np.int64)
        # The hours the plan reads (``wanted``, sorted): those touching its windows.
        at = np.minimum(np.searchsorted(wanted, every_start), max(len(wanted) - 1, 0))
        kept = wanted[at] == every_start if len(wanted) else np.zeros(len(every_start), dtype=bool)
        self._days = [day_start(int(every_start[o])) for o in np.cumsum(sizes) - sizes] if len(days) else []
        self._day_hours = sizes
        day_of = np.repeat(np.arange(len(days), dtype=np.int32), sizes)
        self._day_of = _narrow(day_of[kept])
        self._position = _narrow((np.arange(len(every_start)) - np.repeat(np.cumsum(sizes) - sizes, sizes))[kept])
        self.starts = every_start[kept]
        every_row = unpacked_vectors(days, rows)  # not shared with another device: the plan's exclusions zero rows
        self.matrix = every_row if kept.all() else every_row[kept]
        del every_row  # not two matrices of the device at once
        flags = np.frombuffer(b"".join(d.flags for d in days), dtype=np.uint8)[kept]
        self.included = np.ones(len(self.starts), dtype=bool)
        self.scheduled = (flags & SCHEDULED) > 0
        self.machine = (flags & MACHINE) > 0
        self.exact = (flags & EXACT) > 0
        self.telemetry_points = _narrow(np.frombuffer(b"".join(d.telemetry_points for d in days), dtype=np.int64)[kept])
        self.ambient_c = np.frombuffer(b"".join(d.ambient_c for d in days), dtype=np.float64)[kept]
        row_of = np.cumsum(kept) - 1  # an hour among all the days' hours → its row among the kept ones
        first_of_day = np.cumsum(sizes) - sizes
        self.missing: list[tuple[int, str]] = [
            (int(row_of[first_of_day[i] + hour]), product)
            for i, day in enumerate(days)
            for hour, product in day.missing
            if kept[first_of_day[i] + hour]
        ]
        self.seq = _stored_seq(days, first_of_day, kept, row_of)
        self.downtime = _stored_downtime(days, first_of_day, kept, row_of)
        # Bin indices and counts are small integers: kept narrow (a plant holds 40 bins a device-day), summed
        # as int64 by _merged_bins.
        self._bins = _narrow(np.frombuffer(b"".join(d.histogram_bins for d in days), dtype=np.int64))
        self._counts = _narrow(np.frombuffer(b"".join(d.histogram_counts for d in days), dtype=np.int64))
        self._bins_per_day = np.array([len(d.histogram_bins) // 8 for d in days], dtype=np.int64)
        self._production: list[Mapping[str, ProductionTotals]] | None = None  # None: not an output station's
        if any(day.production is not None for day in days):
            production: list[Mapping[str, ProductionTotals]] = []
            for day in days:
                production.extend(day.production if day.production is not None else [{}] * day.hours)
            self._production = list(itertools.compress(production, kept.tolist()))

    def cycle_times(self, chosen: np.ndarray) -> CycleTimes:
        """As ``CycleTimes.of`` the chosen hours: a day whose every stored hour is chosen by its merged histogram."""
        per_day = np.bincount(self._day_of[chosen], minlength=len(self._days))
        whole = per_day == self._day_hours
        exact = bool(self.exact[chosen].all())
        from_days = np.repeat(whole, self._bins_per_day)  # per bin: its day is whole
        bins = [self._bins[from_days].astype(np.int64)]
        counts = [self._counts[from_days].astype(np.int64)]
        values: list[np.ndarray] = []
        read = np.flatnonzero((per_day > 0) & (~whole | exact)).tolist()
        if read:
            details = self._details([self._days[d] for d in read])
            for index in chosen[np.isin(self._day_of[chosen], read)].tolist():
                detail = details[self._days[self._day_of[index]]]
                position = int(self._position[index])
                if not whole[self._day_of[index]]:
                    hour_bins, hour_counts = detail.histograms[position]
                    bins.append(np.array(hour_bins, dtype=np.int64))
                    counts.append(np.array(hour_counts, dtype=np.int64))
                if exact:
                    values.append(np.array(detail.values[position], dtype=float))
        histogram = _merged_bins(np.concatenate(bins), np.concatenate(counts))
        return CycleTimes(histogram, np.concatenate([np.zeros(0), *values]) if exact else None)

    def production_of(self, index: int) -> Mapping[str, ProductionTotals]:
        return {} if self._production is None else self._production[index]


def _narrow(values: np.ndarray) -> np.ndarray:
    """Integers as the smallest of int16 and int32 that holds each of them exactly (int64 if neither does):
    a plant's request holds several such columns per device-hour. Indexing, comparing and summing (numpy sums
    small integers as int64) give the same numbers."""
    for small in (np.int16, np.int32):
        limits = np.iinfo(small)
        if not len(values) or (int(values.min()) >= limits.min and int(values.max()) <= limits.max):
            return values.astype(small)
    return np.ascontiguousarray(values)  # a column of its own, not a view keeping its table


def _stored_seq(
    days: Sequence[AccountedDay], first_of_day: np.ndarray, kept: np.ndarray, row_of: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``_seq_columns`` of the kept hours of stored days."""
    every = np.frombuffer(b"".join(d.seq for d in days), dtype=np.int64).reshape(-1, SEQ_COLUMNS).copy()
    if not len(every):
        return {}
    per_day = [len(d.seq) // (8 * SEQ_COLUMNS) for d in days]
    every[:, 0] += np.repeat(first_of_day, per_day)  # the hour among all the days' hours
    names: dict[str, int] = {}
    remaps: dict[tuple[str, ...], np.ndarray] = {}  # by a day's channels: their numbers among all days'
    day_remap = []
    for day in days:
        channels = tuple(day.seq_channels)
        if channels not in remaps:
            remaps[channels] = np.array([names.setdefault(c, len(names)) for c in channels], dtype=np.int64)
        day_remap.append(remaps[channels])
    if len(remaps) > 1 or any(not np.array_equal(r, np.arange(len(r))) for r in remaps.values()):
        offsets = np.repeat(np.cumsum([0, *(len(r) for r in day_remap[:-1])]), per_day)
        every[:, 1] = np.concatenate([np.zeros(0, dtype=np.int64), *day_remap])[every[:, 1] + offsets]
    every = every[kept[every[:, 0]]]
    columns = {}
    for name, index in names.items():
        picked = every[every[:, 1] == index]
        if len(picked):
            # Each column a copy of its own: a view would keep all five columns of ``picked`` for the request.
            first, last = (np.ascontiguousarray(picked[:, c]) for c in (3, 4))
            columns[name] = (_narrow(row_of[picked[:, 0]]), _narrow(picked[:, 2]), first, last)
    return columns


@dataclass(frozen=True, slots=True)
class StoredDowntime:
    """The kept hours' downtime by cause (``downtime_by_cause``), as their accounted days keep it: one entry per
    hour and cause, by hour and then in the order ``downtime_by_cause`` gives them."""

    causes: list[DowntimeCause]
    rows: np.ndarray  # the hour's row among the kept ones
    cause: np.ndarray  # an index in ``causes``
    seconds: np.ndarray


def _stored_downtime(
    days: Sequence[AccountedDay], first_of_day: np.ndarray, kept: np.ndarray, row_of: np.ndarray
) -> StoredDowntime:
    causes: dict[DowntimeCause, int] = {}
    remap = [np.array([causes.setdefault(c, len(causes)) for c in d.downtime_causes], dtype=np.int64) for d in days]
    every = np.frombuffer(b"".join(d.downtime_rows for d in days), dtype=np.int64).reshape(-1, 2)
    seconds = np.frombuffer(b"".join(d.downtime_s for d in days), dtype=np.float64)
    per_day = [len(d.downtime_s) // 8 for d in days]
    hour = every[:, 0] + np.repeat(first_of_day, per_day).astype(np.int64)
    offsets = np.repeat(np.cumsum([0, *(len(r) for r in remap)])[:-1], per_day).astype(np.int64)
    cause = np.concatenate([np.zeros(0, dtype=np.int64), *remap])[every[:, 1] + offsets]
    chosen = kept[hour]
    return StoredDowntime(list(causes), _narrow(row_of[hour[chosen]]), _narrow(cause[chosen]), seconds[chosen])


class AccountedHours:
    """Every device-hour accounted once under the plan."""

    def __init__(
        self, plan: DemonstrationPlan, hours: Mapping[str, Sequence[DeviceHour]], accounting: Accounting = account_all
    ) -> None:
        self.plan = plan
        self.warnings: set[str] = set()
        self._cycle_times: dict[tuple[str, tuple[str, ...]], CycleTimes] = {}
        self.shifts: dict[int, list[Shift]] = {}  # by hour start: the calendar's shifts in that hour
        self.by_device: dict[str, AccountedDevice] = {}
        calendars: dict[int, BucketCalendar] = {}  # by hour start: the same for every device
        for device in plan.devices:
            rules = DeviceRules.of(plan, device)
            fixes = [c for c in plan.corrections if c.device == device]
            recorded = hours.get(device, ())
            accounted = AccountedDevice(
                sorted((corrected(h, fixes) for h in recorded) if fixes else recorded, key=attrgetter("start_ms"))
            )
            accounted.included = ~self._excluded(device, accounted.starts)
            rows = []
            scheduled = []
            included = list(itertools.compress(accounted.hours, accounted.included.tolist()))
            hour_calendars = []
            for hour in included:
                calendar = calendars.get(hour.start_ms)
                if calendar is None:
                    shifts = self.shifts[hour.start_ms] = list(plan.calendar.shifts_between(hour.start_ms, hour.end_ms))
                    calendar = calendars[hour.start_ms] = BucketCalendar.of(hour.start_ms, hour.end_ms, shifts)
                scheduled.append(calendar.busy_ms > 0)
                hour_calendars.append(calendar)
            # Corrected hours are made anew each time: a memo of them would never be asked again.
            for vector, missing in (account_all if fixes else accounting)(included, rules, hour_calendars):
                if missing:
                    self.warnings.update(f"no ideal cycle time for product {p!r}" for p in missing)
                rows.append(vector)
            if rows:
                accounted.matrix[accounted.included] = rows
                accounted.scheduled[accounted.included] = scheduled
            self.by_device[device] = accounted

    @classmethod
    def of_stored(cls, plan: DemonstrationPlan, devices: Mapping[str, StoredDevice]) -> AccountedHours:
        """The plan's hours from stored accounted days (a plan without data corrections: those change the hours)."""
        if plan.corrections:
            raise ValueError("a plan with data corrections is accounted from its device-hours")
        accounted = cls(plan, {})
        for device in plan.devices:
            stored = devices[device]
            stored.included = ~accounted._excluded(device, stored.starts)
            stored.matrix[~stored.included] = 0.0
            stored.scheduled &= stored.included
            accounted.warnings.update(
                f"no ideal cycle time for product {p!r}" for row, p in stored.missing if stored.included[row]
            )
            accounted.by_device[device] = stored
        return accounted

    def _excluded(self, device: str, starts: np.ndarray) -> np.ndarray:
        """Exclusions take whole hours out: production is summed per hour, so it cannot be split finer."""
        excluded = np.zeros(len(starts), dtype=bool)
        for e in self.plan.exclusions:
            if not e.devices or device in e.devices:
                excluded |= (starts < e.end.timestamp() * 1000) & (starts + HOUR_MS > e.start.timestamp() * 1000)
        return excluded

    def hourly_units(self, window: Window, devices: Sequence[str]) -> np.ndarray:
        """One unit per hour, the ``devices``' components summed: the units add up to the window exactly.

        Hours outside the shifts stay in: energy is used and parts finish in them too.
        """
        return self._units_by_hour(window, [devices])[1][0]

    def hour_starts(self, window: Window, devices: Sequence[str]) -> np.ndarray:
        """The start of each of ``hourly_units``' rows."""
        return self._units_by_hour(window, [devices])[0]

    def paired_units(self, window: Window, treated: Sequence[str], control: Sequence[str]) -> tuple[np.ndarray, ...]:
        """The treated and the control devices' hourly units over the same hours, row by row (zero where a group
        has no data in an hour that the other has)."""
        return self._units_by_hour(window, [treated, control])[1]

    def _units_by_hour(
        self, window: Window, groups: Sequence[Sequence[str]]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        chosen = [[(d, d.in_window(window)) for d in map(self.by_device.__getitem__, devices)] for devices in groups]
        hours = _hours_of([d.starts[rows] for group in chosen for d, rows in group], window)
        summed = []
        for group in chosen:
            units = np.zeros((len(hours), len(COMPONENT_NAMES)))
            # Device after device, each hour's row added in the order one np.add.at over them all would add them:
            # the same sums to the last bit, without a copy of every device's rows at once. A device that has each
            # hour once (as stored) adds each cell once, so a plain += does what np.add.at does, faster.
            for device, rows in group:
                at = np.searchsorted(hours, device.starts[rows])
                if len(at) < 2 or bool(np.all(np.diff(at) > 0)):
                    units[at] += device.matrix[rows]
                else:
                    np.add.at(units, at, device.matrix[rows])
            summed.append(units)
        return hours, tuple(summed)

    def cycle_times(self, window: Window, devices: Sequence[str]) -> CycleTimes:
        """The cycle times of ``devices`` (in scope) in the window's included hours."""
        key = (window.name, tuple(devices))
        if key not in self._cycle_times:
            chosen = [self.by_device[d] for d in devices]
            self._cycle_times[key] = CycleTimes.merged([d.cycle_times(d.in_window(window)) for d in chosen])
        return self._cycle_times[key]

    def station_units(self, device: str, windows: Sequence[Window]) -> np.ndarray:
        """One device's hourly units in the windows, its own cycles standing as the output's: a station's
        ``cycle_time_mean`` is then computed, and compared, exactly as the line's is."""
        hours = self.by_device[device]
        units = np.vstack([hours.matrix[hours.in_window(w)] for w in windows]).copy()
        for own, output in (("cycle_time_s", "output_cycle_time_s"), ("cycles", "output_cycles")):
            units[:, COMPONENT_NAMES.index(output)] = units[:, COMPONENT_NAMES.index(own)]
        return units


def _hours_of(starts: Sequence[np.ndarray], window: Window) -> np.ndarray:
    """np.unique of the hour starts, in a window: counted on the window's grid of hours where they lie on it."""
    if not starts:
        return np.zeros(0, dtype=np.int64)
    first = window.start_ms - window.start_ms % HOUR_MS
    every = np.concatenate(starts)
    if np.any((every - first) % HOUR_MS):
        return np.unique(every)
    present = np.zeros(max(0, -(-(window.end_ms - first) // HOUR_MS)), dtype=bool)
    present[(every - first) // HOUR_MS] = True
    return (first + np.flatnonzero(present) * HOUR_MS).astype(np.int64)


def _merged(histograms: Sequence[LogHistogram]) -> LogHistogram:
    """The histograms merged, as ``LogHistogram.merge`` one by one would, but summed by numpy: a month of a line
    is tens of thousands of hours' histograms."""
    merged = LogHistogram()
    if any(h.relative_accuracy != merged.relative_accuracy for h in histograms):
        for histogram in histograms:
            merged.merge(histogram)  # refuses what cannot be merged, as ever
        return merged
    indices = np.fromiter(itertools.chain.from_iterable(h.counts for h in histograms), dtype=np.int64)
    counts = np.fromiter(itertools.chain.from_iterable(h.counts.values() for h in histograms), dtype=np.int64)
    return _merged_bins(indices, counts)


def _merged_bins(indices: np.ndarray, counts: np.ndarray) -> LogHistogram:
    """One histogram (of the default accuracy) of bins given as indices and counts, an index any number of times."""
    merged = LogHistogram()
    if not len(indices):
        return merged
    lowest = int(indices.min())
    # Bins are consecutive integers over a narrow range (cycle times of one line): counted by position.
    sums = np.bincount(indices - lowest, weights=counts).astype(np.int64)  # exact: counts stay far below 2**53
    present = np.flatnonzero(sums)
    merged.counts = dict(zip((present + lowest).tolist(), sums[present].tolist(), strict=True))
    return merged


def _window(
    plan: DemonstrationPlan, window: Window, accounted: AccountedHours, intervals: Mapping[str, float]
) -> WindowResult:
    parts: list[Components] = []
    coverage: list[Coverage] = []
    excluded = 0
    pbt = COMPONENT_NAMES.index("pbt_s")
    treated = set(plan.treated_devices)
    for device in plan.devices:
        hours = accounted.by_device[device]
        chosen = hours.in_window(window)
        excluded += hours.excluded_in(window)
        rolled = Components.from_vector(hours.matrix[chosen].sum(axis=0).tolist())
        if device in treated:  # a control line's devices are covered, never summed into the line
            parts.append(rolled)
        # A machine's busy hours are its own (planned downtime it reports leaves them); a meter has no time
        # model, so it is expected to report whenever the line is scheduled.
        busy = chosen[np.where(hours.machine[chosen], hours.matrix[chosen, pbt] > 0, hours.scheduled[chosen])]
        expected = received = 0
        if device in intervals:
            expected = len(busy) * round(HOUR_MS / 1000 / intervals[device])
            received = int(hours.telemetry_points[busy].sum())
        missing = hours.messages_missing(chosen)
        coverage.append(Coverage(device, len(busy), expected, min(received, expected), missing, rolled.unknown_s))
    components = total(parts)
    line_cycles = accounted.cycle_times(window, plan.output_devices)
    return WindowResult(
        window,
        components,
        _kpis(components, line_cycles),
        coverage,
        excluded,
        _stations(plan, accounted, [window]),
        line_cycles.exact,
    )

"""A demonstration's KPIs per window and its before/after comparison.

Applies a plan to stored device-hours: each hour becomes KPI components
under the plan's calendar, state mapping and ideal times; windows and
devices roll up by summing; the phases are compared hour by hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pilot_core.calendar import Shift
from pilot_core.comparison import KpiComparison, TargetCheck, check_target, compare
from pilot_core.demonstration import DemonstrationPlan, Phase, Window
from pilot_core.device_hours import HOUR_MS, DeviceHour, DeviceRules, account, corrected
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import COMPONENT_NAMES, KPIS, Components, compute_all, total

PERCENTILES = {"cycle_time_p50": 0.50, "cycle_time_p95": 0.95}


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


@dataclass(frozen=True, slots=True)
class TargetResult:
    label: str
    comparison: KpiComparison
    check: TargetCheck


@dataclass
class DemonstrationResult:
    plan_hash: str
    windows: list[WindowResult]
    phases: dict[Phase, WindowResult]  # the windows of each phase rolled up
    comparisons: dict[str, KpiComparison]
    targets: list[TargetResult]
    warnings: list[str] = field(default_factory=list)


def evaluate(
    plan: DemonstrationPlan,
    plan_hash: str,
    hours: Mapping[str, Sequence[DeviceHour]],
    telemetry_interval_s: Mapping[str, float] | None = None,
) -> DemonstrationResult:
    """``hours`` per device in scope; ``telemetry_interval_s`` per device (its profile's fastest metric)."""
    accounted = AccountedHours(plan, hours)
    intervals = telemetry_interval_s or {}
    windows = [_window(plan, w, accounted, intervals) for w in plan.windows]
    phases: dict[Phase, WindowResult] = {}
    series: dict[Phase, np.ndarray] = {}
    for phase in Phase:
        chosen = [(w, r) for w, r in zip(plan.windows, windows, strict=True) if w.phase is phase]
        rolled = total(r.components for _, r in chosen)
        phases[phase] = WindowResult(
            Window(name=phase.value, phase=phase, start=chosen[0][0].start, end=chosen[-1][0].end),
            rolled,
            _kpis(rolled, [accounted.histogram(w) for w, _ in chosen]),
            [c for _, r in chosen for c in r.coverage],
            sum(r.excluded_hours for _, r in chosen),
        )
        series[phase] = np.vstack([accounted.hourly_units(w) for w, _ in chosen])
    comparisons = {
        kpi: compare(kpi, series[Phase.BASELINE], series[Phase.PILOT], plan.confidence_level) for kpi in KPIS
    }
    targets = [
        TargetResult(t.label, comparisons[t.kpi], check_target(comparisons[t.kpi], t.change_pct)) for t in plan.targets
    ]
    return DemonstrationResult(plan_hash, windows, phases, comparisons, targets, sorted(accounted.warnings))


def _kpis(components: Components, histograms: Sequence[LogHistogram]) -> dict[str, float | None]:
    values = compute_all(components)
    merged = LogHistogram()
    for histogram in histograms:
        merged.merge(histogram)
    for name, q in PERCENTILES.items():
        values[name] = merged.quantile(q)
    return values


class AccountedDevice:
    """One device's hours in time order, with their components as the rows of a matrix."""

    def __init__(self, hours: list[DeviceHour]) -> None:
        self.hours = hours
        self.starts = np.array([h.start_ms for h in hours], dtype=np.int64)
        self.matrix = np.zeros((len(hours), len(COMPONENT_NAMES)))
        self.included = np.ones(len(hours), dtype=bool)  # False: excluded by the plan

    def in_window(self, window: Window) -> np.ndarray:
        """Indices of the included hours wholly inside ``window``."""
        inside = (self.starts >= window.start_ms) & (self.starts + HOUR_MS <= window.end_ms)
        return np.flatnonzero(inside & self.included)

    def excluded_in(self, window: Window) -> int:
        inside = (self.starts >= window.start_ms) & (self.starts + HOUR_MS <= window.end_ms)
        return int(np.count_nonzero(inside & ~self.included))


class AccountedHours:
    """Every device-hour accounted once under the plan."""

    def __init__(self, plan: DemonstrationPlan, hours: Mapping[str, Sequence[DeviceHour]]) -> None:
        self.plan = plan
        self.warnings: set[str] = set()
        self._histograms: dict[str, LogHistogram] = {}
        self.shifts: dict[int, list[Shift]] = {}  # by hour start: the calendar's shifts in that hour
        self.by_device: dict[str, AccountedDevice] = {}
        for device in plan.devices:
            rules = DeviceRules.of(plan, device)
            fixes = [c for c in plan.corrections if c.device == device]
            accounted = AccountedDevice(
                sorted((corrected(h, fixes) for h in hours.get(device, ())), key=lambda h: h.start_ms)
            )
            for index, hour in enumerate(accounted.hours):
                if self._excluded(hour):
                    accounted.included[index] = False
                    continue
                if hour.start_ms not in self.shifts:
                    self.shifts[hour.start_ms] = list(plan.calendar.shifts_between(hour.start_ms, hour.end_ms))
                result = account(hour, rules, self.shifts[hour.start_ms])
                self.warnings.update(
                    f"no ideal cycle time for product {p!r}" for p in result.products_without_ideal_time
                )
                accounted.matrix[index] = result.components.as_vector()
            self.by_device[device] = accounted

    def _excluded(self, hour: DeviceHour) -> bool:
        """Exclusions take whole hours out: production is summed per hour, so it cannot be split finer."""
        return any(
            (not e.devices or hour.device in e.devices)
            and hour.start_ms < e.end.timestamp() * 1000
            and hour.end_ms > e.start.timestamp() * 1000
            for e in self.plan.exclusions
        )

    def hourly_units(self, window: Window) -> np.ndarray:
        """One unit per hour, every device's components summed: the units add up to the window exactly.

        Hours outside the shifts stay in: energy is used and parts finish in them too.
        """
        starts = []
        rows = []
        for accounted in self.by_device.values():
            chosen = accounted.in_window(window)
            starts.append(accounted.starts[chosen])
            rows.append(accounted.matrix[chosen])
        all_starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        hours, slot = np.unique(all_starts, return_inverse=True)
        units = np.zeros((len(hours), len(COMPONENT_NAMES)))
        np.add.at(units, slot, np.vstack(rows) if rows else units)
        return units

    def histogram(self, window: Window) -> LogHistogram:
        if window.name not in self._histograms:
            merged = LogHistogram()
            for accounted in self.by_device.values():
                for index in accounted.in_window(window):
                    merged.merge(accounted.hours[index].cycle_times)
            self._histograms[window.name] = merged
        return self._histograms[window.name]


def _window(
    plan: DemonstrationPlan, window: Window, accounted: AccountedHours, intervals: Mapping[str, float]
) -> WindowResult:
    parts: list[Components] = []
    coverage: list[Coverage] = []
    excluded = 0
    pbt = COMPONENT_NAMES.index("pbt_s")
    for device in plan.devices:
        hours = accounted.by_device[device]
        chosen = hours.in_window(window)
        excluded += hours.excluded_in(window)
        rolled = Components.from_vector(hours.matrix[chosen].sum(axis=0).tolist())
        parts.append(rolled)
        busy = chosen[hours.matrix[chosen, pbt] > 0]
        expected = received = 0
        if device in intervals:
            expected = len(busy) * round(HOUR_MS / 1000 / intervals[device])
            received = sum(hours.hours[i].telemetry_points for i in busy)
        first_last: dict[str, list[int]] = {}
        seen: dict[str, int] = {}
        for index in chosen:
            for channel, span in hours.hours[index].seq.items():
                low_high = first_last.setdefault(channel, [span.first, span.last])
                low_high[0], low_high[1] = min(low_high[0], span.first), max(low_high[1], span.last)
                seen[channel] = seen.get(channel, 0) + span.received
        missing = sum(max(0, high - low + 1 - seen[ch]) for ch, (low, high) in first_last.items())
        coverage.append(Coverage(device, len(busy), expected, min(received, expected), missing, rolled.unknown_s))
    components = total(parts)
    return WindowResult(window, components, _kpis(components, [accounted.histogram(window)]), coverage, excluded)

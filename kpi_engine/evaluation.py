"""A demonstration's KPIs per window and its before/after comparison.

Applies a plan to stored device-hours: each hour becomes KPI components
under the plan's calendar, state mapping and ideal times; windows and
devices roll up by summing; the phases are compared hour by hour.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np

from pilot_core.calendar import Shift
from pilot_core.comparison import KpiComparison, TargetCheck, check_target, compare
from pilot_core.demonstration import DemonstrationPlan, Phase, Window
from pilot_core.device_hours import HOUR_MS, DeviceHour, DeviceRules, account_vector, corrected
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import COMPONENT_NAMES, KPIS, Components, NoValue, compute_all, no_value_reason, total
from pilot_core.time_accounting import BucketCalendar

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
    # The phases' roll-ups go in too, so that /comparison's values are /kpis' phase values to the last bit.
    totals = (phases[Phase.BASELINE].components, phases[Phase.PILOT].components)
    comparisons = {
        kpi: compare(kpi, series[Phase.BASELINE], series[Phase.PILOT], plan.confidence_level, totals) for kpi in KPIS
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


def kpi_unit(name: str) -> str:
    """The unit of a KPI in a result: its definition's, and the cycle time's for its percentiles."""
    if name in PERCENTILES:
        return KPIS["cycle_time_mean"].unit
    return KPIS[name].unit  # a KPI without a unit is a defect: no document may show a bare number


def kpi_no_value_reason(name: str, components: Components) -> NoValue | None:
    """Why a KPI of a result computed from ``components`` has no value (None if it has one)."""
    if name in PERCENTILES:
        return NoValue.NO_CYCLES  # a percentile without value: no cycle time was reported
    return no_value_reason(name, components)


class AccountedDevice:
    """One device's hours in time order, with their components as the rows of a matrix."""

    def __init__(self, hours: list[DeviceHour]) -> None:
        self.hours = hours
        self.starts = np.fromiter((h.start_ms for h in hours), dtype=np.int64, count=len(hours))
        self.matrix = np.zeros((len(hours), len(COMPONENT_NAMES)))
        self.included = np.ones(len(hours), dtype=bool)  # False: excluded by the plan (its row stays zero)
        self.telemetry_points = np.fromiter((h.telemetry_points for h in hours), dtype=np.int64, count=len(hours))
        self.seq = _seq_columns(hours)

    def in_window(self, window: Window) -> np.ndarray:
        """Indices of the included hours wholly inside ``window``."""
        inside = (self.starts >= window.start_ms) & (self.starts + HOUR_MS <= window.end_ms)
        return np.flatnonzero(inside & self.included)

    def excluded_in(self, window: Window) -> int:
        inside = (self.starts >= window.start_ms) & (self.starts + HOUR_MS <= window.end_ms)
        return int(np.count_nonzero(inside & ~self.included))

    def messages_missing(self, chosen: np.ndarray) -> int:
        """Messages lost among the ``chosen`` hours, by seq: per channel, the range seen less what was received."""
        wanted = np.zeros(len(self.hours), dtype=bool)
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


class AccountedHours:
    """Every device-hour accounted once under the plan."""

    def __init__(self, plan: DemonstrationPlan, hours: Mapping[str, Sequence[DeviceHour]]) -> None:
        self.plan = plan
        self.warnings: set[str] = set()
        self._histograms: dict[str, LogHistogram] = {}
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
            for hour in itertools.compress(accounted.hours, accounted.included.tolist()):
                calendar = calendars.get(hour.start_ms)
                if calendar is None:
                    shifts = self.shifts[hour.start_ms] = list(plan.calendar.shifts_between(hour.start_ms, hour.end_ms))
                    calendar = calendars[hour.start_ms] = BucketCalendar.of(hour.start_ms, hour.end_ms, shifts)
                vector, missing = account_vector(hour, rules, calendar)
                if missing:
                    self.warnings.update(f"no ideal cycle time for product {p!r}" for p in missing)
                rows.append(vector)
            if rows:
                accounted.matrix[accounted.included] = rows
            self.by_device[device] = accounted

    def _excluded(self, device: str, starts: np.ndarray) -> np.ndarray:
        """Exclusions take whole hours out: production is summed per hour, so it cannot be split finer."""
        excluded = np.zeros(len(starts), dtype=bool)
        for e in self.plan.exclusions:
            if not e.devices or device in e.devices:
                excluded |= (starts < e.end.timestamp() * 1000) & (starts + HOUR_MS > e.start.timestamp() * 1000)
        return excluded

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
            self._histograms[window.name] = _merged(
                [
                    accounted.hours[i].cycle_times
                    for accounted in self.by_device.values()
                    for i in accounted.in_window(window)
                ]
            )
        return self._histograms[window.name]


def _merged(histograms: Sequence[LogHistogram]) -> LogHistogram:
    """The histograms merged, as ``LogHistogram.merge`` one by one would, but summed by numpy: a month of a line
    is tens of thousands of hours' histograms."""
    merged = LogHistogram()
    if any(h.relative_accuracy != merged.relative_accuracy for h in histograms):
        for histogram in histograms:
            merged.merge(histogram)  # refuses what cannot be merged, as ever
        return merged
    indices = np.fromiter(itertools.chain.from_iterable(h.counts for h in histograms), dtype=np.int64)
    if not len(indices):
        return merged
    counts = np.fromiter(itertools.chain.from_iterable(h.counts.values() for h in histograms), dtype=np.int64)
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
            received = int(hours.telemetry_points[busy].sum())
        missing = hours.messages_missing(chosen)
        coverage.append(Coverage(device, len(busy), expected, min(received, expected), missing, rolled.unknown_s))
    components = total(parts)
    return WindowResult(window, components, _kpis(components, [accounted.histogram(window)]), coverage, excluded)

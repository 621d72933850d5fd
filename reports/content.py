"""What the demonstration report says, in numbers, before any language or rendering.

Built from an evaluation (the KPIs, as the engine's comparison document has them)
and its breakdown (the charts' data from the same stored hours). Nothing here
formats or translates: ``reports.i18n`` gives the words, ``reports.charts``
and ``reports.html`` draw it.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass, field

from kpi_engine.breakdown import Breakdown
from kpi_engine.evaluation import PERCENTILES
from kpi_engine.results import (
    AdjustedBaseline,
    ComparisonDocument,
    ControlLineEffect,
    DeviceCoverage,
    KpiChange,
    PlanDesign,
    ProductMix,
    comparison_document,
)
from kpi_engine.service import Evaluation
from pilot_core.comparison import BANDWIDTH_FRACTION, MIN_UNITS, POWER, Verdict, critical_value
from pilot_core.demonstration import DemonstrationPlan, Phase
from pilot_core.device_hours import DowntimeCause
from pilot_core.histogram import RELATIVE_ACCURACY, LogHistogram
from pilot_core.kpi import Components, NoValue, compute

# Causes drawn one by one in the Pareto; the rest are summed by state, and past PARETO_ROWS into "other causes".
PARETO_CAUSES = 8
PARETO_ROWS = 12
CYCLE_TIME_BINS = 40
# The cycle-time chart spans these quantiles of both phases, so a few outliers do not squash it.
CYCLE_TIME_RANGE = (0.005, 0.995)


class IntervalGap(enum.StrEnum):
    """Why a KPI has no interval of its relative change."""

    NO_VALUE = "no_value"  # nothing to divide by in one phase
    TOO_FEW_UNITS = "too_few_units"  # fewer than MIN_UNITS hours in a phase
    ZERO_VALUE = "zero_value"  # a value of zero: only the absolute change has an interval
    BASELINE_UNCERTAIN = "baseline_uncertain"  # straddles; even an endless pilot would not decide


@dataclass(frozen=True, slots=True)
class KpiRow:
    kpi: str
    unit: str  # as in pilot_core.kpi: ratio, s, h, min, units/h, kWh/unit
    better: str
    baseline: float | None
    pilot: float | None
    relative_change: float | None
    relative_interval: tuple[float, float] | None
    target_change_pct: float | None  # the size of the improvement the target asks for
    target_threshold: float | None  # signed relative change, e.g. -0.08
    verdict: Verdict | None
    pilot_length_factor: float | None
    leaning: Verdict | None  # inconclusive: what a longer pilot would show if the present estimate held
    gap: IntervalGap | None  # why there is no interval, or why an inconclusive verdict cannot say more
    no_value: NoValue | None = None  # a phase without a value: the input that is missing
    method: str = "before_after"  # how the target's verdict was reached (issue 21): see the adjustments section


@dataclass(frozen=True, slots=True)
class CoverageRow:
    phase: Phase
    device: str
    busy_hours: int
    telemetry_expected: int
    telemetry_received: int
    telemetry_ratio: float | None
    messages_missing: int
    unknown_s: float


@dataclass(frozen=True, slots=True)
class DayPoint:
    day: dt.date
    phase: Phase
    oee: float | None  # from the day's summed components
    energy_per_good_unit: float | None
    planned_busy_h: float


@dataclass(frozen=True, slots=True)
class DowntimeRow:
    cause: DowntimeCause | None  # None: the smallest causes, summed; reason None and causes > 1: a state's reasons
    causes: int  # how many (state, reason) causes the row holds
    seconds: dict[Phase, float]
    share_of_pbt: dict[Phase, float | None]  # of the phase's planned busy time


@dataclass(frozen=True, slots=True)
class CycleTimeBin:
    low_s: float
    high_s: float
    share: dict[Phase, float]  # of the phase's cycles


@dataclass(frozen=True, slots=True)
class StationRow:
    """One station's own cycle time before and after: stations are never pooled."""

    device: str
    output: bool  # one of the plan's output stations: the line's cycle time is theirs
    cycles: dict[Phase, int]
    mean_s: dict[Phase, float | None]
    p50_s: dict[Phase, float | None]
    p95_s: dict[Phase, float | None]
    quantiles_exact: bool  # in both phases, from every cycle's time rather than the histogram
    relative_change: float | None  # of the mean
    relative_interval: tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class PhaseTime:
    """A phase's planned busy time and where it went, from the KPI components."""

    pbt_s: float
    apt_s: float
    downtime_s: float  # PBT − APT: setup, delays, idle and unknown time
    cycles: int
    cycle_time_mean_s: float | None
    cycle_time_p50_s: float | None
    cycle_time_p95_s: float | None
    energy_per_good_unit: float | None
    oee: float | None


@dataclass(frozen=True, slots=True)
class Method:
    """The comparison's settings, as the code applied them to this demonstration."""

    level: float
    hours: dict[Phase, int]  # hourly units per phase
    bandwidth: dict[Phase, int]  # Newey-West lags + 1 per phase
    fixed_b: float  # the larger bandwidth / n of the two phases
    critical_value: float
    normal_critical_value: float  # what a plain normal interval would use
    bandwidth_fraction: float
    min_units: int
    power: float
    histogram_accuracy: float
    quantiles_exact: bool  # the line's cycle-time percentiles, in both phases, from every cycle's time
    method: str


@dataclass(frozen=True, slots=True)
class ReportContent:
    plan: DemonstrationPlan
    demonstration_id: int
    slug: str
    plan_version: int
    plan_hash: str
    frozen: bool  # False: a draft, and the report a preview
    data_fingerprint: str
    generated_at: dt.datetime
    kpis: list[KpiRow]
    coverage: list[CoverageRow]
    days: list[DayPoint]
    downtime: list[DowntimeRow]  # largest first, "other causes" last
    cycle_times: list[CycleTimeBin]  # of the line's output stations
    stations: list[StationRow]
    phases: dict[Phase, PhaseTime]
    method: Method
    warnings: list[str]
    # The plan's adjustment methods with their diagnostics (issue 21): the comparison document's sections.
    adjusted: AdjustedBaseline | None = None
    control_lines: list[ControlLineEffect] = field(default_factory=list)
    design: PlanDesign | None = None  # design before data: each target's MDE from the baseline alone
    product_mix: ProductMix | None = None  # the pilot at the baseline's product mix


def report_content(evaluation: Evaluation, breakdown: Breakdown, generated_at: dt.datetime) -> ReportContent:
    document = comparison_document(evaluation)
    result = evaluation.result
    phases = {phase: _phase_time(result.phases[phase].components, result.phases[phase].kpis) for phase in Phase}
    return ReportContent(
        plan=evaluation.plan,
        demonstration_id=evaluation.demonstration_id,
        slug=evaluation.slug,
        plan_version=evaluation.plan_version,
        plan_hash=document.source.plan_hash,
        frozen=evaluation.frozen,
        data_fingerprint=evaluation.data_fingerprint,
        generated_at=generated_at,
        kpis=[_kpi_row(k, evaluation.plan) for k in document.kpis] + _percentile_rows(phases),
        coverage=_coverage(document),
        days=[
            DayPoint(
                d.day,
                d.phase,
                compute("oee", d.components),
                compute("energy_per_good_unit", d.components),
                d.components.pbt_s / 3600,
            )
            for d in breakdown.days
        ],
        downtime=_downtime(breakdown, phases),
        cycle_times=_cycle_time_bins(breakdown),
        stations=_stations(evaluation, document),
        phases=phases,
        method=_method(evaluation, document),
        warnings=document.warnings,
        adjusted=document.adjusted_baseline,
        control_lines=document.control_line,
        design=document.design,
        product_mix=document.product_mix,
    )


def _phase_time(components: Components, kpis: dict[str, float | None]) -> PhaseTime:
    return PhaseTime(
        pbt_s=components.pbt_s,
        apt_s=components.apt_s,
        downtime_s=components.asut_s + components.adet_s + components.adot_s + components.unknown_s,
        cycles=round(components.cycles),
        cycle_time_mean_s=kpis.get("cycle_time_mean"),
        cycle_time_p50_s=kpis.get("cycle_time_p50"),
        cycle_time_p95_s=kpis.get("cycle_time_p95"),
        energy_per_good_unit=kpis.get("energy_per_good_unit"),
        oee=kpis.get("oee"),
    )


def _stations(evaluation: Evaluation, document: ComparisonDocument) -> list[StationRow]:
    phases = evaluation.result.phases
    by_phase = {phase: {s.device: s for s in phases[phase].stations} for phase in Phase}
    rows = []
    for change in document.stations:
        own = {phase: by_phase[phase].get(change.device) for phase in Phase}
        rows.append(
            StationRow(
                device=change.device,
                output=change.output,
                cycles={phase: s.cycles if s else 0 for phase, s in own.items()},
                mean_s={phase: s.mean_s if s else None for phase, s in own.items()},
                p50_s={phase: s.p50_s if s else None for phase, s in own.items()},
                p95_s={phase: s.p95_s if s else None for phase, s in own.items()},
                quantiles_exact=all(s is None or s.quantiles_exact for s in own.values()),
                relative_change=change.relative_change,
                relative_interval=change.relative_interval,
            )
        )
    return rows


def _gap(change: KpiChange) -> IntervalGap | None:
    if change.relative_interval is not None:
        target = change.target
        if target and target.verdict is Verdict.INCONCLUSIVE and target.pilot_length_factor is None:
            return IntervalGap.BASELINE_UNCERTAIN
        return None
    if change.baseline.value is None or change.pilot.value is None:
        return IntervalGap.NO_VALUE
    if change.baseline.std_error is None or change.pilot.std_error is None:
        return IntervalGap.TOO_FEW_UNITS
    return IntervalGap.ZERO_VALUE


def _kpi_row(change: KpiChange, plan: DemonstrationPlan) -> KpiRow:
    target = change.target
    asked = {t.kpi: t.change_pct for t in plan.targets}
    return KpiRow(
        kpi=change.kpi,
        unit=change.unit,
        better=change.better,
        baseline=change.baseline.value,
        pilot=change.pilot.value,
        relative_change=change.relative_change,
        relative_interval=change.relative_interval,
        target_change_pct=asked.get(change.kpi) if target else None,
        target_threshold=target.threshold if target else None,
        verdict=target.verdict if target else None,
        pilot_length_factor=target.pilot_length_factor if target else None,
        leaning=_leaning(change),
        gap=_gap(change),
        no_value=next((NoValue(e.reason) for e in (change.baseline, change.pilot) if e.reason), None),
        method=target.method.value if target else "before_after",
    )


def _leaning(change: KpiChange) -> Verdict | None:
    """As pilot_core.comparison.check_target words it: the estimate itself beyond the target, or short of it."""
    target, relative = change.target, change.relative_change
    if target is None or target.verdict is not Verdict.INCONCLUSIVE or relative is None:
        return None
    beyond = relative <= target.threshold if change.better == "lower" else relative >= target.threshold
    return Verdict.MET if beyond else Verdict.NOT_MET


def _percentile_rows(phases: dict[Phase, PhaseTime]) -> list[KpiRow]:
    """The cycle-time percentiles: from merged histograms, compared by their change only (no interval)."""
    rows = []
    for name in PERCENTILES:
        values = {
            phase: phases[phase].cycle_time_p50_s if name == "cycle_time_p50" else phases[phase].cycle_time_p95_s
            for phase in Phase
        }
        before, after = values[Phase.BASELINE], values[Phase.PILOT]
        rows.append(
            KpiRow(
                kpi=name,
                unit="s",
                better="lower",
                baseline=before,
                pilot=after,
                relative_change=after / before - 1 if before and after is not None else None,
                relative_interval=None,
                target_change_pct=None,
                target_threshold=None,
                verdict=None,
                pilot_length_factor=None,
                leaning=None,
                gap=None,
            )
        )
    return rows


def _coverage(document: ComparisonDocument) -> list[CoverageRow]:
    def row(phase: Phase, c: DeviceCoverage) -> CoverageRow:
        return CoverageRow(
            phase,
            c.device,
            c.busy_hours,
            c.telemetry_expected,
            c.telemetry_received,
            c.telemetry_ratio,
            c.messages_missing,
            c.unknown_s,
        )

    # A phase of several windows has a row per device and window: summed here, one row per device.
    rows: list[CoverageRow] = []
    for phase, entries in document.coverage.items():
        by_device: dict[str, CoverageRow] = {}
        for entry in entries:
            new = row(phase, entry)
            old = by_device.get(entry.device)
            if old is not None:
                expected = old.telemetry_expected + new.telemetry_expected
                received = old.telemetry_received + new.telemetry_received
                new = CoverageRow(
                    phase,
                    entry.device,
                    old.busy_hours + new.busy_hours,
                    expected,
                    received,
                    min(1.0, received / expected) if expected else None,
                    old.messages_missing + new.messages_missing,
                    old.unknown_s + new.unknown_s,
                )
            by_device[entry.device] = new
        rows.extend(by_device.values())
    return rows


def _downtime(breakdown: Breakdown, phases: dict[Phase, PhaseTime]) -> list[DowntimeRow]:
    """The largest causes one by one; the rest by state (devices give faults many codes); the smallest summed."""
    causes: dict[DowntimeCause, dict[Phase, float]] = {}
    for phase, part in breakdown.phases.items():
        for cause, lost_s in part.downtime_s.items():
            causes.setdefault(cause, dict.fromkeys(Phase, 0.0))[phase] += lost_s
    ranked = sorted(causes.items(), key=lambda item: (-sum(item[1].values()), _cause_key(item[0])))

    def row(cause: DowntimeCause | None, count: int, parts: list[dict[Phase, float]]) -> DowntimeRow:
        seconds = {p: math.fsum(part[p] for part in parts) for p in Phase}
        shares = {p: seconds[p] / phases[p].pbt_s if phases[p].pbt_s > 0 else None for p in Phase}
        return DowntimeRow(cause, count, seconds, shares)

    rows = [row(cause, 1, [seconds]) for cause, seconds in ranked[:PARETO_CAUSES]]
    by_state: dict[DowntimeCause, list[tuple[DowntimeCause, dict[Phase, float]]]] = {}
    for cause, seconds in ranked[PARETO_CAUSES:]:
        by_state.setdefault(DowntimeCause(cause.time_class, cause.state, None), []).append((cause, seconds))
    for state, members in by_state.items():
        only = members[0][0] if len(members) == 1 else state
        rows.append(row(only, len(members), [seconds for _, seconds in members]))
    rows.sort(key=lambda r: -sum(r.seconds.values()))
    if len(rows) > PARETO_ROWS:
        rest = rows[PARETO_ROWS - 1 :]
        rows = [*rows[: PARETO_ROWS - 1], row(None, sum(r.causes for r in rest), [r.seconds for r in rest])]
    return rows


def _cause_key(cause: DowntimeCause) -> tuple[str, str, str]:
    return (cause.time_class.value if cause.time_class else "", cause.state or "", cause.reason or "")


def _cycle_time_bins(breakdown: Breakdown) -> list[CycleTimeBin]:
    """Both phases' cycle times in common bins, as shares of each phase's cycles (phases differ in length)."""
    histograms = {phase: breakdown.phases[phase].cycle_times for phase in Phase}
    merged = LogHistogram()
    for histogram in histograms.values():
        merged.merge(histogram)
    low, high = (merged.quantile(q) for q in CYCLE_TIME_RANGE)
    if low is None or high is None:
        return []
    if high <= low:
        low, high = low * 0.95, high * 1.05
    width = (high - low) / CYCLE_TIME_BINS
    counts = {phase: [0] * CYCLE_TIME_BINS for phase in Phase}
    for phase, histogram in histograms.items():
        for bin_low, bin_high, count in histogram.bins():
            # Outliers beyond the drawn range go into its first or last bin, so every cycle is counted.
            index = min(CYCLE_TIME_BINS - 1, max(0, int(((bin_low + bin_high) / 2 - low) / width)))
            counts[phase][index] += count
    totals = {phase: histograms[phase].total for phase in Phase}
    return [
        CycleTimeBin(
            low + i * width,
            low + (i + 1) * width,
            {phase: counts[phase][i] / totals[phase] if totals[phase] else 0.0 for phase in Phase},
        )
        for i in range(CYCLE_TIME_BINS)
    ]


def _method(evaluation: Evaluation, document: ComparisonDocument) -> Method:
    first = next(iter(evaluation.result.comparisons.values()))
    estimates = {Phase.BASELINE: first.baseline, Phase.PILOT: first.pilot}
    fixed_b = max(e.bandwidth / max(e.n, 1) for e in estimates.values())
    return Method(
        level=document.level,
        hours={phase: e.n for phase, e in estimates.items()},
        bandwidth={phase: e.bandwidth for phase, e in estimates.items()},
        fixed_b=fixed_b,
        critical_value=critical_value(document.level, fixed_b),
        normal_critical_value=critical_value(document.level, 0.0),
        bandwidth_fraction=BANDWIDTH_FRACTION,
        min_units=MIN_UNITS,
        power=POWER,
        histogram_accuracy=RELATIVE_ACCURACY,
        quantiles_exact=all(evaluation.result.phases[phase].quantiles_exact for phase in Phase),
        method=document.method,
    )

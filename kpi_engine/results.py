"""The engine's result documents: a demonstration's KPIs per window and its before/after comparison, as JSON
and as CSV rows.

Built from a ``kpi_engine.service.Evaluation``; every document names the
demonstration, the plan version and hash it used, and the data fingerprint.
The API serves them, the report reads them and an evidence bundle signs them:
one definition, so the three never tell two stories.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from kpi_engine.evaluation import (
    Coverage,
    StationCycleTime,
    WindowResult,
    kpi_no_value_reason,
    kpi_unit,
    phase_hours,
)
from kpi_engine.service import Evaluation
from pilot_core.adjusted_baseline import AdjustedResult
from pilot_core.comparison import KpiComparison, PeriodEstimate, Verdict
from pilot_core.control_line import ControlLineResult
from pilot_core.demonstration import ControlLinePlan, Method, Phase
from pilot_core.design import METHOD as DESIGN_METHOD
from pilot_core.design import METHOD_REVISION_1 as DESIGN_METHOD_REVISION_1
from pilot_core.histogram import RELATIVE_ACCURACY
from pilot_core.kpi import COMPONENT_NAMES, KPIS
from pilot_core.product_mix import METHOD as MIX_METHOD
from pilot_core.product_mix import MixStandardisation

TIME_COMPONENTS = ("pbt_s", "apt_s", "asut_s", "adet_s", "adot_s", "unknown_s", "planned_down_s", "repair_s")
COUNT_COMPONENTS = tuple(name for name in COMPONENT_NAMES if name not in TIME_COMPONENTS)


class Source(BaseModel):
    """What a result was computed from."""

    demonstration_id: int
    slug: str
    plan_version: int
    plan_hash: str
    frozen: bool = Field(description="False: the plan is a draft, and the result a preview")
    data_fingerprint: str = Field(
        description="Engine version, plan hash, and which version of every device-hour was used"
    )
    cached: bool
    hours_refreshed: int = Field(description="Device-hours read from InfluxDB for this answer")
    late_hours: int = Field(
        default=0,
        description="Device-hours of the plan's windows that took in data which reached InfluxDB after they had"
        " settled (late data), picked up by the roll-up job: the result includes it",
    )
    late_data: str | None = Field(
        default=None, description="Why late_hours is not 0: which devices, and when the latest was taken in"
    )


class DeviceCoverage(BaseModel):
    device: str
    busy_hours: int = Field(description="Hours with planned busy time in the window")
    telemetry_expected: int
    telemetry_received: int
    telemetry_ratio: float | None
    messages_missing: int = Field(description="Messages missing by seq")
    unknown_s: float = Field(description="Planned busy time with no known state")


class QuantileResolution(BaseModel):
    """How cycle-time percentiles were found: from every cycle's time, or from a histogram."""

    method: str = Field(description="'exact': from every cycle's time; 'histogram': from mergeable log histograms")
    relative_accuracy: float = Field(description="Largest relative error of a percentile: 0 when exact")


def _resolution(exact: bool) -> QuantileResolution:
    return QuantileResolution(
        method="exact" if exact else "histogram", relative_accuracy=0.0 if exact else RELATIVE_ACCURACY
    )


class StationCycleTimes(BaseModel):
    """One station's cycle time from its own cycles, never pooled with other stations'."""

    device: str
    output: bool = Field(description="One of the plan's output stations, whose cycles make the line's cycle time")
    cycles: int = Field(description="Cycles with a reported cycle time")
    cycle_time_mean: float | None = Field(description="Σ cycle time / cycles, seconds")
    cycle_time_p50: float | None = Field(description="Seconds")
    cycle_time_p95: float | None = Field(description="Seconds")
    quantiles: QuantileResolution


class WindowKpis(BaseModel):
    name: str
    phase: Phase
    start: datetime
    end: datetime
    kpis: dict[str, float | None]
    units: dict[str, str] = Field(description="Each KPI's unit; a ratio is a fraction of 1 (0.85 is 85%)")
    reasons: dict[str, str] = Field(description="Why each KPI without a value has none: the input that is missing")
    time_breakdown_s: dict[str, float] = Field(description="ISO 22400-2 time elements, seconds, devices summed")
    counts: dict[str, float] = Field(description="Quantities, cycles, failures and energy, devices summed")
    coverage: list[DeviceCoverage]
    excluded_hours: int
    cycle_time_quantiles: QuantileResolution = Field(description="How the line's cycle_time_p50 and p95 were found")
    stations: list[StationCycleTimes] = Field(
        description="Each station with cycles: its own cycle time (the line's is its output stations')"
    )


class KpisDocument(BaseModel):
    source: Source
    windows: list[WindowKpis]
    phases: dict[Phase, WindowKpis] = Field(description="Each phase's windows rolled up by summing components")
    warnings: list[str]


class Estimate(BaseModel):
    value: float | None
    reason: str | None = Field(description="Why there is no value: the input that is missing")
    n: int = Field(description="Hourly units")
    effective_n: float | None = Field(description="n discounted for autocorrelation; never more than n")
    std_error: float | None


class TargetVerdict(BaseModel):
    label: str
    threshold: float = Field(description="The relative change the target asks for, signed")
    verdict: Verdict
    reason: str
    pilot_length_factor: float | None = Field(description="Run the pilot this many times as long to decide")
    method: Method = Field(
        default=Method.BEFORE_AFTER,
        description="How the verdict was reached: before/after, the adjusted baseline or the control line;"
        " left out when before/after",
    )

    @model_serializer(mode="wrap")
    def _without_default_method(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A document of a plan without adjustment methods is written as before them: signed bundles stay true.
        data: dict[str, Any] = handler(self)
        if self.method is Method.BEFORE_AFTER:
            data.pop("method", None)
        return data


class KpiChange(BaseModel):
    kpi: str
    title: str
    title_ko: str
    unit: str
    better: str
    baseline: Estimate
    pilot: Estimate
    absolute_change: float | None
    relative_change: float | None
    absolute_interval: tuple[float, float] | None
    relative_interval: tuple[float, float] | None
    minimum_detectable_change: float | None = Field(description="Relative change detectable at 80% power")
    note: str
    target: TargetVerdict | None


class StationChange(KpiChange):
    """cycle_time_mean of one station, compared as the line's is (the station as if it were the output)."""

    device: str
    output: bool


# --- Adjustment methods (issue 21, items 3 and 4) -------------------------------------------------------------


class BaselineModel(BaseModel):
    """The adjusted baseline's regression and its ASHRAE Guideline 14 acceptance."""

    variables: list[str]
    coefficients: dict[str, float] = Field(description="'const' and each variable, per hour")
    baseline_hours: int
    parameters: int
    r_squared: float = Field(description="Shown as a diagnostic: Guideline 14 sets no limit on it")
    cv_rmse: float = Field(description="sqrt(Σ(ŷ−y)²/(n−p)) / ȳ")
    cv_rmse_limit: float = Field(description="Guideline 14, hourly data: 0.30")
    nmbe: float = Field(description="Σ(ŷ−y) / ((n−p)·ȳ)")
    nmbe_limit: float = Field(description="Guideline 14, hourly data: |NMBE| ≤ 0.10")
    residual_lag1_autocorrelation: float
    passes: bool


class ConditionRange(BaseModel):
    """One independent variable: the baseline's range, where the model is valid, against the pilot's hours."""

    variable: str
    baseline_min: float
    baseline_max: float
    pilot_mean: float = Field(description="What the savings project onto: outside the baseline's range, no verdict")
    pilot_hours_outside: float = Field(description="Share of the pilot's hours outside the baseline's range")


class AdjustedBaseline(BaseModel):
    """IPMVP avoided use: the baseline model projected onto the pilot's hours, against what the pilot used."""

    method: str
    response: str = Field(description="The hourly component modelled, e.g. energy_kwh")
    model: BaselineModel | None
    adjusted_baseline: float | None = Field(description="Σ predicted over the pilot's hours")
    pilot: float | None = Field(description="Σ measured over the pilot's hours")
    savings: float | None = Field(description="Adjusted baseline − pilot")
    relative_change: float | None = Field(description="Pilot / adjusted baseline − 1: null when refused")
    relative_interval: tuple[float, float] | None
    fractional_savings_uncertainty: float | None = Field(description="Guideline 14 Annex B, at 68% confidence")
    pilot_hours: int
    conditions: list[ConditionRange] | None = Field(
        default_factory=list,
        description="Each variable's baseline range against the pilot's (IPMVP: no extrapolation); absent in bundles"
        " of kpi_engine 3, whose adjusted baseline knew no range",
    )
    refused: str | None = Field(description="Why no verdict may be drawn from the model")


class PreTrendCheck(BaseModel):
    """Placebo: the baseline's second half against its first, treated net of control; covers 0 when parallel."""

    relative_effect: float | None
    relative_interval: tuple[float, float] | None
    parallel: bool | None = Field(description="null: too little baseline to check")
    note: str


class ControlLineEffect(BaseModel):
    """Difference-in-differences for one KPI: the treated line's change net of the control's."""

    kpi: str
    method: str
    control_devices: list[str]
    independence: str = Field(description="Why the plan holds the control independent of the pilot")
    treated_change: float | None
    control_change: float | None
    relative_effect: float | None = Field(description="(T_pilot/T_baseline) / (C_pilot/C_baseline) − 1")
    relative_interval: tuple[float, float] | None
    baseline_hours: int = Field(description="Paired hours")
    pilot_hours: int
    note: str
    pre_trend: PreTrendCheck


def _adjusted_baseline(result: AdjustedResult, revision: int) -> AdjustedBaseline:
    model = result.model
    return AdjustedBaseline(
        method=result.method,
        response=result.response,
        model=None
        if model is None
        else BaselineModel(
            variables=list(model.variables),
            coefficients=model.coefficients,
            baseline_hours=model.n,
            parameters=model.parameters,
            r_squared=model.r_squared,
            cv_rmse=model.cv_rmse,
            cv_rmse_limit=model.cv_rmse_limit,
            nmbe=model.nmbe,
            nmbe_limit=model.nmbe_limit,
            residual_lag1_autocorrelation=model.residual_ar1,
            passes=model.passes,
        ),
        adjusted_baseline=result.adjusted_baseline,
        pilot=result.pilot,
        savings=result.savings,
        relative_change=result.relative_change,
        relative_interval=result.relative_interval,
        fractional_savings_uncertainty=result.fractional_savings_uncertainty,
        pilot_hours=result.n_pilot,
        conditions=None  # revision 1 (kpi_engine 3) knew no range: its documents have no conditions
        if revision == 1
        else [
            ConditionRange(
                variable=c.variable,
                baseline_min=c.baseline_min,
                baseline_max=c.baseline_max,
                pilot_mean=c.pilot_mean,
                pilot_hours_outside=c.pilot_hours_outside,
            )
            for c in result.conditions
        ],
        refused=result.refused or None,
    )


def _control_line(result: ControlLineResult, plan: ControlLinePlan) -> ControlLineEffect:
    estimate, trend = result.estimate, result.pre_trend
    return ControlLineEffect(
        kpi=estimate.kpi,
        method=result.method,
        control_devices=list(plan.devices),
        independence=plan.independence,
        treated_change=estimate.treated_change,
        control_change=estimate.control_change,
        relative_effect=estimate.relative_effect,
        relative_interval=estimate.relative_interval,
        baseline_hours=estimate.n_baseline,
        pilot_hours=estimate.n_pilot,
        note=estimate.note,
        pre_trend=PreTrendCheck(
            relative_effect=trend.relative_effect,
            relative_interval=trend.relative_interval,
            parallel=trend.parallel,
            note=trend.note,
        ),
    )


class TargetDesignModel(BaseModel):
    """One target's design before data: what the planned pilot can detect, from the baseline's hours alone."""

    kpi: str
    change_pct: float = Field(description="The target's size, in percent")
    level: float
    power: float
    baseline_value: float | None
    baseline_n: int = Field(description="Hourly units in the baseline")
    baseline_autocorrelation: float | None = Field(description="Lag-1 autocorrelation ρ of the linearised KPI")
    baseline_effective_n: float | None = Field(description="n(1 − ρ)/(1 + ρ), at most n")
    baseline_relative_se: float | None = Field(description="Standard error of the baseline's KPI / its value")
    planned_pilot_units: int = Field(
        description="Hourly units the planned pilot windows give at the baseline's coverage"
    )
    mde: float | None = Field(description="Signed relative change detectable against no change at the power")
    met_needs: float | None = Field(description="Signed relative true change with which the target is shown met")
    pilot_hours_for_target: float | None = Field(
        description="Pilot window hours for an MDE as large as the target; null: no length would do"
    )
    expected_change_pct: float | None
    pilot_hours_for_expected: float | None = Field(
        description="Pilot window hours to show the target met at the power if the expected change holds"
    )
    note: str
    method: str | None = Field(
        default=None,
        description="The target's method the design was computed under (before_after, adjusted_baseline,"
        " control_line); absent in bundles of kpi_engine 3, whose design ignored it",
    )
    degrees_of_freedom: float | None = Field(
        default=None,
        description="Of the interval's variance estimate at the planned pilot length (fewer: a short pilot, a"
        " wider allowance); null: unbounded, or no design",
    )


class PlanDesign(BaseModel):
    """Design before data (pre-registration): computed from the frozen plan and the baseline's hours only."""

    method: str
    power: float
    planned_pilot_hours: float = Field(description="Hours the plan's pilot windows span")
    targets: list[TargetDesignModel]


class ProductShareModel(BaseModel):
    product: str
    baseline_units: float = Field(description="Produced at the output stations")
    pilot_units: float
    baseline_share: float
    pilot_share: float
    baseline: dict[str, float | None] = Field(description="The product's own figure per standardised KPI")
    pilot: dict[str, float | None]


class StandardisedKpiModel(BaseModel):
    kpi: str
    baseline: float | None
    raw_pilot: float | None
    raw_change: float | None
    standardised_pilot: float | None = Field(description="The pilot at the baseline's product mix")
    standardised_change: float | None
    reason: str = Field(description="Why there is no standardised figure")


class ProductMix(BaseModel):
    """Cycle time, throughput and energy per unit at the baseline's product mix, beside the raw figures."""

    method: str
    mix_differs: bool = Field(description="Some product's share of units moved by at least one percentage point")
    largest_share_change: float
    products: list[ProductShareModel]
    kpis: list[StandardisedKpiModel]
    notes: list[str]


class ComparisonDocument(BaseModel):
    source: Source
    level: float
    method: str
    kpis: list[KpiChange]
    stations: list[StationChange] = Field(description="Each station's own cycle_time_mean, before and after")
    coverage: dict[Phase, list[DeviceCoverage]]
    warnings: list[str]
    adjusted_baseline: AdjustedBaseline | None = Field(
        default=None, description="The plan's adjusted baseline (IPMVP, ASHRAE Guideline 14), where it declares one"
    )
    control_line: list[ControlLineEffect] = Field(
        default_factory=list, description="Per KPI a target judges against the plan's control line"
    )
    design: PlanDesign | None = Field(
        default=None,
        description="Each target's minimum detectable change, from the baseline alone; left out when the plan has"
        " no design",
    )
    product_mix: ProductMix | None = Field(
        default=None,
        description="The pilot at the baseline's product mix; left out unless some product's share of units moved"
        " by a percentage point or more",
    )

    @model_serializer(mode="wrap")
    def _without_unused_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # As TargetVerdict's: a plan without a design or adjustment methods, over a mix that did not move, gets the
        # document it got before them; signed bundles stay true.
        data: dict[str, Any] = handler(self)
        for key in ("adjusted_baseline", "control_line", "design", "product_mix"):
            if not getattr(self, key):
                data.pop(key, None)
        return data


def _source(evaluation: Evaluation) -> Source:
    return Source(
        demonstration_id=evaluation.demonstration_id,
        slug=evaluation.slug,
        plan_version=evaluation.plan_version,
        plan_hash=evaluation.result.plan_hash,
        frozen=evaluation.frozen,
        data_fingerprint=evaluation.data_fingerprint,
        cached=evaluation.cached,
        hours_refreshed=evaluation.hours_refreshed,
        late_hours=evaluation.late_hours,
        late_data=evaluation.late_data,
    )


def _coverage(coverage: Coverage) -> DeviceCoverage:
    return DeviceCoverage(
        device=coverage.device,
        busy_hours=coverage.hours,
        telemetry_expected=coverage.telemetry_expected,
        telemetry_received=coverage.telemetry_received,
        telemetry_ratio=coverage.telemetry_ratio,
        messages_missing=coverage.messages_missing,
        unknown_s=coverage.unknown_s,
    )


def _window(result: WindowResult) -> WindowKpis:
    return WindowKpis(
        name=result.window.name,
        phase=result.window.phase,
        start=result.window.start,
        end=result.window.end,
        kpis=result.kpis,
        units={name: kpi_unit(name) for name in result.kpis},
        reasons={
            name: str(kpi_no_value_reason(name, result.components))
            for name, value in result.kpis.items()
            if value is None
        },
        time_breakdown_s={name: getattr(result.components, name) for name in TIME_COMPONENTS},
        counts={name: getattr(result.components, name) for name in COUNT_COMPONENTS},
        coverage=[_coverage(c) for c in result.coverage],
        excluded_hours=result.excluded_hours,
        cycle_time_quantiles=_resolution(result.quantiles_exact),
        stations=[_station(s) for s in result.stations],
    )


def _station(station: StationCycleTime) -> StationCycleTimes:
    return StationCycleTimes(
        device=station.device,
        output=station.output,
        cycles=station.cycles,
        cycle_time_mean=station.mean_s,
        cycle_time_p50=station.p50_s,
        cycle_time_p95=station.p95_s,
        quantiles=_resolution(station.quantiles_exact),
    )


def kpis_document(evaluation: Evaluation) -> KpisDocument:
    result = evaluation.result
    return KpisDocument(
        source=_source(evaluation),
        windows=[_window(w) for w in result.windows],
        phases={phase: _window(w) for phase, w in result.phases.items()},
        warnings=result.warnings,
    )


def _estimate(kpi: str, estimate: PeriodEstimate) -> Estimate:
    reason = None if estimate.value is not None else kpi_no_value_reason(kpi, estimate.components)
    return Estimate(
        value=estimate.value,
        reason=None if reason is None else str(reason),
        n=estimate.n,
        effective_n=estimate.effective_n,
        std_error=estimate.std_error,
    )


def _change(comparison: KpiComparison, target: TargetVerdict | None) -> KpiChange:
    definition = KPIS[comparison.kpi]
    return KpiChange(
        kpi=comparison.kpi,
        title=definition.title,
        title_ko=definition.title_ko,
        unit=definition.unit,
        better=definition.better.value,
        baseline=_estimate(comparison.kpi, comparison.baseline),
        pilot=_estimate(comparison.kpi, comparison.pilot),
        absolute_change=comparison.absolute_change,
        relative_change=comparison.relative_change,
        absolute_interval=comparison.absolute_interval,
        relative_interval=comparison.relative_interval,
        minimum_detectable_change=comparison.minimum_detectable_change,
        note=comparison.note,
        target=target,
    )


def comparison_document(evaluation: Evaluation) -> ComparisonDocument:
    result = evaluation.result
    targets = {
        t.comparison.kpi: TargetVerdict(
            label=t.label,
            threshold=t.check.threshold,
            verdict=t.check.verdict,
            reason=t.check.reason,
            pilot_length_factor=t.check.pilot_length_factor,
            method=t.method,
        )
        for t in result.targets
    }
    first = next(iter(result.comparisons.values()))
    return ComparisonDocument(
        source=_source(evaluation),
        level=first.level,
        method=first.method,
        kpis=[_change(c, targets.get(name)) for name, c in result.comparisons.items()],
        stations=[
            StationChange(
                **_change(c, None).model_dump(), device=device, output=device in evaluation.plan.output_devices
            )
            for device, c in result.station_comparisons.items()
        ],
        coverage={phase: [_coverage(c) for c in w.coverage] for phase, w in result.phases.items()},
        warnings=result.warnings,
        adjusted_baseline=None
        if result.adjusted is None
        else _adjusted_baseline(result.adjusted, result.revisions.adjusted_baseline),
        control_line=[
            _control_line(c, evaluation.plan.control_line)
            for c in result.control_lines.values()
            if evaluation.plan.control_line is not None
        ],
        design=design_document(evaluation),
        product_mix=_product_mix(result.product_mix),
    )


def design_document(evaluation: Evaluation) -> PlanDesign | None:
    plan = evaluation.plan
    if plan.design is None:
        return None
    return PlanDesign(
        method=DESIGN_METHOD if evaluation.result.revisions.design > 1 else DESIGN_METHOD_REVISION_1,
        power=plan.design.power,
        planned_pilot_hours=phase_hours(plan, Phase.PILOT),
        targets=[TargetDesignModel(**asdict(t)) for t in evaluation.result.design],
    )


def _product_mix(mix: MixStandardisation | None) -> ProductMix | None:
    if mix is None or not mix.mix_differs:
        return None
    return ProductMix(
        method=MIX_METHOD,
        mix_differs=mix.mix_differs,
        largest_share_change=mix.largest_share_change,
        products=[ProductShareModel(**asdict(p)) for p in mix.products],
        kpis=[StandardisedKpiModel(**asdict(k)) for k in mix.kpis],
        notes=mix.notes,
    )


def _csv(header: list[str], rows: Iterable[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def kpis_csv(document: KpisDocument) -> str:
    """One row per window and KPI, phases last, with the plan version and hash on every row; a KPI without
    value has an empty value and the reason."""
    source = document.source
    header = [
        *("demonstration", "plan_version", "plan_hash", "window", "phase", "start", "end", "kpi", "value"),
        *("unit", "reason"),
    ]
    rows = [
        [
            *(source.slug, source.plan_version, source.plan_hash),
            *(w.name, w.phase.value, w.start.isoformat(), w.end.isoformat(), kpi, value),
            *(w.units[kpi], w.reasons.get(kpi)),
        ]
        for w in [*document.windows, *document.phases.values()]
        for kpi, value in w.kpis.items()
    ]
    return _csv(header, rows)


def comparison_csv(document: ComparisonDocument) -> str:
    """One row per KPI: values, change, interval and verdict."""
    source = document.source
    header = [
        "demonstration",
        "plan_version",
        "plan_hash",
        "kpi",
        "title",
        "title_ko",
        "unit",
        "baseline",
        "pilot",
        "absolute_change",
        "relative_change",
        "relative_interval_low",
        "relative_interval_high",
        "level",
        "n_baseline",
        "effective_n_baseline",
        "n_pilot",
        "effective_n_pilot",
        "minimum_detectable_change",
        "target",
        "verdict",
        "note",
    ]
    rows = []
    for k in document.kpis:
        low, high = k.relative_interval or (None, None)
        rows.append(
            [
                *(source.slug, source.plan_version, source.plan_hash, k.kpi, k.title, k.title_ko, k.unit),
                *(k.baseline.value, k.pilot.value, k.absolute_change, k.relative_change, low, high, document.level),
                *(k.baseline.n, k.baseline.effective_n, k.pilot.n, k.pilot.effective_n, k.minimum_detectable_change),
                *(k.target.label if k.target else None, k.target.verdict.value if k.target else None),
                k.note or None,
            ]
        )
    return _csv(header, rows)

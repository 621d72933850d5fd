"""An adjusted baseline (IPMVP "avoided use"), accepted or refused by ASHRAE Guideline 14's criteria.

A linear model of an hourly response (energy, say) on declared independent variables (production volume,
hours in shift, ambient temperature) is fitted by OLS on the baseline hours and projected onto the pilot's
hours: savings = adjusted baseline − pilot, and the relative change is pilot / adjusted baseline − 1.

Its uncertainty has two independent parts, both autocorrelation-aware: the model's coefficients (their
Newey-West HAC covariance from statsmodels, projected through the pilot's summed conditions) and the pilot's
own hourly noise (the HAC variance of the mean of the pilot's residuals). The interval is found on the log
scale with the fixed-b critical values the engine uses everywhere, at the full-sample bandwidth b = 1 of Kiefer,
Vogelsang and Bunzel (see BANDWIDTH_FRACTION).

The model must pass Guideline 14 for hourly data, CV(RMSE) ≤ 30% and |NMBE| ≤ 10% (monthly data: 15% and
5%), with CV(RMSE) = sqrt(Σ(ŷ−y)²/(n−p))/ȳ and NMBE = Σ(ŷ−y)/((n−p)·ȳ). A model that fails them, has fewer
baseline hours than it needs, or a variable without data or variation gives no verdict, only its reason.
The fractional savings uncertainty of Guideline 14 Annex B (Reddy and Claridge, with the lag-1
autocorrelation of the residuals) is reported beside the HAC interval.

A regression model is valid over the range of conditions it was fitted on (IPMVP; ASHRAE Guideline 14): it
says nothing sure beyond them. The savings project the model onto the pilot's summed conditions, that is onto
the pilot's mean of each variable, so a pilot whose mean lies outside the baseline's range for a variable gets no
verdict; pilot hours outside that range are shown for each variable and warned of. With errors that grow with
the load (energy's do), the HAC interval of such an extrapolation fell short of its nominal coverage
(bench.confounders; docs/confounders.md).

Revision 1 (kpi_engine 3 and before) took the bandwidth at half the sample, drew a verdict whatever the pilot's
conditions and reported none: bundles signed then are verified with it (``revision``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pilot_core.comparison import critical_value

METHOD = (
    "OLS on the baseline hours, projected onto the pilot's; Newey-West HAC covariance (fixed-b bandwidth n,"
    " Kiefer-Vogelsang critical values); ASHRAE Guideline 14 acceptance; no extrapolation beyond the baseline's"
    " range"
)
REVISION = 2  # 1: kpi_engine 3 and before (see the module's text)
METHOD_REVISION_1 = (
    "OLS on the baseline hours, projected onto the pilot's; Newey-West HAC covariance (fixed-b bandwidth 0.5 n,"
    " Kiefer-Vogelsang critical values); ASHRAE Guideline 14 acceptance"
)
# ASHRAE Guideline 14-2014 calibration limits, as fractions: (CV(RMSE), |NMBE|).
G14_LIMITS = {"hourly": (0.30, 0.10), "monthly": (0.15, 0.05)}
# Fewer hours than this many per parameter, and the model is not trusted (besides n > p, which OLS needs).
HOURS_PER_PARAMETER = 10
# Bartlett over the whole sample (b = 1, Kiefer, Vogelsang and Bunzel 2000): no bandwidth to choose, and the
# fixed-b family's smallest size distortion under strong dependence, paid for in width. The projection onto the
# pilot's conditions weights the baseline's extreme hours most; those come in persistent spells (weather) with
# errors that grow with the load, and at b = 0.2 and 0.5 the interval fell short of its level (bench.confounders).
BANDWIDTH_FRACTION = 1.0
BANDWIDTH_FRACTION_REVISION_1 = 0.5
SAVINGS_UNCERTAINTY_LIMIT = 0.50  # Guideline 14: savings uncertainty below 50% of the savings at 68% confidence


@dataclass(frozen=True, slots=True)
class ModelFit:
    variables: tuple[str, ...]
    coefficients: dict[str, float]  # "const" and each variable
    n: int  # baseline hours
    parameters: int
    r_squared: float
    cv_rmse: float
    nmbe: float
    residual_ar1: float  # lag-1 autocorrelation of the residuals
    cv_rmse_limit: float
    nmbe_limit: float

    @property
    def passes(self) -> bool:
        return self.cv_rmse <= self.cv_rmse_limit and abs(self.nmbe) <= self.nmbe_limit


@dataclass(frozen=True, slots=True)
class ConditionRange:
    """One variable's conditions: the baseline's range, and where the pilot's hours lie against it."""

    variable: str
    baseline_min: float
    baseline_max: float
    pilot_mean: float
    pilot_hours_outside: float  # share of the pilot's hours outside [baseline_min, baseline_max]

    @property
    def mean_inside(self) -> bool:
        return self.baseline_min <= self.pilot_mean <= self.baseline_max


@dataclass(frozen=True, slots=True)
class AdjustedResult:
    response: str
    level: float
    model: ModelFit | None
    adjusted_baseline: float | None  # Σ predicted over the pilot's hours
    pilot: float | None  # Σ measured over the pilot's hours
    savings: float | None  # adjusted baseline − pilot
    relative_change: float | None  # pilot / adjusted baseline − 1
    relative_interval: tuple[float, float] | None
    std_error: float | None  # of log(pilot / adjusted baseline)
    fractional_savings_uncertainty: float | None  # Guideline 14 Annex B, at 68%
    n_pilot: int
    refused: str = ""  # why no verdict may be drawn: the model fails, cannot be fitted, or would extrapolate
    warnings: list[str] = field(default_factory=list)
    conditions: tuple[ConditionRange, ...] = ()  # each variable's baseline range against the pilot's; revision 1: none
    method: str = METHOD


def _design(variables: Sequence[str], values: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    return np.column_stack([np.ones(n), *(np.asarray(values[v], dtype=float) for v in variables)])


def adjusted_baseline(
    response: str,
    variables: Sequence[str],
    baseline: tuple[np.ndarray, Mapping[str, np.ndarray]],
    pilot: tuple[np.ndarray, Mapping[str, np.ndarray]],
    level: float,
    granularity: str = "hourly",
    revision: int = REVISION,
) -> AdjustedResult:
    """``baseline`` and ``pilot``: the response per hour and each variable per hour (NaN where it has no data);
    ``revision``: the method as that revision computes it (an older engine's, to verify its bundles)."""
    y_b, x_b = np.asarray(baseline[0], dtype=float), baseline[1]
    y_p, x_p = np.asarray(pilot[0], dtype=float), pilot[1]
    n, m, p = len(y_b), len(y_p), len(variables) + 1
    revision_1 = revision == 1
    fraction, method = (
        (BANDWIDTH_FRACTION_REVISION_1, METHOD_REVISION_1) if revision_1 else (BANDWIDTH_FRACTION, METHOD)
    )
    empty = AdjustedResult(response, level, None, None, None, None, None, None, None, None, m, method=method)
    for name, values, period in [(v, x_b.get(v), "baseline") for v in variables] + [
        (v, x_p.get(v), "pilot") for v in variables
    ]:
        hours = len(y_b) if period == "baseline" else len(y_p)
        if values is None or len(values) != hours or (hours and not np.any(np.isfinite(values))):
            return _refuse(empty, f"the independent variable {name!r} has no data for every {period} hour")
        missing = int(np.count_nonzero(~np.isfinite(values)))
        if missing:
            return _refuse(
                empty, f"the independent variable {name!r} has no data in {missing} of the {hours} {period} hours"
            )
    if n < max(p + 1, HOURS_PER_PARAMETER * p):
        return _refuse(
            empty,
            f"{n} baseline hours for a model of {p} parameters: at least {max(p + 1, HOURS_PER_PARAMETER * p)}"
            " are needed",
        )
    if m == 0:
        return _refuse(empty, "no pilot hours to project the model onto")
    for name in variables:
        if np.ptp(np.asarray(x_b[name], dtype=float)) == 0:
            return _refuse(empty, f"the independent variable {name!r} does not vary over the baseline")
    mean_y = float(y_b.mean())
    if mean_y <= 0:
        return _refuse(empty, f"the baseline has no {response} to model")
    design_b, design_p = _design(variables, x_b, n), _design(variables, x_p, m)
    bandwidth_b = max(2, math.ceil(fraction * n))
    from statsmodels.regression.linear_model import OLS  # noqa: PLC0415  (slow import, only when adjusted)

    fit = OLS(y_b, design_b).fit(cov_type="HAC", cov_kwds={"maxlags": bandwidth_b - 1, "use_correction": False})
    if not np.all(np.isfinite(fit.params)) or np.linalg.matrix_rank(design_b) < p:
        return _refuse(empty, "the independent variables are collinear over the baseline: the model has no unique fit")
    residuals = y_b - fit.fittedvalues
    cv_limit, nmbe_limit = G14_LIMITS[granularity]
    ar1 = float(np.corrcoef(residuals[:-1], residuals[1:])[0, 1]) if np.std(residuals) > 0 else 0.0
    model = ModelFit(
        tuple(variables),
        dict(zip(("const", *variables), (float(b) for b in fit.params), strict=True)),
        n,
        p,
        float(fit.rsquared),
        math.sqrt(float(residuals @ residuals) / (n - p)) / mean_y,
        float(-residuals.sum()) / ((n - p) * mean_y),
        ar1,
        cv_limit,
        nmbe_limit,
    )
    predicted = design_p @ fit.params
    adjusted, measured = float(predicted.sum()), float(y_p.sum())
    # Revision 1 knew no range, so drew no line at it.
    conditions = (
        ()
        if revision_1
        else tuple(
            _condition_range(v, np.asarray(x_b[v], dtype=float), np.asarray(x_p[v], dtype=float)) for v in variables
        )
    )
    base = AdjustedResult(
        response,
        level,
        model,
        adjusted,
        measured,
        adjusted - measured,
        None,
        None,
        None,
        None,
        m,
        conditions=conditions,
        method=method,
    )
    if not model.passes:
        return _refuse(
            base,
            f"the baseline model fails ASHRAE Guideline 14 ({granularity}): CV(RMSE) {model.cv_rmse:.1%}"
            f" (limit {cv_limit:.0%}), NMBE {model.nmbe:+.1%} (limit ±{nmbe_limit:.0%})",
        )
    if adjusted <= 0 or measured <= 0:
        return _refuse(base, f"the adjusted baseline and the pilot's {response} must both be positive")
    beyond = [c for c in conditions if not c.mean_inside]
    if beyond:
        return _refuse(
            base,
            "the pilot's conditions lie outside the baseline's, where the model is not valid (IPMVP): "
            + "; ".join(
                f"mean {c.variable} {c.pilot_mean:.4g} outside the baseline's range [{c.baseline_min:.4g},"
                f" {c.baseline_max:.4g}]"
                for c in beyond
            ),
        )
    summed_conditions = design_p.sum(axis=0)
    model_variance = float(summed_conditions @ fit.cov_params() @ summed_conditions)
    pilot_residuals = y_p - predicted
    bandwidth_p = max(2, math.ceil(fraction * m))
    if m > 1 and np.any(pilot_residuals != pilot_residuals[0]):
        noise = OLS(pilot_residuals, np.ones(m)).fit(
            cov_type="HAC", cov_kwds={"maxlags": bandwidth_p - 1, "use_correction": False}
        )
        pilot_variance = float(noise.bse[0] ** 2) * m**2  # of the pilot's sum
    else:
        pilot_variance = 0.0
    log_se = math.sqrt(model_variance / adjusted**2 + pilot_variance / measured**2)
    cv = critical_value(level, max(bandwidth_b / n, bandwidth_p / m))
    centre = math.log(measured / adjusted)
    warnings = [
        f"{c.pilot_hours_outside:.0%} of the pilot's hours have {c.variable} outside the baseline's range"
        f" [{c.baseline_min:.4g}, {c.baseline_max:.4g}]: the model extrapolates there"
        for c in conditions
        if c.pilot_hours_outside > 0
    ]
    fsu = _fractional_savings_uncertainty(model, m, (adjusted - measured) / adjusted)
    if fsu is not None and fsu >= SAVINGS_UNCERTAINTY_LIMIT:
        warnings.append(
            f"Guideline 14: the savings uncertainty is {fsu:.0%} of the savings at 68% confidence"
            f" (it should be below {SAVINGS_UNCERTAINTY_LIMIT:.0%})"
        )
    return replace(
        base,
        relative_change=math.expm1(centre),
        relative_interval=(math.expm1(centre - cv * log_se), math.expm1(centre + cv * log_se)),
        std_error=log_se,
        fractional_savings_uncertainty=fsu,
        warnings=warnings,
    )


def _condition_range(variable: str, baseline: np.ndarray, pilot: np.ndarray) -> ConditionRange:
    low, high = float(baseline.min()), float(baseline.max())
    outside = float(np.mean((pilot < low) | (pilot > high)))
    return ConditionRange(variable, low, high, float(pilot.mean()), outside)


def _fractional_savings_uncertainty(model: ModelFit, m: int, savings_fraction: float) -> float | None:
    """Guideline 14 Annex B at 68%: t · 1.26 · CV · sqrt((n/n′)(1 + 2/n)(1/m)) / F, n′ = n(1−ρ)/(1+ρ)."""
    from scipy import stats  # noqa: PLC0415

    rho = min(max(model.residual_ar1, 0.0), 0.99)  # a negative ρ would claim more than n independent hours
    n_effective = model.n * (1 - rho) / (1 + rho)
    if savings_fraction == 0 or n_effective <= model.parameters:
        return None
    t = float(stats.t.ppf(0.84, n_effective - model.parameters))  # two-sided 68%
    spread = math.sqrt((model.n / n_effective) * (1 + 2 / model.n) / m)
    return abs(t * 1.26 * model.cv_rmse * spread / savings_fraction)


def _refuse(result: AdjustedResult, reason: str) -> AdjustedResult:
    return replace(
        result,
        relative_change=None,
        relative_interval=None,
        std_error=None,
        fractional_savings_uncertainty=None,
        refused=reason,
        warnings=[],
    )

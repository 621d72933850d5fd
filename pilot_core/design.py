"""Design before data: what a pilot of the planned length can detect, from the baseline alone.

A pre-registered plan states, before any pilot hour exists, the smallest
change each target's KPI could show (the minimum detectable effect, MDE) and
how long a pilot would have to run to decide. Only the baseline's hours go
in: the pilot cannot move these figures.

Each target is designed by its own method, from the series whose variance its
interval will have, on the log scale, one value per baseline hour:

- ``before_after`` (pilot_core.comparison): the KPI linearised per hour (the
  delta method) over its value;
- ``control_line`` (pilot_core.control_line): each paired hour's linearised
  contribution to log(treated / control), so that what moves both lines
  cancels, as in the difference-in-differences;
- ``adjusted_baseline`` (pilot_core.adjusted_baseline): the model's residuals
  over the mean response, the model fitted on the baseline and projected onto
  the baseline's own conditions (the pilot's are unknown before it runs): its
  CV(RMSE) and the residuals' lag-1 autocorrelation, as Guideline 14 Annex B
  takes them.

Of that series: its lag-1 autocorrelation ρ and effective sample size
n′ = n·(1 − ρ)/(1 + ρ) (Reddy and Claridge; never more than n) give the
baseline's relative standard error se, and the pilot's, varying as the
baseline does, shrinks with its planned length: the true standard error of
the log change is se·√(1 + n_b / n_p).

The interval divides by an estimated (HAC) variance, not the true one, and
the planned pilot's own estimate is the least certain when it is short. Each
period's Bartlett HAC variance at bandwidth fraction b is taken as its
expected value μ(b) = 1 − b + b²/3 times a χ²_ν / ν, with ν the degrees of
freedom at which Student's t quantile equals the fixed-b critical value on
that scale (c·√μ: Kiefer and Vogelsang's exact law, matched at the plan's
level); the two periods' estimates combine by Satterthwaite. The effect is
then detected at power 1 − β when the noncentral t of scipy clears c·√μ̄:

    nct.sf(c·√μ̄, ν, λ) = 1 − β,   MDE = expm1(± λ · se(log Δ)),

the sign in the KPI's better direction. bench/design_statistics.py measures
that an effect of the MDE is detected at about the stated power, at short and
long pilots, for each method. A target "improve by T" is shown met at that
power only if the true change reaches T plus the MDE on the log scale
(``met_needs``).

Revision 1 (kpi_engine 3 and before) took the pilot's variance as known
(MDE = (c·√μ + z_(1 − β))·se(log Δ)) and the treated line alone whatever the
method: bundles signed then are verified with it (``revision``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from pilot_core import adjusted_baseline as adjusted_method
from pilot_core.adjusted_baseline import AdjustedResult
from pilot_core.comparison import BANDWIDTH_FRACTION, MIN_UNITS, Units, critical_value, linearised, unit_matrix
from pilot_core.control_line import paired_contributions
from pilot_core.demonstration import Method
from pilot_core.kpi import KPIS, Better, Components, compute

DEFAULT_POWER = 0.80
REVISION = 2  # 1: kpi_engine 3 and before (see the module's text)
METHOD = (
    "from the baseline's hours alone, by each target's method (the KPI linearised per hour; the treated − control"
    " log gap per paired hour; the adjusted baseline's residuals): its lag-1 autocorrelation ρ and effective n"
    " n(1 − ρ)/(1 + ρ), scaled to the planned pilot length; the MDE is where the noncentral t (the HAC variance"
    " as a scaled χ² whose degrees of freedom match the fixed-b critical value, the periods combined by"
    " Satterthwaite) clears the critical value at the power"
)
METHOD_REVISION_1 = (
    "from the baseline's hours alone: the KPI linearised per hour, its lag-1 autocorrelation ρ and effective n"
    " n(1 − ρ)/(1 + ρ), scaled to the planned pilot length; MDE = (fixed-b critical value × √(1 − b + b²/3)"
    " + z of the power) × se of log(pilot / baseline)"
)
_ENDLESS_UNITS = 1e9  # a pilot this long has no variance left: what is still needed is the baseline's


@dataclass(frozen=True, slots=True)
class TargetDesign:
    """One target's design: what the planned pilot can detect, and how long a pilot would have to run."""

    kpi: str
    change_pct: float  # the target's size, as the plan states it
    level: float
    power: float
    baseline_value: float | None
    baseline_n: int  # hourly units in the baseline (paired hours for a control line)
    baseline_autocorrelation: float | None  # lag-1, of the method's series
    baseline_effective_n: float | None  # n(1 − ρ)/(1 + ρ), at most n
    baseline_relative_se: float | None  # of the baseline's part of the method's log estimate
    planned_pilot_units: int  # hourly units the planned pilot windows should give, at the baseline's coverage
    mde: float | None = None  # signed relative change detectable (against no change) at ``power``
    met_needs: float | None = None  # signed relative true change with which the target is shown met at ``power``
    pilot_hours_for_target: float | None = None  # window hours for an MDE as large as the target (None: unreachable)
    expected_change_pct: float | None = None  # the effect the plan expects, if it states one
    pilot_hours_for_expected: float | None = None  # window hours to show the target met at ``power`` if it holds
    note: str = ""
    method: str | None = None  # the target's method the design was computed under; None: revision 1 (no method)
    degrees_of_freedom: float | None = None  # of the interval's variance estimate at the planned pilot length


@dataclass(frozen=True, slots=True)
class BaselineSpread:
    """How much a baseline's log estimate varies, with its autocorrelation."""

    value: float | None
    n: int
    autocorrelation: float | None
    effective_n: float | None
    relative_se: float | None  # None: too few units, or no (or a zero) value
    bandwidth_fraction: float = BANDWIDTH_FRACTION  # the method's interval's
    note: str = ""  # why there is no relative_se, where the method says


def _kpi_value(kpi: str, matrix: np.ndarray) -> float | None:
    raw = compute(kpi, Components.from_vector(matrix.sum(axis=0).tolist()))
    return None if raw is None else float(raw)


def _spread(value: float | None, series: np.ndarray, scale: float = 1.0) -> BaselineSpread:
    """The spread of a per-hour series whose mean's variance is the estimate's, on the log scale once divided by
    ``scale``."""
    n = len(series)
    if not np.any(series):
        return BaselineSpread(value, n, 0.0, float(n), 0.0)
    # Imported here: statsmodels takes seconds to import, and most commands never design.
    from statsmodels.tsa.stattools import acf  # noqa: PLC0415

    rho = float(acf(series, nlags=1, fft=False)[1])
    effective_n = min(float(n), n * (1 - rho) / (1 + rho))  # negative ρ claims no more units than there are
    return BaselineSpread(value, n, rho, effective_n, float(series.std()) / math.sqrt(effective_n) / scale)


def baseline_spread(kpi: str, units: Units) -> BaselineSpread:
    """The baseline KPI's standard error over its value, from the effective n of its lag-1 autocorrelation."""
    matrix = unit_matrix(units)
    n = len(matrix)
    value = _kpi_value(kpi, matrix)
    if not value or n < MIN_UNITS:
        return BaselineSpread(value, n, None, None, None)
    z = linearised(kpi, matrix)
    if z is None:
        return BaselineSpread(value, n, None, None, None)
    return _spread(value, z, abs(value))


def control_spread(kpi: str, treated: np.ndarray, control: np.ndarray) -> BaselineSpread:
    """The baseline's log(treated / control) over its paired hours: what the difference-in-differences varies by."""
    n = len(treated)
    value = _kpi_value(kpi, treated)
    if n < MIN_UNITS:
        return BaselineSpread(
            value, n, None, None, None, note=f"too few paired baseline hours (need {MIN_UNITS}, have {n})"
        )
    contributions = paired_contributions(kpi, treated, control)
    if contributions is None:
        return BaselineSpread(value, n, None, None, None, note=f"no positive {kpi} on the treated or the control line")
    return _spread(value, contributions)


def adjusted_spread(value: float | None, model: AdjustedResult) -> BaselineSpread:
    """The adjusted baseline's residuals, fitted on the baseline and projected onto its own conditions: CV(RMSE)
    over √n′, n′ from their lag-1 autocorrelation (Guideline 14 Annex B's ingredients)."""
    fit = model.model
    if fit is None or model.refused:
        n = 0 if fit is None else fit.n
        return BaselineSpread(value, n, None, None, None, adjusted_method.BANDWIDTH_FRACTION, model.refused)
    rho = fit.residual_ar1
    effective_n = min(float(fit.n), fit.n * (1 - rho) / (1 + rho))
    return BaselineSpread(
        value, fit.n, rho, effective_n, fit.cv_rmse / math.sqrt(effective_n), adjusted_method.BANDWIDTH_FRACTION
    )


def _sign(kpi: str) -> int:
    return -1 if KPIS[kpi].better is Better.LOWER else 1


def _period_fraction(n: float, fraction: float) -> float:
    """A period's bandwidth fraction b, as the intervals take it: at least two lags' worth."""
    n = max(n, 1.0)
    return max(2, math.ceil(fraction * n)) / n


def _fraction(baseline_n: int, pilot_n: float, fraction: float = BANDWIDTH_FRACTION) -> float:
    """The interval's bandwidth fraction b: the larger of the two periods', as it takes."""
    return max(_period_fraction(baseline_n, fraction), _period_fraction(pilot_n, fraction))


def _shrinkage(b: float) -> float:
    """The Bartlett HAC estimator's expected value over the long-run variance at bandwidth fraction b (fixed-b)."""
    return 1 - b + b * b / 3


@functools.lru_cache(maxsize=4096)
def equivalent_degrees_of_freedom(level: float, b: float) -> float:
    """ν at which Student's t quantile equals the fixed-b critical value on the HAC's expected scale, c·√μ(b)."""
    from scipy import optimize, stats  # noqa: PLC0415

    q = (1 + level) / 2
    scaled = critical_value(level, b) * math.sqrt(_shrinkage(b))
    if scaled <= float(stats.norm.ppf(q)) * (1 + 1e-12):
        return math.inf
    return float(optimize.brentq(lambda nu: float(stats.t.ppf(q, nu)) - scaled, 0.05, 1e8, xtol=1e-10))


def _noncentrality(threshold: float, nu: float, power: float) -> float:
    """λ with which a noncentral t of ν degrees of freedom exceeds ``threshold`` with probability ``power``."""
    from scipy import special  # noqa: PLC0415

    if math.isinf(nu):
        return threshold + NormalDist().inv_cdf(power)
    return float(special.nctdtrinc(nu, 1 - power, threshold))  # scipy's inverse of the noncentral t in λ


@dataclass(frozen=True, slots=True)
class _Test:
    """The interval's test at given lengths: its threshold on the true-se scale and its degrees of freedom."""

    threshold: float  # c · √μ̄: the critical value times the estimated se's expected scale
    degrees_of_freedom: float
    se_scale: float  # √(1 + n_b / n_p): the true se of the log change over the baseline's


def _test(level: float, baseline_n: int, pilot_n: float, fraction: float) -> _Test:
    b_b, b_p = _period_fraction(baseline_n, fraction), _period_fraction(pilot_n, fraction)
    variances = (1.0, baseline_n / pilot_n)  # each period's, over the baseline's
    expected = [_shrinkage(b) * v for b, v in zip((b_b, b_p), variances, strict=True)]
    nus = [equivalent_degrees_of_freedom(level, b) for b in (b_b, b_p)]
    spread = sum(e * e / nu for e, nu in zip(expected, nus, strict=True) if not math.isinf(nu))
    nu = math.inf if spread == 0 else sum(expected) ** 2 / spread  # Satterthwaite
    total = sum(variances)
    return _Test(critical_value(level, max(b_b, b_p)) * math.sqrt(sum(expected) / total), nu, math.sqrt(total))


def log_distance_needed(
    level: float,
    power: float,
    baseline_n: int,
    pilot_n: float,
    relative_se: float,
    fraction: float = BANDWIDTH_FRACTION,
    revision: int = REVISION,
) -> float:
    """How far on the log scale a true change must lie beyond a bound for the interval to clear it at ``power``."""
    if revision == 1:
        return (
            _factor_revision_1(level, power, _fraction(baseline_n, pilot_n))
            * relative_se
            * math.sqrt(1 + baseline_n / pilot_n)
        )
    test = _test(level, baseline_n, pilot_n, fraction)
    return _noncentrality(test.threshold, test.degrees_of_freedom, power) * relative_se * test.se_scale


def pilot_units_needed(
    level: float,
    power: float,
    baseline_n: int,
    relative_se: float,
    distance: float,
    fraction: float = BANDWIDTH_FRACTION,
    revision: int = REVISION,
) -> float | None:
    """Hourly pilot units for ``log_distance_needed`` to shrink to ``distance``; None if no pilot length would do
    (the baseline's own uncertainty is too large: extend the baseline instead)."""
    if revision == 1:
        return _pilot_units_needed_revision_1(level, power, baseline_n, relative_se, distance)
    if distance <= 0 or relative_se <= 0:
        return None if distance <= 0 else float(MIN_UNITS)

    def excess(pilot_n: float) -> float:
        return log_distance_needed(level, power, baseline_n, pilot_n, relative_se, fraction) - distance

    if excess(MIN_UNITS) <= 0:
        return float(MIN_UNITS)
    if excess(_ENDLESS_UNITS) > 0:
        return None
    from scipy import optimize  # noqa: PLC0415

    return float(optimize.brentq(excess, MIN_UNITS, _ENDLESS_UNITS, xtol=1e-6, rtol=1e-10))


def _factor_revision_1(level: float, power: float, b: float) -> float:
    """Revision 1: c · √(1 − b + b²/3) + z, the variance taken as known."""
    return critical_value(level, b) * math.sqrt(_shrinkage(b)) + NormalDist().inv_cdf(power)


def _pilot_units_needed_revision_1(
    level: float, power: float, baseline_n: int, relative_se: float, distance: float
) -> float | None:
    if distance <= 0 or relative_se <= 0:
        return None if distance <= 0 else float(MIN_UNITS)
    pilot_n = float(baseline_n)
    # The factor depends on the pilot's length through the bandwidth fraction only, weakly: iterate.
    for _ in range(50):
        k = distance / (_factor_revision_1(level, power, _fraction(baseline_n, pilot_n)) * relative_se)
        if k <= 1:
            return None
        following = max(float(MIN_UNITS), baseline_n / (k * k - 1))
        if abs(following - pilot_n) < 1e-9 * following:
            break
        pilot_n = following
    return pilot_n


def design_target(
    kpi: str,
    change_pct: float,
    baseline: Units,
    *,
    level: float,
    power: float = DEFAULT_POWER,
    planned_pilot_hours: float,
    coverage: float,
    expected_change_pct: float | None = None,
    method: Method = Method.BEFORE_AFTER,
    control: np.ndarray | None = None,
    adjusted: AdjustedResult | None = None,
    revision: int = REVISION,
) -> TargetDesign:
    """The design of one target from the baseline's hourly ``baseline`` units (the treated line's).

    ``planned_pilot_hours``: the pilot windows' length in hours; ``coverage``: the method's baseline units per
    baseline window hour (hours with no data at all give no unit), so that the planned pilot is expected to give
    ``planned_pilot_hours · coverage`` units. ``control``: for a control-line target, the control line's baseline
    units paired row by row with ``baseline``; ``adjusted``: for an adjusted-baseline target, the plan's model
    fitted on the baseline and projected onto the baseline's own hours. Revision 1 ignores the method.
    """
    if revision == 1 or method is Method.BEFORE_AFTER:
        spread = baseline_spread(kpi, baseline)
    elif method is Method.CONTROL_LINE:
        if control is None:
            raise ValueError("a control-line target's design needs the control line's paired baseline hours")
        spread = control_spread(kpi, unit_matrix(baseline), unit_matrix(control))
    else:
        if adjusted is None:
            raise ValueError("an adjusted-baseline target's design needs the model fitted on the baseline")
        spread = adjusted_spread(_kpi_value(kpi, unit_matrix(baseline)), adjusted)
    planned_units = round(planned_pilot_hours * coverage)
    bare = TargetDesign(
        kpi, change_pct, level, power, spread.value, spread.n, spread.autocorrelation, spread.effective_n,
        spread.relative_se, planned_units, expected_change_pct=expected_change_pct,
        method=None if revision == 1 else method.value,
    )  # fmt: skip
    relative_se = spread.relative_se
    if relative_se is None:
        if spread.note:
            reason = spread.note
        elif spread.value is None:
            reason = "no baseline value"
        elif not spread.value:
            reason = "a baseline value of zero"
        else:
            reason = f"too few baseline hours (need {MIN_UNITS}, have {spread.n})"
        return replace(bare, note=f"{reason}: nothing can be designed from this baseline yet")
    if planned_units < MIN_UNITS:
        return replace(
            bare, note=f"the planned pilot gives {planned_units} hourly units; the comparison needs {MIN_UNITS}"
        )
    sign = _sign(kpi)
    fraction = spread.bandwidth_fraction

    def distance_at(pilot_n: float) -> float:
        return log_distance_needed(level, power, spread.n, pilot_n, relative_se, fraction, revision)

    def units_for(distance: float) -> float | None:
        return pilot_units_needed(level, power, spread.n, relative_se, distance, fraction, revision)

    distance = distance_at(planned_units)
    target_log = math.log1p(sign * change_pct / 100)
    hours_for_expected = None
    if expected_change_pct is not None:
        beyond = abs(math.log1p(sign * expected_change_pct / 100)) - abs(target_log)  # past the target, log scale
        hours_for_expected = _hours(units_for(beyond), coverage)
    return replace(
        bare,
        mde=math.expm1(sign * distance),
        met_needs=math.expm1(target_log + sign * distance),
        pilot_hours_for_target=_hours(units_for(abs(target_log)), coverage),
        pilot_hours_for_expected=hours_for_expected,
        degrees_of_freedom=None if revision == 1 else _finite(_test(level, spread.n, planned_units, fraction)),
    )


def _finite(test: _Test) -> float | None:
    return None if math.isinf(test.degrees_of_freedom) else test.degrees_of_freedom


def _hours(units: float | None, coverage: float) -> float | None:
    return None if units is None or coverage <= 0 else units / coverage


def detection_power(
    level: float,
    baseline_n: int,
    pilot_n: float,
    relative_se: float,
    true_change: float,
    fraction: float = BANDWIDTH_FRACTION,
) -> float:
    """The power the design claims for a true relative change against no change: the MDE's inverse."""
    from scipy import stats  # noqa: PLC0415

    test = _test(level, baseline_n, pilot_n, fraction)
    shift = abs(math.log1p(true_change)) / (relative_se * test.se_scale)
    if math.isinf(test.degrees_of_freedom):
        return NormalDist().cdf(shift - test.threshold)
    return float(stats.nct.sf(test.threshold, test.degrees_of_freedom, shift))

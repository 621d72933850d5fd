"""Before/after comparison of a KPI, honest about autocorrelation.

The data of a period is a time-ordered series of units (hours, or cycles),
each a ``Components``. A KPI is a ratio of sums, so its sampling error is
found by linearising it (the delta method) into one series per period and
estimating that series' long-run variance with a Newey-West (Bartlett) HAC
estimator from statsmodels. The bandwidth is a fixed fraction b of the
series, and the critical values are the fixed-b ones of Kiefer and Vogelsang
(2005), which keep coverage near nominal for strongly autocorrelated series
where the usual normal critical values do not (see bench/statistics.py).

Decision rule (per ../shared/reference/kpis-and-verification.md): with the
two-sided interval at the plan's confidence level for Δ = pilot/baseline - 1,
a target "decrease by at least T" is met if the upper bound is at or below
-T, not met if the lower bound is above -T, and inconclusive otherwise.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from pilot_core.kpi import COMPONENT_NAMES, KPIS, Better, Components, compute, no_value_reason

METHOD = "delta method + Newey-West HAC, fixed-b bandwidth, Kiefer-Vogelsang critical values"
BANDWIDTH_FRACTION = 0.2
MIN_UNITS = 10
POWER = 0.80

# Kiefer & Vogelsang (2005), Bartlett kernel: the fixed-b quantile of the
# t statistic as a cubic in b, for the upper tail probabilities used here.
_FIXED_B_QUANTILES: dict[float, tuple[float, float, float, float]] = {
    0.90: (1.2816, 1.3040, 0.5135, -0.3386),
    0.95: (1.6449, 2.1859, 0.3142, -0.3427),
    0.975: (1.9600, 2.9694, 0.4160, -0.5324),
    0.99: (2.3263, 4.1618, 0.5368, -0.9060),
}
LEVELS = tuple(sorted(round(2 * q - 1, 2) for q in _FIXED_B_QUANTILES))  # two-sided: 0.8, 0.9, 0.95, 0.98


def critical_value(level: float, b: float) -> float:
    """Two-sided critical value at ``level`` for a Bartlett HAC with bandwidth fraction ``b``."""
    q = round((1 + level) / 2, 3)
    if q not in _FIXED_B_QUANTILES:
        raise ValueError(f"confidence level must be one of {', '.join(f'{x:g}' for x in LEVELS)}, not {level:g}")
    c0, c1, c2, c3 = _FIXED_B_QUANTILES[q]
    return c0 + c1 * b + c2 * b**2 + c3 * b**3


@dataclass(frozen=True, slots=True)
class PeriodEstimate:
    value: float | None
    components: Components
    n: int  # units in the series
    effective_n: float | None  # n scaled by how much autocorrelation inflates the variance; at most n
    std_error: float | None  # of the KPI value
    bandwidth: int  # Newey-West lags + 1


@dataclass(frozen=True, slots=True)
class KpiComparison:
    kpi: str
    baseline: PeriodEstimate
    pilot: PeriodEstimate
    level: float
    absolute_change: float | None
    relative_change: float | None
    absolute_interval: tuple[float, float] | None = None
    relative_interval: tuple[float, float] | None = None
    minimum_detectable_change: float | None = None  # relative, at 80% power
    method: str = METHOD
    note: str = ""


Units = Sequence[Components] | np.ndarray  # Components, or their vectors as the rows of a matrix


def unit_matrix(units: Units) -> np.ndarray:
    """Units as an (n × components) matrix."""
    if isinstance(units, np.ndarray):
        return units.reshape(-1, len(COMPONENT_NAMES)).astype(float, copy=False)
    return np.array([u.as_vector() for u in units], dtype=float).reshape(-1, len(COMPONENT_NAMES))


def estimate(kpi: str, units: Units, summed: Components | None = None) -> PeriodEstimate:
    """A KPI over a period of units (hours, say), with its HAC standard error.

    ``summed``: the period's roll-up where the caller already has it, so that the value is that roll-up's
    to the last bit (floating-point sums in another order differ in the last digits). It must be the
    units' sum.
    """
    matrix = unit_matrix(units)
    if summed is None:
        summed = Components.from_vector(matrix.sum(axis=0).tolist())
    raw = compute(kpi, summed)
    value = None if raw is None else float(raw)
    n = len(matrix)
    bandwidth = max(2, math.ceil(BANDWIDTH_FRACTION * n))
    if value is None or n < MIN_UNITS:
        return PeriodEstimate(value, summed, n, None, None, bandwidth)
    z = linearised(kpi, matrix)
    if z is None:
        return PeriodEstimate(value, summed, n, None, None, bandwidth)
    if not np.any(z):
        return PeriodEstimate(value, summed, n, float(n), 0.0, bandwidth)
    # Imported here: statsmodels takes seconds to import, and most commands never compare.
    from statsmodels.regression.linear_model import OLS  # noqa: PLC0415

    fit = OLS(z, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": bandwidth - 1, "use_correction": False})
    variance = float(fit.bse[0] ** 2)
    iid_variance = float(z.var() / n)
    # A HAC variance below the i.i.d. one means negative autocorrelation was estimated: at a fixed-b bandwidth
    # mostly the Bartlett estimator's known downward bias, which the fixed-b critical values already allow for
    # (the standard error is used as it is: bench.statistics measures the coverage). It is no reason to claim
    # more independent units than there are, so the effective n stops at n.
    effective_n = min(float(n), n * iid_variance / variance) if variance > 0 else float(n)
    return PeriodEstimate(value, summed, n, effective_n, math.sqrt(max(variance, 0.0)), bandwidth)


def linearised(kpi: str, matrix: np.ndarray) -> np.ndarray | None:
    """The KPI linearised at the units' mean (the delta method), one value per unit: its mean's variance is the
    KPI's. None where the KPI has no gradient there."""
    mean = matrix.mean(axis=0)
    gradient = kpi_gradient(kpi, mean)
    return None if gradient is None else (matrix - mean) @ gradient


def preload() -> None:
    """Import statsmodels now, so that a server's first comparison (and design) does not wait seconds for it."""
    import statsmodels.regression.linear_model  # noqa: PLC0415
    import statsmodels.tsa.stattools  # noqa: F401, PLC0415


def kpi_gradient(kpi: str, at: np.ndarray) -> np.ndarray | None:
    """Central differences of the KPI with respect to each component mean."""
    gradient = np.zeros_like(at)
    for j, x in enumerate(at):
        if x == 0:
            continue  # an unused component (a KPI of ratios of used ones cannot depend on it)
        h = 1e-6 * abs(x)
        up, down = at.copy(), at.copy()
        up[j] += h
        down[j] -= h
        f_up = compute(kpi, Components.from_vector(up))
        f_down = compute(kpi, Components.from_vector(down))
        if f_up is None or f_down is None:
            return None
        gradient[j] = (f_up - f_down) / (2 * h)
    return gradient


def compare(
    kpi: str,
    baseline: Units,
    pilot: Units,
    level: float = 0.90,
    totals: tuple[Components, Components] | None = None,
) -> KpiComparison:
    """Baseline against pilot for one KPI, with intervals at ``level`` (two-sided).

    ``totals``: the two periods' roll-ups, where the caller shows them too (see ``estimate``).
    """
    b = estimate(kpi, baseline, totals[0] if totals else None)
    p = estimate(kpi, pilot, totals[1] if totals else None)
    cv = critical_value(level, max(b.bandwidth / max(b.n, 1), p.bandwidth / max(p.n, 1)))
    if b.value is None or p.value is None:
        reasons = [
            f"no value in the {period}: {no_value_reason(kpi, e.components)}"
            for period, e in (("baseline", b), ("pilot", p))
            if e.value is None
        ]
        return KpiComparison(kpi, b, p, level, None, None, note="; ".join(reasons))
    absolute = p.value - b.value
    relative = p.value / b.value - 1 if b.value else None
    bare = KpiComparison(kpi, b, p, level, absolute, relative)
    if b.std_error is None or p.std_error is None:
        return replace(bare, note=f"too few units for an interval (need {MIN_UNITS} per period; have {b.n} and {p.n})")
    se = math.hypot(b.std_error, p.std_error)
    with_absolute = replace(bare, absolute_interval=(absolute - cv * se, absolute + cv * se))
    if relative is None or not p.value:
        return replace(with_absolute, note="a value of zero in one period: only the absolute change has an interval")
    # Both values are positive: the ratio's interval is found on the log scale.
    log_se = _log_std_error(b, p)
    centre = math.log1p(relative)
    return replace(
        with_absolute,
        relative_interval=(math.expm1(centre - cv * log_se), math.expm1(centre + cv * log_se)),
        minimum_detectable_change=math.expm1((cv + NormalDist().inv_cdf(POWER)) * log_se),
    )


def _log_std_error(b: PeriodEstimate, p: PeriodEstimate) -> float:
    """Standard error of log(pilot / baseline), the periods being independent."""
    assert b.value and p.value and b.std_error is not None and p.std_error is not None
    return math.hypot(b.std_error / b.value, p.std_error / p.value)


class Verdict(enum.StrEnum):
    MET = "met"
    NOT_MET = "not met"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class TargetCheck:
    verdict: Verdict
    threshold: float  # the signed relative change the target asks for, e.g. -0.10
    reason: str
    pilot_length_factor: float | None = None  # run the pilot this many times as long to decide


def check_target(comparison: KpiComparison, change_pct: float) -> TargetCheck:
    """Judge a target: the KPI improves by at least ``change_pct`` percent in its better direction."""
    if change_pct < 0:
        raise ValueError("state a target as the size of the improvement (e.g. 10 for 10%)")
    better = KPIS[comparison.kpi].better
    decided = judge_interval(comparison.kpi, comparison.relative_interval, change_pct, comparison.note)
    threshold = decided.threshold
    if decided.verdict is not Verdict.INCONCLUSIVE or comparison.relative_interval is None:
        return decided
    factor = _pilot_length_factor(comparison, threshold)
    if factor is None:
        reason = "the interval straddles the target; the baseline's own uncertainty is too large to decide"
    else:
        rel = comparison.relative_change or 0.0
        leaning = Verdict.MET if (rel <= threshold if better is Better.LOWER else rel >= threshold) else Verdict.NOT_MET
        reason = (
            f"the interval straddles the target; if the present estimate holds, a pilot about {factor:.1f}× "
            f"as long would show it {leaning.value}"
        )
    return TargetCheck(Verdict.INCONCLUSIVE, threshold, reason, factor)


def judge_interval(kpi: str, interval: tuple[float, float] | None, change_pct: float, note: str = "") -> TargetCheck:
    """The decision rule alone, on any relative interval for ``kpi`` (a comparison's, an adjusted baseline's, a
    difference-in-differences'): met, not met, or inconclusive because it straddles the target."""
    better = KPIS[kpi].better
    threshold = (-1 if better is Better.LOWER else 1) * change_pct / 100
    if interval is None:
        return TargetCheck(Verdict.INCONCLUSIVE, threshold, note or "no interval")
    low, high = interval
    if high <= threshold if better is Better.LOWER else low >= threshold:
        return TargetCheck(Verdict.MET, threshold, "the whole interval is beyond the target")
    if low > threshold if better is Better.LOWER else high < threshold:
        return TargetCheck(Verdict.NOT_MET, threshold, "the whole interval falls short of the target")
    return TargetCheck(Verdict.INCONCLUSIVE, threshold, "the interval straddles the target")


def _pilot_length_factor(comparison: KpiComparison, threshold: float) -> float | None:
    """How many times longer the pilot must run for the interval to clear the target, if the effect holds.

    The pilot's variance shrinks with its length; the baseline's does not. None
    if even an endless pilot would not do (extend the baseline instead).
    """
    b, p, rel = comparison.baseline, comparison.pilot, comparison.relative_change
    if rel is None or b.std_error is None or p.std_error is None or not b.value or not p.value:
        return None
    distance = abs(math.log1p(rel) - math.log1p(threshold))
    bandwidth_fraction = max(b.bandwidth / b.n, p.bandwidth / p.n)
    needed = distance / critical_value(comparison.level, bandwidth_fraction)
    baseline_var = (b.std_error / b.value) ** 2
    pilot_var = _log_std_error(b, p) ** 2 - baseline_var
    if needed**2 <= baseline_var or pilot_var == 0:
        return None
    return float(max(1.0, pilot_var / (needed**2 - baseline_var)))

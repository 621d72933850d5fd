"""Difference-in-differences against a control line the pilot does not touch.

Effect = (pilot / baseline of the treated) ÷ (pilot / baseline of the control) − 1: the treated line's
relative change net of what moved the whole plant, on the log scale
log(T_p / C_p) − log(T_b / C_b). Within a period the treated and control KPIs of the same hour are paired:
each hour's linearised contribution (delta method, as ``pilot_core.comparison`` does for one series) to
log(T / C) is one number, and the Newey-West HAC variance of their mean (statsmodels OLS, ``cov_type="HAC"``,
fixed-b bandwidth and Kiefer-Vogelsang critical values, as the engine's comparison uses) respects both the
pairing of the hours and their autocorrelation. The periods are independent of each other.

Parallel trends, the identifying assumption, is checked on the baseline alone: the same estimate with the
baseline's first half as "before" and its second half as "after" (a placebo pilot); its interval should cover
0, and when it does not the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pilot_core.comparison import BANDWIDTH_FRACTION, MIN_UNITS, critical_value, kpi_gradient
from pilot_core.kpi import Components, compute

METHOD = (
    "difference-in-differences on the log scale, treated and control paired by hour: delta method +"
    " Newey-West HAC (fixed-b bandwidth, Kiefer-Vogelsang critical values); pre-trend by placebo split of the baseline"
)


@dataclass(frozen=True, slots=True)
class LogGap:
    """log(treated KPI / control KPI) over one period of paired hours, with its HAC standard error."""

    value: float | None
    std_error: float | None
    n: int
    bandwidth: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class DidEstimate:
    kpi: str
    level: float
    treated_change: float | None  # T_p / T_b − 1
    control_change: float | None  # C_p / C_b − 1
    relative_effect: float | None  # (T_p / T_b) / (C_p / C_b) − 1
    relative_interval: tuple[float, float] | None
    std_error: float | None  # of the log effect
    n_baseline: int  # paired hours
    n_pilot: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class PreTrend:
    """The placebo: the baseline's second half against its first, treated net of control. 0 when parallel."""

    relative_effect: float | None
    relative_interval: tuple[float, float] | None
    parallel: bool | None  # None: too little data to check
    note: str = ""


@dataclass(frozen=True, slots=True)
class ControlLineResult:
    estimate: DidEstimate
    pre_trend: PreTrend
    method: str = METHOD


def _kpi(kpi: str, matrix: np.ndarray) -> float | None:
    value = compute(kpi, Components.from_vector(matrix.sum(axis=0).tolist()))
    return None if value is None else float(value)


def log_gap(kpi: str, treated: np.ndarray, control: np.ndarray) -> LogGap:
    """``treated`` and ``control``: (hours × components) matrices whose row i is the same hour for both."""
    if treated.shape != control.shape:
        raise ValueError("treated and control hours must be paired: the same hours, row by row")
    n = len(treated)
    bandwidth = max(2, math.ceil(BANDWIDTH_FRACTION * n))
    t, c = _kpi(kpi, treated), _kpi(kpi, control)
    if t is None or c is None or t <= 0 or c <= 0:
        which = "treated" if t is None or t <= 0 else "control"
        return LogGap(None, None, n, bandwidth, f"no positive {kpi} on the {which} devices")
    value = math.log(t) - math.log(c)
    if n < MIN_UNITS:
        return LogGap(value, None, n, bandwidth, f"too few paired hours for an interval (need {MIN_UNITS}, have {n})")
    contributions = paired_contributions(kpi, treated, control)
    if contributions is None:
        return LogGap(value, None, n, bandwidth, f"{kpi} cannot be linearised at these hours' means")
    if not np.any(contributions):
        return LogGap(value, 0.0, n, bandwidth)
    from statsmodels.regression.linear_model import OLS  # noqa: PLC0415  (slow import, only when compared)

    fit = OLS(contributions, np.ones(n)).fit(
        cov_type="HAC", cov_kwds={"maxlags": bandwidth - 1, "use_correction": False}
    )
    return LogGap(value, float(fit.bse[0]), n, bandwidth)


def paired_contributions(kpi: str, treated: np.ndarray, control: np.ndarray) -> np.ndarray | None:
    """Each paired hour's linearised contribution to log(treated KPI / control KPI) (the delta method): the HAC
    variance of their mean is the log gap's. None where a KPI has no positive value or no gradient at the means."""
    t, c = _kpi(kpi, treated), _kpi(kpi, control)
    if t is None or c is None or t <= 0 or c <= 0:
        return None
    contributions = np.zeros(len(treated))
    for sign, matrix, level in ((1.0, treated, t), (-1.0, control, c)):
        mean = matrix.mean(axis=0)
        gradient = kpi_gradient(kpi, mean)
        if gradient is None:
            return None
        contributions += sign * ((matrix - mean) @ gradient) / level
    return contributions


def did(
    kpi: str,
    treated: tuple[np.ndarray, np.ndarray],
    control: tuple[np.ndarray, np.ndarray],
    level: float,
) -> DidEstimate:
    """(baseline, pilot) matrices of paired hours for the treated devices and for the control devices."""
    before, after = log_gap(kpi, treated[0], control[0]), log_gap(kpi, treated[1], control[1])
    changes = []
    for matrices in (treated, control):
        b, p = _kpi(kpi, matrices[0]), _kpi(kpi, matrices[1])
        changes.append(p / b - 1 if b and p is not None else None)
    bare = DidEstimate(kpi, level, changes[0], changes[1], None, None, None, before.n, after.n)
    notes = "; ".join(f"{p}: {g.note}" for p, g in (("baseline", before), ("pilot", after)) if g.note)
    if before.value is None or after.value is None:
        return replace(bare, note=notes)
    effect = after.value - before.value
    if before.std_error is None or after.std_error is None:
        return replace(bare, relative_effect=math.expm1(effect), note=notes)
    se = math.hypot(before.std_error, after.std_error)
    cv = critical_value(level, max(before.bandwidth / before.n, after.bandwidth / after.n))
    interval = (math.expm1(effect - cv * se), math.expm1(effect + cv * se))
    return replace(bare, relative_effect=math.expm1(effect), relative_interval=interval, std_error=se)


def pre_trend(kpi: str, treated: np.ndarray, control: np.ndarray, level: float) -> PreTrend:
    """The placebo split of the baseline's paired hours (in time order)."""
    half = len(treated) // 2
    placebo = did(kpi, (treated[:half], treated[half:]), (control[:half], control[half:]), level)
    if placebo.relative_interval is None:
        return PreTrend(placebo.relative_effect, None, None, placebo.note or "too little baseline to check")
    low, high = placebo.relative_interval
    parallel = low <= 0 <= high
    note = (
        ""
        if parallel
        else (
            f"treated and control were not parallel before the pilot: the placebo effect {placebo.relative_effect:+.1%}"
            f" has an interval [{low:+.1%}, {high:+.1%}] that excludes 0"
        )
    )
    return PreTrend(placebo.relative_effect, placebo.relative_interval, parallel, note)


def control_line(
    kpi: str,
    treated: tuple[np.ndarray, np.ndarray],
    control: tuple[np.ndarray, np.ndarray],
    level: float,
) -> ControlLineResult:
    return ControlLineResult(did(kpi, treated, control, level), pre_trend(kpi, treated[0], control[0], level))

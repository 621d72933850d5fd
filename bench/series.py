"""Synthetic hourly series for the statistics benchmarks, and for the tests that check the same maths."""

from __future__ import annotations

import math

import numpy as np

from pilot_core.kpi import COMPONENT_NAMES

_CYCLE_TIME = COMPONENT_NAMES.index("output_cycle_time_s")
_CYCLES = COMPONENT_NAMES.index("output_cycles")


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float, burn_in: int = 200) -> np.ndarray:
    """Zero-mean stationary AR(1) with marginal standard deviation ``sd``; the first ``burn_in`` draws dropped."""
    noise = rng.normal(0.0, sd * math.sqrt(1 - phi**2), n + burn_in)
    x = np.empty_like(noise)
    x[0] = rng.normal(0.0, sd)
    for i in range(1, len(x)):
        x[i] = phi * x[i - 1] + noise[i]
    return x[burn_in:]


def ar1_around(rng: np.random.Generator, n: int, phi: float, mean: float, cv: float) -> np.ndarray:
    """Stationary AR(1) with the given mean and coefficient of variation."""
    return mean + ar1(rng, n, phi, mean * cv)


def hourly_units(mean_cycle_times: np.ndarray, cycles_per_hour: float = 60.0) -> np.ndarray:
    """Hourly units of the line's output: ``cycles_per_hour`` cycles of the given mean time each hour."""
    units = np.zeros((len(mean_cycle_times), len(COMPONENT_NAMES)))
    units[:, _CYCLE_TIME] = mean_cycle_times * cycles_per_hour
    units[:, _CYCLES] = cycles_per_hour
    return units

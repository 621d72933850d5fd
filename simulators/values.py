"""Random metric values within a profile's ranges, for load generators and the demo agent."""

from __future__ import annotations

import random
from typing import Any

from pilot_core.profiles import DeviceProfile, MetricType


def random_metrics(profile: DeviceProfile, rng: random.Random) -> dict[str, Any]:
    """A value for every metric of ``profile``, inside its declared range (0–1000 where none is declared)."""
    values: dict[str, Any] = {}
    for metric in profile.metrics:
        if metric.type is MetricType.BOOL:
            values[metric.name] = rng.random() < 0.05
            continue
        low = metric.min if metric.min is not None else 0.0
        high = metric.max if metric.max is not None else low + 1000.0
        values[metric.name] = (
            rng.randint(int(low), int(high)) if metric.type is MetricType.INT else round(rng.uniform(low, high), 3)
        )
    return values

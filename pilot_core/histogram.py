"""A mergeable histogram with relative accuracy, for cycle-time percentiles.

Percentiles do not add up across hours, but histograms do. Bins grow
geometrically (as in DDSketch), so any quantile is known to within
``relative_accuracy`` of its value, however many hours are merged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

RELATIVE_ACCURACY = 0.005


def _gamma(relative_accuracy: float) -> float:
    return (1 + relative_accuracy) / (1 - relative_accuracy)


@dataclass
class LogHistogram:
    relative_accuracy: float = RELATIVE_ACCURACY
    counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.relative_accuracy < 1:
            raise ValueError("relative_accuracy must be between 0 and 1")
        self._log_gamma = math.log(_gamma(self.relative_accuracy))

    @classmethod
    def of(cls, values: Iterable[float], relative_accuracy: float = RELATIVE_ACCURACY) -> LogHistogram:
        histogram = cls(relative_accuracy)
        for value in values:
            histogram.add(value)
        return histogram

    @classmethod
    def from_counts(cls, counts: Mapping[int | str, int], relative_accuracy: float = RELATIVE_ACCURACY) -> LogHistogram:
        """From stored counts (JSON object keys arrive as strings)."""
        return cls(relative_accuracy, {int(k): int(v) for k, v in counts.items()})

    def add(self, value: float, count: int = 1) -> None:
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"only positive finite values can be binned, not {value!r}")
        index = math.ceil(math.log(value) / self._log_gamma)
        self.counts[index] = self.counts.get(index, 0) + count

    def merge(self, other: LogHistogram) -> None:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("histograms of different accuracy cannot be merged")
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count

    def bins(self) -> list[tuple[float, float, int]]:
        """Each non-empty bin as (lower edge, upper edge, count), in order: bin i holds (γ^(i-1), γ^i]."""
        gamma = math.exp(self._log_gamma)
        return [(gamma ** (i - 1), gamma**i, self.counts[i]) for i in sorted(self.counts)]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """The value below which a fraction ``q`` of the observations fall (None if empty)."""
        if not 0 <= q <= 1:
            raise ValueError("q must be between 0 and 1")
        n = self.total
        if n == 0:
            return None
        rank = q * (n - 1)
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen > rank:
                gamma = math.exp(self._log_gamma)
                # The bin (γ^(i-1), γ^i] is represented by the point of equal relative error.
                return 2 * gamma**index / (gamma + 1)
        raise AssertionError("unreachable")

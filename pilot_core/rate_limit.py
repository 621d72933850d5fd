"""Per-device quotas: token buckets counted in records.

A bucket holds up to ``burst`` records and refills at ``records_per_s``. A
message costs as many records as it carries (a batch of 500 costs 500) and
passes only if its bucket holds that many; a message that does not pass costs
nothing. Pure: the caller passes the time in, from a monotonic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

Key = TypeVar("Key")


@dataclass(frozen=True, slots=True)
class RateLimit:
    records_per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.records_per_s) and self.records_per_s > 0):
            raise ValueError(f"records_per_s must be a finite number above 0, not {self.records_per_s}")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"burst must be a finite number of at least 1, not {self.burst}")


@dataclass(frozen=True, slots=True)
class Throttled:
    """Why a message did not pass: what its bucket held, and how long until it would pass."""

    available: float
    wait_s: float  # infinite when the message is larger than the burst itself


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


class TokenBuckets(Generic[Key]):
    """One bucket per key, full when first seen.

    Keys are kept for ever, so callers key by something bounded (the devices
    of the registry), never by what a message claims.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._buckets: dict[Key, _Bucket] = {}

    def take(self, key: Key, cost: int, now_s: float) -> Throttled | None:
        """Take ``cost`` records from ``key``'s bucket; None if they were there, else what stopped them."""
        limit = self.limit
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit.burst, now_s)
        elif now_s > bucket.updated_s:  # a clock that steps back refills nothing
            bucket.tokens = min(limit.burst, bucket.tokens + (now_s - bucket.updated_s) * limit.records_per_s)
            bucket.updated_s = now_s
        if cost <= bucket.tokens:
            bucket.tokens -= cost
            return None
        wait_s = (cost - bucket.tokens) / limit.records_per_s if cost <= limit.burst else math.inf
        return Throttled(bucket.tokens, wait_s)

    def reset(self) -> None:
        """Fill every bucket again."""
        self._buckets.clear()

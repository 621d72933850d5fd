"""A device's day of hours accounted under a plan's rules and calendar, kept so that it is accounted once.

Accounting every stored hour under the plan (``account_vector``) is most of a cold comparison at plant scale;
its answer depends only on the hour, the plan's rules for the device (``DeviceRules.key``) and the calendar.
An ``AccountedDay`` holds that answer for the stored hours of one UTC day of one device, in columns, with what
the comparison needs of each hour besides (coverage counts, seq ranges, production of output stations) and
the day's cycle-time histogram merged. Each hour's own histogram and cycle-time values, needed only for a day
a window or an exclusion cuts, are in a ``DayDetail`` kept apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
import numpy as np

from pilot_core.calendar import Calendar
from pilot_core.device_hours import HOUR_MS, DeviceHour, DeviceRules, account_vector
from pilot_core.kpi import COMPONENT_NAMES
from pilot_core.time_accounting import BucketCalendar, ProductionTotals

DAY_MS = 24 * HOUR_MS
# Bump when what an AccountedDay holds, or how an hour is accounted, changes: stored days then count as missing.
ACCOUNTING_FORMAT = "1"
_FINGERPRINT_BITS_HEX = 12  # 48 bits of an hour's fingerprint: a day's 24 sum to less than 2**53


class AccountedDay(msgspec.Struct, array_like=True, gc=False):
    """One device's stored hours of one day, accounted: every list has one entry per hour, in time order."""

    starts: list[int]
    vectors: bytes  # float64, hours × COMPONENT_NAMES, as account_vector gave them
    missing: list[tuple[int, str]]  # (hour in the day, a product without an ideal cycle time): few or none
    scheduled: list[bool]  # the calendar has planned busy time in the hour
    machine: list[bool]
    telemetry_points: list[int]
    seq: list[tuple[int, str, int, int, int]]  # (hour in the day, channel, received, first, last)
    exact: list[bool]  # the hour kept every cycle time's value
    histogram_bins: list[int]  # the day's cycle-time histogram, merged: bin indices in order
    histogram_counts: list[int]
    production: list[dict[str, ProductionTotals]] | None  # per hour, of output stations only (else None)

    def matrix(self) -> np.ndarray:
        return np.frombuffer(self.vectors, dtype=np.float64).reshape(len(self.starts), len(COMPONENT_NAMES))


class DayDetail(msgspec.Struct, array_like=True, gc=False):
    """Each hour's own cycle-time histogram and values: for a day of which only some hours are chosen."""

    histograms: list[tuple[list[int], list[int]]]  # per hour: bin indices, counts
    values: list[list[float]]  # per hour: every cycle time's value where the hour kept them, else empty


_DAY = msgspec.msgpack.Decoder(AccountedDay)
_DETAIL = msgspec.msgpack.Decoder(DayDetail)
_ENCODER = msgspec.msgpack.Encoder()


def encode(part: AccountedDay | DayDetail) -> bytes:
    return _ENCODER.encode(part)


def decode_day(data: bytes) -> AccountedDay:
    return _DAY.decode(data)


def decode_detail(data: bytes) -> DayDetail:
    return _DETAIL.decode(data)


def accounting_key(rules: DeviceRules, calendar: Calendar) -> str:
    """Names everything an hour's accounting depends on besides the hour: equal keys account alike."""
    text = repr((ACCOUNTING_FORMAT, rules.key(), calendar.model_dump_json()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint_bits(fingerprint: str) -> int:
    """The part of a stored hour's fingerprint that a day's check sums (the database sums the same column)."""
    return int(fingerprint[:_FINGERPRINT_BITS_HEX], 16)


def day_check(fingerprints: Sequence[str]) -> tuple[int, int]:
    """A day's stored hours as their count and the sum of their fingerprint bits: any rewritten hour moves it."""
    return len(fingerprints), sum(fingerprint_bits(f) for f in fingerprints)


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def account_day(
    hours: Sequence[DeviceHour], rules: DeviceRules, calendars: Sequence[BucketCalendar]
) -> tuple[AccountedDay, DayDetail]:
    """One device's hours of one day (in time order), each with its hour's calendar, accounted as
    ``account_vector`` accounts them."""
    vectors = np.zeros((len(hours), len(COMPONENT_NAMES)))
    missing: list[tuple[int, str]] = []
    seq: list[tuple[int, str, int, int, int]] = []
    merged: dict[int, int] = {}
    for index, (hour, calendar) in enumerate(zip(hours, calendars, strict=True)):
        vector, lacking = account_vector(hour, rules, calendar)
        vectors[index] = vector
        missing.extend((index, product) for product in sorted(lacking))
        seq.extend((index, channel, s.received, s.first, s.last) for channel, s in hour.seq.items())
        for bin_index, count in hour.cycle_times.counts.items():
            merged[bin_index] = merged.get(bin_index, 0) + count
    bins = sorted(merged)
    day = AccountedDay(
        starts=[h.start_ms for h in hours],
        vectors=vectors.tobytes(),
        missing=missing,
        scheduled=[c.busy_ms > 0 for c in calendars],
        machine=[h.machine for h in hours],
        telemetry_points=[h.telemetry_points for h in hours],
        seq=seq,
        exact=[h.has_exact_cycle_times for h in hours],
        histogram_bins=bins,
        histogram_counts=[merged[b] for b in bins],
        production=[dict(h.production) for h in hours] if rules.is_output else None,
    )
    detail = DayDetail(
        histograms=[(list(h.cycle_times.counts), list(h.cycle_times.counts.values())) for h in hours],
        values=[list(h.cycle_time_values) if h.has_exact_cycle_times else [] for h in hours],
    )
    return day, detail

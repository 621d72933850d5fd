"""A device's day of hours accounted under a plan's rules and calendar, kept so that it is accounted once.

Accounting every stored hour under the plan (``account_vector``) is most of a cold comparison at plant scale;
its answer depends only on the hour, the plan's rules for the device (``DeviceRules.key``) and the calendar.
An ``AccountedDay`` holds that answer for the stored hours of one UTC day of one device, in columns, with what
the comparison needs of each hour besides (coverage counts, seq ranges, production of output stations) and
the day's cycle-time histogram merged. Each hour's own histogram and cycle-time values, needed only for a day
a window or an exclusion cuts, are in a ``DayDetail`` kept apart.

Every per-hour input of the statistics (the line's hourly units, the adjusted baseline's response and
variables) is a row of ``vectors``, the components ``account_vector`` gives: a new per-hour variable (an
ambient temperature for the adjusted baseline, say) is a component there, or one more column here, with
``ACCOUNTING_FORMAT`` moved on so that stored days are accounted again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
import numpy as np

from pilot_core.calendar import Calendar, Shift
from pilot_core.device_hours import HOUR_MS, DeviceHour, DeviceRules, DowntimeCause, account_vector, downtime_by_cause
from pilot_core.histogram import RELATIVE_ACCURACY
from pilot_core.kpi import COMPONENT_NAMES
from pilot_core.time_accounting import BucketCalendar, ProductionTotals

DAY_MS = 24 * HOUR_MS
# Bump when what an AccountedDay holds, or how an hour is accounted, changes: stored days then count as missing.
ACCOUNTING_FORMAT = "4"  # 2: each hour's ambient temperature; 3: each hour's downtime by cause (the charts');
# 4: vectors keep only their non-zero components
_FINGERPRINT_BITS_HEX = 12  # 48 bits of an hour's fingerprint: a day's 24 sum to less than 2**53


class AccountedDay(msgspec.Struct, array_like=True, gc=False):
    """One device's stored hours of one day, accounted: columns of one entry per hour in time order, as bytes that
    numpy reads without a Python object per hour (a plant's half-year is 36,000 of these)."""

    starts: bytes  # int64
    vectors: bytes  # float64, hours × vector_columns: the components account_vector gave, but those zero all day
    flags: bytes  # uint8: SCHEDULED (the calendar has planned busy time in the hour), MACHINE, EXACT (kept values)
    telemetry_points: bytes  # int64
    seq_channels: list[str]
    seq: bytes  # int64 rows: (hour in the day, index in seq_channels, received, first, last)
    missing: list[tuple[int, str]]  # (hour in the day, a product without an ideal cycle time): few or none
    histogram_bins: bytes  # int64: the day's cycle-time histogram, merged, bin indices in order
    histogram_counts: bytes  # int64
    production: list[dict[str, ProductionTotals]] | None  # per hour, of output stations only (else None)
    ambient_c: bytes  # float64: an environment sensor's mean temperature in the hour, NaN where it kept none
    # The charts' downtime by cause (``downtime_by_cause`` of each hour under its shifts), one row per hour and
    # cause in the order it gives them: the day's causes, and per row its hour in the day and cause (int64 pairs)
    # and its seconds (float64).
    downtime_causes: list[DowntimeCause]
    downtime_rows: bytes
    downtime_s: bytes
    # uint8: the indices in COMPONENT_NAMES of the columns of ``vectors`` (a station uses about half of them; a
    # column left out is +0.0 in every hour of the day), so that a plant's half-year is less to move and read.
    vector_columns: bytes

    @property
    def hours(self) -> int:
        return len(self.starts) // 8


SCHEDULED, MACHINE, EXACT = 1, 2, 4
SEQ_COLUMNS = 5


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


def ambient_column(hours: Sequence[DeviceHour]) -> np.ndarray:
    """Each hour's ambient temperature (``DeviceHour.ambient_c``), NaN where the hour kept none."""
    return np.fromiter((np.nan if h.ambient_c is None else h.ambient_c for h in hours), dtype=float, count=len(hours))


def packed_vectors(vectors: np.ndarray) -> tuple[bytes, bytes]:
    """A day's hours × COMPONENT_NAMES as (the columns kept, uint8; their values, float64 hours × kept): a column
    is left out only if every bit of it is zero (+0.0 everywhere), so that ``unpacked_vectors`` gives it back
    exactly (-0.0 and NaN are kept)."""
    kept = np.flatnonzero((vectors.view(np.uint64) != 0).any(axis=0)).astype(np.uint8)
    return kept.tobytes(), np.ascontiguousarray(vectors[:, kept]).tobytes()


def unpacked_vectors(days: Sequence[AccountedDay], out: np.ndarray | None = None) -> np.ndarray:
    """The days' ``vectors``, one after another, as hours × COMPONENT_NAMES (the left-out columns +0.0): days
    with the same columns (a device's days, mostly) unpacked together; into ``out`` (zeros, rows enough) if given."""
    sizes = np.array([day.hours for day in days], dtype=np.int64)
    first = np.cumsum(sizes) - sizes
    hours = int(sizes.sum())
    result = out[:hours] if out is not None and len(out) >= hours else np.zeros((hours, len(COMPONENT_NAMES)))
    alike: dict[bytes, list[int]] = {}
    for index, day in enumerate(days):
        alike.setdefault(day.vector_columns, []).append(index)
    for columns, chosen in alike.items():
        kept = np.frombuffer(columns, dtype=np.uint8)
        if not len(kept):
            continue
        values = np.frombuffer(b"".join(days[i].vectors for i in chosen), dtype=np.float64).reshape(-1, len(kept))
        if len(chosen) == len(days):  # every day with the same columns: every row
            result[:, kept] = values
            continue
        picked = np.array(chosen, dtype=np.intp)
        counts = sizes[picked]
        # Each chosen day's rows: its first row, plus 0, 1, … within it.
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = np.repeat(first[picked], counts) + within
        result[np.ix_(rows, kept.astype(np.intp))] = values
    return result


def account_day(
    hours: Sequence[DeviceHour],
    rules: DeviceRules,
    calendars: Sequence[BucketCalendar],
    shifts: Sequence[Sequence[Shift]],
) -> tuple[AccountedDay, DayDetail]:
    """One device's hours of one day (in time order), each with its hour's calendar and the calendar's shifts in
    it, accounted as ``account_vector`` accounts them, with each hour's ``downtime_by_cause``."""
    vectors = np.zeros((len(hours), len(COMPONENT_NAMES)))
    flags = np.zeros(len(hours), dtype=np.uint8)
    missing: list[tuple[int, str]] = []
    channels: dict[str, int] = {}
    seq: list[tuple[int, int, int, int, int]] = []
    merged: dict[int, int] = {}
    for index, (hour, calendar) in enumerate(zip(hours, calendars, strict=True)):
        vector, lacking = account_vector(hour, rules, calendar)
        vectors[index] = vector
        flags[index] = (
            (SCHEDULED if calendar.busy_ms > 0 else 0)
            | (MACHINE if hour.machine else 0)
            | (EXACT if hour.has_exact_cycle_times else 0)
        )
        missing.extend((index, product) for product in sorted(lacking))
        for channel, span in hour.seq.items():
            seq.append((index, channels.setdefault(channel, len(channels)), span.received, span.first, span.last))
        if hour.cycle_times.relative_accuracy != RELATIVE_ACCURACY:
            raise ValueError("only histograms of the default accuracy are accounted ahead")
        for bin_index, count in hour.cycle_times.counts.items():
            merged[bin_index] = merged.get(bin_index, 0) + count
    bins = sorted(merged)
    causes, cause_rows, cause_seconds = downtime_columns(hours, rules, shifts)
    columns, packed = packed_vectors(vectors)
    day = AccountedDay(
        starts=np.array([h.start_ms for h in hours], dtype=np.int64).tobytes(),
        vectors=packed,
        flags=flags.tobytes(),
        telemetry_points=np.array([h.telemetry_points for h in hours], dtype=np.int64).tobytes(),
        seq_channels=list(channels),
        seq=np.array(seq, dtype=np.int64).reshape(-1, SEQ_COLUMNS).tobytes(),
        missing=missing,
        histogram_bins=np.array(bins, dtype=np.int64).tobytes(),
        histogram_counts=np.array([merged[b] for b in bins], dtype=np.int64).tobytes(),
        production=[dict(h.production) for h in hours] if rules.is_output else None,
        ambient_c=ambient_column(hours).tobytes(),
        downtime_causes=causes,
        downtime_rows=np.array(cause_rows, dtype=np.int64).reshape(-1, 2).tobytes(),
        downtime_s=np.array(cause_seconds, dtype=np.float64).tobytes(),
        vector_columns=columns,
    )
    detail = DayDetail(
        histograms=[(list(h.cycle_times.counts), list(h.cycle_times.counts.values())) for h in hours],
        values=[list(h.cycle_time_values) if h.has_exact_cycle_times else [] for h in hours],
    )
    return day, detail


def downtime_columns(
    hours: Sequence[DeviceHour], rules: DeviceRules, shifts: Sequence[Sequence[Shift]]
) -> tuple[list[DowntimeCause], list[tuple[int, int]], list[float]]:
    """Each hour's ``downtime_by_cause`` as columns: the causes in the order first seen, and per hour and cause
    (in the order it gives them) the hour's index and the cause's, with the seconds."""
    causes: dict[DowntimeCause, int] = {}
    rows: list[tuple[int, int]] = []
    seconds: list[float] = []
    for index, (hour, hour_shifts) in enumerate(zip(hours, shifts, strict=True)):
        for cause, lost in downtime_by_cause(hour, rules, hour_shifts).items():
            rows.append((index, causes.setdefault(cause, len(causes))))
            seconds.append(lost)
    return list(causes), rows, seconds

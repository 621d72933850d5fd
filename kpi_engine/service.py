"""Wiring the KPI engine to the stores: device-hours kept in SQL, read from InfluxDB only when new.

A demonstration is evaluated in three steps:

1. **Refresh.** Each device-hour of the plan's windows is condensed from
   InfluxDB once (a day of one device per query) and stored. An hour is read
   again only while it may still change: until it has been settled for
   ``settle_s`` after its end (agents that were offline deliver late). A
   forced refresh re-reads every hour, for data replayed later than that.
2. **Fingerprint.** Per window and device, the count of stored hours and the
   time of the latest upsert (every re-read moves it), with the plan hash and
   the engine version, name what a result saw, from one aggregate query per
   window rather than a row per hour.
3. **Evaluate or reuse.** A result with the same fingerprint comes from the
   cache; otherwise the plan is applied to the stored hours.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import operator
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np
from pydantic import TypeAdapter

from adapters.influxdb import InfluxClient
from adapters.sql import (
    AccountedDaysRewritten,
    DemonstrationRepository,
    HourStamp,
    RangeSummary,
    ResultCache,
    RollupRepository,
    fingerprint_of,
)
from adapters.telemetry_reader import TelemetryReader
from kpi_engine.breakdown import Breakdown, breakdown, stored_breakdown
from kpi_engine.evaluation import (
    Accounted,
    AccountedHours,
    DemonstrationResult,
    MethodRevisions,
    StoredDevice,
    evaluate,
    evaluate_accounted,
)
from pilot_core.accounted_days import (
    DAY_MS,
    AccountedDay,
    DayDetail,
    account_day,
    accounting_key,
    day_check,
    day_start,
    decode_day,
    decode_detail,
    encode,
)
from pilot_core.calendar import Shift
from pilot_core.comparison import KpiComparison
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.device_hours import HOUR_MS, DeviceHour, DeviceRules, account_vector
from pilot_core.device_rows import DeviceRows, build_hours
from pilot_core.kpi import COMPONENT_NAMES
from pilot_core.registry import DeviceKey, DeviceRegistry
from pilot_core.time_accounting import BucketCalendar

# Bump when the same hours and plan would give a different result, so cached results are not reused.
# 2: energy meters in scope counted (meter_hours); comparisons take the phase roll-ups.
# 3: the line's cycle time from its output stations, per-station cycle times, exact percentiles.
# 4: ambient temperature per sensor hour, for adjusted baselines; no verdict on conditions beyond the baseline's;
#    the design before data by each target's method, honest for short pilots (pilot_core.design revision 2);
#    the adjusted baseline at the full-sample bandwidth, with its conditions (pilot_core.adjusted_baseline revision 2).
ENGINE_VERSION = "4"
# How each engine computed the methods it computed otherwise than the present one: its bundles verify with that.
_METHOD_REVISIONS = {version: MethodRevisions(design=1, adjusted_baseline=1) for version in ("1", "2", "3")}


def method_revisions(engine_version: str | None) -> MethodRevisions:
    """The revisions of the design before data (pilot_core.design) and of the adjusted baseline
    (pilot_core.adjusted_baseline) that kpi_engine ``engine_version`` computed; None: this engine's."""
    return _METHOD_REVISIONS.get(engine_version or ENGINE_VERSION, MethodRevisions())


DEFAULT_SETTLE_S = 2 * 3600
# An unsettled hour read this recently is not read again: a burst of requests on a running pilot reads once.
DEFAULT_REREAD_AFTER_S = 60
_RESULT = TypeAdapter(DemonstrationResult)
_UPSERT_HOURS = 2000  # hours stored per statement: one per day read would be a transaction per day
# Devices whose values per hour are counted together (one query per two days): bounds what a plant's refresh holds.
_DEVICES_PER_COUNT = 25
_NOTHING_MISSING: frozenset[str] = frozenset()  # shared: most hours miss no ideal cycle time
_LISTED_SCOPES = 16  # plans whose list of stored hours is kept (each a fingerprint per device-hour)

Progress = Callable[[str], None]
Kept = TypeVar("Kept")


@dataclass(frozen=True, slots=True)
class Fingerprinted:
    """A plan version and the fingerprint of the stored data an evaluation of it sees."""

    demonstration_id: int
    slug: str
    plan_version: int
    frozen: bool
    plan: DemonstrationPlan
    plan_hash: str
    data_fingerprint: str
    hours_refreshed: int
    late_hours: int = 0  # device-hours that took in data arriving after they had settled
    late_data: str | None = None  # why late_hours is not 0, in words


@dataclass(frozen=True, slots=True)
class Evaluation:
    demonstration_id: int
    slug: str
    plan_version: int
    frozen: bool
    plan: DemonstrationPlan
    result: DemonstrationResult
    data_fingerprint: str  # what the result saw: engine version, plan hash and the stored hours' versions
    hours_refreshed: int  # device-hours read from InfluxDB for this answer
    cached: bool
    late_hours: int = 0  # device-hours that took in data arriving after they had settled
    late_data: str | None = None  # why late_hours is not 0, in words


def plan_hours(plan: DemonstrationPlan) -> list[int]:
    """The start of every hour that touches one of the plan's windows, in order."""
    starts: set[int] = set()
    for window in plan.windows:
        starts.update(range(_hour_floor(window.start_ms), window.end_ms, HOUR_MS))
    return sorted(starts)


def telemetry_intervals(plan: DemonstrationPlan, registry: DeviceRegistry) -> dict[str, float]:
    """Seconds between samples each device should send: the plan's setting, else its profile's fastest metric."""
    intervals = {}
    for device in plan.devices:
        if device in plan.telemetry_interval_s:
            intervals[device] = plan.telemetry_interval_s[device]
            continue
        registered = registry.get(DeviceKey(plan.site, plan.line, device))
        if registered is not None and registered.profile.metrics:
            intervals[device] = min(m.interval_s for m in registered.profile.metrics)
    return intervals


class EvaluationStopped(Exception):
    """The process is shutting down: the evaluation was given up between two days' reads."""


class DecodedHours:
    """Device-hours already decoded, by content fingerprint, kept across requests (least recently used go first),
    with what each was accounted to under the rules and calendar of the plans that used it.

    A month of a line is tens of thousands of hours; after new data arrives only the changed ones are decoded,
    and only they are accounted again (accounting every hour is most of a cold evaluation's time).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._hours: OrderedDict[str, DeviceHour] = OrderedDict()
        # By id of a kept hour (kept alive by _hours, so its id names it alone): its accounting by rules and calendar.
        self._accounted: dict[int, dict[tuple[Any, ...], Accounted]] = {}
        # By plan scope: the fingerprints of its stored hours in order, and the line's roll-up mark when read.
        self._listed: OrderedDict[tuple[Any, ...], tuple[int, list[str]]] = OrderedDict()
        self._lock = threading.Lock()  # the API serves requests from a thread pool

    def snapshot(self) -> dict[str, DeviceHour]:
        with self._lock:
            return dict(self._hours)

    def keep(self, hours: Iterable[tuple[str, DeviceHour]]) -> None:
        with self._lock:
            for fingerprint, hour in hours:
                replaced = self._hours.get(fingerprint)
                if replaced is not hour:
                    if replaced is not None:
                        self._accounted.pop(id(replaced), None)
                    self._hours[fingerprint] = hour
                    self._accounted[id(hour)] = {}
                self._hours.move_to_end(fingerprint)
            while len(self._hours) > self.capacity:
                _, evicted = self._hours.popitem(last=False)
                self._accounted.pop(id(evicted), None)

    def listed(self, scope: tuple[Any, ...], mark: int) -> list[tuple[str, DeviceHour]] | None:
        """The hours of ``scope`` as last listed, if the line's roll-up mark has not moved since (so no hour was
        written) and every one is still kept: then no row need be read."""
        with self._lock:
            kept = self._listed.get(scope)
            if kept is None or kept[0] != mark:
                return None
            hours = self._hours
            if not all(f in hours for f in kept[1]):
                return None
            return [(f, hours[f]) for f in kept[1]]

    def keep_listed(self, scope: tuple[Any, ...], mark: int, fingerprints: list[str]) -> None:
        with self._lock:
            self._listed[scope] = (mark, fingerprints)
            self._listed.move_to_end(scope)
            while len(self._listed) > _LISTED_SCOPES:
                self._listed.popitem(last=False)

    def account(
        self, hours: Sequence[DeviceHour], rules: DeviceRules, calendars: Sequence[BucketCalendar]
    ) -> list[Accounted]:
        """``account_all``, from the memo for kept hours accounted before under the same rules and calendar."""
        rules_key = rules.key()
        with self._lock:
            memos = [self._accounted.get(id(h)) for h in hours]
            found = [None if m is None else m.get((rules_key, c)) for m, c in zip(memos, calendars, strict=True)]
        answers = []
        new: list[tuple[dict[tuple[Any, ...], Accounted], tuple[Any, ...], Accounted]] = []
        for hour, calendar, memo, known in zip(hours, calendars, memos, found, strict=True):
            if known is None:
                vector, missing = account_vector(hour, rules, calendar)
                answer: Accounted = (np.array(vector), frozenset(missing) if missing else _NOTHING_MISSING)
                if memo is not None:
                    new.append((memo, (rules_key, calendar), answer))
                answers.append(answer)
            else:
                answers.append(known)
        with self._lock:
            for memo, key, answer in new:
                memo[key] = answer
        return answers


class StationComparisons:
    """Stations' comparisons by the key naming what each is computed from (``evaluation.StationMemo``), kept across
    requests (least recently used go first): after late data for a few devices, only their stations' statistics
    are computed again, not every station's of a plant."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[str, KpiComparison] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, key: str | None, make: Callable[[], KpiComparison]) -> KpiComparison:
        if key is None:
            return make()
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        made = make()
        with self._lock:
            self._kept[key] = made
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)
        return made


class KeptAtMark(Generic[Kept]):
    """What was read of a plan's stored hours, with the line's roll-up mark it was read at, kept across requests:
    while the mark has not moved it is still true, so a repeated request reads one row, not every hour."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[tuple[Any, ...], tuple[int, Kept]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], mark: int) -> Kept | None:
        with self._lock:
            kept = self._kept.get(key)
            return kept[1] if kept is not None and kept[0] == mark else None

    def keep(self, key: tuple[Any, ...], mark: int, found: Kept) -> None:
        with self._lock:
            self._kept[key] = (mark, found)
            self._kept.move_to_end(key)
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)


class StoredSummaries(KeptAtMark[list[dict[str, RangeSummary]]]):
    """Each plan's summaries of stored hours per window and device (``HourStore.summaries``)."""


class HourStore:
    """Device-hours of a line: stored ones reused, missing or unsettled ones read from InfluxDB."""

    def __init__(
        self,
        rollups: RollupRepository,
        influx: InfluxClient,
        registry: DeviceRegistry,
        settle_s: float = DEFAULT_SETTLE_S,
        clock: Callable[[], float] = time.time,
        decoded: DecodedHours | None = None,
        reread_after_s: float = DEFAULT_REREAD_AFTER_S,
        stopping: Callable[[], bool] = lambda: False,
        stored_summaries: StoredSummaries | None = None,
    ) -> None:
        self.stored_summaries = stored_summaries or StoredSummaries()
        self.station_comparisons = StationComparisons()
        # The days' checks, found by the same scan as the windows' summaries (a plant's half-year: 36,000).
        self._checks: KeptAtMark[dict[tuple[str, int], tuple[int, int]]] = KeptAtMark(capacity=16)
        self.stopping = stopping  # checked between days read: a server that is stopping stops reading
        self.decoded = decoded or DecodedHours()
        self.reread_after_ms = round(reread_after_s * 1000)
        self.rollups = rollups
        self.reader = TelemetryReader(influx)
        self.registry = registry
        self.settle_ms = round(settle_s * 1000)
        self.clock = clock

    def summaries(self, plan: DemonstrationPlan) -> list[dict[str, RangeSummary]]:
        """Per window, per device: what is stored of its hours (one aggregate query per window), or what was
        when the line's roll-up mark was last where it is (read first: a write after it moves it again)."""
        mark = self.rollups.mark(plan.site, plan.line)
        key = (plan.site, plan.line, tuple(plan.devices), tuple((w.start_ms, w.end_ms) for w in plan.windows))
        kept = self.stored_summaries.get(key, mark)
        if kept is not None:
            return kept
        ranges = sorted((_hour_floor(w.start_ms), w.end_ms) for w in plan.windows)
        if all(a[1] <= b[0] for a, b in itertools.pairwise(ranges)):
            # One scan gives the windows' summaries and the days' checks that accounted() reads next.
            found, checks = self.rollups.summaries_and_checks(
                plan.site,
                plan.line,
                plan.devices,
                [(_hour_floor(w.start_ms), w.end_ms) for w in plan.windows],
                _day_runs(plan_hours(plan)),
            )
            self._checks.keep(key, mark, checks)
        else:  # windows sharing an hour (one ends, the next begins, within it): the hour is in both summaries
            found = [
                self.rollups.summary(plan.site, plan.line, plan.devices, _hour_floor(w.start_ms), w.end_ms)
                for w in plan.windows
            ]
        self.stored_summaries.keep(key, mark, found)
        return found

    def settled(self, plan: DemonstrationPlan, summaries: list[dict[str, RangeSummary]]) -> bool:
        """Every hour of every window is stored and settled, so nothing needs reading from InfluxDB."""
        now_ms = round(self.clock() * 1000)
        for window, by_device in zip(plan.windows, summaries, strict=True):
            if window.end_ms > now_ms - HOUR_MS - self.settle_ms:
                return False
            expected = len(range(_hour_floor(window.start_ms), window.end_ms, HOUR_MS))
            for device in plan.devices:
                summary = by_device.get(device)
                if summary is None or summary.hours != expected:
                    return False
                if summary.least_settled_ms < HOUR_MS + self.settle_ms:
                    return False
        return True

    def stamps(self, plan: DemonstrationPlan) -> dict[tuple[str, int], HourStamp]:
        # A query per run of the windows' hours: what is stored between windows far apart is never read.
        return {
            (s.device, s.start_ms): s
            for run_start, run_end in _runs(plan_hours(plan))
            for s in self.rollups.stamps(plan.site, plan.line, plan.devices, run_start, run_end)
        }

    def refresh(
        self,
        plan: DemonstrationPlan,
        stamps: dict[tuple[str, int], HourStamp] | None = None,
        *,
        force: bool = False,
        progress: Progress | None = None,
        late_days: float | None = None,
    ) -> int:
        """Read the hours that are missing or unsettled (all of them if ``force``); returns how many were stored.

        ``stamps`` (``stamps(plan)``) is what is stored, read per 25 devices if not given: devices with nothing
        to read take no lock and cost no query. Each device is built under ``RollupRepository.building``, its
        stamps read again once its lock is held, so two processes asked at once read InfluxDB once. With
        ``late_days``, settled hours of the last that many days whose count of values in InfluxDB moved since
        they were read (late data) are read again too, and keep a mark of it.
        """
        now_ms = round(self.clock() * 1000)
        starts = [t for t in plan_hours(plan) if t < now_ms]  # hours still to come have nothing to read
        if not starts:
            return 0
        late_from_ms = None if late_days is None else now_ms - round(late_days * DAY_MS)
        late_starts = [] if late_from_ms is None else [t for t in starts if t >= late_from_ms]
        refreshed = 0
        for group in _batches(plan.devices, _DEVICES_PER_COUNT):
            known = stamps if stamps is not None else self._stamps_of(plan, group, starts)
            stale = {d: [t for t in starts if force or self._stale(known.get((d, t)), t, now_ms)] for d in group}
            batch = [d for d in group if stale[d] or late_starts]
            if not batch:
                continue
            counted = sorted({t for d in batch for t in stale[d]} | set(late_starts))
            counts = self._values_per_hour(plan, batch, counted)
            for device in batch:
                with self.hours_of(plan, device) as rollups:
                    read = self._refresh_device(rollups, plan, device, starts, counts, now_ms, force, late_from_ms)
                refreshed += read
                if progress and read:
                    progress(f"  read {read:,} hours of {device} from InfluxDB")
        return refreshed

    def _stamps_of(
        self, plan: DemonstrationPlan, devices: Sequence[str], starts: list[int]
    ) -> dict[tuple[str, int], HourStamp]:
        return {
            (s.device, s.start_ms): s
            for run_start, run_end in _runs(starts)
            for s in self.rollups.stamps(plan.site, plan.line, devices, run_start, run_end)
        }

    def hours_of(self, plan: DemonstrationPlan, device: str) -> AbstractContextManager[RollupRepository]:
        return self.rollups.building(plan.site, plan.line, device)

    def _refresh_device(
        self,
        rollups: RollupRepository,
        plan: DemonstrationPlan,
        device: str,
        starts: list[int],
        counts: dict[str, dict[int, int]],
        now_ms: int,
        force: bool,
        late_from_ms: int | None,
    ) -> int:
        """One device's hours, under its lock: what is stored is read again here, as another process may have
        stored the hours while this one waited."""
        stored = {s.start_ms: s for run in _runs(starts) for s in rollups.stamps(plan.site, plan.line, [device], *run)}
        stale = [t for t in starts if force or self._stale(stored.get(t), t, now_ms)]
        counted = counts.get(device, {})
        sources = {(device, t): counted.get(t, 0) for t in stale}
        refreshed = self._build(rollups, plan, device, stale, counted, sources, now_ms)
        if late_from_ms is None:
            return refreshed
        recent = [t for t in starts if t >= late_from_ms]
        late, first_counted = self._late(stored, set(stale), recent, counted)
        rollups.count_sources(plan.site, plan.line, {(device, t): n for t, n in first_counted.items()})
        if late:
            refreshed += self._build(
                rollups,
                plan,
                device,
                late,
                counted,
                {(device, t): counted.get(t, 0) for t in late},
                now_ms,
                changed_from={t: stored[t].fingerprint for t in late if t in stored},
            )
        return refreshed

    def _late(
        self, stored: dict[int, HourStamp], stale: set[int], starts: list[int], counted: dict[int, int]
    ) -> tuple[list[int], dict[int, int]]:
        """The settled hours to read again because their count of values moved (and the rest of their day, whose
        state in force they may change), and the settled hours counted for the first time."""
        late: set[int] = set()
        first: dict[int, int] = {}
        for t in starts:
            stamp = stored.get(t)
            if t in stale or stamp is None or stamp.computed_at_ms < t + HOUR_MS + self.settle_ms:
                continue
            if stamp.source_values is None:
                first[t] = counted.get(t, 0)
            elif stamp.source_values != counted.get(t, 0):
                day_end = t - t % DAY_MS + DAY_MS
                late.update(u for u in range(t, day_end, HOUR_MS) if u in stored and u not in stale)
        return sorted(late), first

    def _build(
        self,
        rollups: RollupRepository,
        plan: DemonstrationPlan,
        device: str,
        starts: list[int],
        with_data: dict[int, int],
        sources: dict[tuple[str, int], int],
        now_ms: int,
        changed_from: dict[int, str] | None = None,
    ) -> int:
        """Read ``starts`` of ``device`` and store them. With ``changed_from`` (their stored fingerprints), they
        are read again for late data: those that changed are stored marked late, the others only recounted."""
        stored = 0
        built: list[DeviceHour] = []

        def store(hours: list[DeviceHour]) -> int:
            if changed_from is None:
                return rollups.upsert(plan.site, plan.line, hours, now_ms, source_values=sources)
            changed = [h for h in hours if fingerprint_of(h) != changed_from.get(h.start_ms)]
            rollups.count_sources(plan.site, plan.line, {k: v for k, v in sources.items() if k[1] in changed_from})
            return rollups.upsert(plan.site, plan.line, changed, now_ms, source_values=sources, late=True)

        for rows in self._rows(plan, device, starts, {device: with_data}):
            built += build_hours(rows)
            if len(built) >= _UPSERT_HOURS:
                stored += store(built)
                built = []
        return stored + store(built)

    def rows(self, plan: DemonstrationPlan) -> Iterator[DeviceRows]:
        """The rows of every past hour of the plan, read as ``refresh(force=True)`` reads them: an evidence
        bundle's data, from which the very same hours are built."""
        now_ms = round(self.clock() * 1000)
        starts = [t for t in plan_hours(plan) if t < now_ms]
        with_data = self._values_per_hour(plan, plan.devices, starts)
        for device in plan.devices:
            yield from self._rows(plan, device, starts, with_data)

    def _values_per_hour(
        self, plan: DemonstrationPlan, devices: Sequence[str], starts: list[int]
    ) -> dict[str, dict[int, int]]:
        """Per registered device of ``devices``, the hours around ``starts`` that hold points and how many field
        values: the days without any are not read (``TelemetryReader.device_rows``), so a long window costs
        what its data costs; the counts tell a settled hour that took in late data."""
        measurements = {}
        for device in devices:
            registered = self.registry.get(DeviceKey(plan.site, plan.line, device))
            if registered is not None:
                measurements[device] = registered.profile.measurement
        found: dict[str, dict[int, int]] = defaultdict(dict)
        for run_start, run_end in _runs(starts) if starts else ():
            self._check_stopping()
            for device, hours in self.reader.values_per_hour(
                plan.site, plan.line, measurements, run_start, run_end
            ).items():
                found[device].update(hours)
        return found

    def _rows(
        self, plan: DemonstrationPlan, device: str, starts: list[int], with_data: Mapping[str, Container[int]]
    ) -> Iterator[DeviceRows]:
        if not starts:
            return
        registered = self.registry.get(DeviceKey(plan.site, plan.line, device))
        if registered is None:
            raise LookupError(f"device {device!r} of the plan is not in the device registry")
        for run_start, run_end in _runs(starts):
            for rows in self.reader.device_rows(
                plan.site, plan.line, device, registered.profile, run_start, run_end, with_data.get(device, set())
            ):
                self._check_stopping()
                yield rows

    def _check_stopping(self) -> None:
        if self.stopping():
            raise EvaluationStopped("the server is stopping")

    def _stale(self, stamp: HourStamp | None, start_ms: int, now_ms: int) -> bool:
        """Missing, or not yet settled and not read in the last ``reread_after_s``."""
        if stamp is None:
            return True
        unsettled = stamp.computed_at_ms < start_ms + HOUR_MS + self.settle_ms
        return unsettled and now_ms - stamp.computed_at_ms >= self.reread_after_ms

    def account(self, plan: DemonstrationPlan) -> int:
        """Account the plan's device-days that are not yet accounted under its rules and calendar, or whose stored
        hours changed since (late data, a re-read), and store them: the roll-up job does it as hours are stored,
        so that a comparison finds them. Returns how many days were accounted."""
        checks = self._day_checks(plan)
        keys = accounting_keys(plan)
        stored = {
            (device, day): check
            for device, day, check, _ in self.rollups.accounted_days(
                plan.site, plan.line, keys, _day_runs(plan_hours(plan)), data=False
            )
        }
        return self._account_stale(plan, keys, [key for key, check in checks.items() if stored.get(key) != check])

    def accounted(self, plan: DemonstrationPlan) -> AccountedHours | None:
        """The plan's hours as their stored accounted days give them (what is not yet accounted, or changed, is
        accounted first and stored), reading no device-hour; None for a plan with data corrections, which change
        the hours themselves and so are applied to device-hours (``evaluate``)."""
        if plan.corrections:
            return None
        wanted = plan_hours(plan)
        hours = np.array(wanted, dtype=np.int64)
        runs = _day_runs(wanted)
        keys = accounting_keys(plan)
        by_device: dict[str, dict[int, tuple[int, int]]] = {device: {} for device in plan.devices}
        for (device, day), check in self._day_checks(plan).items():
            by_device[device][day] = check
        read: dict[tuple[str, int], tuple[int, int]] = {}  # the days read, by the check they were read with
        kept: dict[tuple[str, int], bytes] = {}

        def details(device: str, starts: list[int]) -> dict[int, DayDetail]:
            """Read for the same days of every device at once: a window's or an exclusion's edge cuts them alike."""
            unread = [day for day in starts if (device, day) not in kept]
            if unread:
                chosen = {(d, day): read[(d, day)] for d in plan.devices for day in unread if (d, day) in read}
                kept.update(self.rollups.accounted_details(plan.site, plan.line, keys, chosen))
            return {day: decode_detail(kept[(device, day)]) for day in starts}

        calendars: dict[int, HourCalendar] = {}
        # Every device's matrix in one allocation, at most 24 hours a day: its untouched pages (calloc) take no
        # memory, and it goes back to the system whole when the request is done rather than leaving the
        # allocator's heap fragmented by 200 matrices of about 0.8 MB for the next request to grow.
        rows = np.zeros((24 * sum(len(checks) for checks in by_device.values()), len(COMPONENT_NAMES)))
        used = [0]

        def stored_device(device: str, found: Iterable[tuple[str, int, tuple[int, int], bytes | None]]) -> StoredDevice:
            checks = by_device[device]
            days: dict[int, AccountedDay] = {}
            for _, day, check, data in found:
                if checks.get(day) == check and data is not None:
                    days[day] = decode_day(data)
                    read[(device, day)] = check
            stale = sorted(day for day in checks if day not in days)
            if stale:
                for day, check, data in self._account_device(plan, device, keys[device], stale, calendars):
                    days[day] = decode_day(data)
                    read[(device, day)] = check
            named = [(day, read[(device, day)]) for day in sorted(days)]
            content = hashlib.sha256(repr((keys[device], named)).encode("utf-8")).hexdigest()
            ordered = [days[day] for day in sorted(days)]
            first, used[0] = used[0], used[0] + sum(day.hours for day in ordered)
            own = rows[first : used[0]]
            return StoredDevice(ordered, hours, functools.partial(details, device), content, own)

        devices: dict[str, StoredDevice] = {}
        # One query for every device's days, read a device at a time: its days in memory as bytes and decoded.
        stored = self.rollups.accounted_days(plan.site, plan.line, keys, runs)
        for device, found in itertools.groupby(stored, key=operator.itemgetter(0)):
            devices[device] = stored_device(device, found)
        for device in plan.devices:
            if device not in devices:  # no day of it accounted yet
                devices[device] = stored_device(device, ())
        return AccountedHours.of_stored(plan, devices)

    def _day_checks(self, plan: DemonstrationPlan) -> dict[tuple[str, int], tuple[int, int]]:
        """The check of every stored device-day holding the plan's hours (``accounted_days.day_check``), as
        ``summaries`` found them if the line's roll-up mark has not moved since."""
        mark = self.rollups.mark(plan.site, plan.line)
        key = (plan.site, plan.line, tuple(plan.devices), tuple((w.start_ms, w.end_ms) for w in plan.windows))
        known = self._checks.get(key, mark)
        if known is not None:
            return dict(known)
        checks: dict[tuple[str, int], tuple[int, int]] = {}
        for run in _day_runs(plan_hours(plan)):
            checks.update(self.rollups.day_checks(plan.site, plan.line, plan.devices, *run))
        return checks

    def _account_stale(self, plan: DemonstrationPlan, keys: Mapping[str, str], stale: Iterable[tuple[str, int]]) -> int:
        """The ``stale`` device-days accounted and stored (``_account_device``); returns how many."""
        by_device: dict[str, list[int]] = defaultdict(list)
        for device, day in stale:
            by_device[device].append(day)
        calendars: dict[int, HourCalendar] = {}
        return sum(
            len(self._account_device(plan, device, keys[device], sorted(days), calendars))
            for device, days in sorted(by_device.items())
        )

    def _account_device(
        self, plan: DemonstrationPlan, device: str, key: str, days: list[int], calendars: dict[int, HourCalendar]
    ) -> list[tuple[int, tuple[int, int], bytes]]:
        """A device's ``days`` accounted and stored under its build lock: what another process accounted while
        this one waited is taken as it stored it. Returns each day's check and AccountedDay."""
        self._check_stopping()
        with self.rollups.building(plan.site, plan.line, device) as rollups:
            return self._account_days(rollups, plan, device, key, days, calendars)

    def _account_days(
        self,
        rollups: RollupRepository,
        plan: DemonstrationPlan,
        device: str,
        key: str,
        days: list[int],
        calendars: dict[int, HourCalendar],
    ) -> list[tuple[int, tuple[int, int], bytes]]:
        """One device's ``days``, under its lock: read, accounted and stored, but for those another process
        accounted from the same hours meanwhile. Returns each day's check and AccountedDay as accounted now."""
        rules = DeviceRules.of(plan, device)
        done: list[tuple[int, tuple[int, int], bytes]] = []
        for run_start, run_end in _runs_of(days, DAY_MS):
            stored = {
                day: (check, data)
                for _, day, check, data in rollups.accounted_days(
                    plan.site, plan.line, {device: key}, [(run_start, run_end)]
                )
            }
            by_day: dict[int, list[tuple[str, DeviceHour]]] = defaultdict(list)
            for fingerprint, hour in rollups.read_fingerprinted(plan.site, plan.line, [device], run_start, run_end):
                by_day[day_start(hour.start_ms)].append((fingerprint, hour))
            rows = []
            for day, found in sorted(by_day.items()):
                check = day_check([f for f, _ in found])
                kept = stored.get(day)
                if kept is not None and kept[0] == check and kept[1] is not None:
                    done.append((day, check, kept[1]))  # accounted by another process while this one waited
                    continue
                hours = [h for _, h in found]
                hour_calendars = [_hour_calendar(plan, h.start_ms, calendars) for h in hours]
                accounted, detail = account_day(
                    hours, rules, [c.calendar for c in hour_calendars], [c.shifts for c in hour_calendars]
                )
                data = encode(accounted)
                rows.append((day, check, data, encode(detail)))
                done.append((day, check, data))
            rollups.put_accounted_days(plan.site, plan.line, device, key, rows)
        return done

    def read(self, plan: DemonstrationPlan) -> dict[str, list[DeviceHour]]:
        hours: dict[str, list[DeviceHour]] = defaultdict(list)
        runs = list(_runs(plan_hours(plan)))  # in time order, each by device then time
        scope = (plan.site, plan.line, tuple(plan.devices), tuple(runs))
        mark = self.rollups.mark(plan.site, plan.line)  # read first: a write after it moves it again
        found = self.decoded.listed(scope, mark)
        if found is None:
            known = self.decoded.snapshot()
            found = [
                pair
                for run_start, run_end in runs
                for pair in self.rollups.read_fingerprinted(
                    plan.site, plan.line, plan.devices, run_start, run_end, known
                )
            ]
            self.decoded.keep_listed(scope, mark, [f for f, _ in found])
        self.decoded.keep(found)
        for _, hour in found:
            hours[hour.device].append(hour)
        return hours


def accounting_keys(plan: DemonstrationPlan) -> dict[str, str]:
    """Per device of the plan, the key its hours are accounted under (its rules and the plan's calendar)."""
    return {device: accounting_key(DeviceRules.of(plan, device), plan.calendar) for device in plan.devices}


class HourCalendar(NamedTuple):
    calendar: BucketCalendar
    shifts: list[Shift]  # the plan calendar's shifts in the hour


def _hour_calendar(plan: DemonstrationPlan, start_ms: int, calendars: dict[int, HourCalendar]) -> HourCalendar:
    """The calendar of the hour starting at ``start_ms``, as ``AccountedHours`` works it out (once per hour)."""
    found = calendars.get(start_ms)
    if found is None:
        shifts = list(plan.calendar.shifts_between(start_ms, start_ms + HOUR_MS))
        found = calendars[start_ms] = HourCalendar(BucketCalendar.of(start_ms, start_ms + HOUR_MS, shifts), shifts)
    return found


def _day_runs(starts: list[int]) -> list[tuple[int, int]]:
    """The whole UTC days holding the hours ``starts`` (sorted), as [start, end) runs of consecutive days."""
    return list(_runs_of(sorted({day_start(t) for t in starts}), DAY_MS)) if starts else []


def _batches(devices: Sequence[str], size: int) -> Iterator[list[str]]:
    for index in range(0, len(devices), size):
        yield list(devices[index : index + size])


def _hour_floor(ms: int) -> int:
    return ms - ms % HOUR_MS


def _runs(starts: list[int]) -> Iterable[tuple[int, int]]:
    """Sorted hour starts as [start, end) runs of consecutive hours."""
    return _runs_of(starts, HOUR_MS)


def _runs_of(starts: list[int], step: int) -> Iterable[tuple[int, int]]:
    """Sorted starts of periods ``step`` long as [start, end) runs of consecutive periods."""
    run_start = previous = starts[0]
    for start in starts[1:]:
        if start != previous + step:
            yield run_start, previous + step
            run_start = start
        previous = start
    yield run_start, previous + step


def data_fingerprint(plan_hash: str, summaries: list[dict[str, RangeSummary]]) -> str:
    """Names the data a result saw: every upsert of an hour moves its range's last_computed_ms."""
    digest = hashlib.sha256(f"engine {ENGINE_VERSION}\nplan {plan_hash}\n".encode())
    for index, by_device in enumerate(summaries):
        for device, summary in sorted(by_device.items()):
            digest.update(f"{index}\t{device}\t{summary.hours}\t{summary.last_computed_ms}\n".encode())
    return "sha256:" + digest.hexdigest()


def late_data_reason(plan: DemonstrationPlan, summaries: list[dict[str, RangeSummary]]) -> tuple[int, str | None]:
    """How many of the windows' device-hours took in late data, and a sentence saying which and when."""
    late: dict[str, int] = defaultdict(int)
    last_ms = 0
    for by_device in summaries:
        for device, summary in by_device.items():
            if summary.late_hours:
                late[device] += summary.late_hours
                last_ms = max(last_ms, summary.last_late_ms or 0)
    if not late:
        return 0, None
    total = sum(late.values())
    devices = ", ".join(f"{device} ({hours})" for device, hours in sorted(late.items()))
    when = dt.datetime.fromtimestamp(last_ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return total, (
        f"{total} device-hour(s) of the plan's windows took in data that reached InfluxDB after they had settled"
        f" (late data): {devices}; the latest was taken in at {when}, and this result includes it"
    )


class PlanTooLong(ValueError):
    """The plan's windows cover more days than this service evaluates (a plan stored before the limit was lowered)."""


class KpiService:
    """Evaluates stored demonstrations, reusing stored hours and cached results."""

    def __init__(
        self,
        demonstrations: DemonstrationRepository,
        hours: HourStore,
        cache: ResultCache,
        max_window_days: float | None = None,
    ) -> None:
        self.demonstrations = demonstrations
        self.hours = hours
        self.cache = cache
        self.max_window_days = max_window_days

    def fingerprint(
        self,
        ref: int | str,
        version: int | None = None,
        *,
        refresh: bool = False,
        progress: Progress | None = None,
    ) -> Fingerprinted:
        """What an evaluation of plan ``version`` (default: the latest) would see, its hours refreshed as
        ``evaluate`` refreshes them, without reading or computing the result: pages keyed by the fingerprint
        need no more when they have it."""
        stored = self.demonstrations.get(ref)
        chosen = self.demonstrations.version(stored.id, version or stored.version)
        plan = chosen.plan
        if self.max_window_days is not None and plan.window_days > self.max_window_days:
            raise PlanTooLong(
                f"version {chosen.version} of the plan has windows covering {plan.window_days:g} days together;"
                f" at most {self.max_window_days:g} are evaluated (max_window_days): amend the plan"
            )
        summaries = self.hours.summaries(plan)
        refreshed = 0
        if refresh or not self.hours.settled(plan, summaries):
            refreshed = self.hours.refresh(plan, self.hours.stamps(plan), force=refresh, progress=progress)
            # Read again even when this process stored nothing: another may have stored the hours it waited for.
            summaries = self.hours.summaries(plan)
        late_hours, late_data = late_data_reason(plan, summaries)
        return Fingerprinted(
            demonstration_id=stored.id,
            slug=stored.slug,
            plan_version=chosen.version,
            frozen=chosen.frozen,
            plan=plan,
            plan_hash=chosen.plan_hash,
            data_fingerprint=data_fingerprint(chosen.plan_hash, summaries),
            hours_refreshed=refreshed,
            late_hours=late_hours,
            late_data=late_data,
        )

    def evaluate(
        self,
        ref: int | str,
        version: int | None = None,
        *,
        refresh: bool = False,
        progress: Progress | None = None,
    ) -> Evaluation:
        """The demonstration's result under plan ``version`` (default: the latest)."""
        return self._evaluate(ref, version, refresh=refresh, progress=progress)[0]

    def _evaluate(
        self, ref: int | str, version: int | None, *, refresh: bool, progress: Progress | None = None
    ) -> tuple[Evaluation, AccountedHours | None]:
        """``evaluate``, with the accounted days the result was computed from (None: cached, or from device-hours)."""
        seen = self.fingerprint(ref, version, refresh=refresh, progress=progress)
        plan = seen.plan
        fingerprint = seen.data_fingerprint
        common: dict[str, Any] = {
            "late_hours": seen.late_hours,
            "late_data": seen.late_data,
            "demonstration_id": seen.demonstration_id,
            "slug": seen.slug,
            "plan_version": seen.plan_version,
            "frozen": seen.frozen,
            "plan": plan,
            "data_fingerprint": fingerprint,
            "hours_refreshed": seen.hours_refreshed,
        }
        cached = self.cache.get(seen.demonstration_id, seen.plan_version, "evaluation", fingerprint)
        if cached is not None:
            return Evaluation(result=_RESULT.validate_python(cached), cached=True, **common), None
        intervals = telemetry_intervals(plan, self.hours.registry)
        accounted = self.hours.accounted(plan)
        if accounted is None:  # data corrections, or hours rewritten while they were read
            result = evaluate(plan, seen.plan_hash, self.hours.read(plan), intervals, self.hours.decoded.account)
        else:
            try:
                result = evaluate_accounted(plan, seen.plan_hash, accounted, intervals, self.hours.station_comparisons)
            except AccountedDaysRewritten:  # rewritten while they were read: the hours as they are now
                accounted = None
                result = evaluate(plan, seen.plan_hash, self.hours.read(plan), intervals, self.hours.decoded.account)
        self.cache.put(
            seen.demonstration_id,
            seen.plan_version,
            "evaluation",
            fingerprint,
            _RESULT.dump_python(result, mode="json"),
        )
        return Evaluation(result=result, cached=False, **common), accounted

    def evaluate_with_breakdown(
        self, ref: int | str, version: int | None = None, *, refresh: bool = False
    ) -> tuple[Evaluation, Breakdown]:
        """The result and what its charts need, both from the same stored hours.

        Hours stored between the evaluation and the reading would make them disagree: then it is done again. The
        charts come from the stored accounted days, as the comparison does, with no device-hour decoded; from the
        device-hours for a plan with data corrections, or days rewritten while they were read.
        """
        for _ in range(3):
            evaluation, accounted = self._evaluate(ref, version, refresh=refresh)
            refresh = False  # re-reading InfluxDB once is enough
            plan = evaluation.plan
            charts = self._stored_breakdown(plan, accounted) or breakdown(plan, self.hours.read(plan))
            seen = data_fingerprint(evaluation.result.plan_hash, self.hours.summaries(plan))
            if seen == evaluation.data_fingerprint:
                break
        return evaluation, charts

    def _stored_breakdown(self, plan: DemonstrationPlan, accounted: AccountedHours | None) -> Breakdown | None:
        """The charts from the stored accounted days (``accounted``: those the result was just computed from, if it
        was); None where the device-hours give them (data corrections, days rewritten while they were read)."""
        accounted = accounted or self.hours.accounted(plan)
        if accounted is None:
            return None
        try:
            return stored_breakdown(plan, accounted)
        except AccountedDaysRewritten:
            return None

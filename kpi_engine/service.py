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

import hashlib
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from adapters.influxdb import InfluxClient
from adapters.sql import DemonstrationRepository, HourStamp, RangeSummary, ResultCache, RollupRepository
from adapters.telemetry_reader import TelemetryReader
from kpi_engine.breakdown import Breakdown, breakdown
from kpi_engine.evaluation import DemonstrationResult, evaluate
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.device_hours import HOUR_MS, DeviceHour
from pilot_core.device_rows import DeviceRows, build_hours
from pilot_core.registry import DeviceKey, DeviceRegistry

# Bump when the same hours and plan would give a different result, so cached results are not reused.
# 2: energy meters in scope counted (meter_hours); comparisons take the phase roll-ups.
# 3: the line's cycle time from its output stations, per-station cycle times, exact percentiles.
ENGINE_VERSION = "3"
DEFAULT_SETTLE_S = 2 * 3600
# An unsettled hour read this recently is not read again: a burst of requests on a running pilot reads once.
DEFAULT_REREAD_AFTER_S = 60
_RESULT = TypeAdapter(DemonstrationResult)
_UPSERT_HOURS = 2000  # hours stored per statement: one per day read would be a transaction per day

Progress = Callable[[str], None]


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
    """Device-hours already decoded, by content fingerprint, kept across requests (least recently used go first).

    A month of a line is tens of thousands of hours; after new data arrives only the changed ones are decoded.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._hours: OrderedDict[str, DeviceHour] = OrderedDict()
        self._lock = threading.Lock()  # the API serves requests from a thread pool

    def snapshot(self) -> dict[str, DeviceHour]:
        with self._lock:
            return dict(self._hours)

    def keep(self, hours: Iterable[tuple[str, DeviceHour]]) -> None:
        with self._lock:
            for fingerprint, hour in hours:
                self._hours[fingerprint] = hour
                self._hours.move_to_end(fingerprint)
            while len(self._hours) > self.capacity:
                self._hours.popitem(last=False)


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
    ) -> None:
        self.stopping = stopping  # checked between days read: a server that is stopping stops reading
        self.decoded = decoded or DecodedHours()
        self.reread_after_ms = round(reread_after_s * 1000)
        self.rollups = rollups
        self.reader = TelemetryReader(influx)
        self.registry = registry
        self.settle_ms = round(settle_s * 1000)
        self.clock = clock

    def summaries(self, plan: DemonstrationPlan) -> list[dict[str, RangeSummary]]:
        """Per window, per device: what is stored of its hours (one aggregate query per window)."""
        return [
            self.rollups.summary(plan.site, plan.line, plan.devices, _hour_floor(w.start_ms), w.end_ms)
            for w in plan.windows
        ]

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
        stamps: dict[tuple[str, int], HourStamp],
        *,
        force: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Read the hours that are missing or unsettled (all of them if ``force``); returns how many."""
        now_ms = round(self.clock() * 1000)
        starts = [t for t in plan_hours(plan) if t < now_ms]  # hours still to come have nothing to read
        stale_hours = {
            device: [t for t in starts if force or self._stale(stamps.get((device, t)), t, now_ms)]
            for device in plan.devices
        }
        with_data = self._hours_with_data(plan, sorted({t for stale in stale_hours.values() for t in stale}))
        refreshed = 0
        for device, stale in stale_hours.items():
            if not stale:
                continue
            built: list[DeviceHour] = []
            for rows in self._rows(plan, device, stale, with_data):
                built += build_hours(rows)
                if len(built) >= _UPSERT_HOURS:
                    refreshed += self.rollups.upsert(plan.site, plan.line, built, now_ms)
                    built = []
            refreshed += self.rollups.upsert(plan.site, plan.line, built, now_ms)
            if progress:
                progress(f"  read {len(stale):,} hours of {device} from InfluxDB")
        return refreshed

    def rows(self, plan: DemonstrationPlan) -> Iterator[DeviceRows]:
        """The rows of every past hour of the plan, read as ``refresh(force=True)`` reads them: an evidence
        bundle's data, from which the very same hours are built."""
        now_ms = round(self.clock() * 1000)
        starts = [t for t in plan_hours(plan) if t < now_ms]
        with_data = self._hours_with_data(plan, starts)
        for device in plan.devices:
            yield from self._rows(plan, device, starts, with_data)

    def _hours_with_data(self, plan: DemonstrationPlan, starts: list[int]) -> dict[str, set[int]]:
        """Per registered device of the plan, the hours around ``starts`` that hold points: the days without
        any are not read (``TelemetryReader.device_rows``), so a long window costs what its data costs."""
        measurements = {}
        for device in plan.devices:
            registered = self.registry.get(DeviceKey(plan.site, plan.line, device))
            if registered is not None:
                measurements[device] = registered.profile.measurement
        found: dict[str, set[int]] = defaultdict(set)
        for run_start, run_end in _runs(starts) if starts else ():
            self._check_stopping()
            for device, hours in self.reader.hours_with_data(
                plan.site, plan.line, measurements, run_start, run_end
            ).items():
                found[device] |= hours
        return found

    def _rows(
        self, plan: DemonstrationPlan, device: str, starts: list[int], with_data: dict[str, set[int]]
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

    def read(self, plan: DemonstrationPlan) -> dict[str, list[DeviceHour]]:
        hours: dict[str, list[DeviceHour]] = defaultdict(list)
        known = self.decoded.snapshot()
        found = [
            pair
            for run_start, run_end in _runs(plan_hours(plan))  # in time order, each by device then time
            for pair in self.rollups.read_fingerprinted(plan.site, plan.line, plan.devices, run_start, run_end, known)
        ]
        self.decoded.keep(found)
        for _, hour in found:
            hours[hour.device].append(hour)
        return hours


def _hour_floor(ms: int) -> int:
    return ms - ms % HOUR_MS


def _runs(starts: list[int]) -> Iterable[tuple[int, int]]:
    """Sorted hour starts as [start, end) runs of consecutive hours."""
    run_start = previous = starts[0]
    for start in starts[1:]:
        if start != previous + HOUR_MS:
            yield run_start, previous + HOUR_MS
            run_start = start
        previous = start
    yield run_start, previous + HOUR_MS


def data_fingerprint(plan_hash: str, summaries: list[dict[str, RangeSummary]]) -> str:
    """Names the data a result saw: every upsert of an hour moves its range's last_computed_ms."""
    digest = hashlib.sha256(f"engine {ENGINE_VERSION}\nplan {plan_hash}\n".encode())
    for index, by_device in enumerate(summaries):
        for device, summary in sorted(by_device.items()):
            digest.update(f"{index}\t{device}\t{summary.hours}\t{summary.last_computed_ms}\n".encode())
    return "sha256:" + digest.hexdigest()


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

    def evaluate(
        self,
        ref: int | str,
        version: int | None = None,
        *,
        refresh: bool = False,
        progress: Progress | None = None,
    ) -> Evaluation:
        """The demonstration's result under plan ``version`` (default: the latest)."""
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
            if refreshed:
                summaries = self.hours.summaries(plan)
        fingerprint = data_fingerprint(chosen.plan_hash, summaries)
        common: dict[str, Any] = {
            "demonstration_id": stored.id,
            "slug": stored.slug,
            "plan_version": chosen.version,
            "frozen": chosen.frozen,
            "plan": plan,
            "data_fingerprint": fingerprint,
            "hours_refreshed": refreshed,
        }
        cached = self.cache.get(stored.id, chosen.version, "evaluation", fingerprint)
        if cached is not None:
            return Evaluation(result=_RESULT.validate_python(cached), cached=True, **common)
        intervals = telemetry_intervals(plan, self.hours.registry)
        result = evaluate(plan, chosen.plan_hash, self.hours.read(plan), intervals)
        self.cache.put(stored.id, chosen.version, "evaluation", fingerprint, _RESULT.dump_python(result, mode="json"))
        return Evaluation(result=result, cached=False, **common)

    def evaluate_with_breakdown(
        self, ref: int | str, version: int | None = None, *, refresh: bool = False
    ) -> tuple[Evaluation, Breakdown]:
        """The result and what its charts need, both from the same stored hours.

        Hours stored between the evaluation and the reading would make them disagree: then it is done again.
        """
        for _ in range(3):
            evaluation = self.evaluate(ref, version, refresh=refresh)
            refresh = False  # re-reading InfluxDB once is enough
            hours = self.hours.read(evaluation.plan)
            seen = data_fingerprint(evaluation.result.plan_hash, self.hours.summaries(evaluation.plan))
            if seen == evaluation.data_fingerprint:
                break
        return evaluation, breakdown(evaluation.plan, hours)

"""A demonstration's line as it is now: its devices, today's OEE so far and the collector's health.

Cheap enough to be asked every few seconds: each device's latest points are
read with ``ORDER BY time DESC LIMIT`` over a bounded lookback, the collector's
health and dead letters from its own small measurements (``pilot_core.live``),
and today's OEE from the stored device-hours, exactly as the KPI engine
computes a window's (``HourStore`` re-reads an unsettled hour at most once
every ``reread_after_s``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from pydantic import BaseModel, Field

from adapters.influxdb import InfluxClient
from adapters.telemetry_reader import (
    DeviceActivity,
    collector_health,
    dead_letters,
    device_activity,
    recent_states,
)
from kpi_engine.evaluation import window_result
from kpi_engine.service import HourStore, telemetry_intervals
from pilot_core.demonstration import DemonstrationPlan, Phase, Window
from pilot_core.device_hours import HOUR_MS
from pilot_core.device_rows import STATE_LOOKBACK_MS
from pilot_core.live import CollectorHealth, StateSample, current_run, day_so_far, is_silent
from pilot_core.registry import DeviceKey

LAST_SEEN_LOOKBACK_MS = 24 * HOUR_MS  # a device silent for longer shows no last message
DEAD_LETTER_SPAN_MS = HOUR_MS
HEALTH_LOOKBACK_MS = 24 * HOUR_MS  # collectors that reported in this span are listed, silent or not
LIVE_KPIS = ("oee", "availability", "effectiveness", "quality_ratio")
# Shared by every request: a polled page costs no thread start. Four: one per InfluxDB read of a line.
_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="live-line")


def _at(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)


class LiveDevice(BaseModel):
    device: str
    online: bool | None = Field(description="Its latest birth (true) or will (false); None if none in 24 h")
    status_at: dt.datetime | None
    last_message_at: dt.datetime | None = Field(description="Its latest point on any channel; None if none in 24 h")
    state: str | None = Field(description="Its latest state; None if it recorded none in the last 48 h")
    time_class: str | None
    reason: str | None
    state_since: dt.datetime | None = Field(description="Since when the state has held, its repeats included")
    state_for_s: float | None


class TodaySoFar(BaseModel):
    start: dt.datetime = Field(description="The day's start in the plan's time zone")
    end: dt.datetime = Field(description="The last whole hour's end: the hour still running is not counted")
    kpis: dict[str, float | None] = Field(description="As the KPI engine computes a window's, under the plan")
    produced: float = Field(description="Units produced at the line's output stations")
    good: float


class LiveCollector(BaseModel):
    collector: str
    reported_at: dt.datetime
    silent: bool = Field(description="No report for three of its intervals: stopped, or cut off from InfluxDB")
    backlog: int = Field(description="Messages received and not yet acknowledged")
    spool_batches: int = Field(description="Batches waiting on disk for InfluxDB")
    spool_bytes: int
    connected: bool = Field(description="To the broker")
    healthy: bool = Field(description="Connected, every thread running, none failing")


class LiveDeadLetters(BaseModel):
    reason: str
    count: int
    last_at: dt.datetime
    last_device: str
    last_detail: str


class LiveLine(BaseModel):
    demonstration: str
    site: str
    line: str
    timezone: str
    at: dt.datetime
    devices: list[LiveDevice]
    today: TodaySoFar | None = Field(description="None before the day's first whole hour has ended")
    collectors: list[LiveCollector] = Field(description="Every collector that reported in the last 24 hours")
    dead_letters_since: dt.datetime
    dead_letters: list[LiveDeadLetters] = Field(description="The line's refused messages in the last hour, by reason")


class LiveService:
    def __init__(
        self,
        influx: InfluxClient,
        hours: HourStore,
        health_interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.influx = influx
        self.hours = hours
        self.health_interval_s = health_interval_s
        self.clock = clock

    def line(self, slug: str, plan: DemonstrationPlan) -> LiveLine:
        now_ms = int(self.clock() * 1000)
        site, line = plan.site, plan.line
        registry = self.hours.registry
        measurements = set()
        for device in plan.devices:
            registered = registry.get(DeviceKey(site, line, device))
            if registered is not None:
                measurements.add(registered.profile.measurement)
        since = now_ms - DEAD_LETTER_SPAN_MS
        # The reads are independent and mostly waiting on InfluxDB: they run side by side, today's KPIs here.
        activity_read = _READERS.submit(
            device_activity, self.influx, measurements, now_ms - LAST_SEEN_LOOKBACK_MS, (site, line)
        )
        states_read = _READERS.submit(recent_states, self.influx, site, line, now_ms - STATE_LOOKBACK_MS)
        health_read = _READERS.submit(collector_health, self.influx, now_ms - HEALTH_LOOKBACK_MS)
        refused_read = _READERS.submit(dead_letters, self.influx, site, line, since)
        try:
            today = self._today(plan, now_ms)
        finally:  # whatever happens here, the reads end before the request does
            reads: list[Future[Any]] = [activity_read, states_read, health_read, refused_read]
            wait(reads)
        activity = {a.device: a for a in activity_read.result()}
        states = states_read.result()
        return LiveLine(
            demonstration=slug,
            site=site,
            line=line,
            timezone=plan.calendar.timezone,
            at=_at(now_ms),
            devices=[_device(d, activity.get(d), current_run(states.get(d, [])), now_ms) for d in plan.devices],
            today=today,
            collectors=[_collector(h, is_silent(h, self.health_interval_s, now_ms)) for h in health_read.result()],
            dead_letters_since=_at(since),
            dead_letters=[
                LiveDeadLetters(
                    reason=d.reason,
                    count=d.count,
                    last_at=_at(d.last_at_ms),
                    last_device=d.last_device,
                    last_detail=d.last_detail,
                )
                for d in refused_read.result()
            ],
        )

    def _today(self, plan: DemonstrationPlan, now_ms: int) -> TodaySoFar | None:
        span = day_so_far(plan.calendar.zone, now_ms)
        if span is None:
            return None
        start, end = (dt.datetime.fromtimestamp(t / 1000, dt.UTC) for t in span)
        today = Window(name="today", phase=Phase.PILOT, start=start, end=end)
        # The plan's calendar, states, ideal times and corrections, over today alone.
        day_plan = plan.model_copy(update={"windows": [today]})
        self.hours.refresh(day_plan, self.hours.stamps(day_plan))
        result = window_result(plan, today, self.hours.read(day_plan), telemetry_intervals(plan, self.hours.registry))
        return TodaySoFar(
            start=start,
            end=end,
            kpis={k: result.kpis.get(k) for k in LIVE_KPIS},
            produced=result.components.output_produced,
            good=result.components.output_good,
        )


def _device(
    device: str, activity: DeviceActivity | None, run: tuple[StateSample, int] | None, now_ms: int
) -> LiveDevice:
    state, since = run if run else (None, None)
    return LiveDevice(
        device=device,
        online=activity.online if activity else None,
        status_at=_at(activity.status_at_ms) if activity and activity.status_at_ms is not None else None,
        last_message_at=_at(activity.last_seen_ms) if activity and activity.last_seen_ms is not None else None,
        state=state.state if state else None,
        time_class=state.time_class if state else None,
        reason=state.reason if state else None,
        state_since=_at(since) if since is not None else None,
        state_for_s=max(0.0, (now_ms - since) / 1000) if since is not None else None,
    )


def _collector(health: CollectorHealth, silent: bool) -> LiveCollector:
    return LiveCollector(
        collector=health.collector,
        reported_at=_at(health.at_ms),
        silent=silent,
        backlog=health.backlog,
        spool_batches=health.spool_batches,
        spool_bytes=health.spool_bytes,
        connected=health.connected,
        healthy=health.healthy,
    )

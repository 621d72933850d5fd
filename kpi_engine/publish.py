"""Publishing a demonstration's daily KPI components to InfluxDB, for its before/after dashboard.

Only settled days are published: every hour of the day, of every device in
scope, stored after it had settled (``settle_s`` past its end), so that its
components no longer change unless data is replayed late and re-read. Such a
day goes to a new revision (see ``pilot_core.kpi_daily``); writing the same
values again is harmless. The flow stays one way: the engine reads telemetry
and writes only this measurement, which nothing but dashboards reads.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from adapters.influxdb import InfluxClient, InfluxError, WriteOutcome
from adapters.sql import HourStamp
from kpi_engine.service import KpiService, plan_hours
from pilot_core.demonstration import DemonstrationPlan, Phase
from pilot_core.device_hours import HOUR_MS
from pilot_core.influxql import quote_identifier, quote_literal
from pilot_core.kpi import Components
from pilot_core.kpi_daily import (
    FIELDS,
    MEASUREMENT,
    PRECISION,
    DailyComponents,
    DayKey,
    encode_days,
    plan_publication,
)

DAY_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class PublishResult:
    slug: str
    plan_version: int
    plan_hash: str
    revision: int
    written: int  # day points written
    unchanged: int  # settled days already published with the same values
    pending: int  # days with data that have not settled yet
    changed: list[DayKey]  # days whose values changed since they were published: hence a new revision


def settled_days(plan: DemonstrationPlan, stamps: dict[tuple[str, int], HourStamp], settle_ms: int) -> set[dt.date]:
    """Local days of the plan whose every hour, of every device in scope, was stored after settling."""
    zone = plan.calendar.zone
    seen: set[dt.date] = set()
    unsettled: set[dt.date] = set()
    for start in plan_hours(plan):
        day = dt.datetime.fromtimestamp(start / 1000, zone).date()
        seen.add(day)
        for device in plan.devices:
            stamp = stamps.get((device, start))
            if stamp is None or stamp.computed_at_ms < start + HOUR_MS + settle_ms:
                unsettled.add(day)
    return seen - unsettled


def read_published(
    influx: InfluxClient, slug: str, plan_version: int, plan: DemonstrationPlan
) -> dict[int, dict[DayKey, Components]]:
    """What each revision of this plan version holds, by day and phase (one small query: a point per day)."""
    start_s = min(w.start_ms for w in plan.windows) // 1000 - DAY_S
    end_s = max(w.end_ms for w in plan.windows) // 1000 + DAY_S
    query = (
        f"SELECT {', '.join(quote_identifier(f) for f in FIELDS)} FROM {quote_identifier(MEASUREMENT)}"
        f" WHERE {quote_identifier('demonstration')} = {quote_literal(slug)}"
        f" AND {quote_identifier('plan_version')} = {quote_literal(str(plan_version))}"
        f" AND time >= {start_s}s AND time < {end_s}s"
        f" GROUP BY {quote_identifier('revision')}, {quote_identifier('phase')}"
    )
    zone = plan.calendar.zone
    stored: dict[int, dict[DayKey, Components]] = defaultdict(dict)
    for series in influx.query(query):
        revision = int(series.tags["revision"])
        phase = Phase(series.tags["phase"])
        for row in series.values:
            day = dt.datetime.fromtimestamp(row[0] / 1000, zone).date()
            stored[revision][(day, phase)] = Components(*(float(v or 0.0) for v in row[1:]))
    return dict(stored)


def publish_daily(
    service: KpiService, influx: InfluxClient, ref: int | str, version: int | None = None, *, refresh: bool = False
) -> PublishResult:
    """Evaluate the demonstration (reading new hours as the API would) and publish its settled days."""
    evaluation, parts = service.evaluate_with_breakdown(ref, version, refresh=refresh)
    plan = evaluation.plan
    ready = settled_days(plan, service.hours.stamps(plan), service.hours.settle_ms)
    days = [DailyComponents(d.day, d.phase, d.components) for d in parts.days if d.day in ready]
    pending = len({d.day for d in parts.days} - ready)
    publication = plan_publication(read_published(influx, evaluation.slug, evaluation.plan_version, plan), days)
    lines = encode_days(
        publication.days,
        slug=evaluation.slug,
        plan_version=evaluation.plan_version,
        revision=publication.revision,
        site=plan.site,
        line=plan.line,
        zone=plan.calendar.zone,
    )
    if lines:
        written = influx.write(lines, precision=PRECISION)
        if written.outcome is not WriteOutcome.WRITTEN:
            raise InfluxError(
                f"InfluxDB did not take the daily KPIs of {evaluation.slug!r}"
                f" ({written.status or 'no answer'}): {written.message or written.outcome.value}"
            )
    return PublishResult(
        evaluation.slug,
        evaluation.plan_version,
        evaluation.result.plan_hash,
        publication.revision,
        len(lines),
        publication.unchanged,
        pending,
        publication.changed,
    )

"""The live line: the collector's own records in InfluxDB, and what a state's run and a day's span are.

The collector writes two measurements of its own beside the devices' data, so
that the API reads its health from the store it already reads, across hosts and
restarts, and over a window (a Prometheus counter knows no "last hour"):

- ``collector_health``, one point per collector every ``health_interval_s``:
  backlog, spool and connection, tagged by collector;
- ``dead_letter``, a point per refused message (``count`` of them refused alike in
  one millisecond), tagged by collector, reason
  and, when its topic could be parsed, site, line, device and channel.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from pilot_core.device_hours import HOUR_MS
from pilot_core.line_protocol import encode_point
from pilot_core.validation import Rejection

COLLECTOR_HEALTH_MEASUREMENT = "collector_health"
DEAD_LETTER_MEASUREMENT = "dead_letter"
DETAIL_CHARS = 300  # of a dead letter's reason: enough to read, never a payload's worth
# A collector whose last report is older than this many of its intervals is shown as silent.
SILENT_AFTER_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class CollectorHealth:
    collector: str
    at_ms: int
    backlog: int  # messages received, not yet acknowledged
    spool_batches: int  # batches waiting on disk for InfluxDB
    spool_bytes: int
    connected: bool  # to the broker
    healthy: bool  # connected, every thread running, none failing


def health_line(health: CollectorHealth) -> str:
    return encode_point(
        COLLECTOR_HEALTH_MEASUREMENT,
        [("collector", health.collector)],
        [
            ("backlog", health.backlog),
            ("spool_batches", health.spool_batches),
            ("spool_bytes", health.spool_bytes),
            ("connected", health.connected),
            ("healthy", health.healthy),
        ],
        health.at_ms,
    )


def dead_letter_line(collector: str, rejection: Rejection, at_ms: int, count: int = 1) -> str:
    """``count`` messages refused alike in the millisecond ``at_ms``: one point, since a second point with the
    same tags and time would replace the first. Its detail is the last one's."""
    tags = [("collector", collector), ("reason", rejection.reason.value)]
    if rejection.topic is not None:
        t = rejection.topic
        tags += [("site", t.site), ("line", t.line), ("device", t.device), ("channel", t.channel.value)]
    detail = " ".join(rejection.detail.split())  # no newline may reach line protocol
    if len(detail) > DETAIL_CHARS:
        detail = detail[: DETAIL_CHARS - 1] + "…"
    return encode_point(DEAD_LETTER_MEASUREMENT, tags, [("detail", detail), ("count", count)], at_ms)


def is_silent(health: CollectorHealth, interval_s: float, now_ms: int) -> bool:
    return now_ms - health.at_ms > SILENT_AFTER_INTERVALS * max(interval_s, 1.0) * 1000


def day_start_ms(zone: ZoneInfo, now_ms: int) -> int:
    """The start of the local day ``now_ms`` falls in."""
    local = dt.datetime.fromtimestamp(now_ms / 1000, zone)
    midnight = dt.datetime.combine(local.date(), dt.time(), zone)
    return int(midnight.timestamp() * 1000)


def day_so_far(zone: ZoneInfo, now_ms: int) -> tuple[int, int] | None:
    """Today's whole hours up to now, [start, end), in the line's zone; None before the first has ended.

    The KPI engine accounts whole device-hours, so the hour still running is left out, not guessed.
    """
    start = day_start_ms(zone, now_ms)
    start += -start % HOUR_MS  # a zone whose midnight is not on the hour: from the first whole hour
    end = now_ms - now_ms % HOUR_MS
    return (start, end) if end > start else None


@dataclass(frozen=True, slots=True)
class StateSample:
    at_ms: int
    state: str
    time_class: str | None
    reason: str | None


def current_run(newest_first: Sequence[StateSample]) -> tuple[StateSample, int] | None:
    """The latest state and since when it has held: a state lasts until the next record, and an agent may
    record the same state again (a restart, a reason that changed), which does not end its run."""
    if not newest_first:
        return None
    latest = newest_first[0]
    since = latest.at_ms
    for sample in newest_first[1:]:
        if sample.state != latest.state:
            break
        since = sample.at_ms
    return latest, since

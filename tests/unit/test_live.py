"""The live line's pure parts: a state's run, today's whole hours, the collector's own points."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from pilot_core.contract import Channel, Topic
from pilot_core.live import (
    CollectorHealth,
    StateSample,
    current_run,
    day_so_far,
    dead_letter_line,
    health_line,
    is_silent,
)
from pilot_core.validation import Rejection, RejectReason

SEOUL = ZoneInfo("Asia/Seoul")


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def test_a_state_recorded_again_does_not_end_its_run() -> None:
    samples = [
        StateSample(ms("2026-12-06T10:30+09:00"), "fault", "unplanned_delay", "E2"),
        StateSample(ms("2026-12-06T10:00+09:00"), "fault", "unplanned_delay", "E1"),
        StateSample(ms("2026-12-06T09:00+09:00"), "running", "production", None),
        StateSample(ms("2026-12-06T08:00+09:00"), "fault", "unplanned_delay", None),
    ]
    assert current_run(samples) == (samples[0], ms("2026-12-06T10:00+09:00"))
    assert current_run(samples[2:]) == (samples[2], samples[2].at_ms)
    assert current_run([]) is None


def test_today_is_the_whole_hours_since_local_midnight() -> None:
    assert day_so_far(SEOUL, ms("2026-12-06T13:25+09:00")) == (
        ms("2026-12-06T00:00+09:00"),
        ms("2026-12-06T13:00+09:00"),
    )
    assert day_so_far(SEOUL, ms("2026-12-06T00:59+09:00")) is None  # no whole hour yet
    # Where midnight is not on a UTC hour, from the first whole hour.
    kolkata = ZoneInfo("Asia/Kolkata")
    assert day_so_far(kolkata, ms("2026-12-06T10:10+05:30")) == (
        ms("2026-12-06T00:30+05:30"),
        ms("2026-12-06T09:30+05:30"),
    )


def test_the_collectors_points_are_line_protocol_without_newlines() -> None:
    health = CollectorHealth("collector a", 1_700_000_000_000, 3, 1, 2048, True, False)
    assert health_line(health) == (
        r"collector_health,collector=collector\ a backlog=3i,spool_batches=1i,spool_bytes=2048i,connected=t,healthy=f"
        " 1700000000000"
    )
    topic = Topic("판교", "라인 1", "cobot-01", Channel.STATE)
    line = dead_letter_line(
        "c1", Rejection(RejectReason.UNKNOWN_STATE, 'state "x"\nis not\tdeclared ' + "y" * 400, topic), 5, 2
    )
    assert line.startswith(
        r"dead_letter,channel=state,collector=c1,device=cobot-01,line=라인\ 1,reason=unknown_state,site=판교"
        ' detail="state \\"x\\" is not declared yyy'
    )
    assert line.endswith('…",count=2i 5') and "\n" not in line
    unrouted = dead_letter_line("c1", Rejection(RejectReason.BAD_TOPIC, "no", None), 5)
    assert unrouted == 'dead_letter,collector=c1,reason=bad_topic detail="no",count=1i 5'


def test_a_collector_is_silent_after_three_intervals() -> None:
    health = CollectorHealth("c", 0, 0, 0, 0, True, True)
    assert not is_silent(health, 10, 30_000) and is_silent(health, 10, 30_001)

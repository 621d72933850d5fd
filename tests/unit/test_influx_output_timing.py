"""When InfluxOutput gives up on a batch, and when it writes again: on a clock of its own, so nothing here is timed.

The documented promises: a batch goes to the spool ``spool_after_s`` after its
first failed write (the backoff never sleeps past that deadline), and once an
unreachable InfluxDB answers again, writing resumes within a second (it is
pinged between tries), not after the rest of a backoff of up to 30 s.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from adapters.influxdb import InfluxClient, InfluxSettings
from collector.metrics import CollectorMetrics
from collector.output import MAX_BACKOFF_S, PING_EVERY_S, InfluxOutput


class Clock:
    """Seconds that pass only when the output waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class WaitingOnTheClock(threading.Event):
    """The output's abort event: never set; waiting on it moves the clock on instead of sleeping."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None and timeout >= 0
        self.clock.now += timeout
        return False


class DownUntil:
    """An InfluxDB that cannot be reached (connection refused) until the clock reads ``back_at``."""

    def __init__(self, clock: Clock, back_at: float) -> None:
        self.clock = clock
        self.back_at = back_at
        self.written_at: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.clock.now < self.back_at:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/write":
            self.written_at.append(self.clock.now)
        return httpx.Response(204)


def output_on(clock: Clock, server: DownUntil) -> InfluxOutput:
    client = InfluxClient(InfluxSettings(url="http://influx.test"), transport=httpx.MockTransport(server))
    return InfluxOutput(client, CollectorMetrics(), WaitingOnTheClock(clock), clock=clock)


def test_a_batch_is_given_up_on_at_its_deadline_not_after_a_backoff_past_it() -> None:
    for spool_after_s in (0.5, 3.0, 10.0, 45.0):
        clock = Clock()
        report = output_on(clock, DownUntil(clock, back_at=float("inf"))).write(["m f=1i 1"], spool_after_s)
        assert report.deferred and not report.completed
        assert clock.now == pytest.approx(spool_after_s), (
            f"given up after {clock.now:.2f} s of a {spool_after_s} s deadline"
        )


def test_writing_resumes_within_a_ping_of_an_unreachable_influxdb_answering_again() -> None:
    for back_at in (5.0, 20.0, 100.0):
        clock = Clock()
        server = DownUntil(clock, back_at)
        report = output_on(clock, server).write(["m f=1i 1"])
        assert report.completed and report.written == 1
        assert back_at <= server.written_at[0] <= back_at + PING_EVERY_S, (
            f"InfluxDB answered at {back_at} s, the batch was written at {server.written_at[0]:.2f} s"
            f" (backoff up to {MAX_BACKOFF_S} s)"
        )

"""The collector's health and the messages it refused, written to InfluxDB for the API's live line.

Every ``health_interval_s`` one point says the backlog, the spool and the
connection, and the refusals since the last write go with it (measurements in
``pilot_core.live``). What cannot be written now waits for the next tick, up to
``MAX_PENDING`` lines, oldest dropped first: the dead-letter topic stays the
record of every refused message; this is what the console shows of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from adapters.influxdb import InfluxClient, WriteOutcome
from pilot_core.live import CollectorHealth, dead_letter_line, health_line
from pilot_core.validation import Rejection

log = logging.getLogger("pilot.collector")

MAX_PENDING = 10_000
HEALTH_TIMEOUT_S = 2.0  # a report InfluxDB does not take this quickly waits for the next tick


class HealthReporter:
    def __init__(
        self,
        influx: InfluxClient,
        collector_id: str,
        interval_s: float,
        health: Callable[[int], CollectorHealth],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.influx = influx
        self.collector_id = collector_id
        self.interval_s = interval_s
        self._health = health  # the collector's state at an epoch millisecond
        self._clock = clock
        self._refused: Counter[tuple[int, Rejection]] = Counter()  # by millisecond and rejection
        self._pending: list[str] = []  # lines a failed write left
        self._lock = threading.Lock()
        self._failing = False

    def refused(self, rejection: Rejection) -> None:
        """Note a refused message (any thread)."""
        at_ms = int(self._clock() * 1000)
        with self._lock:
            self._refused[(at_ms, rejection)] += 1

    def run(self, stop: threading.Event) -> None:
        """Report every interval until ``stop``, and once more then if InfluxDB took the last one."""
        while not stop.wait(self.interval_s):
            self.report()
        if not self._failing:
            self.report()

    def report(self) -> bool:
        """Write the health and the refusals noted; True if InfluxDB took them."""
        with self._lock:
            refused, self._refused = self._refused, Counter()
            lines = self._pending + [
                dead_letter_line(self.collector_id, rejection, at_ms, count)
                for (at_ms, rejection), count in sorted(refused.items(), key=lambda item: item[0][0])
            ]
            self._pending = []
        lines.append(health_line(self._health(int(self._clock() * 1000))))
        result = self.influx.write(lines)
        if result.outcome is WriteOutcome.WRITTEN:
            if self._failing:
                log.info("the collector's health is written to InfluxDB again")
            self._failing = False
            return True
        if not self._failing:
            log.warning("could not write the collector's health to InfluxDB (%s); trying again", result.message)
        self._failing = True
        if result.outcome is not WriteOutcome.PARTIAL:  # a refused line would be refused again: not kept
            with self._lock:
                # The health point is kept only as the latest one: the next tick brings a newer one.
                self._pending = (lines[:-1] + self._pending)[-MAX_PENDING:]
        return False

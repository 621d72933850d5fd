"""Writing a batch of lines to InfluxDB until it is durable.

Retries back off (honouring Retry-After), never past the caller's deadline,
and while InfluxDB cannot be reached at all it is pinged every second, so a
write resumes as soon as it answers; a 413 splits the body; a 400 or 422
may be a partial write, so the batch is split until the refused lines are
isolated. Rewriting a line that was already stored lands on the same series
and timestamp, so the split never duplicates data.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.influxdb import InfluxClient, InfluxError, WriteOutcome, WriteResult
from collector.metrics import CollectorMetrics

log = logging.getLogger("pilot.collector.output")

MAX_BACKOFF_S = 30.0
# While InfluxDB cannot be reached, a backoff asks it this often whether it answers again, so that writing
# resumes within about this long of its return rather than after the rest of a backoff of up to 30 s.
PING_EVERY_S = 1.0


@dataclass
class WriteReport:
    written: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)  # (line index, InfluxDB's message)
    completed: bool = True  # False if stopped, or given up on, before the batch was durable
    deferred: bool = False  # given up on: InfluxDB failed for longer than the caller would wait


class InfluxOutput:
    def __init__(
        self,
        client: InfluxClient,
        metrics: CollectorMetrics,
        abort: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.metrics = metrics
        # Set when the collector must stop even though a batch is not durable;
        # waiting on it lets that interrupt a backoff.
        self.abort = abort
        self.clock = clock  # what deadlines and backoffs are measured on

    def write(self, lines: list[str], give_up_after_s: float | None = None) -> WriteReport:
        """Write ``lines``, retrying transient failures until written, aborted, or ``give_up_after_s`` passed.

        A batch given up on may be partly written; writing it again is harmless (same points, same values).
        """
        report = WriteReport()
        started = time.perf_counter()
        deadline = None if give_up_after_s is None else self.clock() + give_up_after_s
        pending: list[tuple[int, int]] = [(0, len(lines))] if lines else []
        attempt = 0
        while pending:
            start, end = pending.pop()
            result = self.client.write(lines[start:end])
            if result.outcome is WriteOutcome.WRITTEN:
                report.written += end - start
                attempt = 0
                continue
            if result.outcome is WriteOutcome.RETRY:
                if self.abort.is_set():
                    report.completed = False
                    break
                if deadline is not None and self.clock() >= deadline:
                    report.completed = False
                    report.deferred = True
                    break
                attempt += 1
                self.metrics.write_retries.inc()
                self._back_off(attempt, result, deadline)
                pending.append((start, end))
                continue
            # TOO_LARGE or PARTIAL: split, or isolate the refused line.
            if end - start == 1:
                if result.outcome is WriteOutcome.TOO_LARGE:
                    report.refused.append((start, f"a single line is over InfluxDB's body limit: {result.message}"))
                else:
                    report.refused.append((start, result.message or f"HTTP {result.status}"))
                continue
            if result.outcome is WriteOutcome.PARTIAL and result.refused_lines:
                pending.extend(self._without_refused(start, end, result, report))
                continue
            middle = (start + end) // 2
            pending.extend([(middle, end), (start, middle)])
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        return report

    @staticmethod
    def _without_refused(start: int, end: int, result: WriteResult, report: WriteReport) -> list[tuple[int, int]]:
        """InfluxDB 3 names the refused lines: refuse those, rewrite the rest."""
        refused = {start + n - 1 for n in result.refused_lines if 1 <= n <= end - start}
        for index in sorted(refused):
            report.refused.append((index, result.message))
        ranges: list[tuple[int, int]] = []
        run_start = start
        for index in range(start, end + 1):
            if index == end or index in refused:
                if run_start < index:
                    ranges.append((run_start, index))
                run_start = index + 1
        return list(reversed(ranges))

    def _back_off(self, attempt: int, result: WriteResult, deadline: float | None) -> None:
        """Wait before the next try: never past ``deadline``, and no longer once an unreachable InfluxDB answers."""
        delay = min(MAX_BACKOFF_S, 0.2 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
        if result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, 300.0))
        if deadline is not None:  # one last try at the deadline, then the caller spools the batch
            delay = min(delay, max(0.0, deadline - self.clock()))
        if attempt in (1, 5) or attempt % 20 == 0:
            log.warning(
                "InfluxDB write failed (%s); retrying in %.1f s (attempt %d); messages stay unacknowledged meanwhile",
                result.message or f"HTTP {result.status}",
                delay,
                attempt,
            )
        if result.status is not None:  # InfluxDB answered, with an error: wait the whole backoff
            self.abort.wait(delay)
            return
        until = self.clock() + delay
        while not self.abort.wait(min(PING_EVERY_S, max(0.0, until - self.clock()))):
            if self.clock() >= until or self._answers():
                return

    def _answers(self) -> bool:
        try:
            self.client.ping()
        except InfluxError:
            return False
        return True

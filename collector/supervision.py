"""Keeping the collector's threads alive: a failure is logged, counted, retried with backoff, and shown in health.

Each thread's work runs under ``Supervisor.run``: an exception it did not
expect starts the work again after a backoff, so no thread ends silently. The
work itself reports failures it retries on its own (a batch whose dead letters
the broker did not confirm, say) with ``failed`` and says ``recovered`` once it
makes progress again; until then the thread counts as failing, and
``/metrics`` shows the collector unhealthy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from collector.metrics import CollectorMetrics

log = logging.getLogger("pilot.collector")

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0


class RetryLater(Exception):
    """A failure the work expected and describes in its message: logged without a traceback."""


class Supervisor:
    def __init__(self, metrics: CollectorMetrics) -> None:
        self.metrics = metrics
        self._failures_in_a_row: dict[str, int] = {}  # threads failing now: failures since their last progress
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def thread(self, name: str, work: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """A daemon thread running ``work`` under supervision; ``stop`` cuts a backoff short."""
        thread = threading.Thread(target=self.run, args=(name, work, stop), name=f"pilot-collector-{name}", daemon=True)
        self._threads.append(thread)
        return thread

    def run(self, name: str, work: Callable[[], None], stop: threading.Event) -> None:
        """Run ``work`` until it returns; start it again, after a backoff, whenever it raises."""
        while True:
            try:
                work()
                return
            except Exception as exc:
                # Once stopping, the wait ends at once: the work runs again to finish what it owes the other threads.
                stop.wait(self.failed(name, exc))

    def failed(self, name: str, exc: BaseException, doing: str = "") -> float:
        """Count and log a failure of thread ``name`` (while ``doing`` something); the backoff before its next try."""
        with self._lock:
            in_a_row = self._failures_in_a_row.get(name, 0) + 1
            self._failures_in_a_row[name] = in_a_row
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(in_a_row - 1, 10))
        self.metrics.thread_failures.labels(name).inc()
        where = f"the {name} thread" + (f" ({doing})" if doing else "")
        if isinstance(exc, RetryLater):
            log.error("%s: %s; retrying in %.1f s (failure %d in a row)", where, exc, delay, in_a_row)
        else:
            log.error(
                "%s failed: %s; retrying in %.1f s (failure %d in a row)",
                where,
                exc,
                delay,
                in_a_row,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        return delay

    def recovered(self, name: str) -> None:
        """Thread ``name`` made progress: it no longer counts as failing."""
        if name in self._failures_in_a_row:  # cheap when nothing failed: called once per batch
            with self._lock:
                if self._failures_in_a_row.pop(name, None) is not None:
                    log.info("the %s thread works again", name)

    @property
    def failing(self) -> list[str]:
        """Threads that failed and have not made progress since."""
        with self._lock:
            names = sorted(self._failures_in_a_row)
        return names

    def all_alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads if thread.ident is not None)

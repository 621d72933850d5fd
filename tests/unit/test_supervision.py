"""The supervisor of the collector's threads: a failure is counted, shown, retried, and never ends a thread."""

from __future__ import annotations

import threading

from collector.metrics import CollectorMetrics
from collector.supervision import RetryLater, Supervisor


def failures(metrics: CollectorMetrics, thread: str) -> float:
    return metrics.registry.get_sample_value("pilot_collector_thread_failures_total", {"thread": thread}) or 0.0


def test_work_that_raises_is_started_again_until_it_returns_and_counts_as_failing_until_it_progresses() -> None:
    metrics = CollectorMetrics()
    supervisor = Supervisor(metrics)
    stop = threading.Event()
    stop.set()  # no backoff waits in a unit test: each retry follows at once
    runs: list[list[str]] = []

    def work() -> None:
        runs.append(list(supervisor.failing))
        if len(runs) == 1:
            raise OSError(28, "No space left on device")
        if len(runs) == 2:
            raise RetryLater("the broker did not confirm the dead letters")

    thread = supervisor.thread("replay", work, stop)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert runs == [[], ["replay"], ["replay"]]  # failing from the first failure on
    assert failures(metrics, "replay") == 2
    assert supervisor.failing == ["replay"]  # it returned, but never said it made progress
    supervisor.recovered("replay")
    assert supervisor.failing == []


def test_the_backoff_doubles_with_failures_in_a_row_up_to_its_bound_and_starts_over_after_progress() -> None:
    supervisor = Supervisor(CollectorMetrics())
    delays = [supervisor.failed("write", RuntimeError("bug")) for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    supervisor.recovered("write")
    assert supervisor.failed("write", RuntimeError("bug")) == 0.5


def test_health_needs_every_started_thread_alive() -> None:
    supervisor = Supervisor(CollectorMetrics())
    release = threading.Event()

    def wait_for_release() -> None:
        release.wait(10)

    running = supervisor.thread("watchdog", wait_for_release, threading.Event())
    supervisor.thread("validate", lambda: None, threading.Event())  # never started: not counted
    running.start()
    assert supervisor.all_alive()
    release.set()
    running.join(10)
    assert not supervisor.all_alive()

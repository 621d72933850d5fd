"""Faults inside the collector itself: its spool's disk full under the replay, its validating child killed.

Real Mosquitto and InfluxDB, a real tmpfs that the test fills and frees. In
each, every message must land exactly once without restarting the collector,
the failure must be counted and shown in ``pilot_collector_healthy``, and no
thread of the collector may have ended.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from adapters.scratch_disk import fill, small_filesystem
from collector.service import Collector
from pilot_core.contract import topic_for
from tests.integration.test_durability import TS, registry_of, wait_for_all
from tests.support import collector_settings, count_points, publish_all, running_collector, wait_until


def telemetry(site: str, line: str, device: str, first: int, count: int) -> list[tuple[str, bytes]]:
    topic = topic_for(site, line, device, "telemetry")
    return [
        (topic, json.dumps({"seq": seq, "ts": TS + seq, "metrics": {"belt_speed": 1.0}}).encode())
        for seq in range(first, first + count)
    ]


def sample(collector: Collector, name: str, **labels: str) -> float | None:
    return collector.metrics.registry.get_sample_value(name, labels)


def thread_failures(collector: Collector, thread: str) -> float:
    return sample(collector, "pilot_collector_thread_failures_total", thread=thread) or 0.0


def all_threads_alive(collector: Collector) -> bool:
    return all(t.is_alive() for t in (collector._worker, collector._writer, collector._replayer))


def test_the_replay_goes_on_through_a_full_disk_and_every_message_lands_once(
    tmp_path: Path, mqtt_settings: MqttSettings, unique_id: str
) -> None:
    """Issue 16, defect 2: moving the replay past a record failed with ENOSPC and killed the replay thread."""
    site, line, device = "시화", "line 7", unique_id
    influx = local_services.influxdb(tmp_path / "influxdb")
    influx.start()
    influx_settings = InfluxSettings(url=influx.url, database="full_disk")
    try:
        with small_filesystem(6) as disk:
            settings = collector_settings(
                mqtt_settings,
                influx_settings,
                f"{unique_id}-collector",
                spool_dir=disk / "spool",
                spool_after_s=0.5,
                batch_size=50,  # many records, so that the replay is still at work while the disk is full
            )
            with running_collector(settings, registry_of(site, line, device)) as collector:
                influx.stop()
                publish_all(mqtt_settings, telemetry(site, line, device, 1, 2000), f"{unique_id}-device")
                wait_until(
                    lambda: collector.backlog == 0 and collector.spool.pending > 0,
                    what="every message spooled and acknowledged",
                )
                ballast = fill(disk)
                influx.start()
                with InfluxClient(influx_settings) as client:
                    wait_until(lambda: count_points(client, "telemetry_conveyor") > 0, what="the replay under way")
                time.sleep(3.0)  # the disk stays full for a while under the replay
                # Whether moving past a record needs new disk space depends on the spool's format; where it
                # does, the failure is counted, shown in health, and retried.
                failures_while_full = thread_failures(collector, "replay")
                healthy_while_full = sample(collector, "pilot_collector_healthy")
                ballast.unlink()
                # More messages, after the space came back: they go behind what the spool holds.
                publish_all(mqtt_settings, telemetry(site, line, device, 2001, 500), f"{unique_id}-device-2")
                wait_for_all(influx_settings, 2500)
                wait_until(lambda: not collector.spool.pending, what="an empty spool")
                wait_until(lambda: collector.backlog == 0, what="everything acknowledged")
                assert all_threads_alive(collector)
                if failures_while_full:
                    assert healthy_while_full == 0.0
                wait_until(lambda: sample(collector, "pilot_collector_healthy") == 1.0, what="healthy again")
    finally:
        influx.stop()


def test_a_batch_whose_validation_failed_is_validated_again_without_a_reconnect(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """Issue 16, defect 3: a failed batch stayed unacknowledged, counted as handled, until the next session."""
    site, line, device = "시화", "line 8", unique_id
    settings = collector_settings(mqtt_settings, influx_settings, f"{unique_id}-collector")
    with running_collector(settings, registry_of(site, line, device)) as collector:
        publish_all(mqtt_settings, telemetry(site, line, device, 1, 100), f"{unique_id}-device")
        wait_for_all(influx_settings, 100)
        # The validating child dies (killed, out of memory): the next batch fails to validate.
        children = list((collector.processor._pool._processes or {}).values())
        assert children
        for child in children:
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
        publish_all(mqtt_settings, telemetry(site, line, device, 101, 100), f"{unique_id}-device")
        wait_for_all(influx_settings, 200)
        wait_until(lambda: collector.backlog == 0, what="everything acknowledged")
        assert thread_failures(collector, "validate") >= 1
        assert collector.metrics.batches.labels("error")._value.get() >= 1
        assert all_threads_alive(collector)
        wait_until(lambda: sample(collector, "pilot_collector_healthy") == 1.0, what="healthy again")

"""Never lose a point: faults under steady load, and InfluxDB ends up with exactly what was published.

Real Mosquitto and InfluxDB processes, a publisher that does not pause, and
faults: InfluxDB stopped (the collector spools to disk meanwhile), InfluxDB
down when the collector starts, and the collector killed with SIGKILL and
started again. Nothing lost, nothing twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from adapters.scratch_disk import fill, small_filesystem
from collector.service import Collector
from collector.spool import Spool
from pilot_core.contract import SUBSCRIPTION, topic_for
from pilot_core.registry import DeviceEntry, DeviceRegistry
from tests.support import collector_settings, count_points, running_collector, wait_until

TS = 1_793_000_000_000
RATE_PER_S = 200
OUTAGE_S = 30.0  # as long as a database restart under a busy disk can take


class SteadyPublisher:
    """A device publishing telemetry at a steady rate on its own thread, QoS 1, until stopped."""

    def __init__(self, mqtt: MqttSettings, site: str, line: str, device: str) -> None:
        self.mqtt = mqtt
        self.topic = topic_for(site, line, device, "telemetry")
        self.client_id = f"{device}-device"
        self.published = 0
        self.unconfirmed: list[int] = []  # seqs the broker never acknowledged
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> SteadyPublisher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(60)
        return self.published

    def _run(self) -> None:
        client = new_client(self.mqtt, self.client_id)
        connect_and_wait(client, self.mqtt)
        infos = []
        while not self._stop.is_set():
            if not client.is_connected():  # the broker is away: wait (buffering is the edge agent's job)
                time.sleep(0.1)
                continue
            for _ in range(RATE_PER_S // 10):
                seq = self.published + 1
                body = {"seq": seq, "ts": TS + seq, "metrics": {"belt_speed": 1.0}}
                infos.append(client.publish(self.topic, json.dumps(body).encode(), qos=1))
                self.published = seq
            time.sleep(0.1)
        # Wait for the broker's PUBACK of every one, resent by paho after a reconnect if need be.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(info.is_published() for info in infos):
            time.sleep(0.1)
        self.unconfirmed = [n + 1 for n, info in enumerate(infos) if not info.is_published()]
        client.disconnect()
        client.loop_stop()


def registry_of(site: str, line: str, device: str) -> DeviceRegistry:
    return DeviceRegistry([DeviceEntry(site=site, line=line, device=device, profile="conveyor")], load_profiles())


def wait_for_all(influx: InfluxSettings, expected: int, timeout_s: float = 60) -> None:
    with InfluxClient(influx) as client:
        try:
            wait_until(
                lambda: count_points(client, "telemetry_conveyor") == expected,
                timeout_s=timeout_s,
                what=f"all {expected} points in InfluxDB",
            )
        except AssertionError as timeout:  # say which are missing
            stored = {
                int(v[1]) for series in client.query('SELECT "seq" FROM "telemetry_conveyor"') for v in series.values
            }
            missing = sorted(set(range(1, expected + 1)) - stored)
            raise AssertionError(f"{timeout}: {len(stored)} stored, missing seq {_ranges(missing)}") from None
        time.sleep(1.0)  # and no more after a while: nothing written twice as a second point
        assert count_points(client, "telemetry_conveyor", field="belt_speed") == expected


def _ranges(numbers: list[int]) -> str:
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}–{b}" if a != b else str(a) for a, b in runs[:10]) + (" …" if len(runs) > 10 else "")


def outcomes(collector: Any) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value
        for m in collector.metrics.batches.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }


def test_influxdb_stopped_under_steady_load_loses_nothing(
    tmp_path: Path, mqtt_settings: MqttSettings, unique_id: str
) -> None:
    site, line, device = "시화", "line 1", unique_id
    influx = local_services.influxdb(tmp_path / "influxdb")
    influx.start()
    influx_settings = InfluxSettings(url=influx.url, database="durable")
    settings = collector_settings(
        mqtt_settings, influx_settings, f"{unique_id}-collector", spool_after_s=1.0, spool_dir=tmp_path / "spool"
    )
    try:
        with running_collector(settings, registry_of(site, line, device)) as collector:
            with SteadyPublisher(mqtt_settings, site, line, device) as publisher:
                time.sleep(2.0)
                influx.stop()
                time.sleep(OUTAGE_S)
                # InfluxDB is down, yet what was received is durable on disk and acknowledged.
                assert collector.spool.pending > 0
                during_outage = publisher.published
                influx.start()
                time.sleep(2.0)
            wait_for_all(influx_settings, publisher.published)
            wait_until(lambda: not collector.spool.pending, what="an empty spool")
            assert collector.metrics.totals().rejected == 0
            batches = outcomes(collector)
            assert batches.get("spooled", 0) > 0 and batches.get("replayed", 0) > 0, batches
        assert during_outage > RATE_PER_S * OUTAGE_S / 2
        assert all(p.stat().st_size == 0 for p in (tmp_path / "spool").glob("*.seg"))  # emptied as replayed
    finally:
        influx.stop()


def test_a_collector_started_while_influxdb_is_down_spools_until_it_is_up(
    tmp_path: Path, mqtt_settings: MqttSettings, unique_id: str
) -> None:
    site, line, device = "시화", "line 2", unique_id
    influx = local_services.influxdb(tmp_path / "influxdb")
    influx_settings = InfluxSettings(url=influx.url, database="late")
    settings = collector_settings(
        mqtt_settings, influx_settings, f"{unique_id}-collector", spool_dir=tmp_path / "spool"
    )
    try:
        with running_collector(settings, registry_of(site, line, device)) as collector:
            with SteadyPublisher(mqtt_settings, site, line, device) as publisher:
                wait_until(lambda: collector.spool.pending > 0, what="batches in the spool")
                influx.start()  # the database does not exist yet either: the collector creates it
                time.sleep(1.0)
            wait_for_all(influx_settings, publisher.published)
    finally:
        influx.stop()


class CollectProcess:
    """`pilot collect` as its own process, configured by environment, with a persistent session made first."""

    def __init__(
        self, folder: Path, mqtt: MqttSettings, influx: InfluxSettings, devices: Path, client_id: str, **extra: str
    ) -> None:
        self.folder = folder
        self.env = {
            **os.environ,
            "PILOT_MQTT__PORT": str(mqtt.port),
            "PILOT_INFLUX__URL": influx.url,
            "PILOT_INFLUX__DATABASE": influx.database,
            "PILOT_DEVICES_FILE": str(devices),
            "PILOT_CLIENT_ID": client_id,  # the same session across restarts
            "PILOT_METRICS_PORT": "0",
            "PILOT_FLUSH_INTERVAL_S": "0.2",
            **extra,
        }
        self.process: subprocess.Popen[bytes] | None = None
        # The session exists before the device publishes, as in production.
        share = extra.get("PILOT_SHARE_GROUP")
        primer = new_client(mqtt, client_id)
        connect_and_wait(primer, mqtt, persistent_session_s=3600)
        primer.subscribe(f"$share/{share}/{SUBSCRIPTION}" if share else SUBSCRIPTION, qos=1)
        time.sleep(0.5)
        primer.disconnect()
        primer.loop_stop()

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "pilot", "collect"], env=self.env, cwd=self.folder)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)  # no flush, no goodbye
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


def conveyor_registry_file(folder: Path, site: str, line: str, device: str) -> Path:
    devices = folder / "devices.yaml"
    devices.write_text(f"devices:\n  - {{site: {site}, line: {line}, device: '{device}', profile: conveyor}}\n")
    return devices


def test_a_collector_killed_under_load_and_restarted_loses_nothing(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    site, line, device = "시화", "line 3", unique_id
    devices = conveyor_registry_file(tmp_path, site, line, device)
    collector = CollectProcess(tmp_path, mqtt_settings, influx_settings, devices, f"collect-{unique_id}")
    with InfluxClient(influx_settings) as client, SteadyPublisher(mqtt_settings, site, line, device) as publisher:
        client.ensure_database()  # so that counting works before the collector's first write
        try:
            collector.start()
            wait_until(lambda: count_points(client, "telemetry_conveyor") > 0, what="the first points")
            time.sleep(1.0)
            collector.kill()
            time.sleep(2.0)  # the device keeps publishing; the broker queues for the session
            collector.start()
            time.sleep(2.0)
            publisher.stop()
            wait_for_all(influx_settings, publisher.published)
        finally:
            publisher.stop()
            collector.stop()


def test_one_of_two_shared_subscription_collectors_killed_loses_nothing(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """Mosquitto keeps sending a disconnected persistent member its share: it must come back (see the docs)."""
    site, line, device = "시화", "line 6", unique_id
    devices = conveyor_registry_file(tmp_path, site, line, device)
    collectors = [
        CollectProcess(
            tmp_path / name,
            mqtt_settings,
            influx_settings,
            devices,
            f"collect-{unique_id}-{name}",
            PILOT_SHARE_GROUP=f"group-{unique_id}",
        )
        for name in ("a", "b")
    ]
    with InfluxClient(influx_settings) as client, SteadyPublisher(mqtt_settings, site, line, device) as publisher:
        client.ensure_database()
        try:
            for collector in collectors:
                collector.folder.mkdir()
                collector.start()
            wait_until(lambda: count_points(client, "telemetry_conveyor") > 0, what="the first points")
            time.sleep(1.0)
            collectors[0].kill()
            time.sleep(3.0)  # the survivor keeps collecting its share; the broker queues the dead member's
            landed_meanwhile = count_points(client, "telemetry_conveyor")
            collectors[0].start()
            time.sleep(2.0)
            publisher.stop()
            wait_for_all(influx_settings, publisher.published)
            assert landed_meanwhile > 0
        finally:
            publisher.stop()
            for collector in collectors:
                collector.stop()


def test_the_broker_restarted_under_load_loses_nothing(
    tmp_path: Path, influx_settings: InfluxSettings, unique_id: str
) -> None:
    site, line, device = "시화", "line 4", unique_id
    broker = local_services.mosquitto(tmp_path / "mosquitto", persistence=True)
    broker.start()
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
    settings = collector_settings(mqtt, influx_settings, f"{unique_id}-collector", spool_dir=tmp_path / "spool")
    try:
        with running_collector(settings, registry_of(site, line, device)) as collector:
            with SteadyPublisher(mqtt, site, line, device) as publisher:
                time.sleep(2.0)
                broker.restart()  # saves its sessions and queued messages, and loads them again
                time.sleep(3.0)
            assert not publisher.unconfirmed, f"the broker never confirmed seq {_ranges(publisher.unconfirmed)}"
            wait_for_all(influx_settings, publisher.published)
            wait_until(lambda: collector.metrics.connected._value.get() == 1, what="the collector reconnected")
    finally:
        broker.stop()


def test_a_session_that_stops_delivering_is_noticed_and_reconnected(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    site, line, device = "시화", "line 5", unique_id
    settings = collector_settings(mqtt_settings, influx_settings, f"{unique_id}-collector", watchdog_s=1.5)
    with running_collector(settings, registry_of(site, line, device)) as collector:
        time.sleep(1.0)  # its subscriptions are in place and heartbeats come back
        # As if the broker had lost our subscriptions while the connection stayed up.
        collector._mqtt.unsubscribe([settings.subscription, collector.heartbeat_topic])
        wait_until(lambda: collector.metrics.watchdog_reconnects._value.get() >= 1, timeout_s=15, what="the watchdog")
        wait_until(lambda: collector.metrics.connected._value.get() == 1, what="the reconnect")
        with SteadyPublisher(mqtt_settings, site, line, device) as publisher:
            time.sleep(1.0)
        wait_for_all(influx_settings, publisher.published)


@dataclass
class FullSpoolDisk:
    """A collector spooling to a small disk while InfluxDB is down, the disk then filled by a ballast."""

    collector: Collector
    publisher: SteadyPublisher
    influx: local_services.InfluxService
    influx_settings: InfluxSettings
    disk: Path
    ballast: Path


@contextmanager
def spooling_onto_a_full_disk(
    mqtt_settings: MqttSettings, unique_id: str, tmp_path: Path, line: str
) -> Iterator[FullSpoolDisk]:
    """InfluxDB stopped under a steady publisher, a few batches spooled, then the spool's 4 MiB disk filled.
    InfluxDB is stopped again on the way out, whatever the test did with it."""
    site, device = "시화", unique_id
    influx = local_services.influxdb(tmp_path / "influxdb")
    influx.start()
    influx_settings = InfluxSettings(url=influx.url, database="disk_full")
    with small_filesystem(4) as disk:
        settings = collector_settings(
            mqtt_settings, influx_settings, f"{unique_id}-collector", spool_after_s=1.0, spool_dir=disk / "spool"
        )
        try:
            with (
                running_collector(settings, registry_of(site, line, device)) as collector,
                SteadyPublisher(mqtt_settings, site, line, device) as publisher,
            ):
                time.sleep(1.0)
                influx.stop()
                wait_until(lambda: collector.spool.pending >= 3, timeout_s=60, what="batches in the spool")
                ballast = fill(disk, leave_bytes=0)
                yield FullSpoolDisk(collector, publisher, influx, influx_settings, disk, ballast)
        finally:
            influx.stop()


def test_a_spool_disk_that_fills_and_frees_under_load_loses_nothing(
    mqtt_settings: MqttSettings, unique_id: str, tmp_path: Path
) -> None:
    """Issue 16: InfluxDB down, the spool's disk full mid-stream, then freed, then InfluxDB back: exact count."""
    with spooling_onto_a_full_disk(mqtt_settings, unique_id, tmp_path, "line 7") as run:
        collector = run.collector
        wait_until(
            lambda: outcomes(collector).get("spool_full", 0) + outcomes(collector).get("error", 0) > 0,
            timeout_s=60,
            what="an append refused by the full disk",
        )
        run.ballast.unlink()
        time.sleep(3.0)  # batches keep coming while InfluxDB is still down
        run.influx.start()
        time.sleep(2.0)
        run.publisher.stop()
        wait_for_all(run.influx_settings, run.publisher.published)
        wait_until(lambda: not collector.spool.pending, what="an empty spool")
        batches = outcomes(collector)
        assert batches.get("spool_full", 0) > 0 and "error" not in batches, batches  # refused, not failed
        collector.stop()
        # And the next start finds nothing to cut or to replay twice.
        assert Spool(run.disk / "spool", collector.settings.spool_quota_mb * 1024 * 1024).pending == 0
        wait_for_all(run.influx_settings, run.publisher.published)


def test_a_batch_the_full_disk_refused_is_spooled_once_the_disk_is_freed_while_influxdb_stays_down(
    mqtt_settings: MqttSettings, unique_id: str, tmp_path: Path
) -> None:
    """A batch that neither InfluxDB nor the full spool took waited for InfluxDB alone: with the disk freed and
    InfluxDB still down, nothing more was spooled or acknowledged. The spool is tried again after each
    spool_after_s."""
    with spooling_onto_a_full_disk(mqtt_settings, unique_id, tmp_path, "line 8") as run:
        collector = run.collector
        wait_until(
            lambda: outcomes(collector).get("spool_full", 0) >= 2,
            timeout_s=60,
            what="the spool refusing a batch before and after InfluxDB's spool_after_s",
        )
        time.sleep(3.0)  # the batch is waiting for InfluxDB now
        run.ballast.unlink()
        spooled = outcomes(collector).get("spooled", 0)
        wait_until(
            lambda: outcomes(collector).get("spooled", 0) > spooled,
            timeout_s=60,
            what="a batch spooled after the disk was freed, InfluxDB still down",
        )
        run.influx.start()
        run.publisher.stop()
        wait_for_all(run.influx_settings, run.publisher.published)
        wait_until(lambda: not collector.spool.pending, what="an empty spool")

"""The edge agent cut off from the broker: it keeps recording to disk, then sends everything, as it was."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from adapters.telemetry_reader import TelemetryReader
from api.main import create_app
from edge_agent import Agent
from edge_agent.outbox import Outbox
from pilot.cli import app
from pilot_core.registry import DeviceEntry, DeviceRegistry
from tests.api_support import admin_client
from tests.support import collector_settings, count_points, running_collector, wait_until

TS = 1_793_000_000_000


def test_an_agent_cut_off_from_the_broker_sends_everything_with_its_original_timestamps_and_seq(
    tmp_path: Path, influx_settings: InfluxSettings, unique_id: str
) -> None:
    site, line, device = "판교", "조립 1", unique_id
    catalog = load_profiles()
    registry = DeviceRegistry([DeviceEntry(site=site, line=line, device=device, profile="conveyor")], catalog)
    broker = local_services.mosquitto(tmp_path / "mosquitto")
    broker.start()
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
    settings = collector_settings(mqtt, influx_settings, f"{unique_id}-collector", spool_dir=tmp_path / "spool")
    try:
        with running_collector(settings, registry), InfluxClient(influx_settings) as client:
            agent = Agent(mqtt, site, line, device, catalog["conveyor"], tmp_path / "agent")
            metrics_port = local_services.free_port()
            agent.serve_metrics("127.0.0.1", metrics_port)
            agent.start()
            for i in range(50):
                agent.telemetry({"belt_speed": 1.0, "jam_detected": False}, ts_ms=TS + i * 1000)
            wait_until(lambda: agent.pending == 0, what="the first 50 sent")

            broker.stop()  # the plant network drops
            for i in range(50, 150):
                agent.telemetry({"belt_speed": 1.5, "jam_detected": False}, ts_ms=TS + i * 1000)
            agent.state("running", ts_ms=TS + 150_000)
            assert agent.pending >= 101  # on disk, waiting
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            assert "pilot_agent_outbox_messages 101.0" in metrics and "pilot_agent_connected 0.0" in metrics
            time.sleep(2.0)
            broker.start()

            wait_until(lambda: agent.pending == 0, timeout_s=60, what="the outbox to empty")
            wait_until(
                lambda: (
                    count_points(client, "telemetry_conveyor") == 150
                    and count_points(client, "state") == 2
                    and count_points(client, "status") == 3
                ),
                timeout_s=60,
                what="150 samples, the state (and again with the second birth), and birth, will and birth in InfluxDB",
            )
            # The state recorded while cut off, at its own time; then the same state stated again by the agent with
            # its reconnection's birth, stored with that birth, after the will: the device is not left unknown.
            (states,) = client.query('SELECT "state" FROM "state"')
            (births,) = client.query('SELECT "online" FROM "status" WHERE "online" = true')
            assert [row[1:] for row in states.values] == [["running"], ["running"]]
            assert states.values[0][0] == TS + 150_000 and states.values[1][0] == births.values[-1][0]
            (statuses,) = client.query('SELECT "seq", "online" FROM "status"')
            # Online; offline when the broker lost it (its last will, seq just after the birth, stored when the
            # collector received it); online again. In that order in time, as the devices' status reads them.
            assert [row[1:] for row in statuses.values] == [[1, True], [2, False], [3, True]]
            (series,) = client.query(
                f'SELECT "seq", "belt_speed" FROM "telemetry_conveyor" WHERE "device" = \'{device}\' '
                f"AND time = {TS + 120_000}ms"
            )
            assert series.values[0][1:] == [121, 1.5]  # its own timestamp and seq, not the time it was sent
            assert agent.stop() == 0
    finally:
        broker.stop()


def test_pilot_agent_publishes_a_profiles_telemetry_and_its_birth(
    tmp_path: Path, mqtt_settings: MqttSettings, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[str] = []
    watcher = new_client(mqtt_settings, f"{unique_id}-watch")
    watcher.on_message = lambda client, userdata, message: received.append(message.topic.rsplit("/", 1)[1])
    connect_and_wait(watcher, mqtt_settings)
    watcher.subscribe(f"pilot/v1/시화/L1/{unique_id}/#", qos=1)
    time.sleep(0.3)
    monkeypatch.setenv("PILOT_MQTT__PORT", str(mqtt_settings.port))
    where = ["--site", "시화", "--line", "L1", "--profile", "energy_meter", "--outbox", str(tmp_path / "outbox")]
    result = CliRunner().invoke(app, ["agent", unique_id, *where, "--count", "20", "--interval-s", "0.01"])
    assert result.exit_code == 0, result.output
    assert "recorded 20 samples; 0 still in the outbox" in result.output
    wait_until(lambda: received.count("telemetry") == 20 and received.count("status") == 1, what="the agent's messages")
    watcher.disconnect()
    watcher.loop_stop()


def test_a_message_reusing_the_births_packet_id_after_the_wrap_stays_in_the_outbox_until_its_own_puback(
    tmp_path: Path, unique_id: str
) -> None:
    """Past 65,535 publishes paho's packet ids start again at 1, the birth's: that id must not pass for acked."""
    broker = local_services.mosquitto(tmp_path / "mosquitto")
    broker.start()
    assert broker.process is not None
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
    agent = Agent(mqtt, "판교", "L1", unique_id, load_profiles()["conveyor"], tmp_path / "agent")
    try:
        agent.start()
        agent.telemetry({"belt_speed": 1.0, "jam_detected": False}, ts_ms=TS)
        # Acknowledged in order: the birth (packet id 1), then this message (id 2).
        wait_until(lambda: agent.pending == 0, what="the first message acknowledged")
        # Test-only: start paho's packet ids near the wrap instead of publishing 65,530 messages first.
        agent._client._last_mid = 65_533  # the next four get the ids 65534, 65535, 1, 2
        os.kill(broker.process.pid, signal.SIGSTOP)  # the broker hangs: nothing is acknowledged from here on
        try:
            for i in range(1, 5):
                agent.telemetry({"belt_speed": 2.0, "jam_detected": False}, ts_ms=TS + i * 1000)
            wait_until(lambda: agent._client._last_mid == 2, what="the four messages handed to paho")
            # What is on disk now is what a killed agent would send again: none of the four was acknowledged.
            on_disk = Outbox(tmp_path / "agent" / "outbox.sqlite", quota_bytes=1 << 20)
            seqs = [json.loads(payload)["seq"] for _, _, payload in on_disk.after(0, 10)]
            on_disk.close()
            assert seqs == [2, 3, 4, 5]
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        wait_until(lambda: agent.pending == 0, what="the four acknowledged once the broker runs again")
        assert agent.stop() == 0
    finally:
        broker.stop()


def test_an_agent_killed_after_its_birth_shows_offline_in_the_devices_status(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """The broker publishes the will when the connection dies; the status must say offline from then on."""
    site, line, device = f"시화-{unique_id}", "라인 1", "conveyor-01"
    entry = DeviceEntry(site=site, line=line, device=device, profile="conveyor")
    devices_file = tmp_path / "devices.yaml"
    devices_file.write_text(yaml.safe_dump({"devices": [entry.model_dump()]}, allow_unicode=True), encoding="utf-8")
    settings = collector_settings(
        mqtt_settings,
        influx_settings,
        f"{unique_id}-collector",
        devices_file=devices_file,
        database_url=f"sqlite:///{tmp_path / 'pilot.db'}",
    )
    registry = DeviceRegistry([entry], load_profiles(settings.profiles_dir))
    environment = {**os.environ, "PILOT_MQTT__HOST": "127.0.0.1", "PILOT_MQTT__PORT": str(mqtt_settings.port)}
    where = ["--site", site, "--line", line, "--profile", "conveyor", "--outbox", str(tmp_path / "outbox")]
    of_device = f"\"site\" = '{site}'"
    with running_collector(settings, registry), InfluxClient(influx_settings) as client:
        agent = subprocess.Popen(
            [sys.executable, "-m", "pilot", "agent", device, *where, "--interval-s", "0.1"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: (
                    count_points(client, "status", where=of_device) == 1
                    and count_points(client, "telemetry_conveyor", where=of_device) >= 3
                ),
                what="the agent's birth and its first samples stored",
            )
        finally:
            agent.kill()  # no DISCONNECT: the kernel closes the socket, the broker publishes the will
            agent.wait(10)
        wait_until(lambda: count_points(client, "status", where=of_device) == 2, what="the will stored")
        (statuses,) = client.query(f'SELECT "online", "seq" FROM "status" WHERE {of_device}')
        assert [row[1:] for row in statuses.values] == [[True, 1], [False, 2]]  # by time: the will after the birth
        (samples,) = client.query(f'SELECT "seq" FROM "telemetry_conveyor" WHERE {of_device}')
        last_sample_ms = max(row[0] for row in samples.values)
    with admin_client(create_app(settings)) as api:
        response = api.get("/v1/devices/status")
        assert response.status_code == 200, response.text
        (status,) = [d for d in response.json() if d["site"] == site]
        assert (status["device"], status["online"]) == (device, False)
        went_offline_ms = dt.datetime.fromisoformat(status["status_at"]).timestamp() * 1000
        assert went_offline_ms >= last_sample_ms  # the outage: after the last sample it sent, not at its birth


def test_a_broker_restart_leaves_the_state_unknown_only_until_the_agent_s_next_birth(
    tmp_path: Path, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """The broker, not the agent, went away: its will says the connection was lost, yet the agent ran on, recording,
    and its state is known before, during and after. The KPI engine's rows must not leave it unknown after the birth."""
    site, line, device = "판교", "조립 1", unique_id
    catalog = load_profiles()
    profile = catalog["conveyor"]
    registry = DeviceRegistry([DeviceEntry(site=site, line=line, device=device, profile="conveyor")], catalog)
    broker = local_services.mosquitto(tmp_path / "mosquitto")
    broker.start()
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
    settings = collector_settings(mqtt, influx_settings, f"{unique_id}-collector", spool_dir=tmp_path / "spool")
    of_device = f"\"device\" = '{device}'"
    try:
        with running_collector(settings, registry), InfluxClient(influx_settings) as client:
            agent = Agent(mqtt, site, line, device, profile, tmp_path / "agent")
            agent.start()
            began_ms = int(time.time() * 1000)
            agent.state("running", ts_ms=began_ms)
            wait_until(lambda: count_points(client, "state", where=of_device) == 1, what="running stored")
            broker.stop()  # the broker restarts; the agent and its machine go on
            time.sleep(1.0)
            broker.start()
            wait_until(
                lambda: count_points(client, "status", where=of_device) == 3, timeout_s=60, what="birth, will, birth"
            )
            wait_until(
                lambda: count_points(client, "state", where=of_device) == 2, what="the state again, with the birth"
            )
            ended_ms = int(time.time() * 1000)
            assert agent.stop() == 0
            hours = list(TelemetryReader(client).device_hours(site, line, device, profile, began_ms, ended_ms))
            (statuses,) = client.query(f'SELECT "online" FROM "status" WHERE {of_device}')
        events = sorted((e for h in hours for e in h.events), key=lambda e: e.ts_ms)
        will_ms = next(row[0] for row in statuses.values if row[1] is False)
        birth_ms = [row[0] for row in statuses.values if row[1] is True][-1]
        # The will leaves the state unknown only until the agent's next birth, with which it states its state
        # again: not until its machine next changes state.
        after_will = [(e.ts_ms, e.state) for e in events if e.ts_ms >= will_ms]
        assert after_will == [(will_ms, None), (birth_ms, "running")], [(e.ts_ms - will_ms, e.state) for e in events]
    finally:
        broker.stop()

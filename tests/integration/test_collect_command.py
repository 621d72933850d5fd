"""`pilot collect` as an operator runs it: environment configuration, /metrics, clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.local_services import free_port
from adapters.mqtt import MqttSettings
from pilot_core.contract import topic_for
from tests.support import count_points, publish_all, wait_until

TS = 1_793_577_600_000


def test_collect_runs_from_environment_serves_metrics_and_stops_cleanly(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str, tmp_path: Path
) -> None:
    devices = tmp_path / "devices.yaml"
    devices.write_text(
        f"devices:\n  - {{site: 시화, line: 'L 1', device: '{unique_id}', profile: environment_sensor}}\n",
        encoding="utf-8",
    )
    metrics_port = free_port()
    env = {
        **os.environ,
        "PILOT_MQTT__PORT": str(mqtt_settings.port),
        "PILOT_INFLUX__URL": influx_settings.url,
        "PILOT_INFLUX__DATABASE": influx_settings.database,
        "PILOT_DEVICES_FILE": str(devices),
        "PILOT_CLIENT_ID": f"collect-{unique_id}",
        "PILOT_METRICS_PORT": str(metrics_port),
        "PILOT_FLUSH_INTERVAL_S": "0.2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pilot", "collect"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        def serving() -> bool:
            try:
                return httpx.get(metrics_url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None  # stop waiting if it died; asserted below

        wait_until(serving, 30, "the collector's /metrics")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        topic = topic_for("시화", "L 1", unique_id, "telemetry")
        messages = [
            (
                topic,
                json.dumps({"seq": i, "ts": TS + i * 1000, "metrics": {"temperature": 21.5, "humidity": 40}}).encode(),
            )
            for i in range(50)
        ]
        messages.append((topic, b"not json"))
        publish_all(mqtt_settings, messages, f"pub-{unique_id}")
        with InfluxClient(influx_settings) as client:
            wait_until(lambda: count_points(client, "telemetry_environment_sensor") == 50, 30, "50 points")

        def scraped() -> str:
            return httpx.get(metrics_url, timeout=2).text

        wait_until(
            lambda: 'pilot_collector_messages_rejected_total{reason="malformed_json"} 1.0' in scraped(), 10, "rejection"
        )
        text = scraped()
        assert "pilot_collector_messages_received_total 51.0" in text
        assert "pilot_collector_points_written_total 50.0" in text
        assert 'pilot_collector_batches_total{outcome="written"}' in text
        assert "pilot_collector_write_seconds_bucket" in text
        assert "pilot_collector_backlog_messages 0.0" in text
        assert "pilot_collector_mqtt_connected 1.0" in text
        assert "pilot_collector_healthy 1.0" in text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    assert "collector stopped" in stderr

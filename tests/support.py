"""Helpers shared by the integration tests."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import yaml
from typer.testing import CliRunner

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from api.examples import PANGYO_PLAN
from collector.service import Collector
from collector.settings import CollectorSettings
from pilot.cli import app
from pilot.demo import DemoResult, run_demo
from pilot_core.registry import DeviceEntry, DeviceRegistry
from simulators.scenario import BUNDLED_SCENARIOS, load_scenario


def run_pilot(*args: str) -> dict[str, Any]:
    """Run `pilot …`, which must succeed; the parsed --json output if it printed one."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else {}


def collector_settings(
    mqtt: MqttSettings, influx: InfluxSettings, client_id: str, **overrides: Any
) -> CollectorSettings:
    values: dict[str, Any] = {
        "metrics_port": 0,
        "flush_interval_s": 0.2,
        "shutdown_timeout_s": 10.0,
        "spool_dir": Path(tempfile.mkdtemp(prefix="pilot-spool-")),  # each collector its own
    }
    values.update(overrides)
    return CollectorSettings(mqtt=mqtt, influx=influx, client_id=client_id, **values)


def write_registry(folder: Path, devices: list[dict[str, Any]]) -> Path:
    """``folder/devices.yaml``, the device registry file listing ``devices``."""
    path = folder / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}, allow_unicode=True), encoding="utf-8")
    return path


def two_day_plan(
    start: dt.datetime, *, name: str, site: str, line: str, devices: list[str], output_devices: list[str], shift: str
) -> dict[str, Any]:
    """The Pangyo example plan on ``devices`` (no per-device products, no energy meters): a baseline day from
    ``start``, then a pilot day, in UTC with one daily shift ``"HH:MM-HH:MM"``."""
    body = copy.deepcopy(PANGYO_PLAN)
    body.update(name=name, site=site, line=line, devices=devices, output_devices=output_devices, energy_meters=[])
    for product in body["products"]:
        product["per_device"] = {}
    middle = start + dt.timedelta(days=1)
    body["windows"] = [
        {"name": "baseline", "phase": "baseline", "start": start.isoformat(), "end": middle.isoformat()},
        {
            "name": "pilot",
            "phase": "pilot",
            "start": middle.isoformat(),
            "end": (middle + dt.timedelta(days=1)).isoformat(),
        },
    ]
    shift_start, shift_end = shift.split("-")
    body["calendar"] = {"timezone": "UTC", "shifts": [{"start": shift_start, "end": shift_end}]}
    return body


def registered_collector(
    folder: Path,
    mqtt: MqttSettings,
    influx: InfluxSettings,
    client_id: str,
    entries: list[DeviceEntry],
    **overrides: Any,
) -> tuple[CollectorSettings, DeviceRegistry]:
    """Collector settings whose registry file (``folder/devices.yaml``) holds ``entries``, a SQLite database in
    ``folder``, and that registry."""
    devices_file = write_registry(folder, [entry.model_dump() for entry in entries])
    settings = collector_settings(
        mqtt, influx, client_id, devices_file=devices_file, database_url=f"sqlite:///{folder / 'pilot.db'}", **overrides
    )
    return settings, DeviceRegistry(entries, load_profiles(settings.profiles_dir))


@contextmanager
def running_collector(settings: CollectorSettings, registry: DeviceRegistry) -> Iterator[Collector]:
    collector = Collector(settings, registry)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


def publish_all(settings: MqttSettings, messages: Iterable[tuple[str, bytes]], client_id: str) -> int:
    """Publish with QoS 1 and wait for every PUBACK."""
    client = new_client(settings, client_id)
    client.max_inflight_messages_set(1000)
    connect_and_wait(client, settings)
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(30)
        assert info.is_published()
    client.disconnect()
    client.loop_stop()
    return len(infos)


def publish_for_reason_codes(
    client: paho.Client, settings: MqttSettings, messages: Iterable[tuple[str, bytes]]
) -> list[int]:
    """Connect ``client``, publish ``messages`` with QoS 1 and return each PUBACK's reason code, in order (MQTT 5:
    a refused message's PUBACK carries its refusal, a code of 0x80 or more)."""
    acks: dict[int, int] = {}
    acked = threading.Condition()

    def on_publish(client: paho.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        with acked:
            acks[mid] = reason.value
            acked.notify_all()

    client.on_publish = on_publish
    connect_and_wait(client, settings)
    sent = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    with acked:
        assert acked.wait_for(lambda: len(acks) == len(sent), 10)
    return [acks[info.mid] for info in sent]


def subscribed_client(
    settings: MqttSettings,
    client_id: str,
    subscriptions: Iterable[str],
    on_message: Callable[[paho.Client, object, paho.MQTTMessage], None],
) -> paho.Client:
    """A connected client whose QoS 1 ``subscriptions`` the broker has acknowledged, each message to ``on_message``."""
    client = new_client(settings, client_id)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    connect_and_wait(client, settings)
    client.subscribe([(subscription, 1) for subscription in subscriptions])
    assert subscribed.wait(5)
    return client


class DeadLetters:
    """Collects what arrives on the dead-letter topic."""

    def __init__(self, settings: MqttSettings, root: str, client_id: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = subscribed_client(settings, client_id, [f"{root}/#"], self._on_message)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def count_points(client: InfluxClient, measurement: str, field: str = "seq", where: str = "") -> int:
    series = client.query(f'SELECT count("{field}") FROM "{measurement}"' + (f" WHERE {where}" if where else ""))
    return int(series[0].values[0][1]) if series else 0


@dataclass
class ServedDemo:
    """What `pilot demo` printed up to its API serving, and the lines it prints after (docs: README)."""

    process: subprocess.Popen[str]
    address: str
    printed: str  # everything before the API served, the before/after table included
    link_line: str  # the console's one-time sign-in link
    link: str
    key_file: Path
    curl: str  # the first curl line: the demonstration's comparison


@contextmanager
def served_demo(scenario: Path, state_dir: Path, wait_s: float = 300) -> Iterator[ServedDemo]:
    """`pilot demo` left serving its API on a free port, as a user runs it; stopped with Ctrl-C (SIGINT) after."""
    command = [sys.executable, "-m", "pilot", "demo", str(scenario), "--api-port", "0", "--state-dir", str(state_dir)]
    demo = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "160"}
    )
    try:
        assert demo.stdout is not None
        output: list[str] = []
        address = None
        deadline = time.monotonic() + wait_s
        while address is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            output.append(line)
            if match := re.search(r"API serving at (http://\S+)", line):
                address = match.group(1)
        assert address, "".join(output)
        link_line = demo.stdout.readline()
        link = re.search(r"open the web console, signed in \(a one-time link, for 30 minutes\): (\S+)$", link_line)
        assert link, link_line
        key_line = demo.stdout.readline()
        key_file = re.search(r"an admin API key is in (\S+);", key_line)
        assert key_file, key_line
        curl = demo.stdout.readline().strip()
        yield ServedDemo(demo, address, "".join(output), link_line, link.group(1), Path(key_file.group(1)), curl)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise


def first_answer(url: str, wait_s: float = 30, **request: Any) -> httpx.Response:
    """GET ``url`` once the server answers at all (a server just started may not accept connections yet)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return httpx.get(url, **request)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


def short_scenario(tmp_path: Path) -> Path:
    """The bundled cell, but two days of each period, so the test stays quick."""
    text = (BUNDLED_SCENARIOS / "pangyo_cobot_cell.yaml").read_text(encoding="utf-8")
    text = text.replace("start: 2026-10-05, days: 14", "start: 2026-10-05, days: 2")
    text = text.replace("start: 2026-10-26, days: 14", "start: 2026-10-26, days: 2")
    path = tmp_path / "short.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def backfilled_short_demo(
    folder: Path,
    mosquitto: local_services.LocalService,
    influxdb: local_services.InfluxService,
    database_prefix: str,
    **settings: Any,
) -> tuple[DemoResult, CollectorSettings]:
    """Two days of baseline and two of pilot of the bundled cobot cell, backfilled through the whole pipeline into a
    database of its own; and the settings an API serving it reads (``settings`` added to them)."""
    catalog = load_profiles()
    scenario = load_scenario(short_scenario(folder), catalog)
    database = f"{database_prefix}_{uuid.uuid4().hex[:12]}"
    result = run_demo(scenario, catalog, mosquitto, influxdb, folder, influx_database=database, say=lambda _: None)
    assert result.complete and result.evaluation is not None
    return result, CollectorSettings(
        mqtt=MqttSettings(host="127.0.0.1", port=mosquitto.port),
        influx=InfluxSettings(url=influxdb.url, database=database),
        devices_file=folder / "devices.yaml",
        database_url=result.database_url,
        metrics_port=0,
        **settings,
    )

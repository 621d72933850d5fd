"""The collector as a Sparkplug B host application, fed by a third-party edge-node library (pysparkplug).

Real Mosquitto, real InfluxDB, the real collector; the edge node is pysparkplug's, publishing protobuf it
encodes itself. Each failure a host meets (a missed birth, a seq gap, an unknown alias, a redelivered
message, a stale death, hostile bytes, the collector killed mid-stream) has its test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pysparkplug as spb
import pytest
import yaml

from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from adapters.sparkplug import sparkplug_b_pb2 as pb
from collector.settings import CollectorSettings
from pilot_core.registry import DeviceEntry, DeviceRegistry
from tests.support import (
    DeadLetters,
    collector_settings,
    count_points,
    running_collector,
    subscribed_client,
    wait_until,
)

# pysparkplug 0.6.1 pins paho-mqtt<2 (scripts/setup.sh installs it without that pin). On paho-mqtt 2 it runs
# with VERSION1 callbacks; the one call paho 2 dropped is message_retry_set, since paho 2 retries by itself.
if not hasattr(paho.Client, "message_retry_set"):
    paho.Client.message_retry_set = lambda self, retry: None  # type: ignore[attr-defined]

pytestmark = pytest.mark.filterwarnings("ignore:Callback API version 1 is deprecated:DeprecationWarning")

T0 = 1_793_577_600_000
DEVICE = "belt1"
DEAD_ROOT = "pilot/deadletter/v1"


def registry(group: str, node: str) -> DeviceRegistry:
    return DeviceRegistry([DeviceEntry(site=group, line=node, device=DEVICE, profile="conveyor")], load_profiles())


def device_map(group: str, node: str) -> dict[str, Any]:
    return {
        "group": group,
        "edge_node": node,
        "device": DEVICE,
        "metrics": {"Motor/Current": "motor_current", "Status/Code": "code", "Counters/Boxes": "boxes"},
        "state": {"item": "code", "map": {1: "running", 2: "jammed"}},
        "production": {"product": "box", "counters": {"produced": {"item": "boxes"}}},
    }


def host_settings(
    mqtt: MqttSettings, influx: InfluxSettings, group: str, node: str, client_id: str, **overrides: Any
) -> CollectorSettings:
    sparkplug = {
        "enabled": True,
        "host_id": f"host-{client_id}",
        "groups": [group],
        "rebirth_interval_s": 0,
        "devices": [device_map(group, node)],
    }
    return collector_settings(mqtt, influx, client_id, sparkplug=sparkplug, dead_letter_topic=DEAD_ROOT, **overrides)


def birth_metrics(speed: float = 1.0, current: float = 10.0, code: int = 1, boxes: int = 100) -> list[spb.Metric]:
    return [
        spb.Metric(T0, "belt_speed", spb.DataType.DOUBLE, value=speed, alias=1),
        spb.Metric(T0, "Motor/Current", spb.DataType.FLOAT, value=current, alias=2),
        spb.Metric(T0, "Status/Code", spb.DataType.INT32, value=code, alias=3),
        spb.Metric(T0, "Counters/Boxes", spb.DataType.UINT32, value=boxes, alias=4),
        spb.Metric(T0, "Diagnostics/Firmware", spb.DataType.STRING, value="v2.1", alias=5),
    ]


class Watcher:
    """A plain MQTT client that records what the host publishes: NCMDs, its STATE, dead letters."""

    def __init__(self, mqtt: MqttSettings, client_id: str, *filters: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = subscribed_client(mqtt, client_id, filters, self._on_message)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rebirths_in(payloads: list[bytes]) -> int:
    count = 0
    for raw in payloads:
        message = pb.Payload()
        message.ParseFromString(raw)
        count += any(m.name == "Node Control/Rebirth" and m.boolean_value for m in message.metrics)
    return count


class RawNode:
    """pysparkplug's client and payload classes with seq, bdSeq and QoS chosen by the test."""

    def __init__(self, mqtt: MqttSettings, group: str, node: str) -> None:
        self.group, self.node = group, node
        self.client = spb.Client(client_id=f"raw-{group}-{node}")
        connected = threading.Event()
        self.client.connect(mqtt.host, port=mqtt.port, callback=lambda _client: connected.set())
        assert connected.wait(10)

    def topic(self, kind: spb.MessageType, device: str | None = None) -> spb.Topic:
        return spb.Topic(message_type=kind, group_id=self.group, edge_node_id=self.node, device_id=device)

    def send(self, kind: spb.MessageType, payload: Any, device: str | None = DEVICE) -> None:
        node_level = kind in (spb.MessageType.NBIRTH, spb.MessageType.NDEATH, spb.MessageType.NDATA)
        topic = self.topic(kind, None if node_level else device)
        births = (spb.MessageType.NBIRTH, spb.MessageType.DBIRTH)
        self.client.publish(
            spb.Message(topic, payload, spb.QoS.AT_LEAST_ONCE, retain=False), include_dtypes=kind in births
        )

    def raw(self, kind: str, payload: bytes, device: str | None = DEVICE) -> None:
        topic = f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")
        self.client._client.publish(topic, payload, qos=1).wait_for_publish(10)

    def births(self, bd_seq: int, seq: int = 0, **values: Any) -> None:
        bd = spb.Metric(T0, "bdSeq", spb.DataType.INT64, value=bd_seq)
        self.send(spb.MessageType.NBIRTH, spb.NBirth(T0, seq, (bd,)))
        self.send(spb.MessageType.DBIRTH, spb.DBirth(T0, seq + 1, tuple(birth_metrics(**values))))

    def data(self, seq: int, ts: int, **by_alias: Any) -> None:
        types = {1: spb.DataType.DOUBLE, 2: spb.DataType.FLOAT, 3: spb.DataType.INT32, 4: spb.DataType.UINT32}
        metrics = tuple(
            spb.Metric(ts, None, types.get(int(a), spb.DataType.DOUBLE), value=v, alias=int(a))
            for a, v in by_alias.items()
        )
        self.send(spb.MessageType.DDATA, spb.DData(ts, seq, metrics))

    def death(self, bd_seq: int) -> None:
        self.send(spb.MessageType.NDEATH, spb.NDeath(T0, spb.Metric(T0, "bdSeq", spb.DataType.INT64, value=bd_seq)))

    def close(self) -> None:
        self.client.disconnect()


def lose_connection(edge: spb.EdgeNode) -> None:
    """The network fails under the edge node: the broker publishes its will, the NDEATH of its birth's bdSeq."""
    mqtt = edge._client._client
    mqtt.loop_stop()
    sock = mqtt.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


def rows(client: InfluxClient, query: str) -> list[dict[str, Any]]:
    series = client.query(query)
    return series[0].rows() if series else []


def test_an_edge_node_s_births_data_history_and_death_land_as_values_states_production_and_status(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    group, node = f"g{unique_id}", "line3"
    settings = host_settings(mqtt_settings, influx_settings, group, node, f"spb-{unique_id}")
    edge = spb.EdgeNode(group, node, [spb.Metric(T0, "Node/Uptime", spb.DataType.INT64, value=0)])
    device = spb.Device(DEVICE, birth_metrics())
    edge.register(device)
    with running_collector(settings, registry(group, node)) as collector, InfluxClient(influx_settings) as client:
        edge.connect(mqtt_settings.host, port=mqtt_settings.port)
        wait_until(lambda: count_points(client, "status", "online") >= 1, what="the device's birth as online")
        now = int(time.time() * 1000)
        updates = [
            (now + 1000, 1.2, 11.5, 1, 103),
            (now + 2000, 1.4, 12.0, 2, 103),  # jammed
            (now + 3000, 1.6, 12.5, 1, 110),
        ]
        for ts, speed, current, code, boxes in updates:
            edge.update_device(
                DEVICE,
                [
                    spb.Metric(ts, "belt_speed", spb.DataType.DOUBLE, value=speed),
                    spb.Metric(ts, "Motor/Current", spb.DataType.FLOAT, value=current),
                    spb.Metric(ts, "Status/Code", spb.DataType.INT32, value=code),
                    spb.Metric(ts, "Counters/Boxes", spb.DataType.UINT32, value=boxes),
                ],
            )
        history = now - 3_600_000  # store-and-forward: an hour old, flagged historical
        edge.update_device(
            DEVICE, [spb.Metric(history, "belt_speed", spb.DataType.DOUBLE, value=0.25, is_historical=True)]
        )
        wait_until(lambda: count_points(client, "telemetry_conveyor", "belt_speed") >= 5, what="every speed")
        # pysparkplug's disconnect() sends an NDEATH with the next connection's bdSeq, which a host must ignore as
        # stale; the death that counts is the will the broker publishes when the connection is lost.
        lose_connection(edge)
        wait_until(lambda: count_points(client, "status", "online", "online = false") >= 1, what="offline")

        speeds = rows(client, 'SELECT belt_speed, motor_current FROM "telemetry_conveyor" ORDER BY time')
        assert [(r["time"], r["belt_speed"]) for r in speeds if r["time"] >= now] == [
            (ts, speed) for ts, speed, *_ in updates
        ]
        assert [r["motor_current"] for r in speeds if r["time"] >= now] == [11.5, 12.0, 12.5]
        assert (history, 0.25) in [(r["time"], r["belt_speed"]) for r in speeds]
        states = rows(client, 'SELECT state FROM "state" ORDER BY time')
        assert [(r["time"], r["state"]) for r in states] == [
            (T0, "running"),
            (now + 2000, "jammed"),
            (now + 3000, "running"),
        ]
        produced = rows(client, 'SELECT sum(produced) FROM "production"')
        assert produced[0]["sum"] == 10  # 100 at birth → 103 → 110
        statuses = rows(client, 'SELECT online FROM "status" ORDER BY time')
        assert [r["online"] for r in statuses] == [True, False]
        assert collector.metrics.sparkplug_historical._value.get() == 1


def test_a_missed_birth_is_dead_lettered_and_the_rebirth_the_node_answers_lets_data_land(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    group, node = f"g{unique_id}", "line3"
    settings = host_settings(mqtt_settings, influx_settings, group, node, f"spb-{unique_id}")
    asked = threading.Event()

    def on_command(_node: spb.EdgeNode, message: spb.Message) -> None:
        metrics = getattr(message.payload, "metrics", ())  # an NCmd
        if any(m.name == "Node Control/Rebirth" and m.value for m in metrics):
            asked.set()

    edge = spb.EdgeNode(group, node, [], cmd_callback=on_command)
    edge.register(spb.Device(DEVICE, birth_metrics()))
    edge.connect(mqtt_settings.host, port=mqtt_settings.port)  # births before the host runs: missed
    time.sleep(0.5)
    dead = DeadLetters(mqtt_settings, DEAD_ROOT, f"dead-{unique_id}")
    try:
        with running_collector(settings, registry(group, node)), InfluxClient(influx_settings) as client:
            edge.update_device(DEVICE, [spb.Metric(T0 + 5, "belt_speed", spb.DataType.DOUBLE, value=2.0)])
            assert asked.wait(15), "the host never asked for a rebirth"
            wait_until(lambda: any(m["reason"] == "sparkplug_no_birth" for m in dead.messages), what="dead letter")
            edge.disconnect()
            edge.connect(mqtt_settings.host, port=mqtt_settings.port)  # the node's answer: births again
            wait_until(lambda: count_points(client, "status", "online") >= 1, what="the births, received")
            edge.update_device(DEVICE, [spb.Metric(T0 + 9, "belt_speed", spb.DataType.DOUBLE, value=2.5)])
            wait_until(
                lambda: count_points(client, "telemetry_conveyor", "belt_speed", f"time = {T0 + 9}ms") == 1,
                what="data after the rebirth",
            )
            letter = next(m for m in dead.messages if m["reason"] == "sparkplug_no_birth")
            assert letter["topic"] == f"spBv1.0/{group}/DDATA/{node}/{DEVICE}"
            assert "before any NBIRTH" in letter["detail"]
    finally:
        edge.disconnect()
        dead.close()


def test_seq_gaps_unknown_aliases_duplicates_and_stale_deaths_are_each_handled_as_a_host_must(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    group, node = f"g{unique_id}", "line3"
    settings = host_settings(mqtt_settings, influx_settings, group, node, f"spb-{unique_id}")
    ncmd = f"spBv1.0/{group}/NCMD/{node}"
    watcher = Watcher(mqtt_settings, f"watch-{unique_id}", ncmd)
    dead = DeadLetters(mqtt_settings, DEAD_ROOT, f"dead-{unique_id}")
    raw = RawNode(mqtt_settings, group, node)
    try:
        with running_collector(settings, registry(group, node)), InfluxClient(influx_settings) as client:
            raw.births(bd_seq=0)  # seq 0 and 1
            raw.data(2, T0 + 2, **{"1": 2.0})
            raw.data(2, T0 + 2, **{"1": 2.0})  # the same message again (a redelivery): a duplicate
            raw.data(7, T0 + 7, **{"1": 0.7})  # seqs 3-6 missed: written, and a rebirth asked for
            wait_until(lambda: rebirths_in(watcher.on(ncmd)) >= 1, what="the NCMD rebirth after the gap")
            raw.data(8, T0 + 8, **{"99": 8.0})  # an alias no birth announced
            wait_until(lambda: any(m["reason"] == "sparkplug_unknown_alias" for m in dead.messages), what="alias")
            wait_until(lambda: rebirths_in(watcher.on(ncmd)) >= 2, what="the NCMD rebirth after the alias")
            raw.births(bd_seq=1, seq=9)  # the node reconnected: a newer birth
            raw.death(bd_seq=0)  # the old connection's will, delivered late: stale, ignored
            raw.data(11, T0 + 11, **{"1": 1.1})
            wait_until(lambda: count_points(client, "telemetry_conveyor", "belt_speed", f"time = {T0 + 11}ms") == 1)
            online = rows(client, 'SELECT online FROM "status" ORDER BY time')
            assert all(r["online"] for r in online), "a stale death took the device offline"
            raw.death(bd_seq=1)  # the current birth's death
            wait_until(lambda: count_points(client, "status", "online", "online = false") == 1, what="offline")
            speeds = rows(client, 'SELECT belt_speed, seq FROM "telemetry_conveyor" WHERE time > 0 ORDER BY time')
            assert [(r["time"], r["belt_speed"]) for r in speeds] == [
                (T0, 1.0),  # the first birth's value
                (T0 + 2, 2.0),
                (T0 + 7, 0.7),
                (T0 + 11, 1.1),
            ]  # the second birth carries T0 too: the same point
    finally:
        raw.close()
        watcher.close()
        dead.close()


def test_hostile_protobuf_is_dead_lettered_with_its_reason_and_the_collector_carries_on(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    group, node = f"g{unique_id}", "line3"
    settings = host_settings(mqtt_settings, influx_settings, group, node, f"spb-{unique_id}", max_payload_bytes=4096)
    dead = DeadLetters(mqtt_settings, DEAD_ROOT, f"dead-{unique_id}")
    raw = RawNode(mqtt_settings, group, node)
    good = spb.DData(T0 + 3, 3, (spb.Metric(T0 + 3, None, spb.DataType.DOUBLE, value=2.0, alias=1),)).encode()
    wrong = pb.Payload(timestamp=T0 + 2, seq=2)
    wrong.metrics.add(alias=1, string_value="fast")  # belt_speed is a Double in the birth
    deep = b"\x12\x02" * 2000  # nested metrics without end
    far = pb.Payload(timestamp=2**64 - 1, seq=4)  # a uint64 timestamp no clock can show
    far.metrics.add(alias=3, int_value=2)  # the state code: only derived, never stored as telemetry
    colliding = spb.DBirth(
        T0,
        5,
        (
            spb.Metric(T0, "belt_speed", spb.DataType.DOUBLE, value=1.0, alias=1),
            spb.Metric(T0, "Status/Code", spb.DataType.INT32, value=1, alias=1),
        ),
    ).encode(include_dtypes=True)
    later = spb.DData(T0 + 6, 6, (spb.Metric(T0 + 6, None, spb.DataType.INT32, value=2, alias=3),)).encode()
    try:
        with running_collector(settings, registry(group, node)) as collector, InfluxClient(influx_settings) as client:
            raw.births(bd_seq=0)
            raw.raw("DDATA", good[: len(good) // 2])  # truncated
            raw.raw("DDATA", b"\x00" * 10_000)  # larger than max_payload_bytes
            raw.raw("DDATA", wrong.SerializeToString())
            raw.raw("DDATA", deep)
            raw.raw("DDATA", good)
            raw.raw("DDATA", far.SerializeToString())
            raw.raw("DBIRTH", colliding)
            raw.raw("DDATA", later)
            wait_until(lambda: len(dead.messages) >= 6, what="six dead letters")
            wait_until(lambda: count_points(client, "telemetry_conveyor", "belt_speed", f"time = {T0 + 3}ms") == 1)
            reasons = sorted(m["reason"] for m in dead.messages)
            assert reasons == [
                "bad_timestamp",
                "schema",
                "sparkplug_undecodable",
                "sparkplug_undecodable",
                "too_large",
                "wrong_type",
            ], [(m["reason"], m["detail"]) for m in dead.messages]
            # The refused messages moved nothing: the next state change is derived as it comes.
            wait_until(lambda: count_points(client, "state", "state", f"time = {T0 + 6}ms") == 1, what="jammed")
            assert collector.supervisor.all_alive()
    finally:
        raw.close()
        dead.close()


class HostProcess:
    """`pilot collect` as a Sparkplug host in its own process, configured by pilot.yaml in its folder."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        (folder / "pilot.yaml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "pilot", "collect"], cwd=self.folder, env=os.environ)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


@contextmanager
def steady_node(raw: RawNode, start_seq: int) -> Iterator[list[tuple[int, float, int]]]:
    """DDATA at QoS 1 every 20 ms: belt speed and a box counter; yields what was published."""
    published: list[tuple[int, float, int]] = []
    stop = threading.Event()

    def run() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            ts, speed, boxes = T0 + 1000 + n, n % 50 / 10, 100 + n  # the profile's belt speed is at most 5 m/s
            raw.data((start_seq + n) % 256, ts, **{"1": speed, "4": boxes})
            published.append((ts, speed, boxes))
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield published
    finally:
        stop.set()
        thread.join(10)


def test_the_collector_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    group, node = f"g{unique_id}", "line3"
    client_id, host_id = f"spb-{unique_id}", f"host-{unique_id}"
    (tmp_path / "devices.yaml").write_text(
        yaml.safe_dump({"devices": [{"site": group, "line": node, "device": DEVICE, "profile": "conveyor"}]})
    )
    config = {
        "mqtt": {"host": mqtt_settings.host, "port": mqtt_settings.port},
        "influx": {"url": influx_settings.url, "database": influx_settings.database},
        "devices_file": "devices.yaml",
        "client_id": client_id,
        "metrics_port": 0,
        "flush_interval_s": 0.2,
        "sparkplug": {"enabled": True, "host_id": host_id, "groups": [group], "devices": [device_map(group, node)]},
    }
    state_topic = f"spBv1.0/STATE/{host_id}"
    host = HostProcess(tmp_path, config)
    watcher = Watcher(mqtt_settings, f"watch-{unique_id}", state_topic)
    raw = RawNode(mqtt_settings, group, node)
    with InfluxClient(influx_settings) as client:
        client.ensure_database()
        try:
            host.start()
            wait_until(lambda: any(json.loads(p)["online"] for p in watcher.on(state_topic)), what="STATE online")
            raw.births(bd_seq=0, boxes=100)
            with steady_node(raw, start_seq=1) as published:
                wait_until(lambda: count_points(client, "telemetry_conveyor", "belt_speed") > 20, what="first points")
                host.kill()
                wait_until(lambda: any(not json.loads(p)["online"] for p in watcher.on(state_topic)), what="will")
                time.sleep(1.5)  # the node keeps publishing; the broker queues for the host's session
                host.start()
                time.sleep(1.5)
            sent = list(published)
            wait_until(
                lambda: count_points(client, "telemetry_conveyor", "belt_speed", f"time > {T0}ms") == len(sent),
                timeout_s=60,
                what=f"all {len(sent)} values",
            )
            stored = rows(client, f'SELECT belt_speed FROM "telemetry_conveyor" WHERE time > {T0}ms ORDER BY time')
            assert [(r["time"], r["belt_speed"]) for r in stored] == [(ts, speed) for ts, speed, _ in sent]
            wait_until(lambda: rows(client, 'SELECT sum(produced) FROM "production"') != [])
            wait_until(
                lambda: rows(client, 'SELECT sum(produced) FROM "production"')[0]["sum"] == sent[-1][2] - 100,
                what="every box counted once",
            )
            states = [spb.State.decode(p) for p in watcher.on(state_topic)]  # as an edge node reads them
            offline = next(s for s in states if not s.online)
            assert any(s.online and s.timestamp == offline.timestamp for s in states)  # the will pairs its birth
            assert states[-1].online and states[-1].timestamp > offline.timestamp  # online again, later
        finally:
            host.stop()
            raw.close()
            watcher.close()


def test_an_offline_state_for_our_host_while_it_runs_is_answered_with_online(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    group, node = f"g{unique_id}", "line3"
    settings = host_settings(mqtt_settings, influx_settings, group, node, f"spb-{unique_id}")
    state_topic = f"spBv1.0/STATE/{settings.sparkplug.host_id}"
    watcher = Watcher(mqtt_settings, f"watch-{unique_id}", state_topic)
    try:
        with running_collector(settings, registry(group, node)):
            wait_until(lambda: any(json.loads(p)["online"] for p in watcher.on(state_topic)), what="STATE online")
            stale = json.dumps({"online": False, "timestamp": 1}).encode()  # an old session's will, say
            watcher.client.publish(state_topic, stale, qos=1, retain=True).wait_for_publish(10)
            wait_until(lambda: len(watcher.on(state_topic)) >= 3, what="the stale STATE and the answer")
            assert [json.loads(p)["online"] for p in watcher.on(state_topic)][:3] == [True, False, True]
    finally:
        watcher.close()


def test_a_damaged_host_state_file_is_set_aside_and_a_rebirth_brings_the_node_back(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    group, node = f"g{unique_id}", "line3"
    settings = host_settings(mqtt_settings, influx_settings, group, node, f"spb-{unique_id}", spool_dir=tmp_path)
    state_file = tmp_path / "sparkplug-host.json"
    state_file.write_bytes(b'{"format":"pilot-sparkplug-host","version":1,"nodes":[{"gro')  # cut short by a crash
    ncmd = f"spBv1.0/{group}/NCMD/{node}"
    watcher = Watcher(mqtt_settings, f"watch-{unique_id}", ncmd)
    raw = RawNode(mqtt_settings, group, node)
    try:
        with running_collector(settings, registry(group, node)), InfluxClient(influx_settings) as client:
            raw.data(5, T0 + 5, **{"1": 0.5})  # the host remembers no birth
            wait_until(lambda: rebirths_in(watcher.on(ncmd)) >= 1, what="the NCMD rebirth")
            raw.births(bd_seq=0, seq=6)
            raw.data(8, T0 + 8, **{"1": 0.8})
            wait_until(lambda: count_points(client, "telemetry_conveyor", "belt_speed", f"time = {T0 + 8}ms") == 1)
        saved = json.loads(state_file.read_bytes())  # the host's state since, as versioned JSON
        assert saved["format"] == "pilot-sparkplug-host" and saved["version"] == 1
        assert [(n["group"], n["edge_node"], n["seq"]) for n in saved["nodes"]] == [(group, node, 8)]
        assert not (tmp_path / "sparkplug-host.pickle").exists()
    finally:
        raw.close()
        watcher.close()


def test_a_hostile_state_for_our_host_is_answered_with_online_and_intake_goes_on(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    # JSON nested past Python's recursion limit, retained on our STATE topic: reading it raised RecursionError in
    # the intake, which reconnected, was sent the retained STATE again, and so on: nothing else was taken in.
    group, node = f"g{unique_id}", "line3"
    settings = host_settings(mqtt_settings, influx_settings, group, node, f"spb-{unique_id}")
    state_topic = f"spBv1.0/STATE/{settings.sparkplug.host_id}"
    watcher = Watcher(mqtt_settings, f"watch-{unique_id}", state_topic)
    raw = RawNode(mqtt_settings, group, node)
    try:
        with running_collector(settings, registry(group, node)), InfluxClient(influx_settings) as client:
            wait_until(lambda: any(json.loads(p)["online"] for p in watcher.on(state_topic)), what="STATE online")
            hostile = b"[" * 100_000 + b"]" * 100_000
            watcher.client.publish(state_topic, hostile, qos=1, retain=True).wait_for_publish(10)
            wait_until(lambda: hostile in watcher.on(state_topic), what="the hostile STATE")
            wait_until(lambda: watcher.on(state_topic)[-1] != hostile, what="the answer")
            assert json.loads(watcher.on(state_topic)[-1])["online"] is True
            raw.births(bd_seq=0)
            raw.data(2, T0 + 2, **{"1": 2.0})
            wait_until(lambda: count_points(client, "telemetry_conveyor", "belt_speed", f"time = {T0 + 2}ms") == 1)
    finally:
        raw.close()
        watcher.close()

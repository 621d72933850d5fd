"""Sites that bridge (docs/deploy.md#sites-that-bridge). A factory's Mosquitto, configured as shipped
(deploy/mosquitto/site.conf with the bridge `pilot devices site-bridge` writes), runs in a network namespace
of its own; its bridge reaches a central Mosquitto over TLS with its own account, and the collector at the
centre writes to a real InfluxDB. The WAN between them (a veth pair) is taken down under a steady stream."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from pydantic import SecretStr

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from pilot_core.broker_accounts import bridge_state_topic
from pilot_core.contract import topic_for
from pilot_core.registry import DeviceEntry, DeviceRegistry
from tests.certificates import Certificates, make_certificates
from tests.network import Factory, factory_network
from tests.support import (
    collector_settings,
    count_points,
    publish_all,
    run_pilot,
    running_collector,
    subscribed_client,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
SITE_CONF = ROOT / "deploy" / "mosquitto" / "site.conf"
SITE, LINE = "판교", "조립-1라인"
BRIDGE = "bridge-pangyo"
DEVICES = ("cobot-01", "press-02", "agv-03")
TS = 1_793_800_000_000
OUTAGE_S = 30.0
DROPPED = "$SYS/broker/publish/messages/dropped"
STORED = "$SYS/broker/store/messages/count"
NOT_AUTHORIZED = 135


@dataclass
class Programme:
    factory: Factory
    certs: Certificates
    centre: local_services.LocalService
    site: local_services.LocalService
    passwords: dict[str, str]  # username → password, at the centre and at the site

    def at_centre(self, username: str) -> MqttSettings:
        return MqttSettings(
            port=self.centre.port,
            ca_file=self.certs.ca_file,
            username=username,
            password=SecretStr(self.passwords[username]),
        )

    def at_site(self, username: str) -> MqttSettings:
        return MqttSettings(
            host=self.factory.factory_lan_address,
            port=self.site.port,
            username=username,
            password=SecretStr(self.passwords[username]),
        )


def site_broker(folder: Path, factory: Factory, auth: Path, bridges: Path, max_queued_messages: int | None) -> Any:
    """deploy/mosquitto/site.conf as the factory's container would read it: only the listener's address and the
    mounted paths change (and, if given, the queue's bound); run inside the factory's namespace."""
    port = local_services.free_port()
    lines = []
    for shipped in SITE_CONF.read_text(encoding="utf-8").splitlines():
        line = shipped.replace("/mosquitto/config/auth", str(auth)).replace("/mosquitto/data/", f"{folder / 'data'}/")
        if line.startswith("listener "):
            line = f"listener {port} {factory.factory_lan_address}"
        elif line.startswith("max_queued_messages ") and max_queued_messages is not None:
            line = f"max_queued_messages {max_queued_messages}"
        elif line.startswith("include_dir "):
            lines.append("user root")  # as local_services.mosquitto: keep our user, who owns these folders
            line = f"include_dir {bridges}"
        lines.append(line)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    config = folder / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    binary = local_services.find_binary("mosquitto", "/usr/sbin/mosquitto")
    command = factory.run_inside([binary, "-c", str(config)])
    return local_services.LocalService("mosquitto-site", folder, port, command, host=factory.factory_lan_address)


@contextmanager
def programme(tmp_path: Path, *, max_queued_messages: int | None = None) -> Iterator[Programme]:
    with factory_network() as factory:
        certs = make_certificates(tmp_path / "certs", server_addresses=[factory.centre_address])
        central_auth, site_auth = tmp_path / "centre-auth", tmp_path / "site-auth"
        passwords = {}
        for folder, name, role in [
            (central_auth, "collector-centre", "collector"),
            (central_auth, "centre-monitor", "monitor"),
            (central_auth, "centre-watch", "collector"),  # a plain subscriber: what reaches the centre
            (site_auth, "line-agents", "publisher"),
            (site_auth, "site-monitor", "monitor"),
        ]:
            account = ("devices", "service-account", name, "--role", role, "--broker-dir", str(folder), "--json")
            passwords[name] = run_pilot(*account)["password"]
        bridge_port = local_services.free_port()
        bridges = tmp_path / "site" / "bridge"
        run_pilot(
            "devices", "site-bridge", BRIDGE, "--site", SITE, "--central-host", factory.centre_address,
            "--central-port", str(bridge_port), "--ca-file", str(certs.ca_file),
            "--output", str(bridges / f"{BRIDGE}.conf"), "--broker-dir", str(central_auth),
        )  # fmt: skip
        centre = local_services.mosquitto(
            tmp_path / "centre",
            password_file=central_auth / "passwd",
            acl_file=central_auth / "acl",
            tls=local_services.ServerTls(certs.server_cert, certs.server_key),
            more_listeners=[(factory.centre_address, bridge_port)],
        )
        site = site_broker(tmp_path / "site", factory, site_auth, bridges, max_queued_messages)
        centre.start()
        try:
            site.start()
            try:
                yield Programme(factory, certs, centre, site, passwords)
            finally:
                site.stop()
        finally:
            centre.stop()


class Listener:
    """A subscriber that keeps every message's payload by topic, in order."""

    def __init__(self, settings: MqttSettings, client_id: str, *subscriptions: str) -> None:
        self.messages: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self._client = subscribed_client(settings, client_id, subscriptions, self._on_message)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.setdefault(message.topic, []).append(bytes(message.payload))

    def values(self, topic: str) -> list[str]:
        with self._lock:
            return [payload.decode() for payload in self.messages.get(topic, [])]

    def last(self, topic: str) -> str | None:
        values = self.values(topic)
        return values[-1] if values else None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def telemetry(device: str, seq: int) -> tuple[str, bytes]:
    payload = {"seq": seq, "ts": TS + seq * 50, "metrics": {"belt_speed": 1.5, "jam_detected": False}}
    return topic_for(SITE, LINE, device, "telemetry"), json.dumps(payload).encode()


class SteadyPublisher:
    """The factory's agents: one QoS 1 message per device every ``period_s``; each must get the site's PUBACK."""

    def __init__(self, settings: MqttSettings, client_id: str, period_s: float = 0.05) -> None:
        self.sent: Counter[str] = Counter()
        self.refused: list[int] = []
        self._published: list[paho.MQTTMessageInfo] = []
        self._period_s = period_s
        self._stop = threading.Event()
        self._client = new_client(settings, client_id)
        self._client.max_inflight_messages_set(1000)
        # Paho calls this holding its own lock, which publish() takes too: no lock of ours here.
        self._client.on_publish = lambda client, userdata, mid, reason, props: (
            self.refused.append(reason.value) if reason.value >= 0x80 else None
        )
        connect_and_wait(self._client, settings)
        self._thread = threading.Thread(target=self._run, name="steady-publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            for device in DEVICES:
                self._published.append(self._client.publish(*telemetry(device, self.sent[device]), qos=1))
                self.sent[device] += 1
            next_at += self._period_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for info in self._published:
            info.wait_for_publish(30)
            assert info.is_published(), "a message the site broker never acknowledged"
        self._client.disconnect()
        self._client.loop_stop()
        assert not self.refused, f"the site broker refused {len(self.refused)} messages: {self.refused[:5]}"


def registry() -> DeviceRegistry:
    return DeviceRegistry(
        [DeviceEntry(site=SITE, line=LINE, device=device, profile="conveyor") for device in DEVICES], load_profiles()
    )


def points(influx: InfluxClient, device: str) -> int:
    return count_points(influx, "telemetry_conveyor", where=f"\"device\" = '{device}'")


def puback_reasons(settings: MqttSettings, messages: list[tuple[str, bytes]]) -> list[int]:
    """Publish each with QoS 1 as ``settings``' account; the reason code of each PUBACK (MQTT 5), in order."""
    reasons: dict[int, int] = {}
    client = new_client(settings, settings.username or "")
    client.on_publish = lambda client, userdata, mid, reason, props: reasons.__setitem__(mid, reason.value)
    connect_and_wait(client, settings)
    mids = [client.publish(topic, payload, qos=1).mid for topic, payload in messages]
    wait_until(lambda: all(mid in reasons for mid in mids), 10, "a PUBACK for each")
    client.disconnect()
    client.loop_stop()
    return [reasons[mid] for mid in mids]


def seq_summary(influx: InfluxClient, device: str) -> list[int]:
    """How many points the device has, and its lowest and highest seq."""
    where = f"\"device\" = '{device}'"
    series = influx.query(f'SELECT count("seq"), min("seq"), max("seq") FROM "telemetry_conveyor" WHERE {where}')
    return [int(value) for value in series[0].values[0][1:]]


def test_a_30_s_wan_cut_under_a_steady_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, influx_settings: InfluxSettings
) -> None:
    state = bridge_state_topic(BRIDGE)
    with programme(tmp_path) as plant, InfluxClient(influx_settings) as influx:
        at_site = Listener(plant.at_site("site-monitor"), "site-monitor", state, DROPPED, STORED)
        at_centre = Listener(plant.at_centre("centre-monitor"), "centre-monitor", state)
        watch = Listener(plant.at_centre("centre-watch"), "centre-watch", f"pilot/v1/{SITE}/#")
        wait_until(lambda: at_site.last(state) == "1", 30, "the bridge connected (its state at the site)")
        wait_until(lambda: at_centre.last(state) == "1", 10, "the bridge's state at the centre")
        settings = collector_settings(plant.at_centre("collector-centre"), influx_settings, "collector-centre")
        with running_collector(settings, registry()):
            publisher = SteadyPublisher(plant.at_site("line-agents"), "line-agents")
            wait_until(lambda: all(points(influx, d) > 20 for d in DEVICES), 30, "the stream reaching InfluxDB")

            sent_at_cut = sum(publisher.sent.values())
            plant.factory.cut_wan()
            cut_at = time.monotonic()
            # The bridge notices by its keepalive (10 s, twice); the centre sees its will after 1.5 keepalives.
            wait_until(lambda: at_site.last(state) == "0", OUTAGE_S, "the site's bridge noticing the cut")
            wait_until(lambda: at_centre.last(state) == "0", OUTAGE_S, "the centre seeing the bridge's will")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
            sent_during_cut = sum(publisher.sent.values()) - sent_at_cut
            landed_before_restore = {d: points(influx, d) for d in DEVICES}
            plant.factory.restore_wan()

            # restart_timeout 2 30: the bridge tries again within 30 s of the WAN's return.
            wait_until(lambda: at_site.last(state) == "1", 90, "the bridge reconnected after the WAN returned")
            time.sleep(2)
            publisher.stop()
            sent = dict(publisher.sent)
            wait_until(
                lambda: all(points(influx, d) == sent[d] for d in DEVICES),
                90,
                f"every point in InfluxDB (sent {sent}, stored {[points(influx, d) for d in DEVICES]})",
            )
            assert sent_during_cut > 1000  # a steady stream while the link was down, queued at the site
            assert all(landed_before_restore[d] < sent[d] for d in DEVICES)
            # Exactly once: one point per message (InfluxDB keeps one per series and timestamp, and each message
            # has its own), and every seq of every device, none missing.
            for device in DEVICES:
                assert seq_summary(influx, device) == [sent[device], 0, sent[device] - 1]
        # What reached the centre: every message, a few possibly twice (a QoS 1 redelivery of those in flight
        # when the link went down, harmless to InfluxDB as shown above).
        delivered = Counter(
            (topic.split("/")[4], json.loads(payload)["seq"])
            for topic, payloads in watch.messages.items()
            for payload in payloads
        )
        assert {key for key in delivered} == {(d, seq) for d in DEVICES for seq in range(sent[d])}
        # The site's queue stayed within its bound, and nothing was dropped.
        settings_lines = SITE_CONF.read_text(encoding="utf-8").splitlines()
        shipped_bound = next(int(line.split()[1]) for line in settings_lines if line.startswith("max_queued_messages "))
        assert max(int(v) for v in at_site.values(STORED)) <= shipped_bound
        wait_until(lambda: at_site.last(DROPPED) is not None, 15, "the site broker's dropped count")
        assert at_site.last(DROPPED) == "0"
        for listener in (at_site, at_centre, watch):
            listener.close()


def test_beyond_its_bound_the_site_queue_drops_and_counts_the_newest_and_keeps_the_rest_across_a_restart(
    tmp_path: Path, influx_settings: InfluxSettings
) -> None:
    bound, burst = 100, 250
    state = bridge_state_topic(BRIDGE)
    with programme(tmp_path, max_queued_messages=bound) as plant, InfluxClient(influx_settings) as influx:
        at_site = Listener(plant.at_site("site-monitor"), "site-monitor", state, DROPPED)
        wait_until(lambda: at_site.last(state) == "1", 30, "the bridge connected")
        settings = collector_settings(plant.at_centre("collector-centre"), influx_settings, "collector-centre")
        device = DEVICES[0]
        with running_collector(settings, registry()):
            publish_all(plant.at_site("line-agents"), [telemetry(device, seq) for seq in range(10)], "line-agents")
            wait_until(lambda: points(influx, device) == 10, 30, "the first ten through the bridge")

            plant.factory.cut_wan()
            wait_until(lambda: at_site.last(state) == "0", OUTAGE_S, "the site's bridge noticing the cut")
            # Every message of the burst is acknowledged to the agent by the site broker...
            publish_all(plant.at_site("line-agents"), [telemetry(device, 10 + i) for i in range(burst)], "line-agents")
            # ...which queues `bound` of them for the bridge, and drops and counts the rest.
            wait_until(lambda: at_site.last(DROPPED) == str(burst - bound), 30, "the drops counted in $SYS")
            # The queue outlives a restart of the site's broker (persistence, the bridge's persistent local session).
            at_site.close()
            plant.site.restart()
            at_site = Listener(plant.at_site("site-monitor"), "site-monitor", state)
            plant.factory.restore_wan()
            wait_until(lambda: at_site.last(state) == "1", 90, "the bridge reconnected")
            wait_until(lambda: points(influx, device) == 10 + bound, 60, "the queued messages in InfluxDB")
            # The oldest were kept: seq 10 .. 10 + bound - 1.
            assert seq_summary(influx, device) == [10 + bound, 0, 10 + bound - 1]
        at_site.close()
        # The bridge's account at the centre speaks for its own site only.
        bridge_file = tmp_path / "site" / "bridge" / f"{BRIDGE}.conf"
        config = dict(line.split(" ", 1) for line in bridge_file.read_text(encoding="utf-8").splitlines())
        plant.passwords[BRIDGE] = config["remote_password"]
        other_site = ("pilot/v1/시화/L1/x/telemetry", b"{}")
        assert puback_reasons(plant.at_centre(BRIDGE), [telemetry(device, 0), other_site]) == [0, NOT_AUTHORIZED]
    # Mosquitto's log, whole once it has stopped, names the bridge whose messages it dropped.
    log = plant.site.log_path.read_text(errors="replace")
    assert f"Outgoing messages are being dropped for client {BRIDGE}.local." in log

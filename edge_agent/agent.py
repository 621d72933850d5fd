"""The edge agent SDK: a device's telemetry, states and production, sent under the contract, never lost.

    agent = Agent(MqttSettings(host="broker.plant.local"), "판교", "조립-1라인", "cobot-01", profile, Path("outbox"))
    agent.start()
    agent.telemetry({"tcp_speed": 812.5, "power": 410})
    agent.state("fault", reason="E301")
    agent.production("BRK-100", produced=1, good=1, cycle_time_s=48.2)
    agent.stop()

Every call records the message, with its seq and timestamp, in a durable
outbox on disk before it returns (``OutboxFull`` when the disk quota is
reached); a sender thread publishes with QoS 1 whenever the broker is
reachable and drops a message from the outbox once the broker acknowledges it.
Each connection announces itself with a birth (status online) and leaves a
last will (status offline).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from adapters.mqtt import MqttSettings, connect_properties, new_client
from edge_agent.outbox import Outbox
from pilot_core.contract import Channel, topic_for
from pilot_core.profiles import DeviceProfile

log = logging.getLogger("pilot.agent")

AGENT_VERSION = "0.1.0"
WINDOW = 1000  # messages in flight at once
SESSION_S = 24 * 3600  # the broker keeps the agent's session (and QoS 1 state) through outages this long


class Agent:
    def __init__(
        self,
        mqtt: MqttSettings,
        site: str,
        line: str,
        device: str,
        profile: DeviceProfile,
        outbox_dir: Path,
        *,
        quota_mb: int = 256,
        client_id: str | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.site, self.line, self.device, self.profile = site, line, device, profile
        self.outbox = Outbox(outbox_dir / "outbox.sqlite", quota_mb * 1024 * 1024)
        self._topics = {channel: topic_for(site, line, device, channel) for channel in Channel}
        # With an account, the broker makes its username the client id (docs/broker.md): ask for that one.
        self._client = new_client(mqtt, client_id or mqtt.username or f"agent-{site}-{line}-{device}")
        self._client.max_inflight_messages_set(WINDOW)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        # MQTT packet id → the publish's own MQTTMessageInfo and its outbox id. A packet id is only where to
        # look: paho reuses ids (1 again after 65,535), so a message leaves the outbox only once its own
        # MQTTMessageInfo says the broker acknowledged it.
        self._in_flight: dict[int, tuple[paho.MQTTMessageInfo, int]] = {}
        self._acked_ids: list[int] = []  # packet ids of PUBACKs the sender has not matched yet
        self._last_sent = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = threading.Event()  # connected, and the birth sent
        self._stopping = threading.Event()
        self._sender = threading.Thread(target=self._send, name="pilot-agent-sender", daemon=True)
        self._birth_seq = 0

    # --- the SDK --------------------------------------------------------

    def telemetry(self, metrics: dict[str, Any], ts_ms: int | None = None) -> None:
        unknown = [name for name in metrics if self.profile.metric(name) is None]
        if unknown:
            raise ValueError(f"profile {self.profile.id} has no metric {', '.join(map(repr, unknown))}")
        self._record(Channel.TELEMETRY, {"metrics": metrics}, ts_ms)

    def state(self, state: str, reason: str | None = None, ts_ms: int | None = None) -> None:
        if self.profile.state(state) is None:
            raise ValueError(f"profile {self.profile.id} has no state {state!r}")
        self._record(Channel.STATE, {"state": state, **({"reason": reason} if reason else {})}, ts_ms)

    def production(
        self,
        product: str,
        produced: int,
        good: int,
        scrap: int = 0,
        rework: int = 0,
        cycle_time_s: float | None = None,
        ts_ms: int | None = None,
    ) -> None:
        record: dict[str, Any] = {"product": product, "produced": produced, "good": good, "scrap": scrap}
        record["rework"] = rework
        if cycle_time_s is not None:
            record["cycle_time_s"] = cycle_time_s
        self._record(Channel.PRODUCTION, record, ts_ms)

    def production_batch(self, records: Sequence[dict[str, Any]], keep: Mapping[str, str] | None = None) -> None:
        """Several production records (each with its ``ts``) in one message, recorded in one transaction with
        ``keep``: what the agent must remember with them, such as the counter readings they were derived from."""
        body = list(records)
        self.outbox.put(
            self._topics[Channel.PRODUCTION],
            Channel.PRODUCTION.value,
            lambda seq: self._encode({"seq": seq, "device": self.device, "batch": body}),
            keep=keep,
        )
        self._wake.set()

    def source_status(self, online: bool, ts_ms: int | None = None) -> None:
        """Say the machine behind the agent was lost (offline: its state is unknown from here) or found again."""
        self._record(Channel.STATUS, self._status(online), ts_ms)

    @property
    def pending(self) -> int:
        """Messages recorded and not yet acknowledged by the broker."""
        return self.outbox.pending

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def serve_metrics(self, host: str, port: int) -> None:
        """Prometheus metrics of the outbox and the connection on http://host:port/metrics."""
        from prometheus_client import CollectorRegistry, Gauge, start_http_server  # noqa: PLC0415 - optional

        registry = CollectorRegistry()
        Gauge("pilot_agent_outbox_messages", "Messages recorded, not yet acknowledged", registry=registry).set_function(
            lambda: self.outbox.pending
        )
        Gauge("pilot_agent_outbox_bytes", "Disk the outbox uses", registry=registry).set_function(
            lambda: self.outbox.bytes
        )
        Gauge("pilot_agent_outbox_quota_bytes", "The outbox's disk quota", registry=registry).set(
            self.outbox.quota_bytes
        )
        Gauge("pilot_agent_connected", "1 while connected to the broker", registry=registry).set_function(
            lambda: float(self.connected)
        )
        start_http_server(port, addr=host, registry=registry)

    def start(self) -> None:
        """Connect in the background: the agent records messages whether or not the broker is reachable."""
        self._prepare_connection()
        self._client.connect_async(
            self.mqtt.host,
            self.mqtt.port,
            keepalive=self.mqtt.keepalive_s,
            clean_start=False,
            properties=connect_properties(SESSION_S),
        )
        self._client.loop_start()
        self._sender.start()

    def stop(self, flush_timeout_s: float = 30.0) -> int:
        """Send what is pending (waiting up to ``flush_timeout_s``), then disconnect; returns what is left."""
        deadline = time.monotonic() + flush_timeout_s
        while self.outbox.pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._stopping.set()
        self._wake.set()
        self._sender.join(10)
        self._client.disconnect()  # a clean goodbye: the broker drops the will
        self._client.loop_stop()
        left = self.outbox.pending
        self.outbox.close()
        return left

    # --- inside ---------------------------------------------------------

    def _record(self, channel: Channel, fields: dict[str, Any], ts_ms: int | None) -> None:
        ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
        self.outbox.put(self._topics[channel], channel.value, lambda seq: self._payload(seq, ts, fields))
        self._wake.set()

    def _payload(self, seq: int, ts_ms: int, fields: dict[str, Any]) -> bytes:
        # The device id travels in the payload too: the collector refuses a message whose topic names another device.
        return self._encode({"seq": seq, "device": self.device, "ts": ts_ms, **fields})

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _status(self, online: bool) -> dict[str, Any]:
        return {
            "status": "online" if online else "offline",
            "agent_version": AGENT_VERSION,
            "profile": self.profile.id,
            "profile_version": self.profile.version,
        }

    def _prepare_connection(self) -> None:
        """Reserve the next birth's seq and the will's just after it, so the will never counts backwards."""
        first = self.outbox.reserve(Channel.STATUS.value, 2)
        self._birth_seq = first
        will = self._payload(first + 1, int(time.time() * 1000), self._status(online=False))
        self._client.will_set(self._topics[Channel.STATUS], will, qos=1)

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        if reason.is_failure:
            log.error("the MQTT broker refused the agent: %s", reason)
            return
        with self._lock:
            self._in_flight.clear()
            self._acked_ids.clear()
            self._last_sent = 0  # send again whatever the outbox still holds
        # The birth goes first on every connection, ahead of anything sent again: the collector starts
        # counting this device's seq afresh from it. It is not kept in the outbox: a birth is of this moment.
        birth = self._payload(self._birth_seq, int(time.time() * 1000), self._status(online=True))
        client.publish(self._topics[Channel.STATUS], birth, qos=1)
        self._ready.set()
        log.info("agent connected to %s; %d messages to send", self.mqtt.address, self.outbox.pending)
        self._wake.set()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        self._ready.clear()
        if not self._stopping.is_set():
            log.warning("agent disconnected (%s); recording to the outbox until the broker is back", reason)
            self._prepare_connection()  # the next connection's will and birth

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        # Any PUBACK: the birth's, one for a message published before a reconnection, or one that came
        # before publish() returned its packet id to the sender. The sender sorts them out.
        with self._lock:
            self._acked_ids.append(mid)
        self._wake.set()

    def _remove_acknowledged(self, sweep: bool) -> bool:
        """Drop from the outbox what the broker acknowledged; True if a PUBACK's message did not show it yet.

        ``sweep`` looks at every message in flight instead of only those named by the PUBACKs since last
        time; it also runs whenever the sender wakes without news, so no acknowledged message stays behind.
        """
        removed = []
        with self._lock:
            acked, self._acked_ids = self._acked_ids, []
            candidates = list(self._in_flight) if sweep else acked
            unsettled = False
            for mid in candidates:
                entry = self._in_flight.get(mid)
                if entry is None:
                    continue  # not one of ours (the birth, a reconnection's leftover), or already removed
                info, message_id = entry
                if info.is_published():
                    del self._in_flight[mid]
                    removed.append(message_id)
                elif not sweep:
                    # paho calls on_publish just before it marks the info published; or this PUBACK was for
                    # an older message with the same id. The info is the judge: sweep shortly.
                    unsettled = True
        if removed:
            self.outbox.remove(*removed)
        return unsettled

    def _send(self) -> None:
        unsettled = False
        while not self._stopping.is_set():
            woken = self._wake.wait(0.01 if unsettled else 0.5)
            self._wake.clear()
            unsettled = self._remove_acknowledged(sweep=unsettled or not woken)
            while self._ready.is_set() and not self._stopping.is_set():
                with self._lock:
                    room = WINDOW - len(self._in_flight)
                    after = self._last_sent
                if room <= 0:
                    break
                batch = self.outbox.after(after, room)
                if not batch:
                    break
                for message_id, topic, payload in batch:
                    info = self._client.publish(topic, payload, qos=1)
                    if info.rc != paho.MQTT_ERR_SUCCESS:
                        break  # disconnected meanwhile: on_connect starts over
                    with self._lock:
                        self._last_sent = message_id
                        self._in_flight[info.mid] = (info, message_id)
                unsettled = self._remove_acknowledged(sweep=False) or unsettled

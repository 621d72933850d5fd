"""The edge agent SDK: a device's telemetry, states and production, sent under the contract, never lost.

    agent = Agent(MqttSettings(host="broker.plant.local"), "판교", "조립-1라인", "cobot-01", profile, Path("outbox"))
    agent.start()
    agent.telemetry({"tcp_speed": 812.5, "power": 410})
    agent.state("fault", reason="E301")
    agent.production("BRK-100", produced=1, good=1, cycle_time_s=48.2)
    agent.stop()

Every call records the message, with its seq and timestamp, in a durable
outbox on disk before it returns (``OutboxFull`` when the disk quota is
reached); a network thread publishes with QoS 1 whenever the broker is
reachable and drops a message from the outbox once the broker acknowledges it.
Each connection announces itself with a birth (status online) and leaves a
last will (status offline).

Many agents in one process (``edge_agent.sources``) share one outbox database
and one network thread (``edge_agent.network``); each keeps its own MQTT
connection, since its birth and will are its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from adapters.mqtt import MqttSettings, connect_properties, new_client
from edge_agent.network import AgentNetwork
from edge_agent.outbox import Outbox, OutboxFull
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
        outbox_dir: Path | None,
        *,
        quota_mb: int = 256,
        client_id: str | None = None,
        outbox: Outbox | None = None,
        network: AgentNetwork | None = None,
    ) -> None:
        """A lone agent has its own outbox (``outbox_dir``/outbox.sqlite) and network thread; agents
        sharing them pass ``outbox`` and ``network`` (and ``outbox_dir`` None)."""
        self.mqtt = mqtt
        self.site, self.line, self.device, self.profile = site, line, device, profile
        if outbox is None:
            assert outbox_dir is not None, "a lone agent needs its outbox folder"
            outbox = Outbox(outbox_dir / "outbox.sqlite", quota_mb * 1024 * 1024)
            self._key = ""  # its own database: the one device in it
        else:
            self._key = f"{site}/{line}/{device}"
        self.outbox = outbox
        self._owns = network is None  # a lone agent closes its outbox and network thread when it stops
        self.network = network or AgentNetwork()
        self._topics = {channel: topic_for(site, line, device, channel) for channel in Channel}
        # With an account, the broker makes its username the client id (docs/broker.md): ask for that one.
        self.client = new_client(mqtt, client_id or mqtt.username or f"agent-{site}-{line}-{device}")
        self.client.max_inflight_messages_set(WINDOW)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        # MQTT packet id → the publish's own MQTTMessageInfo and its outbox id. A packet id is only where to
        # look: paho reuses ids (1 again after 65,535), so a message leaves the outbox only once its own
        # MQTTMessageInfo says the broker acknowledged it. Only the network thread touches these.
        self._in_flight: dict[int, tuple[paho.MQTTMessageInfo, int]] = {}
        self._acked_ids: list[int] = []  # packet ids of PUBACKs not matched yet
        self._last_sent = 0
        self._ready = False  # connected, and the birth sent
        self.stopping = False
        self._birth_seq = 0
        # The state last recorded (its fields), stated again with each birth after the first; None while unknown.
        self._state: dict[str, Any] | None = None
        self._born = False  # a birth was sent on an earlier connection of this run

    @property
    def name(self) -> str:
        return f"{self.site}/{self.line}/{self.device}"

    @property
    def _client(self) -> paho.Client:
        return self.client

    # --- the SDK --------------------------------------------------------

    def telemetry(self, metrics: dict[str, Any], ts_ms: int | None = None) -> None:
        unknown = [name for name in metrics if self.profile.metric(name) is None]
        if unknown:
            raise ValueError(f"profile {self.profile.id} has no metric {', '.join(map(repr, unknown))}")
        self._record(Channel.TELEMETRY, {"metrics": metrics}, ts_ms)

    def state(self, state: str, reason: str | None = None, ts_ms: int | None = None) -> None:
        if self.profile.state(state) is None:
            raise ValueError(f"profile {self.profile.id} has no state {state!r}")
        fields = {"state": state, **({"reason": reason} if reason else {})}
        self._record(Channel.STATE, fields, ts_ms)
        self._state = fields

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
            device=self._key,
        )
        self.network.wake(self)

    def keep(self, values: Mapping[str, str]) -> None:
        """Remember ``values`` across restarts without a message (see ``production_batch``)."""
        self.outbox.keep(values, device=self._key)

    def kept(self, key: str) -> str | None:
        return self.outbox.kept(key, device=self._key)

    def source_status(self, online: bool, ts_ms: int | None = None) -> None:
        """Say the machine behind the agent was lost (offline: its state is unknown from here) or found again."""
        self._record(Channel.STATUS, self._status(online), ts_ms)
        if not online:
            self._state = None  # not to be stated again with a birth: unknown until the next state

    @property
    def pending(self) -> int:
        """Messages recorded and not yet acknowledged by the broker."""
        return self.outbox.pending_of(self._key)

    @property
    def connected(self) -> bool:
        return self._ready

    def serve_metrics(self, host: str, port: int) -> None:
        """Prometheus metrics of the outbox and the connection on http://host:port/metrics."""
        from prometheus_client import CollectorRegistry, Gauge, start_http_server  # noqa: PLC0415 - optional

        registry = CollectorRegistry()
        Gauge("pilot_agent_outbox_messages", "Messages recorded, not yet acknowledged", registry=registry).set_function(
            lambda: self.pending
        )
        Gauge("pilot_agent_outbox_bytes", "Disk the outbox uses", registry=registry).set_function(
            lambda: self.outbox.bytes_of(self._key)
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
        self.client.connect_async(
            self.mqtt.host,
            self.mqtt.port,
            keepalive=self.mqtt.keepalive_s,
            clean_start=False,
            properties=connect_properties(SESSION_S),
        )
        self.network.add(self)

    def flush(self, deadline: float) -> None:
        """Wait until the broker has every message recorded, or until ``deadline`` (``time.monotonic``)."""
        while self.pending and time.monotonic() < deadline:
            self.network.wake(self)
            time.sleep(0.05)

    def stop(self, flush_timeout_s: float = 30.0) -> int:
        """Send what is pending (waiting up to ``flush_timeout_s``), then disconnect; returns what is left."""
        self.flush(time.monotonic() + flush_timeout_s)
        self.disconnect()
        left = self.pending
        if self._owns:
            self.network.close()
            self.outbox.close()
        return left

    def disconnect(self) -> None:
        """A clean goodbye (the broker drops the will); no connecting again."""
        self.stopping = True

        def goodbye() -> None:
            if self.client.socket() is not None:
                self.client.disconnect()

        self.network.call(goodbye)

    # --- inside ---------------------------------------------------------

    def _record(self, channel: Channel, fields: dict[str, Any], ts_ms: int | None) -> None:
        ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
        self.outbox.put(
            self._topics[channel], channel.value, lambda seq: self._payload(seq, ts, fields), device=self._key
        )
        self.network.wake(self)

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
        first = self.outbox.reserve(Channel.STATUS.value, 2, device=self._key)
        self._birth_seq = first
        will = self._payload(first + 1, int(time.time() * 1000), self._status(online=False))
        self.client.will_set(self._topics[Channel.STATUS], will, qos=1)

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        if reason.is_failure:
            log.error("the MQTT broker refused the agent: %s", reason)
            return
        self._in_flight.clear()
        self._acked_ids.clear()
        self._last_sent = 0  # send again whatever the outbox still holds
        # The birth goes first on every connection, ahead of anything sent again: the collector starts
        # counting this device's seq afresh from it. It is not kept in the outbox: a birth is of this moment.
        born_ms = int(time.time() * 1000)
        birth = self._payload(self._birth_seq, born_ms, self._status(online=True))
        client.publish(self._topics[Channel.STATUS], birth, qos=1)
        if self._born:
            self._restate(born_ms)
        self._born = self._ready = True
        self.network.accepted(self)
        log.info("agent %s connected to %s; %d messages to send", self.name, self.mqtt.address, self.pending)
        self.network.wake(self)

    def _restate(self, born_ms: int) -> None:
        """The state the agent knows, again, stamped with a reconnection's birth's ts: a will the broker published
        while this agent recorded on (a broker restart, a network cut) must not leave the device unknown until its
        next state change. The collector stores it with the birth (``StatusTimes``), after the will."""
        fields = self._state
        if fields is None:
            return
        try:
            self._record(Channel.STATE, fields, born_ms)
        except OutboxFull:
            log.warning("agent %s: the outbox is full; its state is not stated again with its birth", self.name)

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        self._ready = False
        if not self.stopping:
            log.warning(
                "agent %s disconnected (%s); recording to the outbox until the broker is back", self.name, reason
            )
            self._prepare_connection()  # the next connection's will and birth

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        # Any PUBACK: the birth's, one for a message published before a reconnection, or one for a message
        # whose packet id was reused. ``pump`` sorts them out.
        self._acked_ids.append(mid)
        self.network.wake(self)

    def _remove_acknowledged(self, sweep: bool) -> None:
        """Drop from the outbox what the broker acknowledged.

        ``sweep`` looks at every message in flight instead of only those named by the PUBACKs since last
        time (the network thread sweeps every second), so no acknowledged message stays behind: a PUBACK
        for an older message with a reused packet id does not show on the newer one's info.
        """
        removed = []
        acked, self._acked_ids = self._acked_ids, []
        candidates = list(self._in_flight) if sweep else acked
        for mid in candidates:
            entry = self._in_flight.get(mid)
            if entry is None:
                continue  # not one of ours (the birth, a reconnection's leftover), or already removed
            info, message_id = entry
            if info.is_published():
                del self._in_flight[mid]
                removed.append(message_id)
        if removed:
            self.outbox.remove(*removed)

    def pump(self, sweep: bool = False) -> None:
        """In the network thread: drop what the broker acknowledged, publish what is durable and not yet sent."""
        self._remove_acknowledged(sweep=sweep)
        while self._ready and not self.stopping:
            room = WINDOW - len(self._in_flight)
            if room <= 0:
                break
            batch = self.outbox.after(self._last_sent, room, device=self._key)
            if not batch:
                break
            for message_id, topic, payload in batch:
                info = self.client.publish(topic, payload, qos=1)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    return  # disconnected meanwhile: on_connect starts over
                self._last_sent = message_id
                self._in_flight[info.mid] = (info, message_id)
        self._remove_acknowledged(sweep=False)

"""An MQTT 5 subscriber connection built for intake: bulk reads, bulk acknowledgements.

paho-mqtt reads a packet with several system calls and a dozen Python calls,
and sends each PUBACK as its own write: about 150 µs of one core per QoS 1
message here, which capped the collector below what Node-RED drains. This
connection reads up to 256 KiB per ``recv`` and decodes every packet in it
in one pass (``adapters.mqtt_packets``), hands the deliveries over as one
list, and sends the PUBACKs of a whole batch in one write, when the caller
says the batch is durable. Nothing is acknowledged before that.

One reader thread owns the socket's receiving side and reconnects, with
backoff, whenever the connection is lost; any thread may acknowledge or
publish. Subscriptions are made again on every connection.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from adapters import mqtt_packets as wire
from adapters.mqtt import MqttConnectError, MqttSettings, closed_early, refusal_hint
from adapters.mqtt_packets import Delivery, Packet, ProtocolError
from adapters.tls import client_context, describe_tls_failure

log = logging.getLogger("pilot.mqtt")

READ_SIZE = 256 * 1024
HOLD_POLL_S = 0.005
RECONNECT_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
SESSION_TAKEN_OVER = 0x8E  # DISCONNECT reason: another connection with our client id took the session


class ConnectionLost(ConnectionError):
    pass


class Publication:
    """A QoS 1 publish until its PUBACK: ``wait`` says whether the broker stored it."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.refusal: str | None = None  # the broker's reason code when it refused, or why it never answered

    def settle(self, refusal: str | None) -> None:
        self.refusal = refusal
        self._done.set()

    def wait(self, timeout_s: float) -> bool:
        """True once the broker confirmed it; False if it refused, the connection dropped, or time ran out."""
        if not self._done.wait(timeout_s):
            self.refusal = self.refusal or f"no PUBACK within {timeout_s:g} s"
            return False
        return self.refusal is None


class IntakeConnection:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        on_deliveries: Callable[[list[Delivery]], None],
        *,
        session_expiry_s: int | None = None,
        receive_maximum: int = 65535,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_session_lost: Callable[[str, str], None] | None = None,
        session_marker: Path | None = None,
        hold: Callable[[], bool] | None = None,
        will: Callable[[], tuple[str, bytes]] | None = None,
    ) -> None:
        if any(qos not in (0, 1) for _, qos in subscriptions):
            raise ValueError("intake subscriptions are QoS 0 or 1")
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = subscriptions
        self._on_deliveries = on_deliveries
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        # (kind, what happened): "taken_over" when the broker hands our session to another connection,
        # "not_present" when a reconnect finds no session although the broker was to keep it.
        self._on_session_lost = on_session_lost
        # A file that outlives the process, saying the broker keeps a session for this client id: a first
        # connection without one is then a lost session too, not a first start.
        self._session_marker = session_marker
        # Reading pauses while this says so: the caller's own bound on what it holds. Brokers do not all
        # honour Receive Maximum (Mosquitto 2.0.11 sends past it once the first PUBACKs arrive), and TCP
        # flow control then keeps the rest on the broker.
        self._hold = hold
        self._will = will  # made anew for each connection (Sparkplug's STATE will carries its birth's timestamp)
        self._session_expiry_s = session_expiry_s or 0
        self._receive_maximum = receive_maximum
        self._context = (
            client_context("mqtt", settings.ca_file, settings.cert_file, settings.key_file)
            if (settings.uses_tls)
            else None
        )
        if settings.key_file and not settings.uses_tls:
            raise ValueError("mqtt.key_file is set without mqtt.cert_file")
        self.generation = 0  # counts connections; a delivery is acknowledged on its own connection only
        self._sock: socket.socket | None = None
        # Plain sockets read and write from two threads at once; an SSL object must not, so TLS takes turns.
        self._send_lock = threading.Lock()
        self._tls_lock = threading.Lock() if self._context is not None else None
        self._carry = b""  # what came after the CONNACK in the same read: the first queued deliveries
        self._keepalive_s = settings.keepalive_s
        self._subscription_id = 0
        self._state_lock = threading.Lock()
        self._last_sent = 0.0
        self._last_received = 0.0
        self._packet_ids = 0
        self._publications: dict[int, Publication] = {}
        self._outbound_slots = threading.BoundedSemaphore(65535)
        self._subscribed = threading.Event()  # the first SUBACK came, or the first connection was lost before it
        self._lost_before_suback: str | None = None
        self.subscription_refusal: str | None = None
        self._stopping = threading.Event()
        self._reader = threading.Thread(target=self._run, name="pilot-mqtt-intake", daemon=True)

    # --- lifecycle -------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe, or raise MqttConnectError saying why not; then read and reconnect in a thread."""
        session_present = self._connect(timeout_s)
        self._check_session_marker(session_present)
        self._reader.start()
        self._announce(session_present)
        if not self._subscribed.wait(timeout_s):
            log.warning("the broker has not confirmed the subscription to %s yet", self.subscriptions[0][0])
        if self._lost_before_suback and not self.subscription_refusal:
            self.close()
            raise MqttConnectError(
                f"the MQTT broker at {self.settings.address} dropped the connection instead of confirming the"
                f" subscription to {', '.join(f for f, _ in self.subscriptions)} ({self._lost_before_suback}):"
                " is every topic filter valid?"
            )
        if self.subscription_refusal:
            self.close()
            raise MqttConnectError(
                f"the MQTT broker at {self.settings.address} refused the subscription to"
                f" {self.subscriptions[0][0]}: {self.subscription_refusal}; does this account's ACL allow reading it?"
            )

    def close(self) -> None:
        """Disconnect cleanly: the session, and every unacknowledged message, stay on the broker."""
        self._stopping.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError, ConnectionLost):
                self._send(wire.DISCONNECT_PACKET)
            _shut(sock)
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(10)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def cut(self) -> None:
        """Drop the connection as if the network had: the reader reconnects and subscribes again."""
        sock = self._sock
        if sock is not None:
            _shut(sock)

    # --- what other threads call -------------------------------------------

    def acknowledge(self, deliveries: list[Delivery]) -> int:
        """PUBACK, in one write, the QoS 1 deliveries this connection made; how many were acknowledged.

        A delivery from an earlier connection comes again on this one: its old
        packet id could now name a different message, so it is left alone.
        """
        generation = self.generation
        ids = [d.packet_id for d in deliveries if d.qos and d.generation == generation]
        if ids:
            try:
                self._send(wire.pubacks(ids))
            except (OSError, ConnectionLost) as exc:
                log.warning("could not acknowledge %d messages (%s): the broker delivers them again", len(ids), exc)
                return 0
        return len(ids)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Publication:
        """Send a PUBLISH; for QoS 1 the returned Publication settles on its PUBACK."""
        publication = Publication()
        if qos == 0:
            try:
                self._send(wire.publish_packet(topic, payload, 0, retain=retain))
                publication.settle(None)
            except (OSError, ConnectionLost) as exc:
                publication.settle(f"not connected ({exc})")
            return publication
        if not self._outbound_slots.acquire(timeout=10):
            publication.settle("the broker's receive maximum is used up by publishes it has not acknowledged")
            return publication
        with self._state_lock:
            packet_id = self._next_packet_id()
            self._publications[packet_id] = publication
        try:
            self._send(wire.publish_packet(topic, payload, 1, packet_id, retain=retain))
        except (OSError, ConnectionLost) as exc:
            self._settle(packet_id, f"not connected ({exc})")
        return publication

    def unsubscribe(self, filters: list[str]) -> None:
        with self._state_lock:
            packet_id = self._next_packet_id()
        self._send(wire.unsubscribe_packet(packet_id, filters))

    # --- the reader thread ----------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            sock = self._sock
            if sock is None:
                try:
                    session_present = self._connect(10.0)
                except MqttConnectError as exc:
                    delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                    failures += 1
                    log.warning("%s; trying again in %.0f s", exc, delay)
                    self._stopping.wait(delay)
                    continue
                failures = 0
                if not session_present and self._session_expiry_s:
                    self._session_lost(
                        "not_present",
                        "the broker kept no session for us although it was to keep it for"
                        f" {self._session_expiry_s} s: what it had queued for {self.client_id!r} is gone (taken"
                        " over and ended by another connection with our client id, expired, or lost in a broker"
                        " restart)",
                    )
                self._announce(session_present)
                sock = self._sock
                if sock is None:  # lost already
                    continue
            try:
                reason = self._read(sock)
            except Exception as exc:  # a bug here must cost a reconnect, never the intake itself
                log.exception("unexpected error reading from the broker; reconnecting")
                reason = f"an unexpected error ({type(exc).__name__}: {exc})"
            self._drop(sock, reason)

    def _read(self, sock: socket.socket) -> str:
        """Read and dispatch until the connection ends; why it ended."""
        keepalive = self._keepalive_s
        tick = min(1.0, keepalive / 4) if keepalive else 1.0
        sock.settimeout(None)  # blocking: select() paces the reads, and a send never stops half-way
        tls_lock = self._tls_lock
        pending, self._carry = self._carry, b""
        generation = self.generation
        hold = self._hold
        while not self._stopping.is_set():
            chunk: bytes | None = None
            # Held, unless a publish of ours awaits its PUBACK: the caller may be waiting on it to free room.
            if hold is not None and hold() and not self._publications:
                time.sleep(HOLD_POLL_S)
                self._last_received = time.monotonic()  # not reading: silence now is ours, not the broker's
            elif pending_tls(sock) or select.select([sock], [], [], tick)[0]:
                try:
                    if tls_lock is None:
                        chunk = sock.recv(READ_SIZE)
                    else:
                        with tls_lock:
                            chunk = sock.recv(READ_SIZE)
                except (OSError, ValueError) as exc:  # ValueError: the socket was closed under us
                    return f"the connection failed ({exc})"
                if not chunk:
                    return "the broker closed the connection"
            now = time.monotonic()
            if chunk is not None or (pending and not (hold is not None and hold() and not self._publications)):
                if chunk is not None:
                    self._last_received = now
                    data = pending + chunk if pending else chunk
                else:
                    data = pending
                try:
                    deliveries, others, used = wire.read_packets(data, generation)
                except ProtocolError as exc:
                    return f"the broker sent what this client cannot read ({exc})"
                pending = data[used:]
                if deliveries:
                    self._on_deliveries(deliveries)
                for packet in others:
                    ended = self._dispatch(packet)
                    if ended:
                        return ended
            if keepalive:
                if now - self._last_received > 1.5 * keepalive:
                    return f"the broker has not answered for {now - self._last_received:.0f} s"
                if now - self._last_sent >= keepalive / 2:
                    try:
                        self._send(wire.PINGREQ_PACKET)
                    except (OSError, ConnectionLost) as exc:
                        return f"the connection failed ({exc})"
        return "closing"

    def _dispatch(self, packet: Packet) -> str | None:
        if packet.kind == wire.PUBACK:
            code = packet.reasons[0]
            self._settle(packet.packet_id, _reason(PacketTypes.PUBACK, code) if code >= 0x80 else None)
        elif packet.kind == wire.SUBACK:
            refused = [code for code in packet.reasons if code >= 0x80]
            if packet.packet_id == self._subscription_id:
                if refused:
                    self.subscription_refusal = _reason(PacketTypes.SUBACK, refused[0])
                    log.error(
                        "the broker refused the subscription to %s: %s",
                        self.subscriptions[0][0],
                        self.subscription_refusal,
                    )
                self._subscribed.set()
        elif packet.kind == wire.DISCONNECT:
            reason = f"the broker disconnected us: {_reason(PacketTypes.DISCONNECT, packet.reasons[0])}"
            if packet.reasons[0] == SESSION_TAKEN_OVER:
                self._session_lost(
                    "taken_over",
                    f"another connection with our client id {self.client_id!r} took our session: it may have"
                    " ended it and its queue; give every collector process its own account (docs/broker.md)",
                )
            return reason
        elif packet.kind == wire.CONNACK:
            return "the broker sent a second CONNACK"
        return None

    # --- connecting -------------------------------------------------------------

    def _connect(self, timeout_s: float) -> bool:
        """Open a connection, send CONNECT and SUBSCRIBE, and read the CONNACK; whether a session was present."""
        settings = self.settings
        try:
            raw = socket.create_connection((settings.host, settings.port), timeout=timeout_s)
        except OSError as exc:
            raise MqttConnectError(f"cannot reach the MQTT broker at {settings.address}: {exc}") from None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = raw
        try:
            if self._context is not None:
                try:
                    sock = self._context.wrap_socket(raw, server_hostname=settings.host)
                except ssl.SSLError as exc:
                    raise MqttConnectError(
                        f"TLS with the MQTT broker at {settings.address} failed: {describe_tls_failure('mqtt', exc)}"
                    ) from None
            password = settings.password.get_secret_value() if settings.password else None
            connect = wire.connect_packet(
                self.client_id,
                keepalive_s=settings.keepalive_s,
                clean_start=not self._session_expiry_s,
                session_expiry_s=self._session_expiry_s,
                receive_maximum=self._receive_maximum,
                username=settings.username or None,
                password=password if settings.username else None,
                will=self._will() if self._will is not None else None,
            )
            connack, rest = self._handshake(sock, connect, timeout_s)
        except BaseException:
            _shut(sock)
            raise
        code = connack.reasons[0]
        if code >= 0x80:
            _shut(sock)
            reason = ReasonCode(PacketTypes.CONNACK, identifier=code)
            hint = refusal_hint(settings, reason)
            raise MqttConnectError(f"the MQTT broker at {settings.address} refused the connection: {reason}{hint}")
        properties = connack.properties or {}
        slots = int(properties.get(wire.PROP_RECEIVE_MAXIMUM, 65535))
        with self._state_lock:
            self.generation += 1
            self._keepalive_s = int(properties.get(wire.PROP_SERVER_KEEP_ALIVE, settings.keepalive_s))
            self._outbound_slots = threading.BoundedSemaphore(slots)
            self._carry = rest
            self._sock = sock
            now = time.monotonic()
            self._last_sent = self._last_received = now
            self._subscription_id = self._next_packet_id()
        self._send(wire.subscribe_packet(self._subscription_id, self.subscriptions))
        return connack.session_present

    def _handshake(self, sock: socket.socket, connect: bytes, timeout_s: float) -> tuple[Packet, bytes]:
        address = self.settings.address
        sock.settimeout(timeout_s)
        deadline = time.monotonic() + timeout_s
        buffer = b""
        try:
            sock.sendall(connect)
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = sock.recv(4096)
                if not chunk:
                    raise MqttConnectError(f"the MQTT broker at {address} {closed_early(self.settings, [])}")
                buffer += chunk
                if buffer[0] & 0xF0 != wire.CONNACK:
                    raise MqttConnectError(f"the MQTT broker at {address} answered CONNECT with something else")
                end = wire.frame_end(buffer)
                if end > 0:  # queued deliveries may follow in the same read: they are the reader's
                    return wire.read_packets(buffer[:end], 0)[1][0], buffer[end:]
        except TimeoutError:
            raise MqttConnectError(f"the MQTT broker at {address} did not answer within {timeout_s:g} s") from None
        except ssl.SSLError as exc:
            raise MqttConnectError(f"the MQTT broker at {address} {closed_early(self.settings, [str(exc)])}") from None
        except ProtocolError as exc:
            raise MqttConnectError(f"the MQTT broker at {address} does not speak MQTT 5 as expected ({exc})") from None
        except OSError as exc:
            raise MqttConnectError(f"the MQTT broker at {address} {closed_early(self.settings, [str(exc)])}") from None

    def _announce(self, session_present: bool) -> None:
        if self._on_connect is not None:
            try:
                self._on_connect(session_present)
            except Exception:
                log.exception("the on_connect callback failed")

    def _check_session_marker(self, session_present: bool) -> None:
        marker = self._session_marker
        if marker is None:
            return
        identity = f"{self.client_id}@{self.settings.address}\n"
        try:
            kept = marker.read_text(encoding="utf-8") == identity
        except OSError:
            kept = False
        if kept and not session_present and self._session_expiry_s:
            self._session_lost(
                "not_present",
                f"the broker had a session for {self.client_id!r} when we last ran, and has none now: what it"
                " queued for us meanwhile is gone (taken over and ended by another connection with our client id,"
                " expired, or lost in a broker crash)",
            )
        try:
            if self._session_expiry_s:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(identity, encoding="utf-8")
            else:
                marker.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot keep %s (%s): a session lost while we are away will not be noticed", marker, exc)

    def _session_lost(self, kind: str, what: str) -> None:
        if self._on_session_lost is not None:
            try:
                self._on_session_lost(kind, what)
            except Exception:
                log.exception("the on_session_lost callback failed")

    def _drop(self, sock: socket.socket, reason: str) -> None:
        with self._state_lock:
            self._sock = None
            publications, self._publications = self._publications, {}
        _shut(sock)
        if not self._subscribed.is_set():
            self._lost_before_suback = reason
            self._subscribed.set()
        for publication in publications.values():
            publication.settle(f"the connection was lost before the broker confirmed it ({reason})")
        if self._on_disconnect is not None and not self._stopping.is_set():
            try:
                self._on_disconnect(reason)
            except Exception:
                log.exception("the on_disconnect callback failed")

    # --- helpers ---------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionLost("not connected to the broker")
        with self._send_lock:
            if self._tls_lock is None:
                sock.sendall(data)
            else:
                with self._tls_lock:
                    sock.sendall(data)
            self._last_sent = time.monotonic()

    def _next_packet_id(self) -> int:
        """The next free packet id for our own packets (the caller holds the state lock)."""
        for _ in range(65535):
            self._packet_ids = self._packet_ids % 65535 + 1
            if self._packet_ids not in self._publications:
                return self._packet_ids
        raise ConnectionLost("every packet id is in use")

    def _settle(self, packet_id: int, refusal: str | None) -> None:
        with self._state_lock:
            publication = self._publications.pop(packet_id, None)
            slots = self._outbound_slots
        if publication is not None:
            publication.settle(refusal)
            with contextlib.suppress(ValueError):  # taken from the previous connection's semaphore
                slots.release()


def _reason(packet_type: int, code: int) -> str:
    try:
        return str(ReasonCode(packet_type, identifier=code))
    except ValueError:
        return f"reason code {code:#x}"


def pending_tls(sock: socket.socket) -> int:
    """Bytes TLS has decrypted but not handed over yet: select() cannot see them."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()

"""A QoS 1 publisher fast enough to out-run the consumers it feeds, for the benchmarks.

paho-mqtt publishes about 3–4k msg/s on this machine, well below what the
collector drains, so a live phase timed with it would only measure paho.
This one sends PUBLISH packets encoded beforehand (``adapters.mqtt_packets``),
many per ``send``, keeps a window of unacknowledged messages, and reads the
PUBACKs in bulk: it costs a few µs of Python per message and leaves the
broker as the limit.

``publish_worker`` runs it in a spawned process on a share of a workload
file; ``paced_publish_worker`` (in ``bench.latency``) uses the same connection.
"""

from __future__ import annotations

import contextlib
import pickle
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from adapters import mqtt_packets as wire

MAX_PACKET_ID = 65535
DEFAULT_WINDOW = 5000
SEND_CHUNK = 500  # packets joined into one send
READ_SIZE = 256 * 1024
PACING_TICK_S = 0.001
REFUSED = 0x80  # PUBACK reason codes from here up say the broker did not take the message


class PublishError(RuntimeError):
    pass


def packet_id(index: int) -> int:
    """The packet id of the ``index``-th message a connection publishes (1..65535, then again)."""
    return index % MAX_PACKET_ID + 1


def encode_publishes(messages: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """QoS 1 PUBLISH packets for ``messages``, numbered as ``packet_id`` says."""
    return [wire.publish_packet(topic, payload, 1, packet_id(i)) for i, (topic, payload) in enumerate(messages)]


def device_share(messages: Sequence[tuple[str, bytes]], share: int, shares: int) -> list[tuple[str, bytes]]:
    """The messages of every ``shares``-th topic, from the ``share``-th on, in workload order.

    Splitting by topic (one per device) keeps each device's seq in order within one publisher.
    """
    numbers: dict[str, int] = {}
    for topic, _ in messages:
        numbers.setdefault(topic, len(numbers))
    return [(topic, payload) for topic, payload in messages if numbers[topic] % shares == share]


class RawPublisher:
    """One MQTT 5 connection (clean start) that publishes QoS 1 and counts PUBACKs."""

    def __init__(
        self, port: int, client_id: str, *, host: str = "127.0.0.1", window: int = DEFAULT_WINDOW, timeout_s: float = 30
    ) -> None:
        self.timeout_s = timeout_s
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self._sock.sendall(wire.connect_packet(client_id, keepalive_s=60, clean_start=True))
        connack = self._read_connack()
        if connack.reasons[:1] != b"\x00":
            raise PublishError(f"the broker refused the publisher's CONNECT (reason {connack.reasons.hex()})")
        # The broker may cap how many QoS 1 messages it takes unacknowledged; 0 or absent means 65,535.
        receive_maximum = int((connack.properties or {}).get(wire.PROP_RECEIVE_MAXIMUM, 0) or MAX_PACKET_ID)
        self.window = max(1, min(window, receive_maximum, MAX_PACKET_ID - 1))
        self._sock.settimeout(None)  # from here on readiness is polled, and send blocks
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        self._outstanding: set[int] = set()
        self.sent = 0
        self.acked = 0
        self.refused = 0

    def _read_connack(self) -> wire.Packet:
        while True:
            end = wire.frame_end(self._buffer)
            if end > 0:
                _, others, _ = wire.read_packets(self._buffer[:end], 0)
                self._buffer = self._buffer[end:]
                if not others or others[0].kind != wire.CONNACK:
                    raise PublishError("the broker answered CONNECT with something other than CONNACK")
                return others[0]
            chunk = self._sock.recv(4096)
            if not chunk:
                raise PublishError("the broker closed the connection before CONNACK")
            self._buffer += chunk

    def _read_acks(self, wait_s: float) -> None:
        """Take in whatever PUBACKs have arrived, waiting up to ``wait_s`` for the first."""
        if not self._poll.poll(max(0, round(wait_s * 1000))):
            return
        chunk = self._sock.recv(READ_SIZE)
        if not chunk:
            raise PublishError(f"the broker closed the connection after {self.acked} PUBACKs")
        self._buffer += chunk
        _, others, used = wire.read_packets(self._buffer, 0)
        self._buffer = self._buffer[used:]
        for packet in others:
            if packet.kind != wire.PUBACK:
                continue
            self._outstanding.discard(packet.packet_id)
            self.acked += 1
            if packet.reasons and packet.reasons[0] >= REFUSED:
                self.refused += 1

    def _send(self, packets: Sequence[bytes], first_index: int) -> None:
        ids = [packet_id(first_index + offset) for offset in range(len(packets))]
        if not self._outstanding.isdisjoint(ids):
            raise PublishError("a packet id came round again before its PUBACK: the window is too large")
        self._outstanding.update(ids)
        self._sock.sendall(b"".join(packets))
        self.sent += len(packets)

    def publish_all(self, packets: Sequence[bytes]) -> None:
        """Send every packet (numbered by ``packet_id`` from 0) and wait for every PUBACK."""
        deadline = time.monotonic() + self.timeout_s
        total = len(packets)
        while self.acked < total:
            room = self.window - (self.sent - self.acked)
            if room > 0 and self.sent < total:
                chunk = min(room, SEND_CHUNK, total - self.sent)
                self._send(packets[self.sent : self.sent + chunk], self.sent)
                self._read_acks(0)
                deadline = time.monotonic() + self.timeout_s
            else:
                before = self.acked
                self._read_acks(0.5)
                if self.acked > before:
                    deadline = time.monotonic() + self.timeout_s
                elif time.monotonic() > deadline:
                    raise PublishError(f"no PUBACK for {self.timeout_s:g} s; {total - self.acked} outstanding")

    def publish_paced(self, make_packet: Callable[[int, int], bytes], count: int, rate: float) -> float:
        """Publish ``count`` messages at ``rate`` per second, each encoded when it is due.

        ``make_packet(index, packet_id)`` builds message ``index``. Returns how far, at
        worst, sending fell behind the schedule (s).
        """
        started = time.monotonic()
        worst_lag = 0.0
        while self.sent < count:
            now = time.monotonic()
            due = min(count, int((now - started) * rate) + 1)
            if due > self.sent:
                if self.sent - self.acked + (due - self.sent) > self.window:
                    self._read_acks(0.01)
                    continue
                worst_lag = max(worst_lag, now - (started + self.sent / rate))
                first = self.sent
                self._send([make_packet(i, packet_id(i)) for i in range(first, due)], first)
            # Sleep at least a millisecond (poll's resolution): what fell due meanwhile goes as one small burst,
            # instead of a loop spinning a core that the consumer under test needs.
            next_due = started + self.sent / rate
            self._read_acks(min(max(next_due - time.monotonic(), PACING_TICK_S), 0.01))
        deadline = time.monotonic() + self.timeout_s
        while self.acked < count and time.monotonic() < deadline:
            self._read_acks(0.5)
        if self.acked < count:
            raise PublishError(f"no PUBACK for {count - self.acked} paced messages within {self.timeout_s:g} s")
        return worst_lag

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(wire.DISCONNECT_PACKET)
        self._sock.close()


def publish_worker(
    port: int, workload_path: str, count: int, client_id: str, share: int, shares: int, go: Any, out: Any
) -> None:
    """Publish this process's share of the first ``count`` workload messages, as fast as the broker takes them.

    Packets are encoded and the connection made before ``go`` is set, so the
    timed part is sending and acknowledging only. Puts a result dict on ``out``.
    """
    with open(workload_path, "rb") as fh:
        messages: list[tuple[str, bytes]] = pickle.load(fh)[:count]
    mine = device_share(messages, share, shares) if shares > 1 else messages
    packets = encode_publishes(mine)
    publisher = RawPublisher(port, client_id)
    out.put({"event": "ready", "share": share})
    if not go.wait(120):
        publisher.close()
        out.put({"event": "done", "share": share, "error": "never told to start"})
        return
    started = time.time()
    error: str | None = None
    try:
        publisher.publish_all(packets)
    except (PublishError, OSError) as exc:
        error = str(exc)
    finished = time.time()
    publisher.close()
    out.put(
        {
            "event": "done",
            "share": share,
            "messages": len(packets),
            "published": publisher.acked - publisher.refused,
            "refused": publisher.refused,
            "window": publisher.window,
            "started": started,
            "finished": finished,
            **({"error": error} if error else {}),
        }
    )

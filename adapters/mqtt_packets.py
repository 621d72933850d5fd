"""The MQTT 5 packets a bulk subscriber needs, encoded and decoded without I/O.

Only what ``adapters.mqtt_intake`` uses: CONNECT, SUBSCRIBE, UNSUBSCRIBE,
PUBLISH (QoS 0 and 1), PUBACK, PINGREQ and DISCONNECT out; CONNACK,
SUBACK, UNSUBACK, PUBLISH, PUBACK, PINGRESP and DISCONNECT in.
``read_packets`` takes a buffer holding any number of packets and returns
those complete, so a single ``recv`` of 256 KiB yields a thousand messages
for one Python call instead of several calls and system calls per message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x82, 0x90, 0xA2, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0

PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21
PROP_SERVER_KEEP_ALIVE = 0x13
PROP_REASON_STRING = 0x1F

# A property's identifier → how long its value is: a fixed size, or -2 for a
# two-byte length prefix, -4 for a string pair, -1 for a variable byte integer.
_PROPERTY_SIZES = {
    0x01: 1, 0x02: 4, 0x03: -2, 0x08: -2, 0x09: -2, 0x0B: -1, 0x11: 4, 0x12: -2, 0x13: 2, 0x15: -2,
    0x16: -2, 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: -2, 0x1C: -2, 0x1F: -2, 0x21: 2, 0x22: 2, 0x23: 2,
    0x24: 1, 0x25: 1, 0x26: -4, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}  # fmt: skip

PINGREQ_PACKET = bytes((PINGREQ, 0))
DISCONNECT_PACKET = bytes((DISCONNECT, 0))


class ProtocolError(ValueError):
    """The peer sent something that is not MQTT 5 as this client speaks it."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A PUBLISH received; ``packet_id`` is 0 for QoS 0."""

    topic: str
    payload: bytes
    packet_id: int
    qos: int
    generation: int  # which connection delivered it: its PUBACK must go back on that one


@dataclass(frozen=True, slots=True)
class Packet:
    """Any packet other than PUBLISH: its type, packet id (or 0), reason codes and properties."""

    kind: int
    packet_id: int = 0
    reasons: bytes = b""
    properties: dict[int, int | bytes] | None = None
    session_present: bool = False


# --- encoding ---------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError("an MQTT string holds at most 65,535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    keepalive_s: int,
    clean_start: bool,
    session_expiry_s: int = 0,
    receive_maximum: int = 0,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes] | None = None,
) -> bytes:
    """CONNECT; ``will`` (topic, payload) is published by the broker, QoS 1 and retained, if the connection dies."""
    flags = 0x02 if clean_start else 0
    properties = b""
    if session_expiry_s:
        properties += bytes((PROP_SESSION_EXPIRY,)) + struct.pack("!I", session_expiry_s)
    if receive_maximum:
        properties += bytes((PROP_RECEIVE_MAXIMUM,)) + struct.pack("!H", receive_maximum)
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | (1 << 3) | 0x20  # will, QoS 1, retained
        payload += b"\x00" + _string(will[0]) + _string(will[1])
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes((5, flags)) + struct.pack("!H", keepalive_s)
    return _packet(CONNECT, header + varint(len(properties)) + properties + payload)


def subscribe_packet(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00"
    for topic_filter, qos in filters:
        body += _string(topic_filter) + bytes((qos,))
    return _packet(SUBSCRIBE, body)


def unsubscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    return _packet(UNSUBSCRIBE, struct.pack("!H", packet_id) + b"\x00" + b"".join(_string(f) for f in filters))


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int = 0, retain: bool = False) -> bytes:
    if qos not in (0, 1):
        raise ValueError("this client publishes with QoS 0 or 1")
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + b"\x00" + payload
    return _packet(PUBLISH | (qos << 1) | int(retain), body)


_PUBACK = struct.Struct("!BBH")


def pubacks(packet_ids: list[int]) -> bytes:
    """PUBACKs (success, no properties: remaining length 2) for many messages, as one write."""
    pack = _PUBACK.pack
    return b"".join([pack(PUBACK, 2, packet_id) for packet_id in packet_ids])


# --- decoding ---------------------------------------------------------------


def read_packets(buffer: bytes, generation: int) -> tuple[list[Delivery], list[Packet], int]:
    """The complete packets at the start of ``buffer``: deliveries, other packets, and bytes consumed."""
    deliveries: list[Delivery] = []
    others: list[Packet] = []
    append = deliveries.append
    size = len(buffer)
    at = 0
    while at + 2 <= size:
        first = buffer[at]
        # The remaining length: one byte below 128, as nearly every telemetry message has.
        length = buffer[at + 1]
        start = at + 2
        if length & 0x80:
            length, start = _long_length(buffer, at + 1)
            if start < 0:
                break
        end = start + length
        if end > size:
            break
        if first & 0xF0 == PUBLISH:
            qos = (first >> 1) & 0x03
            topic_end = start + 2 + ((buffer[start] << 8) | buffer[start + 1])
            if topic_end + 2 * (qos > 0) >= end:
                raise ProtocolError("a PUBLISH is shorter than its header says")
            try:
                topic = buffer[start + 2 : topic_end].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("a PUBLISH topic is not UTF-8") from None
            if qos == 1:
                packet_id = (buffer[topic_end] << 8) | buffer[topic_end + 1]
                at_properties = topic_end + 2
            elif qos == 0:
                packet_id = 0
                at_properties = topic_end
            else:
                raise ProtocolError("a QoS 2 PUBLISH arrived, though every subscription asked for QoS 1 at most")
            properties_length = buffer[at_properties]
            at_payload = at_properties + 1
            if properties_length & 0x80:
                properties_length, at_payload = _long_length(buffer, at_properties)
            at_payload += properties_length
            if at_payload > end:
                raise ProtocolError("a PUBLISH is shorter than its header says")
            append(Delivery(topic, buffer[at_payload:end], packet_id, qos, generation))
        else:
            others.append(_other(first, buffer[start:end]))
        at = end
    return deliveries, others, at


def frame_end(buffer: bytes) -> int:
    """Where the first packet in ``buffer`` ends, or -1 if it is not all here."""
    if len(buffer) < 2:
        return -1
    length, start = _long_length(buffer, 1)
    return -1 if start < 0 or start + length > len(buffer) else start + length


def _long_length(buffer: bytes, at: int) -> tuple[int, int]:
    """A variable byte integer at ``at``: its value and where it ends, or (0, -1) if it is not all here."""
    value, shift = 0, 0
    for offset in range(4):
        if at + offset >= len(buffer):
            return 0, -1
        byte = buffer[at + offset]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at + offset + 1
        shift += 7
    raise ProtocolError("a variable byte integer is longer than 4 bytes")


def _other(first: int, body: bytes) -> Packet:
    kind = first & 0xF0
    try:
        if kind == CONNACK:
            properties = _properties(body, 2)
            return Packet(CONNACK, reasons=body[1:2], properties=properties, session_present=bool(body[0] & 1))
        if kind in (PUBACK, SUBACK, UNSUBACK):
            packet_id = (body[0] << 8) | body[1]
            if kind == PUBACK:
                return Packet(PUBACK, packet_id, body[2:3] or b"\x00")
            length, at = _long_length(body, 2)
            return Packet(kind, packet_id, body[at + length :], _properties(body, 2))
        if kind == PINGRESP:
            return Packet(PINGRESP)
        if kind == DISCONNECT:
            return Packet(DISCONNECT, reasons=body[:1] or b"\x00", properties=_properties(body, 1) if body else {})
    except (IndexError, struct.error):
        raise ProtocolError(f"a malformed packet of type {kind >> 4}") from None
    raise ProtocolError(f"an unexpected packet of type {kind >> 4}")


def _properties(body: bytes, at: int) -> dict[int, int | bytes]:
    if at >= len(body):
        return {}
    length, at = _long_length(body, at)
    if at < 0:
        raise ProtocolError("a packet's properties are cut short")
    end = at + length
    found: dict[int, int | bytes] = {}
    while at < end:
        identifier = body[at]
        size = _PROPERTY_SIZES.get(identifier)
        if size is None:
            raise ProtocolError(f"an unknown property {identifier:#x}")
        at += 1
        if size > 0:
            found[identifier] = int.from_bytes(body[at : at + size], "big")
            at += size
        elif size == -1:
            found[identifier], at = _long_length(body, at)
        else:
            for _ in range(1 if size == -2 else 2):
                text_length = (body[at] << 8) | body[at + 1]
                found[identifier] = body[at + 2 : at + 2 + text_length]
                at += 2 + text_length
    return found

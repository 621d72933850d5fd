"""Sparkplug B 3.0 host application logic: births, aliases, seq and bdSeq, rebirths, mapping. Pure: no I/O.

The collector's adapter decodes protobuf bytes into ``SpbPayload``; ``SparkplugHost.handle`` then decides,
per message, what it means: records for our measurements (through ``pilot_core.validation``'s encoders,
so a field's type is the profile's, never the edge node's), a dead letter with its reason, a rebirth to
request, or nothing (a duplicate, a stale death, a command). States and production come from metrics
through ``pilot_core.signals``, the same rules the edge agent's source maps use. docs/sparkplug.md tells
the rules in words.
"""

from __future__ import annotations

import copy
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pilot_core.contract import (
    Channel,
    ProductionRecord,
    StateRecord,
    StatusRecord,
    TelemetryRecord,
    Topic,
    parse_timestamp,
)
from pilot_core.ids import InvalidIdError, check_id
from pilot_core.profiles import DeviceProfile, Metric, MetricType
from pilot_core.registry import DeviceKey, DeviceRegistry, RegisteredDevice
from pilot_core.signals import (
    CounterRole,
    CounterSpec,
    ProductionCounters,
    SignalValue,
    StateDebouncer,
    as_unsigned,
    classify,
)
from pilot_core.source_map import ProductionSpec, StateSpec
from pilot_core.validation import ClockCheck, Rejection, RejectReason, encode_records

NAMESPACE = "spBv1.0"
SEQ_MODULUS = 256
# A seq up to this far behind the last one is a message delivered again (after a reconnect), not a gap.
DUPLICATE_WINDOW = 16
BD_SEQ = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"


class MessageType(enum.StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"


class SparkplugTopicError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    kind: MessageType | None  # None: spBv1.0/STATE/{host_id}
    edge_node: str
    device: str | None = None

    @property
    def node(self) -> tuple[str, str]:
        return (self.group, self.edge_node)

    def __str__(self) -> str:
        if self.kind is None:
            return f"{NAMESPACE}/STATE/{self.edge_node}"
        return "/".join(p for p in (NAMESPACE, self.group, self.kind.value, self.edge_node, self.device) if p)


def is_sparkplug(topic: str) -> bool:
    return topic.startswith(NAMESPACE + "/")


def parse_sparkplug_topic(topic: str) -> SparkplugTopic:
    parts = topic.split("/")
    if len(parts) == 3 and parts[:2] == [NAMESPACE, "STATE"] and parts[2]:
        return SparkplugTopic("", None, parts[2])
    if parts[0] != NAMESPACE or len(parts) not in (4, 5) or not all(parts):
        raise SparkplugTopicError(
            f"not a Sparkplug B topic: expected {NAMESPACE}/{{group}}/{{message type}}/{{edge node}}[/{{device}}]"
        )
    try:
        kind = MessageType(parts[2])
    except ValueError:
        raise SparkplugTopicError(f"unknown Sparkplug message type {parts[2]!r}") from None
    device = parts[4] if len(parts) == 5 else None
    if (device is None) != (kind.value[0] == "N"):
        raise SparkplugTopicError(f"a {kind.value} topic {'has no' if device is None else 'has a'} device level")
    return SparkplugTopic(parts[1], kind, parts[3], device)


# --- decoded payloads (the adapter fills these from protobuf) -------------------


class DataType(enum.IntEnum):
    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21


# Which protobuf value field each datatype travels in; anything else (arrays, extensions) is unsupported.
VALUE_FIELD: dict[int, str] = {
    **dict.fromkeys((DataType.INT8, DataType.INT16, DataType.INT32), "int_value"),
    **dict.fromkeys((DataType.UINT8, DataType.UINT16, DataType.UINT32), "int_value"),
    **dict.fromkeys((DataType.INT64, DataType.UINT64, DataType.DATETIME), "long_value"),
    DataType.FLOAT: "float_value",
    DataType.DOUBLE: "double_value",
    DataType.BOOLEAN: "boolean_value",
    **dict.fromkeys((DataType.STRING, DataType.TEXT, DataType.UUID), "string_value"),
    **dict.fromkeys((DataType.BYTES, DataType.FILE), "bytes_value"),
    DataType.DATASET: "dataset_value",
    DataType.TEMPLATE: "template_value",
}
_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}
# What our fields hold: numbers and booleans. The profile's metric type decides the stored type.
_FLOATS = {DataType.FLOAT, DataType.DOUBLE}
STORABLE = {*_SIGNED_BITS, *_UNSIGNED_BITS, DataType.FLOAT, DataType.DOUBLE, DataType.BOOLEAN, DataType.DATETIME}


def datatype_name(datatype: int | None) -> str:
    if datatype is None:
        return "no datatype"
    try:
        return DataType(datatype).name.title().replace("Uint", "UInt")
    except ValueError:
        return f"datatype {datatype}" if datatype < 22 or datatype > 34 else f"array datatype {datatype}"


class SpbMetric(NamedTuple):  # a tuple: built by the hundred thousand a second, where a frozen dataclass costs more
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    value: bool | int | float | str | bytes | None = None
    value_field: str | None = None  # the protobuf oneof that was set; None when no value (is_null or absent)
    is_historical: bool = False
    is_null: bool = False


class SpbPayload(NamedTuple):
    timestamp: int | None = None
    seq: int | None = None
    metrics: tuple[SpbMetric, ...] = ()


# --- configuration: Sparkplug addresses to our devices ---------------------------


class SparkplugDeviceMap(BaseModel):
    """One edge node (``device`` omitted: the node's own metrics) or device, and where its data goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(min_length=1)
    edge_node: str = Field(min_length=1)
    device: str | None = Field(default=None, description="The Sparkplug device id; omit for the node's own metrics")
    site: str | None = Field(default=None, description="Default: the group id")
    line: str | None = Field(default=None, description="Default: the edge node id")
    device_id: str | None = Field(default=None, description="Default: the Sparkplug device id (or edge node id)")
    metrics: dict[str, str] = Field(
        default_factory=dict,
        description="Sparkplug metric name → profile metric, or a signal name that state or production use;"
        " a metric not listed keeps its own name",
    )
    state: StateSpec | None = None
    production: ProductionSpec | None = None
    counter_bits: int | None = Field(default=None, ge=1, le=64, description="Default: the counter's datatype width")

    @property
    def address(self) -> tuple[str, str, str | None]:
        return (self.group, self.edge_node, self.device)


def map_problems(maps: Sequence[SparkplugDeviceMap], registry: DeviceRegistry) -> list[str]:
    """What in ``sparkplug.devices`` cannot work with this registry and its profiles, each said once."""
    problems: list[str] = []
    seen: set[tuple[str, str, str | None]] = set()
    for index, mapping in enumerate(maps):
        where = f"sparkplug.devices[{index}] ({'/'.join(p for p in mapping.address if p)})"
        if mapping.address in seen:
            problems.append(f"{where}: mapped twice")
        seen.add(mapping.address)
        default = default_key(*mapping.address)
        key = DeviceKey(mapping.site or default.site, mapping.line or default.line, mapping.device_id or default.device)
        device = registry.get(key)
        if device is None:
            problems.append(f"{where}: site {key.site!r}, line {key.line!r}, device {key.device!r} is not registered")
            continue
        profile = device.profile
        if mapping.state is not None:
            spec = mapping.state
            named = [*(spec.map or {}).values(), *([spec.otherwise] if spec.otherwise else [])]
            named += [rule.state for rule in spec.rules or ()]
            problems += [
                f"{where}: profile {profile.id} has no state {state!r}" for state in named if not profile.state(state)
            ]
        if mapping.production is not None and profile.production.mode.value == "none":
            problems.append(f"{where}: profile {profile.id} does not report production")
    return problems


def default_key(group: str, edge_node: str, device: str | None) -> DeviceKey:
    """group → site, edge node → line, device → device (the node's own metrics: device = edge node)."""
    return DeviceKey(group, edge_node, device or edge_node)


# --- the host's state ----------------------------------------------------------


@dataclass(slots=True)
class _Birth:
    names: dict[int, str] = field(default_factory=dict)  # alias → name
    datatypes: dict[str, int] = field(default_factory=dict)  # name → datatype


@dataclass(slots=True)
class _Node:
    bd_seq: int | None = None
    seq: int | None = None  # the last seq seen since the birth
    birth: _Birth | None = None
    devices: dict[str, _Birth] = field(default_factory=dict)
    rebirth_requested_s: float | None = None


@dataclass(slots=True)
class _Derivation:
    """One of our devices: its latest signals, and the state and production they lead to."""

    signals: dict[str, SignalValue] = field(default_factory=dict)
    debouncer: StateDebouncer = field(default_factory=StateDebouncer)
    counters: ProductionCounters | None = None
    last_ts: int = 0


class _Plan(dict[str, tuple[str, "Metric | None", bool, int | None]]):
    """Metric name → (local name, profile metric, wanted, birth datatype); names not in the birth made on demand."""

    def __init__(
        self, datatypes: Mapping[str, int], renames: Mapping[str, str], signals: set[str], profile: DeviceProfile
    ) -> None:
        super().__init__()
        self._datatypes, self._renames, self._signals, self._profile = datatypes, renames, signals, profile

    def __missing__(self, name: str) -> tuple[str, Metric | None, bool, int | None]:
        local = self._renames.get(name, name)
        profiled = self._profile.metric(local)
        entry = (local, profiled, profiled is not None or local in self._signals, self._datatypes.get(name))
        self[name] = entry
        return entry


# --- the host's state on disk: versioned JSON, never code ------------------------

STATE_FORMAT = "pilot-sparkplug-host"
STATE_VERSION = 1


class HostStateError(ValueError):
    """Saved host state this version cannot carry on from: damaged, cut short, or of another version."""


class _Saved(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _BirthState(_Saved):
    names: list[tuple[int, str]]  # alias → name; JSON object keys would be strings
    datatypes: dict[str, int]


class _NodeState(_Saved):
    group: str
    edge_node: str
    bd_seq: int | None
    seq: int | None
    birth: _BirthState | None
    devices: dict[str, _BirthState]


class _CounterState(_Saved):
    bits: int | None
    max_step: int | None
    last: int | None


class _DerivationState(_Saved):
    site: str
    line: str
    device: str
    signals: dict[str, bool | int | float]
    state: str | None  # the debouncer: the current state, the candidate, since when, the last sample
    candidate: str | None
    candidate_since_ms: int
    last_sample_ms: int | None
    counters: dict[str, _CounterState] | None  # by counter role
    scrap_ahead: int
    last_ts: int


class HostState(_Saved):
    format: Literal["pilot-sparkplug-host"]
    version: Literal[1]
    nodes: list[_NodeState]
    derivations: list[_DerivationState]


def read_host_state(data: bytes) -> HostState:
    """The state in ``data``, checked field by field; HostStateError says why it is not one."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HostStateError(f"the saved Sparkplug host state is not JSON (damaged or cut short?): {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
        raise HostStateError("the file is not a saved Sparkplug host state")
    if raw.get("version") != STATE_VERSION:
        raise HostStateError(
            f"the saved Sparkplug host state is version {raw.get('version')!r}; this collector reads {STATE_VERSION}"
        )
    try:
        return HostState.model_validate_json(data)  # JSON mode: arrays are tuples, NaN a float
    except ValidationError as exc:
        raise HostStateError(f"the saved Sparkplug host state is malformed: {exc}") from None


def _birth_state(birth: _Birth) -> dict[str, object]:
    return {"names": list(birth.names.items()), "datatypes": birth.datatypes}


def _node_state(key: tuple[str, str], node: _Node) -> dict[str, object]:
    return {
        "group": key[0],
        "edge_node": key[1],
        "bd_seq": node.bd_seq,
        "seq": node.seq,
        "birth": None if node.birth is None else _birth_state(node.birth),
        "devices": {device: _birth_state(birth) for device, birth in node.devices.items()},
    }


def _derivation_state(key: DeviceKey, derivation: _Derivation) -> dict[str, object]:
    state, candidate, since_ms, last_ms = derivation.debouncer.memory
    counters = derivation.counters
    return {
        "site": key.site,
        "line": key.line,
        "device": key.device,
        "signals": derivation.signals,
        "state": state,
        "candidate": candidate,
        "candidate_since_ms": since_ms,
        "last_sample_ms": last_ms,
        "counters": None
        if counters is None
        else {
            role.value: {"bits": tracker.spec.bits, "max_step": tracker.spec.max_step, "last": tracker.last}
            for role, tracker in counters.trackers.items()
        },
        "scrap_ahead": 0 if counters is None else counters.scrap_ahead,
        "last_ts": derivation.last_ts,
    }


def _birth_from(saved: _BirthState) -> _Birth:
    return _Birth(dict(saved.names), dict(saved.datatypes))


def _node_from(saved: _NodeState) -> _Node:
    return _Node(
        bd_seq=saved.bd_seq,
        seq=saved.seq,
        birth=None if saved.birth is None else _birth_from(saved.birth),
        devices={device: _birth_from(birth) for device, birth in saved.devices.items()},
    )


def _derivation_from(saved: _DerivationState) -> _Derivation:
    counters = None
    if saved.counters is not None:
        roles = {CounterRole(role): counter for role, counter in saved.counters.items()}
        counters = ProductionCounters(
            {role: CounterSpec(c.bits, c.max_step) for role, c in roles.items()},
            {role: c.last for role, c in roles.items()},
            saved.scrap_ahead,
        )
    return _Derivation(
        signals=dict(saved.signals),
        debouncer=StateDebouncer(saved.state, saved.candidate, saved.candidate_since_ms, saved.last_sample_ms),
        counters=counters,
        last_ts=saved.last_ts,
    )


class Verdict(enum.Enum):
    STORED = "stored"  # lines to write (maybe none: a command, an unmapped node)
    DUPLICATE = "duplicate"  # seen already: acknowledged, not written again
    STALE_DEATH = "stale_death"  # a death whose bdSeq is not the current birth's: ignored
    REFUSED = "refused"


@dataclass(slots=True)
class HostResult:
    verdict: Verdict
    lines: list[str] = field(default_factory=list)
    rejection: Rejection | None = None
    rebirth: tuple[str, str] | None = None  # (group, edge node) to send NCMD Node Control/Rebirth
    seq_gap: int = 0  # messages missed before this one
    historical_points: int = 0
    ignored_metrics: int = 0


class _Refusal(Exception):
    def __init__(self, reason: RejectReason, detail: str, rebirth: bool = False) -> None:
        self.reason, self.detail, self.rebirth = reason, detail, rebirth


class SparkplugHost:
    """The host application's memory of every edge node, and what each message means given it."""

    def __init__(
        self, registry: DeviceRegistry, maps: Sequence[SparkplugDeviceMap] = (), rebirth_interval_s: float = 10.0
    ) -> None:
        self.registry = registry
        self.maps = {m.address: m for m in maps}
        self.rebirth_interval_s = rebirth_interval_s
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.derivations: dict[DeviceKey, _Derivation] = {}
        # Per Sparkplug address: the birth a plan was made for, and the plan (not in the snapshot).
        self._plans: dict[tuple[str, str, str | None], tuple[_Birth, _Plan]] = {}

    # The collector's checkpoint: JSON (``HostState``); the registry and maps come from configuration.
    def snapshot(self) -> bytes:
        """The state as versioned JSON. Rebirth request times are left out: they are on a clock of this process."""
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                "nodes": [_node_state(key, node) for key, node in self.nodes.items()],
                "derivations": [_derivation_state(key, derivation) for key, derivation in self.derivations.items()],
            },
            separators=(",", ":"),
        ).encode()

    def restore(self, snapshot: bytes) -> None:
        """Carry on from ``snapshot()``'s bytes; raises HostStateError (keeping this state) if they are not one."""
        state = read_host_state(snapshot)
        try:
            nodes = {(n.group, n.edge_node): _node_from(n) for n in state.nodes}
            derivations = {DeviceKey(d.site, d.line, d.device): _derivation_from(d) for d in state.derivations}
        except (ValueError, TypeError) as exc:  # counters outside their registers, an unknown counter role
            raise HostStateError(f"the saved Sparkplug host state is inconsistent: {exc}") from None
        self.nodes, self.derivations = nodes, derivations
        self._plans.clear()

    def handle(
        self,
        topic: SparkplugTopic,
        payload: SpbPayload,
        received_ms: int,
        now_s: float,
        clock: ClockCheck | None = None,
    ) -> HostResult:
        """What one decoded message means. Never raises: every problem is a refusal with its reason."""
        if topic.kind is None or topic.kind in (MessageType.NCMD, MessageType.DCMD):
            return HostResult(Verdict.STORED)  # host states and commands: not data
        node = self.nodes.setdefault(topic.node, _Node())
        result = HostResult(Verdict.STORED)
        try:
            self._handle(topic, node, payload, received_ms, clock, result)
        except _Refusal as refusal:
            result.verdict = Verdict.REFUSED
            result.lines = []
            result.rejection = Rejection(refusal.reason, refusal.detail, self._contract_topic(topic))
            if refusal.rebirth:
                result.rebirth = self._rebirth(topic, node, now_s)
        if result.seq_gap and result.rebirth is None:
            result.rebirth = self._rebirth(topic, node, now_s)
        return result

    def _rebirth(self, topic: SparkplugTopic, node: _Node, now_s: float) -> tuple[str, str] | None:
        """A rebirth request, unless one went to this node less than ``rebirth_interval_s`` ago."""
        last = node.rebirth_requested_s
        if last is not None and 0 <= now_s - last < self.rebirth_interval_s:
            return None
        node.rebirth_requested_s = now_s
        return topic.node

    def _handle(
        self,
        topic: SparkplugTopic,
        node: _Node,
        payload: SpbPayload,
        received_ms: int,
        clock: ClockCheck | None,
        result: HostResult,
    ) -> None:
        kind = topic.kind
        if kind is MessageType.NBIRTH:
            self._node_birth(topic, node, payload, clock, result)
            return
        if kind is MessageType.NDEATH:
            self._node_death(topic, node, payload, received_ms, result)
            return
        if node.birth is None:
            raise _Refusal(
                RejectReason.SPARKPLUG_NO_BIRTH,
                f"{kind} from edge node {topic.edge_node!r} (group {topic.group!r}) before any NBIRTH this host has"
                " seen: its metric names, aliases and datatypes are unknown, so it cannot be interpreted; a rebirth"
                " is requested",
                rebirth=True,
            )
        if not self._sequence(topic, node, payload, result):
            result.verdict = Verdict.DUPLICATE
            return
        if kind is MessageType.DBIRTH:
            assert topic.device is not None
            device_birth = self._birth_of(payload)
            node.devices[topic.device] = device_birth
            self._store(topic, device_birth, payload, clock, result, status="online")
            return
        if kind is MessageType.DDEATH:
            assert topic.device is not None
            ts = _moment(payload.timestamp or received_ms, "DDEATH's timestamp")
            if node.devices.pop(topic.device, None) is not None:
                self._store_status(topic, [topic.device], ts, "offline", result)
            return
        birth = node.birth if topic.device is None else node.devices.get(topic.device)
        if birth is None:
            raise _Refusal(
                RejectReason.SPARKPLUG_NO_BIRTH,
                f"DDATA from device {topic.device!r} of edge node {topic.edge_node!r} before its DBIRTH: its metrics"
                " cannot be interpreted; a rebirth is requested",
                rebirth=True,
            )
        self._store(topic, birth, payload, clock, result)

    def _sequence(self, topic: SparkplugTopic, node: _Node, payload: SpbPayload, result: HostResult) -> bool:
        """Check ``seq`` against the node's last one; False for a message seen already."""
        seq = payload.seq
        if seq is None or not 0 <= seq < SEQ_MODULUS:
            raise _Refusal(
                RejectReason.SCHEMA,
                f"{topic.kind} carries {'no seq' if seq is None else f'seq {seq}'}; Sparkplug requires 0-255",
                rebirth=True,
            )
        last = node.seq
        if last is not None:
            behind = (last - seq) % SEQ_MODULUS
            if behind < DUPLICATE_WINDOW:
                return False
            result.seq_gap = (seq - last - 1) % SEQ_MODULUS
        node.seq = seq
        return True

    def _node_birth(
        self, topic: SparkplugTopic, node: _Node, payload: SpbPayload, clock: ClockCheck | None, result: HostResult
    ) -> None:
        bd_seq = _bd_seq(payload)
        if bd_seq is None:
            raise _Refusal(RejectReason.SCHEMA, "NBIRTH without a bdSeq metric: its death could never be matched")
        seq = payload.seq
        if seq is None or not 0 <= seq < SEQ_MODULUS:
            raise _Refusal(RejectReason.SCHEMA, f"NBIRTH carries {'no seq' if seq is None else f'seq {seq}'}")
        birth = self._birth_of(payload)
        node.bd_seq, node.seq, node.birth, node.devices = bd_seq, seq, birth, {}
        self._store(topic, birth, payload, clock, result, status="online")

    def _node_death(
        self, topic: SparkplugTopic, node: _Node, payload: SpbPayload, received_ms: int, result: HostResult
    ) -> None:
        bd_seq = _bd_seq(payload)
        if node.birth is None or bd_seq is None or bd_seq != node.bd_seq:
            result.verdict = Verdict.STALE_DEATH  # an older connection's will, after a newer birth
            return
        # The will was fixed at connect time: the node went offline when the broker published it.
        ts = max(received_ms, _moment(payload.timestamp, "NDEATH's timestamp") if payload.timestamp else 0)
        devices = [None, *node.devices]
        node.birth, node.devices, node.seq = None, {}, None
        self._store_status(topic, devices, ts, "offline", result)

    def _birth_of(self, payload: SpbPayload) -> _Birth:
        birth = _Birth()
        for metric in payload.metrics:
            if metric.name is None:
                raise _Refusal(RejectReason.SCHEMA, "a birth metric has no name; a birth must name every metric")
            if metric.datatype is None:
                raise _Refusal(RejectReason.SCHEMA, f"birth metric {metric.name!r} has no datatype")
            # Two entries for one name or alias: the later would silently win, and data meant for one metric be
            # stored as another.
            known = birth.datatypes.setdefault(metric.name, metric.datatype)
            if known != metric.datatype:
                raise _Refusal(
                    RejectReason.SCHEMA,
                    f"birth metric {metric.name!r} is in the birth twice, as {datatype_name(known)} and as"
                    f" {datatype_name(metric.datatype)}: its values could not be read",
                )
            if metric.alias is not None:
                named = birth.names.setdefault(metric.alias, metric.name)
                if named != metric.name:
                    raise _Refusal(
                        RejectReason.SCHEMA,
                        f"alias {metric.alias} is given to both {named!r} and {metric.name!r} in the birth: data sent"
                        " by that alias could not be told apart",
                    )
        return birth

    # --- mapping to our records ---------------------------------------------

    def _target(self, topic: SparkplugTopic) -> tuple[SparkplugDeviceMap | None, DeviceKey]:
        mapping = self.maps.get((topic.group, topic.edge_node, topic.device))
        default = default_key(topic.group, topic.edge_node, topic.device)
        if mapping is None:
            return None, default
        return mapping, DeviceKey(
            mapping.site or default.site, mapping.line or default.line, mapping.device_id or default.device
        )

    def _registered(self, topic: SparkplugTopic) -> tuple[SparkplugDeviceMap | None, RegisteredDevice, Topic] | None:
        """The registered device a node or device maps to; None for one neither registered nor mapped."""
        mapping, key = self._target(topic)
        device = self.registry.get(key)
        if device is None:
            if mapping is None:
                # An edge node publishes every device it has (and metrics of its own, about the gateway): only
                # those registered or mapped are a demonstration's.
                return None
            raise _Refusal(
                RejectReason.UNKNOWN_DEVICE,
                f"Sparkplug {'device' if topic.device else 'edge node'} {topic.device or topic.edge_node!r} (group"
                f" {topic.group!r}, edge node {topic.edge_node!r}) maps to site {key.site!r}, line {key.line!r},"
                f" device {key.device!r}, which is not in the device registry; register it or map it"
                " (sparkplug.devices)",
            )
        return mapping, device, Topic(key.site, key.line, key.device, Channel.TELEMETRY)

    def _contract_topic(self, topic: SparkplugTopic) -> Topic | None:
        """Where a dead letter goes: the mapped device's, when its ids are usable."""
        if topic.kind is None:
            return None
        _, key = self._target(topic)
        try:
            for part in (key.site, key.line, key.device):
                check_id(part)
        except InvalidIdError:
            return None
        return Topic(key.site, key.line, key.device, Channel.TELEMETRY)

    def _store(
        self,
        topic: SparkplugTopic,
        birth: _Birth,
        payload: SpbPayload,
        clock: ClockCheck | None,
        result: HostResult,
        status: str | None = None,
    ) -> None:
        named = self._resolved(topic, birth, payload)  # unknown aliases refuse the message before anything else
        target = self._registered(topic)
        if target is None:
            return
        mapping, device, contract_topic = target
        plan = self._plan(topic, birth, mapping, device.profile)
        deriving = mapping is not None and (mapping.state is not None or mapping.production is not None)
        seq = payload.seq or 0
        payload_ts = payload.timestamp
        samples: dict[int, dict[str, SignalValue]] = {}  # ts → local name → value, for states and production
        telemetry: dict[int, dict[str, bool | int | float]] = {}
        historical_ts: set[int] = set()
        for name, metric in named:
            local, profiled, wanted, birth_datatype = plan[name]
            if not wanted:
                result.ignored_metrics += 1
                continue
            if metric.is_null or metric.value_field is None:
                continue  # no value: nothing to store or derive
            datatype = metric.datatype if metric.datatype is not None else birth_datatype
            if metric.value_field == "double_value" and datatype in _FLOATS:  # the common case, checked at once
                value: SignalValue = metric.value  # type: ignore[assignment]
            else:
                value = _value_of(name, datatype, metric)
            ts = _metric_moment(name, metric.timestamp or payload_ts)
            if deriving:
                samples.setdefault(ts, {})[local] = value
            if profiled is not None:
                if profiled.type is not MetricType.FLOAT or type(value) is not float:
                    value = _as_field(name, value, profiled.type)
                fields = telemetry.get(ts)
                if fields is None:
                    fields = telemetry[ts] = {}
                fields[local] = value
                if metric.is_historical:
                    historical_ts.add(ts)
        records: list[tuple[Channel, object]] = []
        if status is not None:
            if payload.timestamp is None:
                raise _Refusal(RejectReason.MISSING_TIMESTAMP, f"{topic.kind} has no payload timestamp")
            ts = _moment(payload.timestamp, f"{topic.kind}'s timestamp")
            records.append((Channel.STATUS, StatusRecord(ts=ts, status="online")))
        for ts in sorted(telemetry):
            records.append((Channel.TELEMETRY, TelemetryRecord.model_construct(ts=ts, metrics=telemetry[ts])))
            if ts in historical_ts:
                result.historical_points += 1
        lines = self._encode(device, contract_topic, seq, records, clock)
        lines += self._derive(mapping, device, contract_topic, seq, samples, clock)
        result.lines.extend(lines)

    def _plan(
        self, topic: SparkplugTopic, birth: _Birth, mapping: SparkplugDeviceMap | None, profile: DeviceProfile
    ) -> dict[str, tuple[str, Metric | None, bool, int | None]]:
        """Per metric name of a birth: its local name, profile metric, whether it is wanted, its datatype.

        Made once per birth and device, so that each value costs a lookup, not a mapping."""
        address = (topic.group, topic.edge_node, topic.device)
        cached = self._plans.get(address)
        if cached is not None and cached[0] is birth:
            return cached[1]
        renames = mapping.metrics if mapping else {}
        signals = _signal_names(mapping)
        plan = _Plan(birth.datatypes, renames, signals, profile)
        self._plans[address] = (birth, plan)
        return plan

    def _resolved(self, topic: SparkplugTopic, birth: _Birth, payload: SpbPayload) -> list[tuple[str, SpbMetric]]:
        named = []
        for metric in payload.metrics:
            name = metric.name
            if name is None:
                if metric.alias is None:
                    raise _Refusal(RejectReason.SCHEMA, "a metric has neither a name nor an alias")
                name = birth.names.get(metric.alias)
                if name is None:
                    raise _Refusal(
                        RejectReason.SPARKPLUG_UNKNOWN_ALIAS,
                        f"alias {metric.alias} is not in the birth of {topic.device or topic.edge_node!r}: the"
                        " message cannot be interpreted; a rebirth is requested",
                        rebirth=True,
                    )
            elif name not in birth.datatypes and metric.datatype is None:
                raise _Refusal(
                    RejectReason.SPARKPLUG_UNKNOWN_ALIAS,
                    f"metric {name!r} is not in the birth and carries no datatype; a rebirth is requested",
                    rebirth=True,
                )
            named.append((name, metric))
        return named

    def _store_status(
        self, topic: SparkplugTopic, devices: Iterable[str | None], ts: int, status: str, result: HostResult
    ) -> None:
        for device_id in devices:
            sub = SparkplugTopic(topic.group, topic.kind, topic.edge_node, device_id)
            try:
                target = self._registered(sub)
            except _Refusal:
                continue  # an unregistered device has no status to keep
            if target is None:
                continue
            _, device, contract_topic = target
            record = StatusRecord(ts=ts, status="offline" if status == "offline" else "online")
            result.lines += self._encode(device, contract_topic, 0, [(Channel.STATUS, record)], None)
            derivation = self.derivations.get(
                DeviceKey(contract_topic.site, contract_topic.line, contract_topic.device)
            )
            if derivation is not None:
                derivation.debouncer.forget()
                derivation.signals.clear()  # stale: nothing from before the outage decides a state after it

    @staticmethod
    def _encode(
        device: RegisteredDevice,
        topic: Topic,
        seq: int,
        records: Sequence[tuple[Channel, object]],
        clock: ClockCheck | None,
    ) -> list[str]:
        lines: list[str] = []
        for channel, record in records:
            encoded = encode_records(device, Topic(topic.site, topic.line, topic.device, channel), seq, [record], clock)
            if isinstance(encoded, Rejection):
                raise _Refusal(encoded.reason, encoded.detail)
            lines += encoded
        return lines

    def _derive(
        self,
        mapping: SparkplugDeviceMap | None,
        device: RegisteredDevice,
        topic: Topic,
        seq: int,
        samples: Mapping[int, Mapping[str, SignalValue]],
        clock: ClockCheck | None,
    ) -> list[str]:
        """States and production from the signals, sample time by sample time (``pilot_core.signals``)."""
        if mapping is None or (mapping.state is None and mapping.production is None):
            return []
        key = DeviceKey(topic.site, topic.line, topic.device)
        # On a copy, kept only once the records are encoded: a refused message moves no state or counter.
        known = self.derivations.get(key)
        derivation = _Derivation() if known is None else copy.deepcopy(known)
        records: list[tuple[Channel, object]] = []
        for ts in sorted(samples):
            if ts <= derivation.last_ts:
                # Not newer than what was derived already: historical data, or a message delivered again after a
                # restart. Telemetry only: counters are cumulative, so the next reading counts what this one did.
                continue
            derivation.last_ts = ts
            derivation.signals.update(samples[ts])
            if mapping.state is not None:
                change = _state_change(mapping.state, derivation, ts)
                if change is not None:
                    records.append((Channel.STATE, StateRecord(ts=change[0], state=change[1])))
            if mapping.production is not None and set(samples[ts]) & _counter_items(mapping.production):
                produced = _production(mapping, derivation, ts)
                if produced is not None:
                    records.append((Channel.PRODUCTION, produced))
        lines = self._encode(device, topic, seq, records, clock)
        self.derivations[key] = derivation
        return lines


def _moment(ts: int, what: str) -> int:
    """``ts`` if it lies where the contract's timestamps must (2001 to 2100); a uint64 may hold anything."""
    try:
        return parse_timestamp(ts)
    except ValueError as exc:
        raise _Refusal(RejectReason.BAD_TIMESTAMP, f"{what}: {exc}") from None


def _metric_moment(name: str, ts: int | None) -> int:
    """A metric's time: its own, else its payload's (``ts``), which it must have."""
    if ts is None:
        raise _Refusal(RejectReason.MISSING_TIMESTAMP, f"metric {name!r} has no timestamp, nor has the payload")
    try:
        return parse_timestamp(ts)
    except ValueError as exc:
        raise _Refusal(RejectReason.BAD_TIMESTAMP, f"metric {name!r}'s timestamp: {exc}") from None


def _bd_seq(payload: SpbPayload) -> int | None:
    for metric in payload.metrics:
        if metric.name == BD_SEQ and isinstance(metric.value, int) and not isinstance(metric.value, bool):
            return metric.value
    return None


def _signal_names(mapping: SparkplugDeviceMap | None) -> set[str]:
    if mapping is None:
        return set()
    names: set[str] = set()
    state = mapping.state
    if state is not None:
        names |= {state.item} if state.item else set()
        for rule in state.rules or ():
            names |= set(rule.when)
    if mapping.production is not None:
        names |= _counter_items(mapping.production)
    return names


def _counter_items(production: ProductionSpec) -> set[str]:
    return {counter.item for counter in production.counters.values()}


def _value_of(name: str, datatype: int | None, metric: SpbMetric) -> SignalValue:
    """The metric's value as a number or boolean, checked against its declared datatype."""
    if datatype is None:
        raise _Refusal(RejectReason.SCHEMA, f"metric {name!r} has no datatype, in its birth or itself")
    if datatype not in STORABLE:
        raise _Refusal(
            RejectReason.SPARKPLUG_UNSUPPORTED,
            f"metric {name!r} is {datatype_name(datatype)}; only numbers and booleans map to profile metrics and"
            " signals (templates, datasets, arrays, strings and bytes are not flattened): unmap it or publish a"
            " scalar",
        )
    expected = VALUE_FIELD[datatype]
    if metric.value_field != expected:
        raise _Refusal(
            RejectReason.WRONG_TYPE,
            f"metric {name!r} is {datatype_name(datatype)} but carries {metric.value_field}, not {expected}",
        )
    value = metric.value
    if datatype == DataType.BOOLEAN:
        wanted: tuple[type, ...] = (bool,)
    elif datatype in (DataType.FLOAT, DataType.DOUBLE):
        wanted = (float,)
    else:
        wanted = (int,)
    if not isinstance(value, wanted) or (wanted == (int,) and isinstance(value, bool)):
        raise _Refusal(RejectReason.WRONG_TYPE, f"metric {name!r} is {datatype_name(datatype)}, got {value!r}")
    if isinstance(value, bool | float):
        return value
    assert isinstance(value, int)
    bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]
    if bits is not None:  # two's complement in an unsigned protobuf field
        raw = value % (1 << (32 if bits < 64 else 64))
        top = 1 << (32 if bits < 64 else 64)
        value = raw - top if raw >= top // 2 else raw
        if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
            raise _Refusal(RejectReason.OUT_OF_RANGE, f"metric {name!r} value {value} does not fit {bits} bits")
    return value


def _as_field(name: str, value: SignalValue, metric_type: MetricType) -> bool | int | float:
    """The value as the profile's type says: the edge node's datatype never changes a field's type."""
    if metric_type is MetricType.BOOL:
        if not isinstance(value, bool):
            raise _Refusal(RejectReason.WRONG_TYPE, f"metric {name!r} is bool in the profile, got {value!r}")
        return value
    if isinstance(value, bool):
        raise _Refusal(RejectReason.WRONG_TYPE, f"metric {name!r} is {metric_type.value} in the profile, got {value}")
    if metric_type is MetricType.INT:
        if isinstance(value, float):
            if not value.is_integer():
                raise _Refusal(RejectReason.WRONG_TYPE, f"metric {name!r} is int in the profile, got {value!r}")
            return int(value)
        return value
    return value  # float: ints are stored as floats by the encoder


def _state_change(spec: StateSpec, derivation: _Derivation, ts: int) -> tuple[int, str] | None:
    enum_states = spec.enum_states()
    if enum_states is not None:
        assert spec.item is not None
        if spec.item not in derivation.signals:
            return None
        called_for = enum_states.state_of(derivation.signals[spec.item])
        change = derivation.debouncer.observe(ts, called_for, enum_states.min_duration_ms)
    else:
        rule = classify(spec.state_rules(), derivation.signals)
        change = (
            derivation.debouncer.observe(ts, None)
            if rule is None
            else derivation.debouncer.observe(ts, rule.state, rule.min_duration_ms)
        )
    return None if change is None else (change.ts_ms, change.state)


def _production(mapping: SparkplugDeviceMap, derivation: _Derivation, ts: int) -> ProductionRecord | None:
    """A production record from the counters' readings at ``ts``; the encoder checks the profile's mode."""
    production = mapping.production
    assert production is not None
    if derivation.counters is None:
        specs = {role: CounterSpec(bits=mapping.counter_bits or 64) for role in production.counters}
        derivation.counters = ProductionCounters(specs)
    readings: dict[CounterRole, int] = {}
    for role, counter in production.counters.items():
        value = derivation.signals.get(counter.item)
        if value is None or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            return None  # every counter is needed, as a whole number
        bits = derivation.counters.trackers[role].spec.bits
        readings[role] = as_unsigned(int(value), bits) if bits is not None and value < 0 else int(value)
    try:
        counts, _ = derivation.counters.observe(readings)
    except ValueError as exc:
        raise _Refusal(RejectReason.OUT_OF_RANGE, f"counter reading: {exc}") from None
    if not counts.produced:
        return None
    try:
        return ProductionRecord(
            ts=ts, product=production.product, produced=counts.produced, good=counts.good, scrap=counts.scrap
        )
    except ValidationError as exc:  # a leap of the counters no count can hold
        problem = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise _Refusal(
            RejectReason.OUT_OF_RANGE, f"counter reading: {where} {counts.produced:,}: {problem['msg']}"
        ) from None

"""The agent's source map: which machines one agent process reads, how, and what their signals mean.

One YAML file lists devices. Each names its site, line, device id and profile, one source (a Modbus TCP
server or an OPC UA endpoint) with the items to read there, and optionally how its state and its
production follow from those items (``pilot_core.signals``). Every problem is reported with the file,
line and item it is in; the file is checked against the device profiles too (``parse_source_map``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from pilot_core.ids import check_id
from pilot_core.profiles import DeviceProfile, MetricType, ProductionMode, ProfileCatalog, ProfileErrors
from pilot_core.signals import (
    Condition,
    CounterRole,
    CounterSpec,
    EnumStates,
    StateRule,
)
from pilot_core.yaml_text import SourceError, YamlDocument, parse_yaml

ItemName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Item(_Strict):
    name: ItemName = Field(description="The item's name in this file: state rules and counters refer to it")
    metric: str | None = Field(default=None, description="The profile metric this item is published as")
    scale: float = Field(default=1.0, allow_inf_nan=False, description="metric = reading × scale + offset")
    offset: float = Field(default=0.0, allow_inf_nan=False)


# --- Modbus TCP -------------------------------------------------------------


class ModbusTable(enum.StrEnum):
    COIL = "coil"  # 1 bit, read/write
    DISCRETE = "discrete"  # discrete input: 1 bit, read only
    INPUT = "input"  # input register: 16 bits, read only
    HOLDING = "holding"  # holding register: 16 bits, read/write


class ModbusType(enum.StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT64 = "float64"


REGISTERS_OF = {
    ModbusType.BOOL: 1,
    ModbusType.INT16: 1,
    ModbusType.UINT16: 1,
    ModbusType.INT32: 2,
    ModbusType.UINT32: 2,
    ModbusType.FLOAT32: 2,
    ModbusType.INT64: 4,
    ModbusType.UINT64: 4,
    ModbusType.FLOAT64: 4,
}
BITS_OF: dict[ModbusType, int] = {t: 16 * n for t, n in REGISTERS_OF.items() if t is not ModbusType.BOOL}
_MODBUS_LAST_ADDRESS = 65_535


class ModbusItem(_Item):
    table: ModbusTable
    address: int = Field(ge=0, le=_MODBUS_LAST_ADDRESS, description="0-based, as on the wire (40001 is holding 0)")
    type: ModbusType | None = Field(default=None, description="Default: bool for bits, uint16 for registers")
    word_order: Literal["big", "little"] = Field(default="big", description="little: the low word first")
    byte_order: Literal["big", "little"] = Field(default="big", description="little: each register's bytes swapped")

    @property
    def data_type(self) -> ModbusType:
        if self.type is not None:
            return self.type
        return ModbusType.BOOL if self.is_bit else ModbusType.UINT16

    @property
    def is_bit(self) -> bool:
        return self.table in (ModbusTable.COIL, ModbusTable.DISCRETE)

    @property
    def count(self) -> int:
        """Registers (or bits) read for this item."""
        return REGISTERS_OF[self.data_type]

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.is_bit and self.data_type is not ModbusType.BOOL:
            raise ValueError(f"a {self.table.value} holds one bit: its type is bool, not {self.data_type.value}")
        if not self.is_bit and self.data_type is ModbusType.BOOL:
            raise ValueError(f"a {self.table.value} register is a number; read bits from coils or discrete inputs")
        last = self.address + self.count - 1
        if last > _MODBUS_LAST_ADDRESS:
            raise ValueError(
                f"{self.data_type.value} at address {self.address} spans to {last}, beyond the last address 65535"
            )
        return self


class ModbusEndpoint(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65_535)
    unit: int = Field(default=1, ge=0, le=255, description="Unit (slave) id; matters behind gateways")
    poll_s: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="Seconds between two reads")
    timeout_s: float = Field(default=3.0, gt=0, allow_inf_nan=False)


# --- OPC UA -----------------------------------------------------------------


class SecurityMode(enum.StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class OpcUaItem(_Item):
    node: str | None = Field(default=None, description='A node id, e.g. "ns=2;s=Machine.State"')
    browse_path: str | None = Field(
        default=None, description='From the Objects folder, e.g. "2:CNC/2:State" (namespace index:browse name)'
    )
    sampling_interval_ms: float | None = Field(default=None, ge=0, description="Default: the endpoint's")
    queue_size: int = Field(default=10, ge=1)
    deadband: float | None = Field(default=None, ge=0, description="Absolute deadband of the data change filter")

    @model_validator(mode="after")
    def _one_address(self) -> Self:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give the item either a node id (node) or a browse_path, not both or neither")
        return self


class OpcUaEndpoint(_Strict):
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    security_mode: SecurityMode = SecurityMode.NONE
    security_policy: Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] | None = None
    certificate: str | None = Field(default=None, description="The agent's X.509 certificate (PEM or DER)")
    private_key: str | None = None
    username: str | None = None
    password_env: str | None = Field(default=None, description="Environment variable holding the password")
    user_certificate: str | None = Field(
        default=None, description="The user's X.509 certificate, for a certificate identity instead of a username"
    )
    user_private_key: str | None = None
    publishing_interval_ms: float = Field(default=1000, gt=0)
    sampling_interval_ms: float = Field(default=1000, ge=0)
    timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _security_complete(self) -> Self:
        secured = self.security_mode is not SecurityMode.NONE
        if secured and (self.security_policy is None or self.certificate is None or self.private_key is None):
            raise ValueError(
                f"security_mode {self.security_mode.value} needs security_policy, certificate and private_key"
            )
        if not secured and self.security_policy is not None:
            raise ValueError("security_policy is set but security_mode is None")
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env without username")
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("user_certificate and user_private_key go together")
        if self.user_certificate is not None and self.username is not None:
            raise ValueError("one identity: a username or a user_certificate, not both")
        return self


# --- Siemens S7 (S7comm) ----------------------------------------------------


class S7Type(enum.StrEnum):
    BOOL = "bool"  # one bit of a byte
    BYTE = "byte"
    INT = "int"  # 16 bits, signed
    WORD = "word"  # 16 bits, unsigned
    DINT = "dint"  # 32 bits, signed
    DWORD = "dword"  # 32 bits, unsigned
    REAL = "real"  # 32-bit float
    LREAL = "lreal"  # 64-bit float


S7_BYTES = {
    S7Type.BOOL: 1,
    S7Type.BYTE: 1,
    S7Type.INT: 2,
    S7Type.WORD: 2,
    S7Type.DINT: 4,
    S7Type.DWORD: 4,
    S7Type.REAL: 4,
    S7Type.LREAL: 8,
}
S7_COUNTER_BITS = {S7Type.BYTE: 8, S7Type.INT: 16, S7Type.WORD: 16, S7Type.DINT: 32, S7Type.DWORD: 32}


class S7Item(_Item):
    """A value in a data block, read by offset: DB10.DBD4 REAL is ``{db: 10, offset: 4, type: real}``."""

    db: int = Field(ge=1, le=65_535, description="Data block number")
    offset: int = Field(ge=0, le=65_535, description="Byte offset in the data block")
    type: S7Type
    bit: int | None = Field(default=None, ge=0, le=7, description="For bool: the bit of the byte (DB10.DBX4.3)")

    @model_validator(mode="after")
    def _bit_only_for_bool(self) -> Self:
        if (self.type is S7Type.BOOL) != (self.bit is not None):
            raise ValueError("a bool item needs its bit (0-7), and only a bool item has one")
        return self

    @property
    def size(self) -> int:
        return S7_BYTES[self.type]


class S7Endpoint(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=102, ge=1, le=65_535)
    rack: int = Field(default=0, ge=0, le=7)
    slot: int = Field(default=1, ge=0, le=31, description="1 for S7-1200/1500, 2 for most S7-300")
    poll_s: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="Seconds between two reads")


# --- what the signals mean --------------------------------------------------


class ConditionSpec(_Strict):
    above: float | None = Field(default=None, allow_inf_nan=False)
    below: float | None = Field(default=None, allow_inf_nan=False)
    equals: bool | int | float | None = None


class RuleSpec(_Strict):
    state: str
    when: dict[ItemName, ConditionSpec] = Field(min_length=1, description="Item → condition; all must hold")
    for_s: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="How long before the state changes")

    def rule(self) -> StateRule:
        conditions = tuple(Condition(item, c.above, c.below, c.equals) for item, c in self.when.items())
        return StateRule(self.state, conditions, round(self.for_s * 1000))


class StateSpec(_Strict):
    """Either a PLC's state number (``item`` and ``map``) or ``rules`` on signals, first match wins."""

    item: ItemName | None = None
    map: dict[int, str] | None = None
    otherwise: str | None = Field(default=None, description="The state of a number the map does not list")
    for_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    rules: list[RuleSpec] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        mapped = self.item is not None or self.map is not None
        if mapped == (self.rules is not None):
            raise ValueError("give the state either item and map (a PLC state number) or rules, not both or neither")
        if mapped and (self.item is None or not self.map):
            raise ValueError("a state from a PLC number needs both item and map")
        if self.rules is not None:
            if not self.rules:
                raise ValueError("rules is empty")
            for rule in self.rules:
                try:
                    rule.rule()
                except ValueError as exc:
                    raise ValueError(f"rule for {rule.state!r}: {exc}") from None
        return self

    def enum_states(self) -> EnumStates | None:
        if self.map is None:
            return None
        return EnumStates(self.map, self.otherwise, round(self.for_s * 1000))

    def state_rules(self) -> tuple[StateRule, ...]:
        return tuple(rule.rule() for rule in self.rules or ())


class CounterItem(_Strict):
    item: ItemName
    bits: Literal[16, 32, 64] | None = Field(
        default=None, description="The counter's width; default the item's register width (none for OPC UA)"
    )
    max_step: int | None = Field(
        default=None, ge=1, description="Most parts between two readings; a larger fall is a reset, not a wrap"
    )


class ProductionSpec(_Strict):
    product: str = Field(min_length=1, max_length=128, description="The product id production records carry")
    counters: dict[CounterRole, CounterItem] = Field(min_length=1)

    @field_validator("counters")
    @classmethod
    def _a_known_set(cls, counters: dict[CounterRole, CounterItem]) -> dict[CounterRole, CounterItem]:
        from pilot_core.signals import COUNTER_SETS  # noqa: PLC0415 - one name, near its one use

        if frozenset(counters) not in COUNTER_SETS:
            raise ValueError("counters are produced, good, good and scrap, or produced and scrap")
        return counters


class _Device(_Strict):
    site: str
    line: str
    device: str
    profile: str
    state: StateSpec | None = None
    production: ProductionSpec | None = None

    @field_validator("site", "line", "device")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        return check_id(value)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.site, self.line, self.device)

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def source_items(self) -> Sequence[_Item]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _unique_items(self) -> Self:
        names = [item.name for item in self.source_items]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"item names must be unique in a device; repeated: {', '.join(repeated)}")
        return self


class ModbusDevice(_Device):
    modbus: ModbusEndpoint
    items: list[ModbusItem] = Field(min_length=1)

    @property
    def kind(self) -> str:
        return "modbus"

    @property
    def source_items(self) -> Sequence[ModbusItem]:
        return self.items


class OpcUaDevice(_Device):
    opcua: OpcUaEndpoint
    items: list[OpcUaItem] = Field(min_length=1)

    @property
    def kind(self) -> str:
        return "opcua"

    @property
    def source_items(self) -> Sequence[OpcUaItem]:
        return self.items


class S7Device(_Device):
    s7: S7Endpoint
    items: list[S7Item] = Field(min_length=1)

    @property
    def kind(self) -> str:
        return "s7"

    @property
    def source_items(self) -> Sequence[S7Item]:
        return self.items


_KINDS = ("modbus", "opcua", "s7")
_TAGS = {"modbus": "modbus device", "opcua": "opcua device", "s7": "s7 device"}


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [kind for kind in _KINDS if kind in value]
        return _TAGS[found[0]] if len(found) == 1 else None
    if isinstance(value, _Device):
        return _TAGS[value.kind]
    return None


SourceDevice = Annotated[
    Annotated[ModbusDevice, Tag("modbus device")]
    | Annotated[OpcUaDevice, Tag("opcua device")]
    | Annotated[S7Device, Tag("s7 device")],
    Discriminator(
        _kind_of,
        custom_error_type="source",
        custom_error_message="a device has exactly one source: modbus, opcua or s7",
    ),
]


class SourceMap(_Strict):
    outbox: str = Field(default="outbox", description="Folder of the devices' outboxes, one sub-folder per device")
    devices: list[SourceDevice] = Field(min_length=1)


def parse_source_map(text: str, source: str, catalog: ProfileCatalog) -> SourceMap:
    """Parse and check a source map against the profiles. Raises ProfileErrors naming file, line and item."""
    document = parse_yaml(text, source)
    try:
        parsed = SourceMap.model_validate(document.data if document.data is not None else {})
    except ValidationError as exc:
        raise ProfileErrors(_located(document, exc)) from None
    errors = list(_against_profiles(document, parsed, catalog))
    if errors:
        raise ProfileErrors(errors)
    return parsed


def _located(document: YamlDocument, exc: ValidationError) -> list[SourceError]:
    found = []
    for error in exc.errors(include_url=False):
        loc = [p for p in error["loc"] if p not in _TAGS.values() and not str(p).startswith("function-")]
        found.append(SourceError(document.source, document.line_of(loc), f"{_path(document, loc)}: {error['msg']}"))
    return found


def _path(document: YamlDocument, loc: Sequence[int | str]) -> str:
    """``devices[0] (site/line/device).items[2] (name).address``: where, in words a user finds."""
    words: list[str] = []
    data: Any = document.data
    for part in loc:
        if isinstance(part, int):
            words[-1:] = [f"{words[-1] if words else ''}[{part}]"]
            data = data[part] if isinstance(data, list) and part < len(data) else None
            if isinstance(data, dict):
                if "device" in data:
                    words[-1] += f" ({data.get('site')}/{data.get('line')}/{data.get('device')})"
                elif "name" in data:
                    words[-1] += f" ({data['name']})"
        else:
            words.append(str(part))
            data = data.get(part) if isinstance(data, dict) else None
    return ".".join(words) or "(document)"


def _against_profiles(document: YamlDocument, parsed: SourceMap, catalog: ProfileCatalog) -> Iterable[SourceError]:
    def error(loc: list[int | str], message: str) -> SourceError:
        return SourceError(document.source, document.line_of(loc), f"{_path(document, loc)}: {message}")

    seen: dict[tuple[str, str, str], int] = {}
    for index, device in enumerate(parsed.devices):
        at: list[int | str] = ["devices", index]
        if device.key in seen:
            yield error([*at, "device"], f"device {'/'.join(device.key)} is also devices[{seen[device.key]}]")
        seen.setdefault(device.key, index)
        profile = catalog.get(device.profile)
        if profile is None:
            known = ", ".join(p.id for p in catalog) or "none"
            yield error([*at, "profile"], f"unknown profile {device.profile!r} (loaded: {known})")
            continue
        yield from _device_against_profile(device, profile, at, error)


def _device_against_profile(device: _Device, profile: DeviceProfile, at: list[int | str], error: Any) -> Any:
    items = {item.name: item for item in device.source_items}
    for position, item in enumerate(device.source_items):
        if item.metric is None:
            continue
        metric = profile.metric(item.metric)
        where = [*at, "items", position, "metric"]
        if metric is None:
            known = ", ".join(m.name for m in profile.metrics) or "none"
            yield error(where, f"profile {profile.id} has no metric {item.metric!r} (it has: {known})")
        elif metric.type is MetricType.INT and not all(float(v).is_integer() for v in (item.scale, item.offset)):
            yield error(where, f"metric {metric.name!r} is int: its scale and offset must be whole numbers")
        elif metric.type is MetricType.BOOL and (item.scale != 1 or item.offset != 0):
            yield error(where, f"metric {metric.name!r} is bool: it takes no scale or offset")
    if device.state is not None:
        spec = device.state
        if not profile.states:
            yield error([*at, "state"], f"profile {profile.id} declares no states")
        named: list[tuple[list[int | str], str]] = [([*at, "state", "map"], s) for s in (spec.map or {}).values()]
        named += [([*at, "state", "otherwise"], spec.otherwise)] if spec.otherwise else []
        named += [([*at, "state", "rules", i, "state"], rule.state) for i, rule in enumerate(spec.rules or ())]
        for where, state in named:
            if profile.states and profile.state(state) is None:
                known = ", ".join(s.name for s in profile.states)
                yield error(where, f"profile {profile.id} has no state {state!r} (it has: {known})")
        used: list[tuple[list[int | str], str]] = [([*at, "state", "item"], spec.item)] if spec.item else []
        for i, rule in enumerate(spec.rules or ()):
            used += [([*at, "state", "rules", i, "when"], name) for name in rule.when]
        for where, name in used:
            if name not in items:
                yield error(where, f"no item named {name!r} in this device")
    if device.production is not None:
        if profile.production.mode is ProductionMode.NONE:
            yield error([*at, "production"], f"profile {profile.id} does not report production")
        for role, counter in device.production.counters.items():
            where = [*at, "production", "counters", role.value]
            counted = items.get(counter.item)
            if counted is None:
                yield error(where, f"no item named {counter.item!r} in this device")
                continue
            if isinstance(counted, ModbusItem):
                kind = counted.data_type.value
                width = None if counted.is_bit or kind.startswith("float") else BITS_OF[counted.data_type]
            elif isinstance(counted, S7Item):
                kind, width = counted.type.value, S7_COUNTER_BITS.get(counted.type)
            else:
                continue  # OPC UA: a number of any width
            if width is None:
                yield error(where, f"item {counted.name!r} is {kind}; a counter is an integer")
            elif counter.bits is not None and counter.bits > width:
                yield error(where, f"a {counter.bits}-bit counter does not fit item {counted.name!r} ({kind})")


def counter_spec(device: _Device, counter: CounterItem) -> CounterSpec:
    """The counter's width: as the map says, else its Modbus register's or S7 type's, else none (OPC UA)."""
    bits: int | None = counter.bits
    if bits is None:
        item = next(i for i in device.source_items if i.name == counter.item)
        if isinstance(item, ModbusItem):
            bits = BITS_OF.get(item.data_type)
        elif isinstance(item, S7Item):
            bits = S7_COUNTER_BITS.get(item.type)
    return CounterSpec(bits=bits, max_step=counter.max_step)


def scaled(item: _Item, value: bool | int | float, metric_type: MetricType) -> bool | int | float:
    """An item's reading as its metric's value: reading × scale + offset, typed as the profile says."""
    if metric_type is MetricType.BOOL:
        return bool(value)
    result = value * item.scale + item.offset
    if metric_type is MetricType.INT:
        if not float(result).is_integer():
            raise ValueError(f"item {item.name!r} read {value!r}, which is not a whole number")
        return int(result)
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError(f"item {item.name!r} read {value!r}, which is not a finite number")
    return float(result)

"""One agent process for many machines read over their own protocols (``pilot agent --sources agent.yaml``).

Per device, a reader (``adapters.sources``) gives item values; ``DeviceDerivation`` turns them into the
contract's telemetry, states and production through ``pilot_core.signals`` and records them in the
process's outbox (one database, rows keyed by device), so a broker outage loses nothing. A source that
cannot be reached makes the device offline (a status record: the KPI engine counts the time as unknown,
never as production) until it answers again; an item that fails (an illegal address, a node id that
vanished) is logged and counted without stopping the others. A counter's last reading is kept in the
outbox database with the production derived from it, so an agent restart counts no part twice and loses
none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from prometheus_client import CollectorRegistry, Counter, Gauge

from adapters.mqtt import MqttSettings
from adapters.sources import ItemFault, ItemValue, SourceUnreachable
from edge_agent.agent import Agent
from edge_agent.network import AgentNetwork
from edge_agent.outbox import Outbox
from pilot_core.profiles import DeviceProfile, ProductionMode, ProfileCatalog, metric_value_problem
from pilot_core.signals import (
    CounterEvent,
    CounterRole,
    ProductionCounters,
    SignalValue,
    StateDebouncer,
    as_unsigned,
    classify,
)
from pilot_core.source_map import ModbusDevice, OpcUaDevice, S7Device, SourceMap, counter_spec, scaled

log = logging.getLogger("pilot.agent.sources")

RETRY_S = 2.0  # between two attempts to reach a source that is gone
_COUNTERS_KEY = "counters"
# Faults of what a value means rather than of reading it: the item reads, yet the fault stands until the
# meaning is understood again (a state number the map lists, a count that fits its counter).
_MEANING_FAULTS = ("unmapped_state", "not_a_count")
Device = ModbusDevice | OpcUaDevice | S7Device
if TYPE_CHECKING:  # a protocol's library is imported only when a device speaks it (asyncua alone is ~38 MB)
    from adapters.sources.modbus import ModbusReader
    from adapters.sources.opcua import OpcUaReader
    from adapters.sources.s7 import S7Reader

    PolledReader = ModbusReader | S7Reader
    Reader = PolledReader | OpcUaReader


class SourceMetrics:
    """What an operator watches: which sources answer, and which items fail."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["site", "line", "device"]
        self.up = Gauge("pilot_agent_source_up", "1 while the device's source answers", labels, registry=self.registry)
        self.item_faults = Counter(
            "pilot_agent_item_faults",
            "Reads of an item that failed (illegal address, unknown node id, value out of its range)",
            [*labels, "item", "reason"],
            registry=self.registry,
        )


class DeviceDerivation:
    """One device's item values become its telemetry, states and production, recorded in its agent's outbox."""

    def __init__(self, device: Device, profile: DeviceProfile, agent: Agent, metrics: SourceMetrics) -> None:
        self.device, self.profile, self.agent, self.metrics = device, profile, agent, metrics
        self.labels = {"site": device.site, "line": device.line, "device": device.device}
        self.items = {item.name: item for item in device.source_items}
        self.signals: dict[str, SignalValue] = {}
        self.online: bool | None = None
        self.faulty: dict[str, str] = {}  # item → reason, while it keeps failing: logged once, not every read
        self._debouncer = StateDebouncer()
        self._last_ts = 0
        # How far the source's clock is behind the agent's (OPC UA SourceTimestamp; Modbus and S7 reads are stamped
        # by the agent, so about 0): ticks and outages are dated on the source's clock, as its values are.
        self._source_behind_ms = 0
        self._counters: ProductionCounters | None = None
        self._cycle_since_ms: int | None = None
        spec = device.state
        self._enum = spec.enum_states() if spec else None
        self._rules = spec.state_rules() if spec else ()
        if device.production is not None:
            self._restore_counters()

    # --- the source's news ----------------------------------------------

    def values(self, batch: Sequence[ItemValue]) -> None:
        """A read of some items (a Modbus poll: all of them; an OPC UA data change: one)."""
        if not batch:
            return
        if self.online is not True:
            self._found(batch[0].ts_ms)
        newest = max(value.ts_ms for value in batch)
        self._source_behind_ms = int(time.time() * 1000) - newest
        ts = max(self._last_ts, newest)
        self._last_ts = ts
        telemetry: dict[str, bool | int | float] = {}
        for value in batch:
            self.signals[value.item] = value.value
            item = self.items[value.item]
            problem = None
            if item.metric is not None:
                metric = self.profile.metric(item.metric)
                assert metric is not None  # the source map was checked against the profile
                try:
                    telemetry[metric.name] = scaled(item, value.value, metric.type)
                    found = metric_value_problem(metric, telemetry[metric.name])
                    problem = found and ItemFault(item.name, found[0], found[1])
                except ValueError as exc:
                    problem = ItemFault(item.name, "not_a_number", str(exc))
                if problem is not None:
                    telemetry.pop(metric.name, None)
            if problem is not None:
                self.faults([problem])
            elif self.faulty.get(value.item) not in (None, *_MEANING_FAULTS):
                self._recovered(value.item)
        if telemetry:
            self.agent.telemetry(telemetry, ts_ms=ts)
        self._derive_state(ts)
        if self._counters is not None and any(self._is_counter(value.item) for value in batch):
            self._derive_production(ts)

    def tick(self, ts_ms: int) -> None:
        """Time passed without news (OPC UA reports changes only): a state may have held long enough now.

        ``ts_ms`` is the agent's clock; the source's is what its values carry, so the tick is moved onto it."""
        if self.online:
            self._last_ts = max(self._last_ts, ts_ms - self._source_behind_ms)
            self._derive_state(self._last_ts)

    def faults(self, faults: Iterable[ItemFault]) -> None:
        for fault in faults:
            self.metrics.item_faults.labels(**self.labels, item=fault.item, reason=fault.reason).inc()
            if self.faulty.get(fault.item) != fault.reason:
                log.warning("%s: item %s fails (%s): %s", self.name, fault.item, fault.reason, fault.detail)
                self.faulty[fault.item] = fault.reason

    def _recovered(self, item: str) -> None:
        log.info("%s: item %s reads again", self.name, item)
        del self.faulty[item]

    def lost(self, why: str) -> None:
        """The source cannot be reached: the device's state is unknown until it answers again."""
        self.metrics.up.labels(**self.labels).set(0)
        if self.online is False:
            return
        log.warning("%s: source lost (%s); its state is unknown until it answers", self.name, why)
        self.online = False
        now = max(self._last_ts + 1, int(time.time() * 1000) - self._source_behind_ms)
        self._last_ts = now
        self.agent.source_status(False, ts_ms=now)
        self._debouncer.forget()
        self.signals.clear()  # stale: nothing read before the outage decides a state after it

    def _found(self, ts_ms: int) -> None:
        self.metrics.up.labels(**self.labels).set(1)
        if self.online is False:
            log.info("%s: source answers again", self.name)
            ts_ms = max(ts_ms, self._last_ts + 1)
            self._last_ts = ts_ms
            self.agent.source_status(True, ts_ms=ts_ms)
        self.online = True

    # --- derivations ------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.device.site}/{self.device.line}/{self.device.device}"

    @property
    def state(self) -> str | None:
        """The state derived last (recorded, if not yet sent); None while unknown."""
        return self._debouncer.current

    def _derive_state(self, ts: int) -> None:
        spec = self.device.state
        if spec is None:
            return
        if self._enum is not None:
            assert spec.item is not None
            if spec.item not in self.signals:
                return
            raw = self.signals[spec.item]
            called_for = self._enum.state_of(raw)
            if called_for is None:
                self.faults([ItemFault(spec.item, "unmapped_state", f"state number {raw!r} is not in the map")])
            elif self.faulty.get(spec.item) == "unmapped_state":
                self._recovered(spec.item)
            change = self._debouncer.observe(ts, called_for, self._enum.min_duration_ms)
        else:
            rule = classify(self._rules, self.signals)
            if rule is None:
                change = self._debouncer.observe(ts, None)
            else:
                change = self._debouncer.observe(ts, rule.state, rule.min_duration_ms)
        if change is not None:
            self.agent.state(change.state, ts_ms=change.ts_ms)

    def _is_counter(self, item: str) -> bool:
        production = self.device.production
        return production is not None and any(c.item == item for c in production.counters.values())

    def _restore_counters(self) -> None:
        production = self.device.production
        assert production is not None
        specs = {role: counter_spec(self.device, counter) for role, counter in production.counters.items()}
        kept = json.loads(self.agent.kept(_COUNTERS_KEY) or "{}")
        last = {CounterRole(role): value for role, value in kept.get("last", {}).items() if CounterRole(role) in specs}
        try:
            self._counters = ProductionCounters(specs, last, kept.get("scrap_ahead", 0))
        except ValueError as exc:  # a reading kept by an older source map that no longer fits the register
            log.warning("%s: kept counter readings do not fit (%s); counting from the next reading", self.name, exc)
            self._counters = ProductionCounters(specs)
        self._cycle_since_ms = kept.get("cycle_since_ms")

    def _derive_production(self, ts: int) -> None:
        production = self.device.production
        assert production is not None and self._counters is not None
        readings: dict[CounterRole, int] = {}
        for role, counter in production.counters.items():
            value = self.signals.get(counter.item)
            if value is None:
                return  # every counter is needed for one record
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                self.faults([ItemFault(counter.item, "not_a_count", f"counter read {value!r}")])
                return
            bits = self._counters.trackers[role].spec.bits
            # A signed register counting past its top reads negative: the same count, as the register holds it.
            readings[role] = as_unsigned(int(value), bits) if bits is not None and value < 0 else int(value)
        before = self._counters.last
        try:
            counts, steps = self._counters.observe(readings)
        except ValueError as exc:
            self.faults([ItemFault(production.counters[CounterRole.PRODUCED].item, "not_a_count", str(exc))])
            return
        for counter in production.counters.values():
            if self.faulty.get(counter.item) == "not_a_count":
                self._recovered(counter.item)
        for role, step in steps.items():
            if step.event in (CounterEvent.WRAP, CounterEvent.RESET):
                log.info("%s: counter %s %s: %s → %s", self.name, role, step.event, before[role], readings[role])
        if self._cycle_since_ms is None:
            self._cycle_since_ms = ts
        keep = {_COUNTERS_KEY: self._kept(ts if counts.produced else self._cycle_since_ms)}
        if counts.produced:
            self.agent.production_batch(self._records(production.product, counts, ts), keep=keep)
            self._cycle_since_ms = ts
        elif self._counters.last != before:
            self.agent.keep(keep)

    def _kept(self, cycle_since_ms: int) -> str:
        assert self._counters is not None
        last = {role.value: value for role, value in self._counters.last.items()}
        return json.dumps({"last": last, "scrap_ahead": self._counters.scrap_ahead, "cycle_since_ms": cycle_since_ms})

    def _records(self, product: str, counts: Any, ts: int) -> list[dict[str, Any]]:
        if self.profile.production.mode is not ProductionMode.CYCLE:
            record = {"ts": ts, "product": product, "produced": counts.produced, "good": counts.good}
            return [{**record, "scrap": counts.scrap, "rework": 0}]
        # A cycle profile counts one record per part: the parts since the last count share the time since it.
        assert self._cycle_since_ms is not None
        elapsed_ms = max(ts - self._cycle_since_ms, counts.produced)
        step_ms = elapsed_ms // counts.produced
        records = []
        for index in range(counts.produced):
            good = int(index < counts.good)
            part_ts = ts - (counts.produced - 1 - index) * step_ms  # distinct times: InfluxDB keeps each point
            records.append(
                {
                    "ts": part_ts,
                    "product": product,
                    "produced": 1,
                    "good": good,
                    "scrap": 1 - good,
                    "rework": 0,
                    "cycle_time_s": elapsed_ms / counts.produced / 1000,
                }
            )
        return records


def outbox_folder(root: Path, device: Device) -> Path:
    """Where an older agent kept each device's own outbox: ids may hold any character a folder name may not."""
    return root / urllib.parse.quote(f"{device.site}/{device.line}/{device.device}", safe="")


OUTBOX_FILE = "outbox.sqlite"


class SourceAgents:
    """Every device of a source map: its agent (its own MQTT connection) and its reader, in one event loop.

    The agents share one outbox database (rows keyed by device; a group commit makes what several devices
    recorded within ``COMMIT_EVERY_S`` durable with one sync) and one network thread."""

    def __init__(
        self, source_map: SourceMap, catalog: ProfileCatalog, mqtt: MqttSettings, outbox_root: Path, quota_mb: int = 256
    ) -> None:
        self.metrics = SourceMetrics()
        self.outbox = Outbox(outbox_root / OUTBOX_FILE, quota_mb * 1024 * 1024, grouped=True)
        self.network = AgentNetwork()
        self.derivations: list[DeviceDerivation] = []
        self.readers: list[Reader] = []
        for device in source_map.devices:
            profile = catalog[device.profile]
            agent = Agent(
                mqtt, device.site, device.line, device.device, profile, None, outbox=self.outbox, network=self.network
            )
            legacy = outbox_folder(outbox_root, device) / OUTBOX_FILE
            if legacy.exists():
                moved = self.outbox.absorb(legacy, agent.name)
                log.info(
                    "%s: its own outbox %s moved into %s (%d messages)", agent.name, legacy, self.outbox.path, moved
                )
                with contextlib.suppress(OSError):
                    legacy.parent.rmdir()
            self.derivations.append(DeviceDerivation(device, profile, agent, self.metrics))
            self.readers.append(reader_for(device))

    def start(self) -> None:
        for derivation in self.derivations:
            derivation.agent.start()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(_serve(reader, derivation, stop))
            for reader, derivation in zip(self.readers, self.derivations, strict=True)
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for reader in self.readers:
            if _polled(reader):
                reader.close()

    def stop(self, flush_timeout_s: float = 30.0) -> int:
        """Stop every agent; returns the messages left in the outbox for the next start."""
        self.outbox.commit()
        deadline = time.monotonic() + flush_timeout_s
        for derivation in self.derivations:
            derivation.agent.flush(deadline)
        for derivation in self.derivations:
            derivation.agent.disconnect()
        left = sum(derivation.agent.pending for derivation in self.derivations)
        self.network.close()
        self.outbox.close()
        return left


def reader_for(device: Device) -> Reader:
    # Imported here: a process reads only the protocols its devices speak, and loads only those libraries.
    if isinstance(device, ModbusDevice):
        from adapters.sources.modbus import ModbusReader  # noqa: PLC0415

        return ModbusReader(device.modbus, device.items)
    if isinstance(device, S7Device):
        from adapters.sources.s7 import S7Reader  # noqa: PLC0415

        return S7Reader(device.s7, device.items)
    from adapters.sources.opcua import OpcUaReader  # noqa: PLC0415

    return OpcUaReader(device.opcua, device.items)


def _polled(reader: Reader) -> TypeGuard[PolledReader]:
    """A reader polled every ``poll_s`` (Modbus, S7), not one that subscribes (OPC UA)."""
    return not hasattr(reader, "run")


async def _serve(reader: Reader, derivation: DeviceDerivation, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            if _polled(reader):
                values, faults = await reader.read()
                derivation.faults(faults)
                derivation.values(values)
                await _wait(stop, reader.endpoint.poll_s)
            else:
                subscriber = cast("OpcUaReader", reader)
                every_s = subscriber.endpoint.publishing_interval_ms / 1000
                ticker = asyncio.create_task(_tick(derivation, every_s, stop))
                try:
                    await subscriber.run(
                        lambda value: derivation.values([value]), lambda fault: derivation.faults([fault])
                    )
                finally:
                    ticker.cancel()
        except SourceUnreachable as exc:
            derivation.lost(str(exc))
            await _wait(stop, RETRY_S)
        except Exception:  # a full outbox disk, a bug: this device tries again, the others go on regardless
            log.exception("%s: reading its source failed", derivation.name)
            await _wait(stop, RETRY_S)


async def _tick(derivation: DeviceDerivation, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _wait(stop, every_s)
        derivation.tick(int(time.time() * 1000))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


SourceCheck = tuple[str, list[ItemValue], list[ItemFault], str | None]


async def check_sources(source_map: SourceMap) -> list[SourceCheck]:
    """Read every item of every device once: (device, values, faults, why the source could not be reached)."""
    results: list[SourceCheck] = []
    for device in source_map.devices:
        name = f"{device.site}/{device.line}/{device.device}"
        reader = reader_for(device)
        try:
            if _polled(reader):
                try:
                    values, faults = await reader.read()
                finally:
                    reader.close()
            else:
                values, faults = await cast("OpcUaReader", reader).read_once()
            results.append((name, values, faults, None))
        except SourceUnreachable as exc:
            results.append((name, [], [], str(exc)))
    return results

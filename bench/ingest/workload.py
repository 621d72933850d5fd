"""The workload every system under test receives: N valid telemetry messages over the bundled profiles."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adapters.catalog import load_profiles
from bench.ingest.settings import BASE_TS_MS, MAX_PAYLOAD_BYTES, SITE
from pilot_core.contract import Channel, topic_for
from pilot_core.profiles import ProfileCatalog
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import Accepted, validate_message
from simulators.values import random_metrics


@dataclass(frozen=True)
class Workload:
    devices: list[DeviceEntry]
    messages: list[tuple[str, bytes]]

    def registry(self, catalog: ProfileCatalog) -> DeviceRegistry:
        return DeviceRegistry(self.devices, catalog)

    def devices_yaml(self) -> str:
        return yaml.safe_dump({"devices": [d.model_dump(exclude_defaults=True) for d in self.devices]}, sort_keys=False)


def build_workload(
    messages: int,
    devices: int = 50,
    seed: int = 1,
    catalog: ProfileCatalog | None = None,
    records_per_message: int = 1,
) -> Workload:
    """``messages`` valid telemetry messages, round-robin over ``devices``.

    Devices are spread over every bundled profile; each record carries every
    metric of its profile with a value in range, and a timestamp one second
    after its device's previous record, so no two points collide. With one
    record per message the record is inline; with more, the message is the
    contract's ``{"seq": …, "batch": [records…]}``. Each device's seq grows by
    one per message.
    """
    if messages < 0 or devices < 1 or records_per_message < 1:
        raise ValueError("messages must be >= 0, devices and records_per_message >= 1")
    catalog = catalog or load_profiles()
    profiles = list(catalog)
    rng = random.Random(seed)
    entries = [
        DeviceEntry(
            site=SITE,
            line=f"line-{index % 5 + 1}",
            device=f"dev-{index:03d}",
            profile=profiles[index % len(profiles)].id,
        )
        for index in range(devices)
    ]
    topics = [topic_for(e.site, e.line, e.device, Channel.TELEMETRY) for e in entries]
    device_profiles = [catalog[e.profile] for e in entries]
    seqs = [0] * devices
    out: list[tuple[str, bytes]] = []
    for index in range(messages):
        device = index % devices
        seq = seqs[device]
        seqs[device] += 1
        body: dict[str, Any]
        if records_per_message == 1:
            body = {"seq": seq, "ts": BASE_TS_MS + seq * 1000, "metrics": random_metrics(device_profiles[device], rng)}
        else:
            first = seq * records_per_message
            batch = [
                {"ts": BASE_TS_MS + (first + r) * 1000, "metrics": random_metrics(device_profiles[device], rng)}
                for r in range(records_per_message)
            ]
            body = {"seq": seq, "batch": batch}
        out.append((topics[device], json.dumps(body).encode("utf-8")))
    return Workload(entries, out)


def load_devices(path: Path) -> list[DeviceEntry]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [DeviceEntry.model_validate(d) for d in document["devices"]]


def check_workload(workload: Workload, registry: DeviceRegistry, what: str) -> None:
    invalid = sum(
        1 for t, p in workload.messages if not isinstance(validate_message(t, p, registry, MAX_PAYLOAD_BYTES), Accepted)
    )
    if invalid:
        raise RuntimeError(f"{invalid} generated {what} messages fail validation")

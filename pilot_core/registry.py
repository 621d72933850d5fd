"""The device registry: which devices exist, where, and by which profile.

A message from a device that is not registered is refused as ``unknown_device``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pilot_core.ids import check_id
from pilot_core.profiles import DeviceProfile, ProfileCatalog, ProfileErrors
from pilot_core.yaml_text import SourceError, parse_yaml


@dataclass(frozen=True, slots=True)
class DeviceKey:
    site: str
    line: str
    device: str


class DeviceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    line: str
    device: str
    profile: str
    name: str = ""
    organisation: str | None = Field(
        default=None,
        description="Slug of the organisation that owns the device (the startup instrumenting it); its API keys see"
        " the device. None: only admins, and those who can see a demonstration naming it",
    )

    @field_validator("site", "line", "device")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        return check_id(value)

    @property
    def key(self) -> DeviceKey:
        return DeviceKey(self.site, self.line, self.device)


class RegistryDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: list[DeviceEntry] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    entry: DeviceEntry
    profile: DeviceProfile


class DeviceRegistry:
    def __init__(self, entries: Iterable[DeviceEntry], catalog: ProfileCatalog) -> None:
        self.catalog = catalog
        self._devices: dict[DeviceKey, RegisteredDevice] = {}
        for entry in entries:
            profile = catalog.get(entry.profile)
            if profile is None:
                raise ValueError(f"device {entry.device!r} names profile {entry.profile!r}, which is not loaded")
            if entry.key in self._devices:
                raise ValueError(f"device {entry.site}/{entry.line}/{entry.device} is registered twice")
            self._devices[entry.key] = RegisteredDevice(entry, profile)

    def get(self, key: DeviceKey) -> RegisteredDevice | None:
        return self._devices.get(key)

    def __iter__(self) -> Iterator[RegisteredDevice]:
        return iter(self._devices.values())

    def __len__(self) -> int:
        return len(self._devices)


def parse_registry(text: str, source: str, catalog: ProfileCatalog) -> DeviceRegistry:
    document = parse_yaml(text, source)
    try:
        parsed = RegistryDocument.model_validate(document.data or {})
    except ValidationError as exc:
        raise ProfileErrors(document.errors(exc)) from None
    errors = []
    for index, entry in enumerate(parsed.devices):
        if catalog.get(entry.profile) is None:
            known = ", ".join(p.id for p in catalog) or "none"
            errors.append(
                SourceError(
                    source,
                    document.line_of(["devices", index, "profile"]),
                    f"unknown profile {entry.profile!r} (loaded: {known})",
                )
            )
    if errors:
        raise ProfileErrors(errors)
    try:
        return DeviceRegistry(parsed.devices, catalog)
    except ValueError as exc:
        raise ProfileErrors([SourceError(source, None, str(exc))]) from None

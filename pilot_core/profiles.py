"""Device profiles: what a kind of device publishes, and what it means.

A profile declares the device's metrics (name, unit, type, valid range,
expected sampling interval), its machine states with their ISO 22400-2 time
class, what its production messages mean, and a version.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pilot_core.contract import TimeClass
from pilot_core.yaml_text import SourceError, parse_yaml

# Names that are tags or bookkeeping fields in every measurement: a field may
# never share a name with a tag (InfluxDB 3 refuses it), nor shadow ``seq``.
RESERVED_METRIC_NAMES = frozenset({"site", "line", "device", "product", "seq", "time"})

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
ProfileId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,47}$")]
SemVer = Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]


class MetricType(enum.StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"


class ProductionMode(enum.StrEnum):
    CYCLE = "cycle"  # one record per completed cycle, with its cycle time
    COUNT = "count"  # periodic counts without a cycle time (e.g. a conveyor's counter)
    NONE = "none"  # the device does not report production


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metric(_Strict):
    name: Name
    unit: str = Field(description="Unit symbol, e.g. °C, kW, mm/s, 1 for dimensionless")
    type: MetricType = MetricType.FLOAT
    min: float | None = None
    max: float | None = None
    interval_s: float = Field(gt=0, description="Expected seconds between samples when the device is online")
    description: str = ""

    @model_validator(mode="after")
    def _range_fits_type(self) -> Self:
        if self.type is MetricType.BOOL and (self.min is not None or self.max is not None):
            raise ValueError("a bool metric has no range")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.name in RESERVED_METRIC_NAMES:
            raise ValueError(f"{self.name!r} is reserved (tags and bookkeeping fields use it)")
        return self


class State(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    time_class: TimeClass
    description: str = ""


class Production(_Strict):
    mode: ProductionMode
    unit: str = Field(default="unit", description="What one produced unit is, e.g. part, box, inspection")


class DeviceProfile(_Strict):
    id: ProfileId
    version: SemVer
    name: str
    name_ko: str = ""
    description: str = ""
    metrics: list[Metric] = Field(default_factory=list)
    states: list[State] = Field(default_factory=list)
    production: Production = Production(mode=ProductionMode.NONE)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for what, names in (("metric", [m.name for m in self.metrics]), ("state", [s.name for s in self.states])):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(duplicates)}")
        if self.production.mode is not ProductionMode.NONE and not self.states:
            raise ValueError("a profile that reports production must declare its machine states")
        return self

    @property
    def measurement(self) -> str:
        """The InfluxDB measurement holding this profile's telemetry."""
        return f"telemetry_{self.id}"

    def metric(self, name: str) -> Metric | None:
        return self._metrics_by_name().get(name)

    def state(self, name: str) -> State | None:
        return self._states_by_name().get(name)

    def _metrics_by_name(self) -> Mapping[str, Metric]:
        cached: dict[str, Metric] | None = self.__dict__.get("_metric_index")
        if cached is None:
            cached = {m.name: m for m in self.metrics}
            object.__setattr__(self, "_metric_index", cached)  # frozen model: cache outside the fields
        return cached

    def _states_by_name(self) -> Mapping[str, State]:
        cached: dict[str, State] | None = self.__dict__.get("_state_index")
        if cached is None:
            cached = {s.name: s for s in self.states}
            object.__setattr__(self, "_state_index", cached)
        return cached


def metric_value_problem(metric: Metric, value: bool | int | float) -> tuple[str, str] | None:
    """Why ``value`` does not fit ``metric``, as (reason, detail); None if it fits.

    Types are checked against the declaration, never inferred: a float metric
    accepts JSON integers (stored as floats), an int metric accepts only integers.
    """
    if metric.type is MetricType.BOOL:
        if not isinstance(value, bool):
            return "wrong_type", f"metric {metric.name!r} is bool, got {type(value).__name__} {value!r}"
        return None
    if isinstance(value, bool):
        return "wrong_type", f"metric {metric.name!r} is {metric.type.value}, got bool {value!r}"
    if metric.type is MetricType.INT and not isinstance(value, int):
        return "wrong_type", f"metric {metric.name!r} is int, got float {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return "non_finite", f"metric {metric.name!r} is {value!r}; only finite numbers are stored"
    if metric.type is MetricType.INT and not -(2**63) <= value < 2**63:
        return "out_of_range", f"metric {metric.name!r} value {value} does not fit in 64 bits"
    if metric.min is not None and value < metric.min:
        return "out_of_range", f"metric {metric.name!r} value {value} is below its minimum {metric.min:g} {metric.unit}"
    if metric.max is not None and value > metric.max:
        return "out_of_range", f"metric {metric.name!r} value {value} is above its maximum {metric.max:g} {metric.unit}"
    return None


def parse_profile(text: str, source: str) -> DeviceProfile:
    """Parse one profile document. Raises ProfileErrors with file and line."""
    document = parse_yaml(text, source)
    try:
        return DeviceProfile.model_validate(document.data)
    except ValidationError as exc:
        raise ProfileErrors(document.errors(exc)) from None


class ProfileErrors(ValueError):
    """Every problem found in one or more profile documents."""

    def __init__(self, errors: Iterable[SourceError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class ProfileCatalog:
    """The profiles in force, by id."""

    def __init__(self, profiles: Iterable[DeviceProfile]) -> None:
        self._by_id: dict[str, DeviceProfile] = {}
        for profile in profiles:
            if profile.id in self._by_id:
                raise ValueError(f"profile id {profile.id!r} is declared twice")
            self._by_id[profile.id] = profile

    def __getitem__(self, profile_id: str) -> DeviceProfile:
        return self._by_id[profile_id]

    def get(self, profile_id: str) -> DeviceProfile | None:
        return self._by_id.get(profile_id)

    def __iter__(self) -> Iterator[DeviceProfile]:
        return iter(sorted(self._by_id.values(), key=lambda p: p.id))

    def __len__(self) -> int:
        return len(self._by_id)

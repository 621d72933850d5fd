"""Process-efficiency KPIs after ISO 22400-2, as pure functions of summed components.

Every KPI is a function of ``Components``: time elements and quantities that
add up across devices, hours and windows. A roll-up therefore sums the
components first and computes the ratio once; it never averages ratios.

Time elements (seconds) follow ISO 22400-2:

- PBT, planned busy time: scheduled time minus planned downtime;
- APT, actual production time; ASUT, actual setup time;
- ADET, actual unit delay time (faults and minor stops);
- ADOT, actual unit down time (available but idle, no order).

Time inside PBT with no known state (the device was silent) is ``unknown_s``;
it lowers availability, as it would in an evaluator's hands, and is shown in
the coverage beside each result.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from pilot_core.contract import TimeClass


@dataclass(frozen=True, slots=True)
class Components:
    """Additive building blocks of every KPI, for one device or a roll-up."""

    pbt_s: float = 0.0  # planned busy time
    apt_s: float = 0.0  # actual production time
    asut_s: float = 0.0  # actual setup time
    adet_s: float = 0.0  # delays: faults and minor stops
    adot_s: float = 0.0  # idle, no order
    unknown_s: float = 0.0  # inside PBT, but no state known
    planned_down_s: float = 0.0  # inside the shifts, but planned downtime
    produced: float = 0.0  # PQ
    good: float = 0.0  # GQ
    scrap: float = 0.0  # SQ
    rework: float = 0.0  # RQ
    ideal_s: float = 0.0  # Σ PRU·PQ: ideal time for what was produced
    cycle_time_s: float = 0.0  # Σ reported cycle times
    cycles: float = 0.0  # cycles with a reported cycle time
    failures: float = 0.0  # faults that started
    repair_s: float = 0.0  # time in fault
    energy_kwh: float = 0.0  # from energy meters in scope
    output_produced: float = 0.0  # PQ of the line's output station(s) only
    output_good: float = 0.0  # GQ of the line's output station(s) only
    output_pbt_s: float = 0.0  # PBT of the line's output station(s) only
    meter_hours: float = 0.0  # device-hours of the plan's energy meters: none means no energy was measured
    output_cycle_time_s: float = 0.0  # Σ reported cycle times of the line's output station(s) only
    output_cycles: float = 0.0  # cycles with a reported cycle time of the line's output station(s) only

    def __add__(self, other: Components) -> Components:
        return Components(*(getattr(self, f) + getattr(other, f) for f in COMPONENT_NAMES))

    def as_vector(self) -> list[float]:
        return [getattr(self, f) for f in COMPONENT_NAMES]

    @classmethod
    def from_vector(cls, values: Iterable[float]) -> Components:
        return cls(*values)

    @property
    def aubt_s(self) -> float:
        """Actual unit busy time: production, setup and delays."""
        return self.apt_s + self.asut_s + self.adet_s


COMPONENT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Components))


def total(parts: Iterable[Components]) -> Components:
    """The roll-up of several devices, hours or windows."""
    result = Components()
    for part in parts:
        result = result + part
    return result


# Where each state's time goes. Minor stops are delays too; planned downtime leaves PBT.
TIME_ELEMENT_OF: dict[TimeClass, str] = {
    TimeClass.PRODUCTION: "apt_s",
    TimeClass.SETUP: "asut_s",
    TimeClass.UNPLANNED_DELAY: "adet_s",
    TimeClass.MINOR_STOP: "adet_s",
    TimeClass.IDLE: "adot_s",
    TimeClass.PLANNED_DOWNTIME: "planned_down_s",
}


class Better(enum.StrEnum):
    HIGHER = "higher"
    LOWER = "lower"


class NoValue(enum.StrEnum):
    """Why a KPI has no value: an input it divides by, or needs, is missing (zero) in what was summed."""

    NO_PLANNED_BUSY_TIME = "no planned busy time"
    NO_PRODUCTION_TIME = "no production time (APT is zero)"
    NOTHING_PRODUCED = "nothing produced"
    NO_OUTPUT_BUSY_TIME = "no planned busy time at the output stations"
    NO_OUTPUT_GOOD = "no good units at the output stations"
    NO_OUTPUT_CYCLES = "no cycle times reported at the output stations"
    NO_BUSY_TIME = "no production, setup or delay time"
    NO_FAILURES = "no failures"
    NO_ENERGY_METER = "no energy meter in scope"
    NOT_FINITE = "not a finite number"


@dataclass(frozen=True, slots=True)
class Needs:
    """An input of a KPI: the sum of these components must be positive, else the KPI has no value."""

    components: tuple[str, ...]
    reason: NoValue

    def missing(self, c: Components) -> bool:
        return not sum(getattr(c, name) for name in self.components) > 0


@dataclass(frozen=True, slots=True)
class KpiDefinition:
    name: str
    title: str
    title_ko: str
    unit: str
    better: Better
    formula: str
    value: Callable[[Components], float | None]
    needs: tuple[Needs, ...] = ()  # in the order their absence is reported


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _product(*factors: float | None) -> float | None:
    result = 1.0
    for factor in factors:
        if factor is None:
            return None
        result *= factor
    return result


def availability(c: Components) -> float | None:
    return _ratio(c.apt_s, c.pbt_s)


def effectiveness(c: Components) -> float | None:
    # May exceed 1 when the ideal cycle time is too generous: reported raw, never clipped.
    return _ratio(c.ideal_s, c.apt_s)


def quality_ratio(c: Components) -> float | None:
    return _ratio(c.good, c.produced)


def oee(c: Components) -> float | None:
    return _product(availability(c), effectiveness(c), quality_ratio(c))


def _per_hour(count: float, seconds: float) -> float | None:
    return count / (seconds / 3600.0) if seconds > 0 else None


PBT = Needs(("pbt_s",), NoValue.NO_PLANNED_BUSY_TIME)
APT = Needs(("apt_s",), NoValue.NO_PRODUCTION_TIME)
PQ = Needs(("produced",), NoValue.NOTHING_PRODUCED)
FAILURES = Needs(("failures",), NoValue.NO_FAILURES)


def _energy_per_good_unit(c: Components) -> float | None:
    # With no meter in scope there is no energy figure at all: zero kWh would read as measured.
    return _ratio(c.energy_kwh, c.output_good) if c.meter_hours > 0 else None


KPIS: dict[str, KpiDefinition] = {
    k.name: k
    for k in [
        KpiDefinition(
            "availability", "Availability", "가용률", "ratio", Better.HIGHER, "APT / PBT", availability, (PBT,)
        ),
        KpiDefinition(
            "effectiveness",
            "Effectiveness (performance)",
            "성능효율",
            "ratio",
            Better.HIGHER,
            "Σ PRU·PQ / APT",
            effectiveness,
            (APT,),
        ),
        KpiDefinition(
            "quality_ratio", "Quality ratio", "품질률", "ratio", Better.HIGHER, "GQ / PQ", quality_ratio, (PQ,)
        ),
        KpiDefinition(
            "oee",
            "OEE",
            "설비종합효율",
            "ratio",
            Better.HIGHER,
            "availability × effectiveness × quality ratio",
            oee,
            (PBT, APT, PQ),
        ),
        KpiDefinition(
            "throughput_rate",
            "Throughput rate",
            "시간당 생산량",
            "units/h",
            Better.HIGHER,
            "output PQ / output PBT (per planned busy hour)",
            lambda c: _per_hour(c.output_produced, c.output_pbt_s),
            (Needs(("output_pbt_s",), NoValue.NO_OUTPUT_BUSY_TIME),),
        ),
        KpiDefinition(
            "cycle_time_mean",
            "Cycle time (mean)",
            "평균 사이클 타임",
            "s",
            Better.LOWER,
            "output Σ cycle time / output cycles (per station: Σ cycle time / cycles)",
            # The line's cycle time is read at its output: pooling unlike stations' cycles means nothing.
            lambda c: _ratio(c.output_cycle_time_s, c.output_cycles),
            (Needs(("output_cycles",), NoValue.NO_OUTPUT_CYCLES),),
        ),
        KpiDefinition(
            "first_pass_yield",
            "First-pass yield",
            "직행률",
            "ratio",
            Better.HIGHER,
            "GQ / PQ (GP / IP: every unit produced is judged good, scrap or rework at its first pass)",
            quality_ratio,
            (PQ,),
        ),
        KpiDefinition(
            "scrap_ratio",
            "Scrap ratio",
            "폐기율",
            "ratio",
            Better.LOWER,
            "SQ / PQ",
            lambda c: _ratio(c.scrap, c.produced),
            (PQ,),
        ),
        KpiDefinition(
            "rework_ratio",
            "Rework ratio",
            "재작업률",
            "ratio",
            Better.LOWER,
            "RQ / PQ",
            lambda c: _ratio(c.rework, c.produced),
            (PQ,),
        ),
        KpiDefinition(
            "technical_efficiency",
            "Technical efficiency",
            "기술효율",
            "ratio",
            Better.HIGHER,
            "APT / (APT + ADET)",
            lambda c: _ratio(c.apt_s, c.apt_s + c.adet_s),
            (Needs(("apt_s", "adet_s"), NoValue.NO_BUSY_TIME),),
        ),
        KpiDefinition(
            "setup_ratio",
            "Setup ratio",
            "준비교체 비율",
            "ratio",
            Better.LOWER,
            "ASUT / AUPT",
            lambda c: _ratio(c.asut_s, c.apt_s + c.asut_s),
            (Needs(("apt_s", "asut_s"), NoValue.NO_BUSY_TIME),),
        ),
        KpiDefinition(
            "mtbf",
            "Mean time between failures",
            "평균 고장 간격",
            "h",
            Better.HIGHER,
            "(APT + ASUT) / failures",
            lambda c: _ratio((c.apt_s + c.asut_s) / 3600.0, c.failures),
            (FAILURES,),
        ),
        KpiDefinition(
            "mttr",
            "Mean time to repair",
            "평균 수리 시간",
            "min",
            Better.LOWER,
            "time in fault / failures",
            lambda c: _ratio(c.repair_s / 60.0, c.failures),
            (FAILURES,),
        ),
        KpiDefinition(
            "energy_per_good_unit",
            "Energy per good unit",
            "양품당 에너지",
            "kWh/unit",
            Better.LOWER,
            "E / output GQ",
            _energy_per_good_unit,
            (
                Needs(("meter_hours",), NoValue.NO_ENERGY_METER),
                Needs(("output_good",), NoValue.NO_OUTPUT_GOOD),
            ),
        ),
    ]
}


def compute(name: str, components: Components) -> float | None:
    """One KPI's value, or None where its denominator is zero."""
    try:
        definition = KPIS[name]
    except KeyError:
        raise ValueError(f"unknown KPI {name!r}; known: {', '.join(KPIS)}") from None
    value = definition.value(components)
    return value if value is None or math.isfinite(value) else None


def compute_all(components: Components) -> dict[str, float | None]:
    return {name: compute(name, components) for name in KPIS}


def no_value_reason(name: str, components: Components) -> NoValue | None:
    """Why ``compute(name, components)`` is None (the first missing input), or None when it has a value."""
    if compute(name, components) is not None:
        return None
    for needs in KPIS[name].needs:
        if needs.missing(components):
            return needs.reason
    return NoValue.NOT_FINITE

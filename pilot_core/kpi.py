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


@dataclass(frozen=True, slots=True)
class KpiDefinition:
    name: str
    title: str
    title_ko: str
    unit: str
    better: Better
    formula: str
    value: Callable[[Components], float | None]


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


KPIS: dict[str, KpiDefinition] = {
    k.name: k
    for k in [
        KpiDefinition("availability", "Availability", "가용률", "ratio", Better.HIGHER, "APT / PBT", availability),
        KpiDefinition(
            "effectiveness",
            "Effectiveness (performance)",
            "성능효율",
            "ratio",
            Better.HIGHER,
            "Σ PRU·PQ / APT",
            effectiveness,
        ),
        KpiDefinition("quality_ratio", "Quality ratio", "품질률", "ratio", Better.HIGHER, "GQ / PQ", quality_ratio),
        KpiDefinition(
            "oee", "OEE", "설비종합효율", "ratio", Better.HIGHER, "availability × effectiveness × quality ratio", oee
        ),
        KpiDefinition(
            "throughput_rate",
            "Throughput rate",
            "시간당 생산량",
            "units/h",
            Better.HIGHER,
            "output PQ / output PBT (per planned busy hour)",
            lambda c: _per_hour(c.output_produced, c.output_pbt_s),
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
        ),
        KpiDefinition(
            "first_pass_yield",
            "First-pass yield",
            "직행률",
            "ratio",
            Better.HIGHER,
            "GP / IP (good at first pass / inspected)",
            quality_ratio,
        ),
        KpiDefinition(
            "scrap_ratio",
            "Scrap ratio",
            "폐기율",
            "ratio",
            Better.LOWER,
            "SQ / PQ",
            lambda c: _ratio(c.scrap, c.produced),
        ),
        KpiDefinition(
            "rework_ratio",
            "Rework ratio",
            "재작업률",
            "ratio",
            Better.LOWER,
            "RQ / PQ",
            lambda c: _ratio(c.rework, c.produced),
        ),
        KpiDefinition(
            "technical_efficiency",
            "Technical efficiency",
            "기술효율",
            "ratio",
            Better.HIGHER,
            "APT / (APT + ADET)",
            lambda c: _ratio(c.apt_s, c.apt_s + c.adet_s),
        ),
        KpiDefinition(
            "setup_ratio",
            "Setup ratio",
            "준비교체 비율",
            "ratio",
            Better.LOWER,
            "ASUT / AUPT",
            lambda c: _ratio(c.asut_s, c.apt_s + c.asut_s),
        ),
        KpiDefinition(
            "mtbf",
            "Mean time between failures",
            "평균 고장 간격",
            "h",
            Better.HIGHER,
            "(APT + ASUT) / failures",
            lambda c: _ratio((c.apt_s + c.asut_s) / 3600.0, c.failures),
        ),
        KpiDefinition(
            "mttr",
            "Mean time to repair",
            "평균 수리 시간",
            "min",
            Better.LOWER,
            "time in fault / failures",
            lambda c: _ratio(c.repair_s / 60.0, c.failures),
        ),
        KpiDefinition(
            "energy_per_good_unit",
            "Energy per good unit",
            "양품당 에너지",
            "kWh/unit",
            Better.LOWER,
            "E / output GQ",
            lambda c: _ratio(c.energy_kwh, c.output_good),
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

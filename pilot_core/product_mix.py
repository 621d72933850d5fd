"""Product-mix standardisation: the pilot's figures at the baseline's product mix.

When the mix moves, a line's mean cycle time, throughput and energy per unit
change with no change on any product. Direct standardisation answers "what
would the pilot have shown with the baseline's mix?": each product's own
pilot figure, weighted by the baseline's shares, so that each product's own
before/after change is what moves the result. At the baseline's own figures
the weights give back the raw baseline value exactly.

What is known per product (at the line's output stations): units produced
and good, Σ cycle time and cycles. Planned busy time and energy are not
recorded per product; they are shared among products by each product's share
of the output's Σ cycle time in the phase (the time it ran), the usual
allocation by run time. So, per product p and phase:

- cycle time CT_p = Σ cycle time_p / cycles_p, weighted by the baseline's
  shares of cycles (units with a cycle time);
- throughput TP_p = produced_p / (PBT · c_p), c_p the share of cycle time,
  combined harmonically at the baseline's shares of units produced (the time
  the baseline's units would take at the pilot's rates);
- energy per good unit EPU_p = E · c_p / good_p, weighted by the baseline's
  shares of good units.

Effectiveness needs none of this: each unit counts its own ideal cycle time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The mix "differs" when some product's share of units moves by at least this much (one percentage point).
MIX_TOLERANCE = 0.01
METHOD = (
    "direct standardisation: each product's own pilot figure weighted by the baseline's shares; planned busy time"
    " and energy shared among products by their share of the output's cycle time"
)
STANDARDISED_KPIS = ("cycle_time_mean", "throughput_rate", "energy_per_good_unit")


@dataclass(frozen=True, slots=True)
class ProductTotals:
    """One product's totals at the output stations in one phase."""

    produced: float = 0.0
    good: float = 0.0
    cycle_time_s: float = 0.0
    cycles: float = 0.0

    def __add__(self, other: ProductTotals) -> ProductTotals:
        return ProductTotals(
            self.produced + other.produced,
            self.good + other.good,
            self.cycle_time_s + other.cycle_time_s,
            self.cycles + other.cycles,
        )


@dataclass(frozen=True, slots=True)
class PhaseTotals:
    """What a phase shares among its products: the output's planned busy time and the metered energy."""

    products: Mapping[str, ProductTotals]
    output_pbt_s: float
    energy_kwh: float
    metered: bool  # an energy meter was in scope (else energy per unit has no value)


@dataclass(frozen=True, slots=True)
class ProductShare:
    product: str
    baseline_units: float  # produced at the output
    pilot_units: float
    baseline_share: float
    pilot_share: float
    baseline: dict[str, float | None]  # the product's own figure per KPI of STANDARDISED_KPIS
    pilot: dict[str, float | None]


@dataclass(frozen=True, slots=True)
class StandardisedKpi:
    kpi: str
    baseline: float | None  # the raw baseline value (the baseline is its own standard)
    raw_pilot: float | None
    raw_change: float | None
    standardised_pilot: float | None  # the pilot at the baseline's mix
    standardised_change: float | None
    reason: str = ""  # why there is no standardised figure


@dataclass(frozen=True, slots=True)
class MixStandardisation:
    products: list[ProductShare]
    mix_differs: bool  # some product's share of units moved by MIX_TOLERANCE or more
    largest_share_change: float
    kpis: list[StandardisedKpi]
    notes: list[str]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _shares(values: Mapping[str, float]) -> dict[str, float]:
    whole = sum(values.values())
    return {k: (v / whole if whole > 0 else 0.0) for k, v in values.items()}


def product_figures(phase: PhaseTotals) -> dict[str, dict[str, float | None]]:
    """Each product's own cycle time, throughput (units per planned busy hour) and energy per good unit."""
    run = _shares({p: t.cycle_time_s for p, t in phase.products.items()})
    figures: dict[str, dict[str, float | None]] = {}
    for product, t in phase.products.items():
        hours = phase.output_pbt_s * run[product] / 3600
        figures[product] = {
            "cycle_time_mean": _ratio(t.cycle_time_s, t.cycles),
            "throughput_rate": _ratio(t.produced, hours),
            "energy_per_good_unit": _ratio(phase.energy_kwh * run[product], t.good) if phase.metered else None,
        }
    return figures


def _raw(kpi: str, phase: PhaseTotals) -> float | None:
    summed = ProductTotals()
    for t in phase.products.values():
        summed = summed + t
    if kpi == "cycle_time_mean":
        return _ratio(summed.cycle_time_s, summed.cycles)
    if kpi == "throughput_rate":
        return _ratio(summed.produced, phase.output_pbt_s / 3600)
    return _ratio(phase.energy_kwh, summed.good) if phase.metered else None


def _weights(kpi: str, baseline: PhaseTotals) -> dict[str, float]:
    """The baseline's shares each KPI's per-product figures are weighted by: of the units the KPI counts."""
    of = {"cycle_time_mean": "cycles", "throughput_rate": "produced", "energy_per_good_unit": "good"}[kpi]
    return _shares({p: getattr(t, of) for p, t in baseline.products.items()})


def _standardised(
    kpi: str, weights: Mapping[str, float], pilot: Mapping[str, dict[str, float | None]]
) -> tuple[float | None, str]:
    weighted = {p: w for p, w in weights.items() if w > 0}
    if not weighted:
        return None, "the baseline has no units to weight by"
    missing = [p for p in weighted if pilot.get(p, {}).get(kpi) is None]
    if missing:
        return None, f"no pilot figure for {', '.join(sorted(missing))}, which the baseline made"
    figures = {p: float(pilot[p][kpi]) for p in weighted}  # type: ignore[arg-type]  # checked above: not None
    if kpi == "throughput_rate":
        # Harmonic: hours the baseline's units would take at each product's pilot rate.
        if any(figures[p] <= 0 for p in weighted):
            return None, "a product the baseline made had no pilot output"
        return 1 / sum(w / figures[p] for p, w in weighted.items()), ""
    return sum(w * figures[p] for p, w in weighted.items()), ""


def standardise(baseline: PhaseTotals, pilot: PhaseTotals) -> MixStandardisation:
    """The pilot's cycle time, throughput and energy per good unit at the baseline's mix, beside the raw ones."""
    names = sorted(set(baseline.products) | set(pilot.products))
    base_units = {p: baseline.products.get(p, ProductTotals()).produced for p in names}
    pilot_units = {p: pilot.products.get(p, ProductTotals()).produced for p in names}
    base_share, pilot_share = _shares(base_units), _shares(pilot_units)
    base_figures, pilot_figures = product_figures(baseline), product_figures(pilot)
    empty: dict[str, float | None] = dict.fromkeys(STANDARDISED_KPIS)
    products = [
        ProductShare(
            p,
            base_units[p],
            pilot_units[p],
            base_share[p],
            pilot_share[p],
            base_figures.get(p, empty),
            pilot_figures.get(p, empty),
        )
        for p in names
    ]
    largest = max((abs(pilot_share[p] - base_share[p]) for p in names), default=0.0)
    notes = [
        f"product {p} was made in the pilot only: it has no weight at the baseline's mix"
        for p in names
        if base_units[p] == 0 and pilot_units[p] > 0
    ]
    kpis = []
    for kpi in STANDARDISED_KPIS:
        base_raw, pilot_raw = _raw(kpi, baseline), _raw(kpi, pilot)
        raw_change = pilot_raw / base_raw - 1 if base_raw and pilot_raw is not None else None
        value, reason = _standardised(kpi, _weights(kpi, baseline), pilot_figures)
        if base_raw is None or pilot_raw is None:
            value, reason = None, "no raw value in one period"
        change = value / base_raw - 1 if value is not None and base_raw else None
        kpis.append(StandardisedKpi(kpi, base_raw, pilot_raw, raw_change, value, change, reason))
    return MixStandardisation(products, largest >= MIX_TOLERANCE, largest, kpis, notes)

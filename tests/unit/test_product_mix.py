"""Product-mix standardisation (pilot_core.product_mix): the pilot's figures at the baseline's product mix."""

from __future__ import annotations

import pytest

from pilot_core.product_mix import MixStandardisation, PhaseTotals, ProductTotals, StandardisedKpi, standardise


def phase(shares: dict[str, float], cycle_s: dict[str, float], kwh_per_run_h: float = 20.0) -> PhaseTotals:
    """1,000 good units split by ``shares``; each product at its own cycle time; the line busy 80% of its PBT;
    energy proportional to run time."""
    products = {}
    run_s = 0.0
    for product, share in shares.items():
        units = 1000 * share
        products[product] = ProductTotals(units, units, units * cycle_s[product], units)
        run_s += units * cycle_s[product]
    return PhaseTotals(products, run_s / 0.8, kwh_per_run_h * run_s / 3600, True)


def by_kpi(result: MixStandardisation) -> dict[str, StandardisedKpi]:
    return {k.kpi: k for k in result.kpis}


def test_the_baseline_against_itself_is_its_own_standard() -> None:
    baseline = phase({"A": 0.7, "B": 0.3}, {"A": 30, "B": 60})
    result = standardise(baseline, baseline)
    assert not result.mix_differs
    for k in result.kpis:
        assert k.standardised_pilot == pytest.approx(k.baseline, rel=1e-12)
        assert k.standardised_change == pytest.approx(0.0, abs=1e-12)


def test_a_mix_shift_with_no_product_changing_shows_no_standardised_change() -> None:
    baseline = phase({"A": 0.8, "B": 0.2}, {"A": 30, "B": 60})
    pilot = phase({"A": 0.3, "B": 0.7}, {"A": 30, "B": 60})
    result = standardise(baseline, pilot)
    kpis = by_kpi(result)
    assert result.mix_differs and result.largest_share_change == pytest.approx(0.5)
    cycle = kpis["cycle_time_mean"]
    assert cycle.raw_change == pytest.approx((0.3 * 30 + 0.7 * 60) / (0.8 * 30 + 0.2 * 60) - 1)  # +41.7%
    for name in ("cycle_time_mean", "throughput_rate", "energy_per_good_unit"):
        assert kpis[name].standardised_change == pytest.approx(0.0, abs=1e-12), name
        assert abs(kpis[name].raw_change or 0) > 0.2, name


def test_each_products_own_change_is_recovered_when_the_mix_moves() -> None:
    baseline = phase({"A": 0.8, "B": 0.2}, {"A": 30, "B": 60})
    pilot = phase({"A": 0.3, "B": 0.7}, {"A": 27, "B": 54})  # every product 10% faster
    kpis = by_kpi(standardise(baseline, pilot))
    assert kpis["cycle_time_mean"].standardised_change == pytest.approx(-0.10)
    assert kpis["throughput_rate"].standardised_change == pytest.approx(1 / 0.9 - 1)
    assert kpis["energy_per_good_unit"].standardised_change == pytest.approx(-0.10)
    assert (kpis["cycle_time_mean"].raw_change or 0) > 0.2  # the raw figure says the line got slower


def test_a_product_the_pilot_did_not_make_leaves_no_standardised_figure() -> None:
    baseline = phase({"A": 0.5, "B": 0.5}, {"A": 30, "B": 60})
    pilot = phase({"A": 0.9, "C": 0.1}, {"A": 30, "C": 40})
    result = standardise(baseline, pilot)
    cycle = by_kpi(result)["cycle_time_mean"]
    assert cycle.standardised_pilot is None and "no pilot figure for B" in cycle.reason
    assert result.notes == ["product C was made in the pilot only: it has no weight at the baseline's mix"]


def test_without_an_energy_meter_energy_has_no_figure() -> None:
    baseline = phase({"A": 0.5, "B": 0.5}, {"A": 30, "B": 60})
    unmetered = PhaseTotals(baseline.products, baseline.output_pbt_s, 0.0, False)
    energy = by_kpi(standardise(unmetered, unmetered))["energy_per_good_unit"]
    assert energy.baseline is None and energy.standardised_pilot is None and energy.reason

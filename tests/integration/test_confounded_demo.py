"""A confounded scenario through the real pipeline (issue 21): simulator → MQTT → collector → InfluxDB → KPI engine
→ API, and its evidence bundle through `pilot verify`. The plant improves 8% between the periods and the pilot
adds 6% on cell 1 only: the API's control-line effect must match truth.json, where the plain comparison cannot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from adapters.catalog import load_profiles
from api.examples import PANGYO_PLAN
from pilot.cli import app
from simulators.line_model import LineModel
from simulators.scenario import BUNDLED_SCENARIOS, Effects, load_scenario
from tests.integration.test_api_demonstrations import client, plan, problem
from tests.support import first_answer, served_demo

__all__ = ["client"]  # the API fixture, as test_api_demonstrations builds it

runner = CliRunner()


def short_plant_wide(tmp_path: Path, days: int = 3, name: str = "plant_wide_improvement") -> Path:
    """A bundled scenario with a plant-wide change, a few weekdays per period so that the test stays quick."""
    text = (BUNDLED_SCENARIOS / f"{name}.yaml").read_text(encoding="utf-8")
    text = text.replace("start: 2026-10-05, days: 14", f"start: 2026-10-05, days: {days}")
    text = text.replace("start: 2026-10-26, days: 14", f"start: 2026-10-26, days: {days}")
    text = text.replace("    days: 14\n", f"    days: {days}\n")
    assert text.count(f"days: {days}") == 2
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def served_comparison(scenario: Path, state: Path) -> dict[str, Any]:
    """Run `pilot demo` serving its API, and GET the comparison document as a user would."""
    with served_demo(scenario, state) as demo:
        token = demo.key_file.read_text(encoding="ascii").strip()
        url = demo.curl.rsplit(" ", 1)[1]
        assert url.endswith("/comparison")
        response = first_answer(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document


def test_the_control_line_recovers_the_pilots_effect_through_the_pipeline(tmp_path: Path) -> None:
    state = tmp_path / "state"
    document = served_comparison(short_plant_wide(tmp_path), state)
    truth = json.loads((state / "truth.json").read_text(encoding="utf-8"))
    injected = truth["injected_effects"]["cycle_time"]  # −6%: the pilot's own, on cell 1 only
    before, after = truth["periods"]
    plant = after["plant_effects"]["cycle_time"]  # −8%: both cells
    assert (injected, plant) == (-0.06, -0.08)

    (effect,) = document["control_line"]
    assert effect["kpi"] == "cycle_time_mean" and effect["control_devices"] == ["cobot-02", "vision-02", "meter-02"]
    # The realised truth of this run, from the simulator's own cycles: treated change net of the control's.
    treated = after["line"]["output_device"]
    realised = (
        after["stations"][treated]["cycle_time_mean_s"]
        / before["stations"][treated]["cycle_time_mean_s"]
        / (after["control"]["cycle_time_mean_s"] / before["control"]["cycle_time_mean_s"])
        - 1
    )
    assert abs(effect["relative_effect"] - realised) < 0.002, (effect, realised)
    low, high = effect["relative_interval"]
    assert low <= injected <= high, effect  # the interval holds the injected effect
    assert effect["pre_trend"]["relative_interval"] is not None and effect["pre_trend"]["parallel"] is not None

    (cycle,) = [k for k in document["kpis"] if k["kpi"] == "cycle_time_mean"]
    # The plain comparison of cell 1 carries the plant's change too: about (1 − 6%)(1 − 8%) − 1 = −13.5%.
    assert cycle["relative_change"] < injected - 0.04
    assert cycle["target"]["method"] == "control_line"
    # The −10% target: the plain figure would claim it; the control line never says met for a −6% effect.
    assert cycle["target"]["verdict"] != "met"
    # Designed before data by its method, from the paired baseline hours (treated − control).
    (designed,) = document["design"]["targets"]
    assert designed["method"] == "control_line" and designed["note"] == "" and designed["mde"] < 0, designed

    # The signed bundle carries the control line, and `pilot verify` recomputes it bit for bit from the rows.
    (bundle,) = state.glob("*-evidence.zip")
    verified = runner.invoke(app, ["verify", str(bundle), "--public-key", str(state / "signing-key.pub")])
    assert verified.exit_code == 0, verified.output


def test_the_adjusted_baseline_recovers_the_pilots_energy_effect_through_the_pipeline(tmp_path: Path) -> None:
    """A night shift is added in the pilot period and the pilot cuts running energy per cycle by 10%: the API's
    adjusted baseline, accepted by Guideline 14, holds the true change of energy at the pilot's conditions."""
    state = tmp_path / "state"
    path = short_plant_wide(tmp_path, name="energy_volume_change")
    document = served_comparison(path, state)
    truth = json.loads((state / "truth.json").read_text(encoding="utf-8"))
    assert truth["injected_effects"]["energy_per_unit"] == -0.10
    assert len(truth["periods"][0]["shifts"]) == 1 and len(truth["periods"][1].get("shifts", [1, 2])) == 2
    # The counterfactual: the same pilot period without the pilot (same seeds: the same states and cycles, only
    # the running power differs), so the truth is the pilot's energy against it.
    catalog = load_profiles()
    scenario = load_scenario(path, catalog)
    counterfactual = LineModel(scenario.model_copy(update={"pilot_effects": Effects()}), catalog)
    without = counterfactual.simulate_period("pilot").line_energy_kwh()
    true_change = truth["periods"][1]["line"]["energy_kwh"] / without - 1

    adjusted = document["adjusted_baseline"]
    assert adjusted["refused"] is None and adjusted["model"]["passes"], adjusted
    assert adjusted["model"]["cv_rmse"] <= 0.30 and abs(adjusted["model"]["nmbe"]) <= 0.10
    assert adjusted["model"]["variables"] == ["production_volume", "shift_hours"]
    low, high = adjusted["relative_interval"]
    assert low <= true_change <= high, (adjusted, true_change)
    assert adjusted["savings"] > 0
    (energy,) = [k for k in document["kpis"] if k["kpi"] == "energy_per_good_unit"]
    assert energy["target"]["method"] == "adjusted_baseline"
    # Designed before data by its method, from the model fitted on the baseline (its residuals' spread).
    (designed,) = [t for t in document["design"]["targets"] if t["kpi"] == "energy_per_good_unit"]
    assert designed["method"] == "adjusted_baseline" and designed["note"] == "" and designed["mde"] < 0, designed
    (bundle,) = state.glob("*-evidence.zip")  # the model and its diagnostics, recomputed bit for bit offline
    verified = runner.invoke(app, ["verify", str(bundle), "--public-key", str(state / "signing-key.pub")])
    assert verified.exit_code == 0, verified.output


def test_the_adjusted_baseline_on_weather_and_volume_recovers_the_energy_effect_through_the_pipeline(
    tmp_path: Path,
) -> None:
    """The weather and the orders move between the periods, and the pilot cuts running energy per cycle by 10%:
    the environment sensor's hourly temperature reaches the regression through MQTT, the collector, InfluxDB and
    the stored hours, and the API's adjusted baseline holds the true change of energy at the pilot's conditions."""
    state = tmp_path / "state"
    path = short_plant_wide(tmp_path, name="energy_weather_demand")
    document = served_comparison(path, state)
    truth = json.loads((state / "truth.json").read_text(encoding="utf-8"))
    assert truth["injected_effects"]["energy_per_unit"] == -0.10
    before, after = truth["periods"]
    assert (before["ambient_c"], before["ambient_ramp_c"], after["ambient_c"]) == (23, 12, 30)
    assert before["demand"]["start"] == before["demand"]["end"] == 0.75
    assert after["demand"] == {"start": 0.8, "end": 1.0, "ramp_pct": 25}
    catalog = load_profiles()
    scenario = load_scenario(path, catalog)
    counterfactual = LineModel(scenario.model_copy(update={"pilot_effects": Effects()}), catalog)
    without = counterfactual.simulate_period("pilot").line_energy_kwh()
    true_change = after["line"]["energy_kwh"] / without - 1
    # The plain figure carries the orders too: more of them spread the base load and the cooling over more units,
    # so energy per good unit falls by more than the pilot saves.
    raw = after["line"]["energy_per_good_unit_kwh"] / before["line"]["energy_per_good_unit_kwh"] - 1
    assert raw < true_change - 0.03, (raw, true_change)

    adjusted = document["adjusted_baseline"]
    assert adjusted["refused"] is None and adjusted["model"]["passes"], adjusted
    assert adjusted["model"]["variables"] == ["production_volume", "ambient_temperature"]
    assert adjusted["model"]["coefficients"]["ambient_temperature"] > 0  # cooling: warmer costs energy
    conditions = {c["variable"]: c for c in adjusted["conditions"]}
    temperature = conditions["ambient_temperature"]
    assert temperature["baseline_min"] <= temperature["pilot_mean"] <= temperature["baseline_max"]
    low, high = adjusted["relative_interval"]
    assert low <= true_change <= high, (adjusted, true_change)
    (energy,) = [k for k in document["kpis"] if k["kpi"] == "energy_per_good_unit"]
    assert energy["target"]["method"] == "adjusted_baseline"
    (bundle,) = state.glob("*-evidence.zip")  # the sensor's temperatures travel in the bundle's rows
    verified = runner.invoke(app, ["verify", str(bundle), "--public-key", str(state / "signing-key.pub")])
    assert verified.exit_code == 0, verified.output


def test_a_bad_adjustment_in_a_plan_is_a_clear_422(client: TestClient) -> None:
    """A control device also treated, a method the plan does not declare, a variable listed twice, ambient
    temperature without an environment sensor in scope: refused at plan time, with the reason, before any number
    is computed."""
    devices = [*PANGYO_PLAN["devices"], "cobot-02"]
    control = {"devices": ["cobot-02"], "output_devices": ["cobot-02"], "independence": "cell 2, own crew and feed"}
    treated = {
        **control,
        "devices": [PANGYO_PLAN["output_devices"][0]],
        "output_devices": [PANGYO_PLAN["output_devices"][0]],
    }
    weather = {"variables": ["ambient_temperature"], "reason": "cooling follows the weather"}
    cases = [
        (plan(control_line=treated), "also treated"),
        (plan(targets=[{**PANGYO_PLAN["targets"][0], "method": "control_line"}]), "declares no control_line"),
        (plan(adjusted_baseline={"variables": ["shift_hours", "shift_hours"], "reason": "shifts"}), "listed twice"),
        (plan(adjusted_baseline=weather), "needs adjusted_baseline.ambient_sensors"),
        (plan(adjusted_baseline={**weather, "ambient_sensors": ["env-9"]}), "not in scope: env-9"),
        (plan(devices=devices, control_line={**control, "output_devices": ["vision-01"]}), "must be control devices"),
    ]  # fmt: skip
    for body, reason in cases:
        refused = problem(client.post("/v1/demonstrations", json=body), 422)
        assert reason in str(refused), refused
    accepted = client.post("/v1/demonstrations", json=plan(devices=devices, control_line=control))
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["plan"]["control_line"]["devices"] == ["cobot-02"]

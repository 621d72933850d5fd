"""The oracle: simulated demonstrations with known effects, through MQTT → collector → InfluxDB → API.

Two checks of the KPI engine against the simulator's ground truth:

* **What happened.** Each phase's KPIs equal what the simulator actually did
  (its truth file counts every part, fault and kWh): the pipeline loses and
  invents nothing.
* **What was injected.** For the KPIs whose population change the scenario
  fixes exactly, the interval covers the injected change; no verdict
  contradicts what the injected effects imply; and a pilot that changes
  nothing never has a target judged "met".

"Every interval covers" is a joint claim: four 90% intervals all cover only
about two times in three. So the plan is amended through the API to the 98%
level for that check (Bonferroni: the four then cover jointly at least 92% of
the time), while the verdicts are judged under the plan as frozen, at 90%.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxSettings
from adapters.mqtt import MqttSettings
from api.main import create_app
from collector.settings import CollectorSettings
from pilot.demo import run_demo
from simulators.scenario import Scenario, load_scenario
from tests.api_support import admin_client

# Relative changes the scenarios fix exactly, in expectation, for every station alike.
INJECTED = {
    "pangyo_cobot_cell": {"cycle_time_mean": -0.12, "scrap_ratio": -0.30, "rework_ratio": 0.0, "mttr": 0.0},
    "no_effect": {"cycle_time_mean": 0.0, "scrap_ratio": 0.0, "rework_ratio": 0.0, "mttr": 0.0},
}


def _run(
    name: str,
    tmp_path: Path,
    mosquitto: local_services.LocalService,
    influxdb: local_services.InfluxService,
    unique_id: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Backfill the scenario through the pipeline.

    Returns the API's comparison under the frozen plan, under the amended 98% plan, and the simulator's truth.
    """
    catalog = load_profiles()
    scenario: Scenario = load_scenario(Path(name), catalog)
    database = f"oracle_{name}_{unique_id}".replace("-", "_")
    result = run_demo(scenario, catalog, mosquitto, influxdb, tmp_path, influx_database=database, say=lambda _: None)
    assert result.complete, [r for r in result.rows if not r.complete]
    assert result.evaluation is not None
    settings = CollectorSettings(
        mqtt=MqttSettings(host="127.0.0.1", port=mosquitto.port),
        influx=InfluxSettings(url=influxdb.url, database=database),
        devices_file=tmp_path / "devices.yaml",
        database_url=result.database_url,
        metrics_port=0,
    )
    slug = result.evaluation.slug
    with admin_client(create_app(settings)) as api:
        response = api.get(f"/v1/demonstrations/{slug}/comparison")
        assert response.status_code == 200, response.text
        as_frozen = response.json()
        plan = api.get(f"/v1/demonstrations/{slug}").json()["plan"]
        amended = api.post(
            f"/v1/demonstrations/{slug}/amendments",
            json={"plan": {**plan, "confidence_level": 0.98}, "reason": "joint coverage check over four KPIs"},
        )
        assert amended.status_code == 201, amended.text
        joint = api.get(f"/v1/demonstrations/{slug}/comparison", params={"version": 2}).json()
        assert joint["source"]["plan_version"] == 2 and joint["level"] == 0.98
    assert result.truth_file is not None
    return as_frozen, joint, json.loads(result.truth_file.read_text(encoding="utf-8"))


def _realised(period: dict[str, Any]) -> dict[str, float]:
    """KPIs of one simulated period, straight from the simulator's own record of it; the line's cycle time is its
    output station's."""
    stations = period["stations"].values()
    produced = sum(s["produced"] for s in stations)
    timed = [period["stations"][period["line"]["output_device"]]]
    return {
        "scrap_ratio": sum(s["scrap"] for s in stations) / produced,
        "rework_ratio": sum(s["rework"] for s in stations) / produced,
        "quality_ratio": sum(s["good"] for s in stations) / produced,
        "cycle_time_mean": sum(s["cycle_time_mean_s"] * s["records"] for s in timed) / sum(s["records"] for s in timed),
        "mttr": sum(s["fault_time_ms"] for s in stations) / 60_000 / sum(s["faults"] for s in stations),
        "energy_per_good_unit": period["line"]["energy_per_good_unit_kwh"],
    }


@pytest.mark.parametrize("name", ["pangyo_cobot_cell", "no_effect"])
def test_recovered_kpis_match_the_simulated_truth(
    name: str,
    tmp_path: Path,
    mosquitto: local_services.LocalService,
    influxdb: local_services.InfluxService,
    unique_id: str,
) -> None:
    comparison, joint, truth = _run(name, tmp_path, mosquitto, influxdb, unique_id)
    kpis = {k["kpi"]: k for k in comparison["kpis"]}
    joint_kpis = {k["kpi"]: k for k in joint["kpis"]}
    periods = {p["behaviour"]: _realised(p) for p in truth["periods"]}

    # What happened: each phase's value is the simulator's own, to within the hour-boundary effects of a meter.
    for phase in ("baseline", "pilot"):
        for kpi, expected in periods[phase].items():
            tolerance = 0.01 if kpi == "energy_per_good_unit" else 1e-6
            assert kpis[kpi][phase]["value"] == pytest.approx(expected, rel=tolerance), (phase, kpi)

    # What was injected: every interval covers the change the scenario fixes.
    for kpi, change in INJECTED[name].items():
        low, high = joint_kpis[kpi]["relative_interval"]
        assert low <= change <= high, f"{kpi}: the 98% interval {low:+.3f}..{high:+.3f} misses {change:+.3f}"
        assert joint_kpis[kpi]["relative_change"] == kpis[kpi]["relative_change"]  # the level moves only the interval

    verdicts = {k["kpi"]: k["target"]["verdict"] for k in comparison["kpis"] if k["target"]}
    assert set(verdicts) == {"cycle_time_mean", "scrap_ratio", "energy_per_good_unit", "oee"}
    if name == "no_effect":
        assert "met" not in verdicts.values(), verdicts
    else:
        # −30% against −15%: the truth meets it by a wide margin.
        assert verdicts["scrap_ratio"] != "not met"
        # −12% against a −8% target, for every station alike. The line's cycle time is read at its output station
        # (issue 17, item 12), and the line works one product per shift, the two products' ideal times 31% apart:
        # over 20 shifts a phase's product mix moves the mean by several percent, so the honest interval may
        # leave the margin unresolved. A truth that meets the target must never read "not met".
        assert verdicts["cycle_time_mean"] != "not met", kpis["cycle_time_mean"]
        stations = {s["device"]: s for s in comparison["stations"]}
        assert (
            stations[truth["periods"][0]["line"]["output_device"]]["relative_change"]
            == (kpis["cycle_time_mean"]["relative_change"])
        )
        assert comparison["source"]["frozen"] and comparison["source"]["plan_hash"].startswith("sha256:")

"""Design before data and product-mix standardisation through the real pipeline: records published to MQTT,
stored by the collector in InfluxDB, read back by the API (issue 21).

A cobot makes two products, A (30 s) and B (60 s). In the baseline 80% of its units are A; in the pilot 30%,
and each product is 10% faster. The line's raw mean cycle time rises by a quarter; at the baseline's mix it
falls by the products' own 10%. The design (each target's minimum detectable change) is computed from the
baseline alone: it is the same before any pilot hour is stored and after the whole pilot is.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from api.main import create_app
from collector.settings import CollectorSettings
from pilot_core.contract import topic_for
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import PRODUCTION_MEASUREMENT
from tests.api_support import admin_client
from tests.console_support import session_cookie
from tests.support import collector_settings, count_points, publish_all, running_collector, wait_until

SEOUL = dt.timezone(dt.timedelta(hours=9))
START = dt.datetime(2026, 11, 2, tzinfo=SEOUL)  # baseline: two days; pilot: the next two
DAYS = 2
DEVICE = "cobot-1"
LINE = "라인 2"
SHIFT_HOURS = range(8, 20)
IDEAL_S = {"A": 30.0, "B": 60.0}
PER_HOUR = {"baseline": {"A": 32, "B": 8}, "pilot": {"A": 12, "B": 28}}
SPEEDUP = {"baseline": 1.0, "pilot": 0.9}


def hour_factor(index: int) -> float:
    """Each hour's cycle times vary together, the same sequence in both phases, so the design has a spread."""
    return 1 + 0.04 * math.sin(1.3 * index)


def phase_records(phase: str, first_day: dt.datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    states: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    index = 0
    for day in range(DAYS):
        date = first_day + dt.timedelta(days=day)
        states.append({"ts": int((date + dt.timedelta(hours=8)).timestamp() * 1000), "state": "running"})
        states.append({"ts": int((date + dt.timedelta(hours=20)).timestamp() * 1000), "state": "idle"})
        for hour in SHIFT_HOURS:
            start = date + dt.timedelta(hours=hour)
            units = [p for p, n in PER_HOUR[phase].items() for _ in range(n)]
            for i, product in enumerate(units):
                cycle = IDEAL_S[product] * SPEEDUP[phase] * hour_factor(index)
                at = start + dt.timedelta(seconds=60 + i * 80)
                records.append(
                    {"ts": int(at.timestamp() * 1000), "product": product, "produced": 1, "good": 1,
                     "cycle_time_s": cycle}
                )  # fmt: skip
            index += 1
    return states, records


def plan(site: str, **design: Any) -> dict[str, Any]:
    pilot_start = START + dt.timedelta(days=DAYS)
    return {
        "name": "Two products, the mix moves",
        "site": site,
        "line": LINE,
        "devices": [DEVICE],
        "output_devices": [DEVICE],
        "calendar": {
            "timezone": "Asia/Seoul",
            "workdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "shifts": [{"start": "08:00", "end": "20:00"}],
        },
        "windows": [
            {"name": "before", "phase": "baseline", "start": START.isoformat(), "end": pilot_start.isoformat()},
            {
                "name": "after",
                "phase": "pilot",
                "start": pilot_start.isoformat(),
                "end": (pilot_start + dt.timedelta(days=DAYS)).isoformat(),
            },
        ],
        "products": [{"id": p, "ideal_cycle_time_s": s} for p, s in IDEAL_S.items()],
        "targets": [
            {"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5},
            {"kpi": "throughput_rate", "direction": "increase", "change_pct": 5},
        ],
        "design": {"power": 0.8, **design},
        "product_mix": True,
    }


@pytest.fixture
def pipeline(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> Iterator[tuple[CollectorSettings, DeviceRegistry, str]]:
    site = f"mix-{unique_id}"
    entry = DeviceEntry(site=site, line=LINE, device=DEVICE, profile="cobot_arm")
    devices_file = tmp_path / "devices.yaml"
    devices_file.write_text(yaml.safe_dump({"devices": [entry.model_dump()]}, allow_unicode=True), encoding="utf-8")
    settings = collector_settings(
        mqtt_settings,
        influx_settings,
        f"collector-{unique_id}",
        devices_file=devices_file,
        database_url=f"sqlite:///{tmp_path / 'pilot.db'}",
    )
    yield settings, DeviceRegistry([entry], load_profiles(settings.profiles_dir)), site


def publish(settings: CollectorSettings, registry: DeviceRegistry, site: str, phase: str, seq_from: int) -> int:
    """One phase's states and production, device → MQTT → collector → InfluxDB; returns the next seq."""
    first_day = START + dt.timedelta(days=0 if phase == "baseline" else DAYS)
    states, records = phase_records(phase, first_day)
    messages = []
    seq = seq_from
    for channel, items in (("state", states), ("production", records)):
        for item in items:
            messages.append((topic_for(site, LINE, DEVICE, channel), json.dumps({"seq": seq, **item}).encode()))
            seq += 1
    with running_collector(settings, registry), InfluxClient(settings.influx) as influx:
        publish_all(settings.mqtt, messages, f"device-{site}-{phase}")
        expected = sum(
            len(phase_records(p, START + dt.timedelta(days=0 if p == "baseline" else DAYS))[1])
            for p in ("baseline", "pilot")[: 1 if phase == "baseline" else 2]
        )
        wait_until(
            lambda: count_points(influx, PRODUCTION_MEASUREMENT, where=f"\"site\" = '{site}'") == expected,
            what=f"the {phase}'s production records in InfluxDB",
        )
    return seq


def test_the_design_is_fixed_by_the_baseline_and_the_mix_is_standardised(
    pipeline: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    settings, registry, site = pipeline
    seq = publish(settings, registry, site, "baseline", 0)
    with admin_client(create_app(settings)) as api:
        created = api.post("/v1/demonstrations", json=plan(site, expected_change_pct={"cycle_time_mean": 8}))
        assert created.status_code == 201, created.text
        ref = created.json()["id"]
        assert api.post(f"/v1/demonstrations/{ref}/freeze").status_code == 200
        before = api.get(f"/v1/demonstrations/{ref}/comparison")
        assert before.status_code == 200, before.text
        design = before.json()["design"]
        cached = api.get(f"/v1/demonstrations/{ref}/comparison").json()
        assert cached["source"]["cached"] and cached["design"] == design  # the cache keeps it, bit for bit

        publish(settings, registry, site, "pilot", seq)
        after = api.get(f"/v1/demonstrations/{ref}/comparison", params={"refresh": True})
        assert after.status_code == 200, after.text
        document = after.json()
        cached = api.get(f"/v1/demonstrations/{ref}/comparison").json()
        assert cached["source"]["cached"] and cached["product_mix"] == document["product_mix"]

    # Pre-registered: the pilot's data do not move the design, to the last bit.
    assert document["design"] == design
    assert design["power"] == 0.8 and design["planned_pilot_hours"] == DAYS * 24
    cycle, throughput = design["targets"]
    assert (cycle["kpi"], throughput["kpi"]) == ("cycle_time_mean", "throughput_rate")
    # Every hour of the windows is a unit (the nights too: the cobot is idle then, and energy would count).
    assert cycle["baseline_n"] == DAYS * 24 and cycle["planned_pilot_units"] == DAYS * 24
    assert cycle["mde"] < 0 < throughput["mde"] and cycle["met_needs"] < -0.05 + cycle["mde"] / 2
    assert cycle["pilot_hours_for_target"] > 0 and cycle["pilot_hours_for_expected"] > 0
    assert cycle["baseline_effective_n"] <= cycle["baseline_n"] and cycle["note"] == ""

    mix = document["product_mix"]
    assert mix["mix_differs"] and mix["largest_share_change"] == pytest.approx(0.5)
    shares = {p["product"]: (p["baseline_share"], p["pilot_share"]) for p in mix["products"]}
    assert shares == {"A": pytest.approx((0.8, 0.3)), "B": pytest.approx((0.2, 0.7))}
    kpis = {k["kpi"]: k for k in mix["kpis"]}
    raw = next(k for k in document["kpis"] if k["kpi"] == "cycle_time_mean")
    assert kpis["cycle_time_mean"]["raw_change"] == pytest.approx(raw["relative_change"], rel=1e-9)
    assert kpis["cycle_time_mean"]["raw_change"] == pytest.approx((12 * 27 + 28 * 54) / (32 * 30 + 8 * 60) - 1)
    assert kpis["cycle_time_mean"]["standardised_change"] == pytest.approx(-0.10, abs=1e-9)  # each product's own
    # Throughput per planned busy hour: each product's rate is its share of the run time, 10% faster.
    busy = (12 * 27 + 28 * 54) / (32 * 30 + 8 * 60)
    assert kpis["throughput_rate"]["standardised_change"] == pytest.approx(busy / 0.9 - 1, rel=1e-9)
    assert kpis["energy_per_good_unit"]["standardised_pilot"] is None and kpis["energy_per_good_unit"]["reason"]


def test_a_stated_mde_the_baseline_does_not_give_is_a_warning_and_a_design_for_no_target_a_422(
    pipeline: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    settings, registry, site = pipeline
    publish(settings, registry, site, "baseline", 0)
    with admin_client(create_app(settings)) as api:
        refused = api.post("/v1/demonstrations", json=plan(site, expected_change_pct={"oee": 5}))
        assert refused.status_code == 422
        assert "design.expected_change_pct names KPIs without a target: oee" in refused.text
        created = api.post("/v1/demonstrations", json=plan(site, stated_mde_pct={"cycle_time_mean": 0.5}))
        assert created.status_code == 201, created.text
        document = api.get(f"/v1/demonstrations/{created.json()['id']}/comparison").json()
        found = abs(document["design"]["targets"][0]["mde"]) * 100
        assert (
            f"the plan states a minimum detectable effect of 0.5% for cycle_time_mean; the baseline's data give"
            f" {found:.2f}%"
        ) in document["warnings"]
        report = api.get(f"/v1/demonstrations/{created.json()['id']}/report", params={"lang": "en"})
        assert report.status_code == 200
        assert 'id="design-table"' in report.text and "Design before data" in report.text
        korean = api.get(f"/v1/demonstrations/{created.json()['id']}/report", params={"lang": "ko"})
        assert "사전 설계" in korean.text and "최소 검출 변화" in korean.text


CONTROL = "cobot-2"


def two_cell_plan(site: str, method: str) -> dict[str, Any]:
    """The cobot treated, a second cobot the pilot does not touch as the control line; one cycle-time target."""
    document = plan(site)
    document.update(
        devices=[DEVICE, CONTROL],
        targets=[{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5, "method": method}],
        product_mix=False,
    )
    if method == "control_line":
        document["control_line"] = {
            "devices": [CONTROL],
            "output_devices": [CONTROL],
            "independence": "its own operators and parts feed; no shared station or buffer",
        }
    return document


def plant_factor(index: int) -> float:
    """What moves both cells each hour (the plant's material, its crew): the difference-in-differences cancels it."""
    return 1 + 0.05 * math.sin(1.3 * index)


def cell_records(device: str, first_day: dt.datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Product A on each cell, every hour's cycle times the plant's factor times a small factor of the cell's own."""
    own = {DEVICE: lambda i: 1 + 0.005 * math.cos(2.1 * i), CONTROL: lambda i: 1 + 0.005 * math.sin(0.7 * i)}[device]
    states: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    index = 0
    for day in range(DAYS):
        date = first_day + dt.timedelta(days=day)
        states.append({"ts": int((date + dt.timedelta(hours=8)).timestamp() * 1000), "state": "running"})
        states.append({"ts": int((date + dt.timedelta(hours=20)).timestamp() * 1000), "state": "idle"})
        for hour in SHIFT_HOURS:
            start = date + dt.timedelta(hours=hour)
            for i in range(40):
                at = start + dt.timedelta(seconds=60 + i * 80)
                cycle = IDEAL_S["A"] * plant_factor(index) * own(index)
                records.append({"ts": int(at.timestamp() * 1000), "product": "A", "produced": 1, "good": 1,
                                "cycle_time_s": cycle})  # fmt: skip
            index += 1
    return states, records


@pytest.fixture
def two_cells(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> Iterator[tuple[CollectorSettings, DeviceRegistry, str]]:
    site = f"cells-{unique_id}"
    entries = [DeviceEntry(site=site, line=LINE, device=d, profile="cobot_arm") for d in (DEVICE, CONTROL)]
    devices_file = tmp_path / "devices.yaml"
    devices_file.write_text(
        yaml.safe_dump({"devices": [e.model_dump() for e in entries]}, allow_unicode=True), encoding="utf-8"
    )
    settings = collector_settings(
        mqtt_settings,
        influx_settings,
        f"collector-{unique_id}",
        devices_file=devices_file,
        database_url=f"sqlite:///{tmp_path / 'pilot.db'}",
    )
    yield settings, DeviceRegistry(entries, load_profiles(settings.profiles_dir)), site


def test_a_control_line_target_is_designed_from_the_paired_baseline_and_every_view_names_its_method(
    two_cells: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    """Two cells whose cycle times share the plant's hourly swing, the baseline only, through the whole pipeline. A
    cycle-time target judged against the control line is designed from the paired treated − control log gap, in
    which the swing cancels: it detects a far smaller change than the same target judged before/after. The API,
    the report (EN and KO) and the console name the method each design was computed under."""
    settings, registry, site = two_cells
    messages = []
    for device in (DEVICE, CONTROL):
        states, records = cell_records(device, START)
        seq = 0
        for channel, items in (("state", states), ("production", records)):
            for item in items:
                messages.append((topic_for(site, LINE, device, channel), json.dumps({"seq": seq, **item}).encode()))
                seq += 1
    expected = 2 * len(cell_records(DEVICE, START)[1])
    with running_collector(settings, registry), InfluxClient(settings.influx) as influx:
        publish_all(settings.mqtt, messages, f"device-{site}")
        wait_until(
            lambda: count_points(influx, PRODUCTION_MEASUREMENT, where=f"\"site\" = '{site}'") == expected,
            what="both cells' baseline production in InfluxDB",
        )
    app = create_app(settings)
    with admin_client(app) as api:
        designs = {}
        for method in ("control_line", "before_after"):
            created = api.post("/v1/demonstrations", json=two_cell_plan(site, method))
            assert created.status_code == 201, created.text
            ref = created.json()["id"]
            document = api.get(f"/v1/demonstrations/{ref}/comparison")
            assert document.status_code == 200, document.text
            designs[method] = (ref, document.json()["design"])
        ref, design = designs["control_line"]
        (paired,) = design["targets"]
        (alone,) = designs["before_after"][1]["targets"]
        assert (paired["method"], alone["method"]) == ("control_line", "before_after")
        assert paired["note"] == "" and paired["degrees_of_freedom"] > 0 and paired["baseline_n"] == DAYS * 24
        assert paired["baseline_relative_se"] < alone["baseline_relative_se"] / 4  # the plant's swing cancels
        assert 0 > paired["mde"] > alone["mde"] / 4
        assert "by each target's method" in design["method"]

        english = api.get(f"/v1/demonstrations/{ref}/report", params={"lang": "en"})
        korean = api.get(f"/v1/demonstrations/{ref}/report", params={"lang": "ko"})
        assert english.status_code == korean.status_code == 200
        for report, name in ((english.text, "control line"), (korean.text, "대조 라인")):
            table = report[report.index('id="design-table"') :]
            assert 'data-method="control_line"' in table
            assert name in re.sub(r"<[^>]+>", "", table[: table.index("</table>")])  # each word may be a span

        token = api.headers["Authorization"].split()[1]
        api.cookies.update(session_cookie(app, token))
        page = api.get(f"/demonstrations/{ref}")
        assert page.status_code == 200, page.text
        console = page.text[page.text.index('id="design-table"') :]
        assert 'data-method="control_line"' in console[: console.index("</table>")]

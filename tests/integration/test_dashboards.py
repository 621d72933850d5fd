"""Every generated dashboard, run against a real simulated line: Mosquitto, the collector, InfluxDB, the KPI engine.

The dashboards are the files `pilot grafana export` writes; each template
variable's query and each panel's query is given Grafana's substitutions
($timeFilter, $__interval, the values a user would pick) and run on the real
InfluxDB, and must return data. The before/after dashboard reads what
`pilot grafana publish` wrote, and shows the KPI engine's numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings, WriteOutcome
from dashboards.demonstration import DOWNTIME_HOURS, KPI_EXPRESSIONS, DemonstrationView, demonstration_dashboard
from kpi_engine.service import Evaluation
from pilot.cli import app as cli
from pilot.demo import run_demo
from pilot_core.demonstration import Phase
from pilot_core.kpi import Components
from pilot_core.kpi_daily import MEASUREMENT, DailyComponents, encode_days
from simulators.scenario import Scenario, load_scenario
from tests.grafana_macros import TimeRange, panel_query, variable_query
from tests.integration.test_cli_demo import short_scenario

runner = CliRunner()
DAY_MS = 24 * 3600 * 1000


@dataclass
class Line:
    client: InfluxClient
    config: Path
    scenario: Scenario
    evaluation: Evaluation
    folder: Path


@pytest.fixture(scope="module")
def line(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: local_services.LocalService,
    influxdb: local_services.InfluxService,
) -> Iterator[Line]:
    """Two days of baseline and two of pilot of the bundled cobot cell, through the whole pipeline."""
    folder = tmp_path_factory.mktemp("dashboards")
    catalog = load_profiles()
    scenario = load_scenario(short_scenario(folder), catalog)
    database = f"dashboards_{uuid.uuid4().hex[:12]}"
    result = run_demo(scenario, catalog, mosquitto, influxdb, folder, influx_database=database, say=lambda _: None)
    assert result.complete and result.evaluation is not None
    config = folder / "pilot.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "influx": {"url": influxdb.url, "database": database},
                "devices_file": str(folder / "devices.yaml"),
                "database_url": result.database_url,
            }
        ),
        encoding="utf-8",
    )
    settings = InfluxSettings(url=influxdb.url, database=database)
    with InfluxClient(settings) as client:
        yield Line(client, config, scenario, result.evaluation, folder)
        client.query(f'DROP DATABASE "{database}"', method="POST", database=None)


@pytest.fixture(scope="module")
def published(line: Line) -> list[str]:
    """`pilot grafana publish` run twice: the second time writes nothing new."""
    outputs = []
    for _ in range(2):
        result = runner.invoke(cli, ["grafana", "publish", "--config", str(line.config)])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    return outputs


@pytest.fixture(scope="module")
def dashboards(line: Line, published: list[str]) -> dict[str, dict[str, Any]]:
    """The dashboards as `pilot grafana export` writes them, by uid."""
    out = line.folder / "grafana"
    result = runner.invoke(cli, ["grafana", "export", "--out", str(out), "--config", str(line.config)])
    assert result.exit_code == 0, result.output
    loaded = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "dashboards").glob("*.json"))]
    return {d["uid"]: d for d in loaded}


def _rows(client: InfluxClient, query: str) -> list[tuple[dict[str, str], list[Any]]]:
    return [(series.tags, row) for series in client.query(query) for row in series.values]


def _choose(
    client: InfluxClient, board: dict[str, Any], time_range: TimeRange, wanted: dict[str, str]
) -> dict[str, str]:
    """Each template variable in order, as Grafana fills it: run its query, take the wanted value or the first."""
    values: dict[str, str] = {}
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == "pilot-influxdb"
        found = [str(row[1]) for _, row in _rows(client, variable_query(variable["query"], values, time_range))]
        assert found, f"{board['uid']}: variable {variable['name']} has no values: {variable['query']}"
        if variable["sort"] == 4:
            found.sort(key=float, reverse=True)
        name = variable["name"]
        if name in wanted:
            assert wanted[name] in found, f"{board['uid']}: {name} offers {found}, not {wanted[name]}"
        values[name] = wanted.get(name, found[0])
    return values


def _run_panels(
    client: InfluxClient, board: dict[str, Any], values: dict[str, str], time_range: TimeRange
) -> dict[str, list[tuple[dict[str, str], list[Any]]]]:
    """Every panel's queries, by panel title; each must return a row with a value."""
    answers = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            query = panel_query(target["query"], values, time_range, panel.get("interval"))
            rows = _rows(client, query)
            assert any(v is not None for _, row in rows for v in row[1:]), (
                f"{board['uid']}: panel {panel['title']!r} shows nothing: {query}"
            )
            answers[panel["title"]] = rows
    return answers


def _first_day(line: Line) -> TimeRange:
    start = line.evaluation.plan.windows_of(Phase.BASELINE)[0].start_ms
    return TimeRange(start, start + DAY_MS)


def test_the_line_overview_shows_the_line(line: Line, dashboards: dict[str, dict[str, Any]]) -> None:
    board = dashboards["pilot-line-overview"]
    day = _first_day(line)
    values = _choose(line.client, board, day, {"site": line.scenario.site, "line": line.scenario.line})
    answers = _run_panels(line.client, board, values, day)
    devices = {d.id for d in line.scenario.devices}
    assert {tags["device"] for tags, _ in answers["Machine state per device"]} == {
        d.id for d in line.scenario.devices if load_profiles()[d.profile].states
    }
    assert {tags["device"] for tags, _ in answers["Last seen per device"]} == devices
    assert {tags["device"] for tags, _ in answers["Agent status"]} == devices


def test_each_device_dashboard_shows_its_device(line: Line, dashboards: dict[str, dict[str, Any]]) -> None:
    catalog = load_profiles()
    day = _first_day(line)
    shown = set()
    for device in line.scenario.devices:
        profile = catalog[device.profile]
        board = dashboards[f"pilot-device-{profile.id}"]
        wanted = {"site": line.scenario.site, "line": line.scenario.line, "device": device.id}
        values = _choose(line.client, board, day, wanted)
        answers = _run_panels(line.client, board, values, day)
        metric_panels = [p for p in board["panels"] if p["title"].split(" (")[0] in {m.name for m in profile.metrics}]
        assert len(metric_panels) == len(profile.metrics)
        assert all(p["title"] in answers for p in metric_panels)
        shown.add(profile.id)
    assert shown == {p.id for p in catalog}  # the scenario has a device of every bundled profile


def test_publish_writes_settled_days_once(line: Line, published: list[str]) -> None:
    plan = line.evaluation.plan
    days = sum(1 for w in plan.windows for _ in range((w.end_ms - w.start_ms) // DAY_MS))
    slug = line.evaluation.slug
    assert f"{slug} v1: {days} day(s) written to revision 1, 0 unchanged, 0 not settled yet" in published[0]
    assert f"{slug} v1: 0 day(s) written to revision 1, {days} unchanged" in published[1]
    count = _rows(line.client, f'SELECT count("pbt_s") FROM "{MEASUREMENT}" WHERE time >= 0')
    assert count[0][1][1] == days


def test_the_before_after_dashboard_shows_the_engines_numbers(
    line: Line, dashboards: dict[str, dict[str, Any]]
) -> None:
    slug = line.evaluation.slug
    board = next(d for d in dashboards.values() if "demonstration" in d["tags"])
    assert board["uid"] == f"pilot-demo-{slug}" or len(f"pilot-demo-{slug}") > 40
    span = TimeRange(*(_epoch_ms(board["time"][side]) for side in ("from", "to")))
    values = _choose(line.client, board, span, {})
    assert values == {"revision": "1"}
    answers = _run_panels(line.client, board, values, span)
    text = board["panels"][0]["options"]["content"]
    assert line.evaluation.result.plan_hash in text and "version **1**" in text
    for window in line.evaluation.plan.windows:
        assert window.start.isoformat() in text and window.end.isoformat() in text
    phases = line.evaluation.result.phases
    stats = [p for p in board["panels"] if p["type"] == "stat"]
    assert len(stats) == len(KPI_EXPRESSIONS) + 1
    for panel in stats:
        rows = {Phase(tags["phase"]): row[1] for tags, row in answers[panel["title"]]}
        assert set(rows) == set(Phase), panel["title"]
        expression = panel["targets"][0]["query"]
        for phase, shown in rows.items():
            expected: float | None
            if DOWNTIME_HOURS in expression:
                components = phases[phase].components
                expected = (components.pbt_s - components.apt_s) / 3600
            else:
                kpi = next(k for k, e in KPI_EXPRESSIONS.items() if f"{e} AS" in expression)
                expected = phases[phase].kpis[kpi]
            assert expected is not None and math.isclose(shown, expected, rel_tol=1e-9), (panel["title"], phase)
    daily = answers["Daily OEE"]
    assert sum(1 for _ in daily) == len(line.evaluation.plan.windows) * 2  # two days per window, a point each


def _epoch_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_a_day_that_changed_is_published_as_a_new_revision_the_dashboard_then_shows(
    line: Line, dashboards: dict[str, dict[str, Any]]
) -> None:
    """Runs last: it alters what the module's other tests read. A day rewritten in place stands for late data."""
    slug = line.evaluation.slug
    plan = line.evaluation.plan
    first = plan.windows_of(Phase.BASELINE)[0]
    day = dt.datetime.fromtimestamp(first.start_ms / 1000, plan.calendar.zone).date()
    stale = DailyComponents(day, Phase.BASELINE, Components(pbt_s=1.0, good=1.0, produced=1.0))
    written = line.client.write(
        encode_days(
            [stale], slug=slug, plan_version=1, revision=1, site=plan.site, line=plan.line, zone=plan.calendar.zone
        ),
        precision="s",
    )
    assert written.outcome is WriteOutcome.WRITTEN
    result = runner.invoke(cli, ["grafana", "publish", "--config", str(line.config)])
    assert result.exit_code == 0, result.output
    assert f"days changed since they were published ({day} baseline)" in result.output
    assert f"{slug} v1: 4 day(s) written to revision 2, 0 unchanged" in result.output
    board = next(d for d in dashboards.values() if "demonstration" in d["tags"])
    span = TimeRange(*(_epoch_ms(board["time"][side]) for side in ("from", "to")))
    assert _choose(line.client, board, span, {}) == {"revision": "2"}
    answers = _run_panels(line.client, board, {"revision": "2"}, span)
    oee = {Phase(tags["phase"]): row[1] for tags, row in answers["OEE · 설비종합효율"]}
    for phase, shown in oee.items():
        expected = line.evaluation.result.phases[phase].kpis["oee"]
        assert expected is not None and math.isclose(shown, expected, rel_tol=1e-9)


def test_energy_per_good_unit_without_an_energy_meter_shows_no_value_not_zero(influx_settings: InfluxSettings) -> None:
    """InfluxQL divides by zero as 0: the dashboard must not show 0 kWh per unit where no meter was in scope."""
    from tests.unit.test_evaluation import plan as press_plan  # noqa: PLC0415

    plan = press_plan(devices=["press"], energy_meters=[])
    view = DemonstrationView("press-without-meter", 1, "sha256:plan", True, plan)
    worked = Components(pbt_s=8 * 3600, apt_s=7 * 3600, produced=800, good=790, ideal_s=16_000, output_good=790)
    days = [
        DailyComponents(dt.datetime.fromtimestamp(w.start_ms / 1000, plan.calendar.zone).date(), w.phase, worked)
        for w in plan.windows
    ]
    with InfluxClient(influx_settings) as client:
        client.query(f'CREATE DATABASE "{influx_settings.database}"', method="POST", database=None)
        lines = encode_days(
            days, slug=view.slug, plan_version=1, revision=1, site=plan.site, line=plan.line, zone=plan.calendar.zone
        )
        assert client.write(lines, precision="s").outcome is WriteOutcome.WRITTEN
        board = demonstration_dashboard(view)
        span = TimeRange(*(_epoch_ms(board["time"][side]) for side in ("from", "to")))
        shown: dict[str, list[Any]] = {}
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                query = panel_query(target["query"], {"revision": "1"}, span, panel.get("interval"))
                shown[panel["title"]] = [v for _, row in _rows(client, query) for v in row[1:] if v is not None]
    assert shown["OEE · 설비종합효율"]  # the days are there
    for title in ("Energy per good unit · 양품당 에너지", "Daily energy per good unit"):
        assert shown[title] == [], title  # Grafana shows "No data", not 0
    energy = next(p for p in board["panels"] if p["title"] == "Energy per good unit · 양품당 에너지")
    assert "no energy meter in scope" in energy["description"]

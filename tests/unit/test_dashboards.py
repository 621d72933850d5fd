"""The generated dashboards against what Grafana requires, their InfluxQL against the common subset, the
committed provisioning files against what `pilot grafana export` writes, and the daily KPI publication's rules.

That every query returns data on a real simulated line is tests/integration/test_dashboards.py.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner

from adapters.catalog import load_profiles
from dashboards.demonstration import DemonstrationView, demonstration_uid
from dashboards.grafana import DATASOURCE_UID, GRID_COLUMNS, SCHEMA_VERSION, UID_LENGTH
from dashboards.provisioning import DATASOURCE_FILE, PROVIDER_FILE, all_dashboards
from pilot.cli import app as cli
from pilot_core.demonstration import Phase, plan_hash
from pilot_core.kpi import Components
from pilot_core.kpi_daily import FIELDS, MEASUREMENT, TAGS, DailyComponents, encode_days, plan_publication
from simulators.plan import demonstration_plan
from simulators.scenario import BUNDLED_SCENARIOS, load_scenario
from tests.strict_line_protocol import parse_line

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "grafana"
BUILTINS = {"timeFilter", "__interval", "__interval_ms", "interval"}
# Outside what InfluxDB 1.x, 2.x and 3.x all serve, or writes from a dashboard.
FORBIDDEN = re.compile(r"\b(SAMPLE|INTO|SLIMIT|SOFFSET|SHOW\s+SERIES|DELETE|DROP|CARDINALITY)\b", re.IGNORECASE)
QUALIFIED_FROM = re.compile(r'FROM\s+"[^"]*"\s*\.')
runner = CliRunner()


def _demonstration() -> DemonstrationView:
    catalog = load_profiles()
    plan = demonstration_plan(load_scenario(BUNDLED_SCENARIOS / "pangyo_cobot_cell.yaml", catalog), catalog)
    return DemonstrationView("pangyo-cobot-assembly-cell", 2, plan_hash(plan), True, plan)


@pytest.fixture(scope="module")
def boards() -> list[dict[str, Any]]:
    return all_dashboards(load_profiles(), [_demonstration()])


def _queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    found = [("variable " + v["name"], v["query"]) for v in board["templating"]["list"]]
    found += [(p["title"], t["query"]) for p in board["panels"] for t in p.get("targets", [])]
    return found


def test_dashboards_have_what_grafana_requires(boards: list[dict[str, Any]]) -> None:
    assert len({b["uid"] for b in boards}) == len(boards) == 1 + len(load_profiles()) + 1
    for board in boards:
        name = board["uid"]
        assert re.fullmatch(rf"[A-Za-z0-9_-]{{1,{UID_LENGTH}}}", name)
        assert board["schemaVersion"] == SCHEMA_VERSION and board["title"] and board["version"] >= 1
        assert set(board["time"]) == {"from", "to"}
        assert board["panels"], name
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) and i > 0 for i in ids), name
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert set(grid) == {"x", "y", "w", "h"} and all(isinstance(v, int) for v in grid.values())
            assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0
            assert grid["x"] + grid["w"] <= GRID_COLUMNS, (name, panel["title"])
            covered = {
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not covered & cells, f"{name}: {panel['title']} overlaps another panel"
            cells |= covered
            assert panel["type"] in {"timeseries", "state-timeline", "stat", "table", "text"}
            assert "defaults" in panel["fieldConfig"] and isinstance(panel["options"], dict)
            if panel["type"] == "text":
                assert panel["options"]["content"] and "targets" not in panel
                continue
            assert panel["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs)
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID and target["rawQuery"] is True
                assert target["resultFormat"] in {"time_series", "table"}
        for variable in board["templating"]["list"]:
            assert variable["type"] == "query" and variable["datasource"]["uid"] == DATASOURCE_UID
            assert variable["refresh"] == 2 and variable["query"] == variable["definition"]
            assert re.fullmatch(r"[a-z_]+", variable["name"])


def test_queries_keep_to_the_common_influxql(boards: list[dict[str, Any]]) -> None:
    for board in boards:
        defined = {v["name"] for v in board["templating"]["list"]}
        for where, query in _queries(board):
            label = f"{board['uid']}: {where}: {query}"
            assert query.startswith(("SELECT ", "SHOW TAG VALUES ")), label
            assert "$timeFilter" in query, label  # always bounded in time
            assert not FORBIDDEN.search(query) and not QUALIFIED_FROM.search(query), label
            for grouping in re.findall(r"time\(([^)]*)\)", query):
                assert grouping == "$__interval", label
            used = set(re.findall(r"\$\{?(\w+)", query)) - BUILTINS
            assert used <= defined, f"{label}: undefined variables {used - defined}"


def test_the_before_after_dashboard_reads_only_daily_aggregates(boards: list[dict[str, Any]]) -> None:
    board = next(b for b in boards if "demonstration" in b["tags"])
    for _, query in _queries(board):
        assert re.findall(r'FROM "([^"]+)"', query) == [MEASUREMENT], query
        assert "\"demonstration\" = 'pangyo-cobot-assembly-cell'" in query and "\"plan_version\" = '2'" in query
    view = _demonstration()
    text = board["panels"][0]["options"]["content"]
    assert view.plan_hash in text and "version **2**" in text
    start = dt.datetime.fromisoformat(board["time"]["from"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(board["time"]["to"].replace("Z", "+00:00"))
    assert start <= min(w.start for w in view.plan.windows) and end >= max(w.end for w in view.plan.windows)
    assert start.astimezone(view.plan.calendar.zone).time() == dt.time()  # local midnight


def test_every_metric_of_a_profile_has_its_panel_with_its_unit(boards: list[dict[str, Any]]) -> None:
    for profile in load_profiles():
        board = next(b for b in boards if b["uid"] == f"pilot-device-{profile.id}")
        for metric in profile.metrics:
            panel = next(p for p in board["panels"] if p["title"].split(" (")[0] == metric.name)
            assert f'"{metric.name}"' in panel["targets"][0]["query"]
            assert f'FROM "{profile.measurement}"' in panel["targets"][0]["query"]
            if metric.unit != "1":
                assert metric.unit in panel["title"]
            if metric.type.value != "bool":
                assert panel["fieldConfig"]["defaults"]["unit"]


def test_the_committed_provisioning_files_are_what_export_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PILOT_PROFILES_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no pilot.yaml here
    result = runner.invoke(cli, ["grafana", "export", "--out", str(tmp_path / "out"), "--no-demonstrations"])
    assert result.exit_code == 0, result.output
    written = {
        p.relative_to(tmp_path / "out"): p.read_text(encoding="utf-8")
        for p in (tmp_path / "out").rglob("*")
        if p.is_file()
    }
    committed = {p.relative_to(COMMITTED): p.read_text(encoding="utf-8") for p in COMMITTED.rglob("*") if p.is_file()}
    assert set(written) == set(committed), "regenerate with: pilot grafana export --no-demonstrations"
    for path, text in written.items():
        assert committed[path] == text, f"{path} differs; regenerate with: pilot grafana export --no-demonstrations"


def test_export_without_a_demonstrations_database_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["grafana", "export", "--out", "out"])
    assert result.exit_code == 0, result.output
    assert "no demonstrations database at pilot.db" in result.output
    assert not (tmp_path / "pilot.db").exists()  # exporting creates no database
    assert len(list((tmp_path / "out" / "dashboards").glob("*.json"))) == 1 + len(load_profiles())


def test_the_provisioned_datasource_and_provider_follow_the_shared_layout() -> None:
    datasource = yaml.safe_load((COMMITTED / DATASOURCE_FILE).read_text(encoding="utf-8"))["datasources"]
    assert len(datasource) == 1
    source = datasource[0]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "influxdb"
    assert source["url"] == "${PILOT_GRAFANA_INFLUX_URL}"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["dbName"] == "${PILOT_GRAFANA_INFLUX_DATABASE}"
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${PILOT_GRAFANA_INFLUX_TOKEN}"
    provider = yaml.safe_load((COMMITTED / PROVIDER_FILE).read_text(encoding="utf-8"))["providers"]
    assert provider[0]["type"] == "file" and provider[0]["options"]["path"] == "/var/lib/grafana/dashboards/pilot"


def test_long_or_korean_slugs_make_valid_uids() -> None:
    assert demonstration_uid("pangyo-cell") == "pilot-demo-pangyo-cell"
    for slug in ("판교-협동로봇-셀", "a-" * 40):
        made = demonstration_uid(slug)
        assert re.fullmatch(r"[a-z0-9-]{1,40}", made) and made.startswith("pilot-demo-")
    assert demonstration_uid("판교") != demonstration_uid("시화")


SEOUL = ZoneInfo("Asia/Seoul")


def _day(day: int, phase: Phase = Phase.BASELINE, good: float = 10.0) -> DailyComponents:
    return DailyComponents(dt.date(2026, 10, day), phase, Components(pbt_s=3600.0, produced=12.0, good=good))


def test_daily_points_are_floats_at_local_noon_with_tags_apart_from_fields() -> None:
    lines = encode_days([_day(5)], slug="cell", plan_version=3, revision=1, site="판교", line="조립 1,라인", zone=SEOUL)
    point = parse_line(lines[0])
    assert point.measurement == MEASUREMENT
    assert point.tags == {
        "demonstration": "cell",
        "plan_version": "3",
        "revision": "1",
        "phase": "baseline",
        "site": "판교",
        "line": "조립 1,라인",
    }
    assert set(point.fields) == set(FIELDS) and all(isinstance(v, float) for v in point.fields.values())
    assert not set(TAGS) & set(FIELDS)
    assert point.timestamp == int(dt.datetime(2026, 10, 5, 12, tzinfo=SEOUL).timestamp())  # precision s


def test_publication_adds_new_days_and_never_rewrites_a_day_with_other_values() -> None:
    first = plan_publication({}, [_day(6), _day(5)])
    assert first.revision == 1 and [d.day.day for d in first.days] == [5, 6] and not first.changed
    stored = {1: {d.key: d.components for d in first.days}}
    again = plan_publication(stored, [_day(5), _day(6)])
    assert again.revision == 1 and again.days == [] and again.unchanged == 2
    more = plan_publication(stored, [_day(5), _day(6), _day(7), _day(7, Phase.PILOT)])
    assert more.revision == 1 and [d.key for d in more.days] == [_day(7).key, _day(7, Phase.PILOT).key]
    revised = plan_publication(stored, [_day(5), _day(6, good=9.0)])
    assert revised.revision == 2 and len(revised.days) == 2 and revised.changed == [_day(6).key]
    stored[2] = {d.key: d.components for d in revised.days}
    assert plan_publication(stored, [_day(5), _day(6, good=9.0)]).days == []  # the latest revision is the one read

"""`pilot rollups`: hours built before anyone asks, and late data for a settled hour picked up and said (issue 23)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import Database, RollupRepository
from adapters.sql.models import rollup_accounts
from api.examples import PANGYO_PLAN
from api.main import create_app
from collector.settings import CollectorSettings
from pilot_core.line_protocol import encode_point
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT
from tests.api_support import admin_client, key_headers
from tests.support import two_day_plan, wait_until, write_registry

SITE, LINE, DEVICE = "late-site", "L1", "press"
HOUR_MS = 3_600_000
START = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=6)
START_MS = int(START.timestamp() * 1000)
PRODUCT = PANGYO_PLAN["products"][0]["id"]
TAGS = (("site", SITE), ("line", LINE), ("device", DEVICE))


def _plan() -> dict[str, Any]:
    return two_day_plan(
        START, name="Late data", site=SITE, line=LINE, devices=[DEVICE], output_devices=[DEVICE], shift="00:00-23:59"
    )


def _parts(hour: int, count: int, first_seq: int, offset_ms: int = 0) -> list[str]:
    at = START_MS + hour * HOUR_MS + offset_ms
    fields = [("produced", 1), ("good", 1), ("scrap", 0), ("rework", 0), ("cycle_time_s", 40.0)]
    return [
        encode_point(
            PRODUCTION_MEASUREMENT, (*TAGS, ("product", PRODUCT)), [*fields, ("seq", first_seq + n)], at + n * 60_000
        )
        for n in range(count)
    ]


def _rollups(env: dict[str, str], folder: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pilot", "rollups"],
        check=False,
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _job_setup(tmp_path: Path, influx_settings: InfluxSettings) -> tuple[Path, str, dict[str, str]]:
    """The device registry, the SQLite URL and the environment that point ``pilot rollups`` at them."""
    registry = write_registry(tmp_path, [{"site": SITE, "line": LINE, "device": DEVICE, "profile": "cobot_arm"}])
    url = f"sqlite:///{tmp_path / 'pilot.db'}"
    env = {
        **os.environ,
        "PILOT_INFLUX__URL": influx_settings.url,
        "PILOT_INFLUX__DATABASE": influx_settings.database,
        "PILOT_DEVICES_FILE": str(registry),
        "PILOT_DATABASE_URL": url,
    }
    return registry, url, env


def test_the_job_builds_hours_first_and_takes_in_late_data_for_a_settled_hour(
    tmp_path: Path, influx_settings: InfluxSettings
) -> None:
    registry, url, env = _job_setup(tmp_path, influx_settings)
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        running: list[tuple[str, int | float | bool | str]] = [
            ("state", "running"),
            ("time_class", "production"),
            ("seq", 0),
        ]
        lines = [encode_point(STATE_MEASUREMENT, TAGS, running, START_MS)]
        for hour in range(48):
            lines += _parts(hour, 10, 1 + hour * 10)
        assert influx.write(lines).status == 204
    settings = CollectorSettings(influx=influx_settings, devices_file=registry, database_url=url)
    client = admin_client(create_app(settings))
    ref = client.post("/v1/demonstrations", json=_plan()).json()["id"]

    assert "late-data: 48 device-hours stored" in _rollups(env, tmp_path)  # before anyone asked
    first = client.get(f"/v1/demonstrations/{ref}/comparison").json()
    assert first["source"]["hours_refreshed"] == 0  # every hour was stored by the job
    assert (first["source"]["late_hours"], first["source"]["late_data"]) == (0, None)

    # Five parts of hour 30 (in the pilot window, days settled) reach InfluxDB only now: an agent's late replay.
    with InfluxClient(influx_settings) as influx:
        assert influx.write(_parts(30, 5, 10_000, offset_ms=30_000)).status == 204
    unchanged = client.get(f"/v1/demonstrations/{ref}/comparison").json()
    assert (
        unchanged["source"]["cached"] and unchanged["source"]["data_fingerprint"] == first["source"]["data_fingerprint"]
    )

    # Hour 30 and the rest of its day are read again (its state in force carries over); only hour 30 changed.
    assert "late-data: 1 device-hours stored" in _rollups(env, tmp_path)
    after = client.get(f"/v1/demonstrations/{ref}/comparison").json()
    kpis = client.get(f"/v1/demonstrations/{ref}/kpis").json()
    assert not after["source"]["cached"] and after["source"]["hours_refreshed"] == 0
    assert after["source"]["late_hours"] == 1  # only the hour whose content changed is marked
    assert (
        "1 device-hour(s) of the plan's windows took in data that reached InfluxDB after they had settled"
        in (after["source"]["late_data"])
    )
    assert f"{DEVICE} (1)" in after["source"]["late_data"]
    assert kpis["phases"]["pilot"]["counts"]["produced"] == 24 * 10 + 5
    assert "late-data: 0 device-hours stored" in _rollups(env, tmp_path)  # counted again: nothing more to read


def test_the_apis_background_task_builds_the_hours_before_anyone_asks(
    tmp_path: Path, influx_settings: InfluxSettings
) -> None:
    registry = write_registry(tmp_path, [{"site": SITE, "line": LINE, "device": DEVICE, "profile": "cobot_arm"}])
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        assert influx.write([line for hour in range(48) for line in _parts(hour, 3, 1 + hour * 3)]).status == 204
    settings = CollectorSettings(
        influx=influx_settings,
        devices_file=registry,
        database_url=f"sqlite:///{tmp_path / 'pilot.db'}",
        rollup_every_s=0.5,
    )
    app = create_app(settings)
    headers = key_headers(app)
    with TestClient(app, headers=headers) as client:  # as a served app: its lifespan starts the task
        ref = client.post("/v1/demonstrations", json=_plan()).json()["id"]
        rollups = RollupRepository(app.state.pilot.database)
        wait_until(lambda: rollups.mark(SITE, LINE) > 0, timeout_s=30, what="the background task to store hours")
        wait_until(
            lambda: len(rollups.stamps(SITE, LINE, [DEVICE], START_MS, START_MS + 48 * HOUR_MS)) == 48,
            timeout_s=30,
            what="every hour stored",
        )
        answer = client.get(f"/v1/demonstrations/{ref}/comparison").json()
    assert answer["source"]["hours_refreshed"] == 0  # the task had stored them all


def test_the_job_accounts_the_plans_days_so_that_a_comparison_accounts_none(
    tmp_path: Path, influx_settings: InfluxSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23 at plant scale: the job also accounts each device-day under the plan, so the first comparison after
    it reads accounted days and accounts nothing itself."""
    registry, url, env = _job_setup(tmp_path, influx_settings)
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        assert influx.write([line for hour in range(48) for line in _parts(hour, 10, 1 + hour * 10)]).status == 204
    settings = CollectorSettings(influx=influx_settings, devices_file=registry, database_url=url)
    client = admin_client(create_app(settings))
    ref = client.post("/v1/demonstrations", json=_plan()).json()["id"]
    _rollups(env, tmp_path)
    with Database(url) as database, database.engine.connect() as connection:
        days = connection.execute(select(func.count()).select_from(rollup_accounts)).scalar()
    assert days == len({(START_MS + h * HOUR_MS) // (24 * HOUR_MS) for h in range(48)})  # the plan's UTC days
    written: list[int] = []
    put = RollupRepository.put_accounted_days

    def counted(self: RollupRepository, site: str, line: str, device: str, key: str, rows: Any) -> None:
        rows = list(rows)
        written.append(len(rows))
        put(self, site, line, device, key, rows)

    monkeypatch.setattr(RollupRepository, "put_accounted_days", counted)
    answer = client.get(f"/v1/demonstrations/{ref}/comparison")
    assert answer.status_code == 200 and answer.json()["kpis"]
    assert sum(written) == 0

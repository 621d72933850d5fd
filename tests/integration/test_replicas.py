"""Two `pilot api` processes on one PostgreSQL, as replicas behind a load balancer run (issue 23).

Concurrent evaluations of one demonstration build each device-hour once (the per-device build lock), end with
one set of roll-ups and serve the same numbers; freezing and amending stay serialisable: of two evaluators
freezing at once one wins and the other is told (409), two amendments at once become two versions.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import AccessRepository, AuditLog, Database, DemonstrationRepository
from adapters.sql.models import rollups
from api.examples import PANGYO_PLAN
from pilot_core.access import Role
from pilot_core.audit import AuditAction
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.line_protocol import encode_point
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT
from tests.api_support import TESTS
from tests.support import two_day_plan, wait_until, write_registry

Value = int | float | bool | str
SITE, LINE = "replica-site", "L1"
DEVICES = [f"cell-{n}" for n in range(4)]
HOUR_MS = 3_600_000
# Two days a week ago: long settled, so each hour is read from InfluxDB once and never again.
START = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=8)
HOURS = 2 * 24
REQUESTS = 24  # bounded: 12 per replica, 6 at a time


def plan(name: str = "Replicated cell") -> dict[str, Any]:
    return two_day_plan(
        START, name=name, site=SITE, line=LINE, devices=DEVICES, output_devices=DEVICES[-1:], shift="06:00-22:00"
    )


def _points() -> list[str]:
    """Every device running, a fault each hour, and a part every 5 minutes, faster in the pilot day."""
    product = PANGYO_PLAN["products"][0]["id"]
    lines = []
    start_ms = int(START.timestamp() * 1000)
    for index, device in enumerate(DEVICES):
        tags = (("site", SITE), ("line", LINE), ("device", device))
        seq = 0
        for hour in range(HOURS):
            at = start_ms + hour * HOUR_MS
            for offset, state, time_class in ((0, "running", "production"), (600_000, "fault", "unplanned_delay")):
                seq += 1
                states: list[tuple[str, Value]] = [("state", state), ("time_class", time_class), ("seq", seq)]
                lines.append(encode_point(STATE_MEASUREMENT, tags, states, at + offset + index))
            lines.append(
                encode_point(
                    STATE_MEASUREMENT,
                    tags,
                    [("state", "running"), ("time_class", "production"), ("seq", seq + 1)],
                    at + 720_000 + index,
                )
            )
            seq += 1
            cycle = 40.0 + (hour % 5) - (6.0 if hour >= 24 else 0.0)
            for part in range(12):
                seq += 1
                fields: list[tuple[str, Value]] = [
                    ("produced", 1),
                    ("good", 1),
                    ("scrap", 0),
                    ("rework", 0),
                    ("cycle_time_s", cycle),
                    ("seq", seq),
                ]
                lines.append(
                    encode_point(
                        PRODUCTION_MEASUREMENT, (*tags, ("product", product)), fields, at + 780_000 + part * 240_000
                    )
                )
    return lines


@pytest.fixture
def empty_url(postgres_database: str) -> Iterator[str]:
    """An empty schema of its own in the session's PostgreSQL database."""
    schema = f"r_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_database, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{postgres_database}?options=-csearch_path%3D{schema}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def shared_url(empty_url: str) -> str:
    """The schema migrated, so that keys can be made before the replicas start: what both replicas open."""
    with Database(empty_url) as database:
        database.upgrade()
    return empty_url


@contextmanager
def replicas(url: str, influx: InfluxSettings, folder: Path, count: int = 2) -> Iterator[list[str]]:
    """``count`` `pilot api` processes over one database, each on its own port; their base URLs."""
    registry = write_registry(
        folder, [{"site": SITE, "line": LINE, "device": d, "profile": "cobot_arm"} for d in DEVICES]
    )
    env = {
        **os.environ,
        "PILOT_INFLUX__URL": influx.url,
        "PILOT_INFLUX__DATABASE": influx.database,
        "PILOT_DEVICES_FILE": str(registry),
        "PILOT_DATABASE_URL": url,
    }
    processes, bases = [], []
    try:
        for _ in range(count):
            port = local_services.free_port()
            command = [sys.executable, "-m", "pilot", "api", "--port", str(port)]
            processes.append(subprocess.Popen(command, env=env, cwd=folder, stderr=subprocess.DEVNULL))
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            wait_until(functools.partial(_answers, base), timeout_s=60, what=f"the API at {base} to answer")
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_replicas_starting_together_on_an_empty_database_migrate_it_once(
    empty_url: str, influx_settings: InfluxSettings, tmp_path: Path
) -> None:
    with replicas(empty_url, influx_settings, tmp_path, count=3) as bases:
        assert all(_answers(base) for base in bases)  # none failed on a table another was creating
    with Database(empty_url) as database, database.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0006"]


def _key(database: Database, name: str, role: Role, organisation: str) -> dict[str, str]:
    _, token = AccessRepository(database).create_key(name, role, organisation, actor=TESTS)
    return {"Authorization": f"Bearer {token}"}


def _numbers(document: dict[str, Any]) -> dict[str, Any]:
    """The answer without what says how it was found (from the cache or not, hours read for it)."""
    source = {k: v for k, v in document["source"].items() if k not in ("cached", "hours_refreshed")}
    return {**document, "source": source}


def test_two_replicas_hammering_one_demonstration_build_each_hour_once_and_agree(
    shared_url: str, influx_settings: InfluxSettings, tmp_path: Path
) -> None:
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        assert influx.write(_points()).status == 204
    with Database(shared_url) as database:
        access = AccessRepository(database)
        access.create_organisation("startup", "A startup", actor=TESTS)
        headers = _key(database, "startup's key", Role.STARTUP, "startup")
    with replicas(shared_url, influx_settings, tmp_path) as bases:
        created = httpx.post(f"{bases[0]}/v1/demonstrations", json=plan(), headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        ref = created.json()["id"]

        def ask(n: int) -> httpx.Response:
            endpoint = "comparison" if n % 3 else "kpis"
            return httpx.get(f"{bases[n % 2]}/v1/demonstrations/{ref}/{endpoint}", headers=headers, timeout=120)

        with ThreadPoolExecutor(6) as pool:  # both replicas at once, the first requests all finding nothing stored
            answers = list(pool.map(ask, range(REQUESTS)))
    for answer in answers:
        assert answer.status_code == 200, answer.text
    # Each device-hour was read from InfluxDB once, by one replica or the other, and never again.
    assert sum(a.json()["source"]["hours_refreshed"] for a in answers) == len(DEVICES) * HOURS
    with Database(shared_url) as database, database.engine.connect() as connection:
        stored = connection.execute(select(rollups.c.device, func.count()).group_by(rollups.c.device)).all()
    assert dict(stored) == dict.fromkeys(DEVICES, HOURS)  # one set of roll-ups
    for endpoint in ("comparison", "kpis"):
        documents = [
            _numbers(a.json()) for n, a in enumerate(answers) if ("comparison" if n % 3 else "kpis") == endpoint
        ]
        assert all(d == documents[0] for d in documents), f"the replicas' {endpoint} answers differ"
    comparison = next(a.json() for n, a in enumerate(answers) if n % 3)
    assert comparison["kpis"], comparison  # numbers, not an empty table


def _at_once(requests: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """The requests sent together: each thread waits at a barrier, then sends."""
    barrier = threading.Barrier(len(requests))

    def send(request: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(30)
        return request()

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_two_evaluators_freezing_at_once_on_two_replicas_one_wins_and_the_other_gets_409(
    shared_url: str, influx_settings: InfluxSettings, tmp_path: Path
) -> None:
    rounds = 5
    with Database(shared_url) as database:
        access = AccessRepository(database)
        access.create_organisation("startup", "A startup", actor=TESTS)
        access.create_organisation("evaluators", "An evaluating body", actor=TESTS)
        owners = [_key(database, name, Role.STARTUP, "startup") for name in ("Lee", "Choi")]
        evaluators = {name: _key(database, name, Role.EVALUATOR, "evaluators") for name in ("Kim", "Park")}
        demonstrations = DemonstrationRepository(database)
        ids = []
        for n in range(rounds):
            stored = demonstrations.create(
                DemonstrationPlan.model_validate(plan(f"Cell {n}")), actor=TESTS, owner="startup"
            )
            demonstrations.add_participant(stored.id, "evaluators", actor=TESTS)
            ids.append(stored.id)
    with replicas(shared_url, influx_settings, tmp_path) as bases:
        for ref in ids:
            answers = _at_once(
                [
                    functools.partial(httpx.post, f"{base}/v1/demonstrations/{ref}/freeze", headers=key, timeout=30)
                    for base, key in zip(bases, evaluators.values(), strict=True)
                ]
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [200, 409], [a.text for a in answers]
            won = next(a for a in answers if a.status_code == 200).json()
            lost = next(a for a in answers if a.status_code == 409).json()
            winner = next(n for (n, key), a in zip(evaluators.items(), answers, strict=True) if a.status_code == 200)
            assert lost["type"].endswith("/frozen-by-another") and lost["title"] == "Plan was frozen by someone else"
            assert f"frozen already, by {winner} (evaluators)" in lost["detail"], lost["detail"]
            assert won["plan_hash"] in lost["detail"] and "nothing was changed" in lost["detail"]
            # The winner's retry changes nothing; the loser's try again is refused again.
            again = httpx.post(f"{bases[1]}/v1/demonstrations/{ref}/freeze", headers=evaluators[winner], timeout=30)
            assert again.status_code == 200 and again.json() == won

            # Two amendments at once, one on each replica: two new versions, in some order, both audited.
            amended = plan("Cell, amended")
            amendments = _at_once(
                [
                    functools.partial(
                        httpx.post,
                        f"{base}/v1/demonstrations/{ref}/amendments",
                        json={"plan": {**amended, "confidence_level": (0.8, 0.95)[n]}, "reason": f"change {n}"},
                        headers=key,
                        timeout=30,
                    )
                    for n, (base, key) in enumerate(zip(bases, owners, strict=True))
                ]
            )
            assert sorted(a.status_code for a in amendments) == [201, 201], [a.text for a in amendments]
            assert sorted(a.json()["version"] for a in amendments) == [2, 3]
    with Database(shared_url) as database:
        audit = AuditLog(database)
        for ref in ids:
            actions = [e.action for e in audit.entries(ref)]
            assert actions.count(AuditAction.PLAN_FROZEN) == 1
            assert actions.count(AuditAction.PLAN_AMENDED) == 2

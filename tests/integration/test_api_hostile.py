"""Hostile requests to the API: InfluxQL and SQL injection through every parameter that reaches a query, bodies
too large or too deep, repeated parameters. Each gets a clear error, and nothing stored is lost or leaked.

The parameters that reach InfluxQL are the plan's site, line and device ids (every KPI query filters on them)
and the device status lookback; the ones that reach SQL are the demonstration reference and the organisation
and key names. All go through one quoting function or bound parameters; these tests try to break out anyway,
against the real InfluxDB and on SQLite and the real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import text

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import AccessRepository, Database
from api.examples import PANGYO_PLAN
from api.limits import MAX_BODY_BYTES
from api.main import create_app
from collector.settings import CollectorSettings
from pilot_core.access import Role
from pilot_core.line_protocol import encode_point
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT
from tests.api_support import TESTS, key_headers
from tests.support import count_points, wait_until

SITE, LINE = PANGYO_PLAN["site"], PANGYO_PLAN["line"]
VICTIM = "cobot-01"  # has data; no hostile demonstration may read it
# Ids that would widen a query built by pasting text, in InfluxQL's quoting and in SQL's.
INJECTIONS = [
    f"x' OR \"device\" = '{VICTIM}",
    f"x\\' OR \"device\" = \\'{VICTIM}",
    f'x" OR "device" = "{VICTIM}',
    "x' OR \"device\" != 'none' OR 'a'='a",
    'x"; DROP DATABASE "pilot',
    "x'; DROP MEASUREMENT \"production\"; SELECT '",
    "x' --",
    "x\\",  # refused: line protocol cannot end a tag with a backslash
    "'",
    '"',
    "%27%20OR%201%3D1",
]
STORABLE = [i for i in INJECTIONS if not i.endswith("\\")]
DAY_MS = 86_400_000
BASELINE_MS = 1_791_298_800_000  # 2026-10-07 00:00 +09:00, a Wednesday


def hostile_plan(site: str = SITE, line: str = LINE, devices: list[str] | None = None) -> dict[str, Any]:
    devices = devices or STORABLE
    plan = copy.deepcopy(PANGYO_PLAN)
    plan.update(site=site, line=line, devices=devices, output_devices=devices[:1], energy_meters=[], targets=[])
    for product in plan["products"]:
        product["per_device"] = {}
    plan["windows"] = [
        {
            "name": "baseline",
            "phase": "baseline",
            "start": "2026-10-07T00:00:00+09:00",
            "end": "2026-10-08T00:00:00+09:00",
        },
        {"name": "pilot", "phase": "pilot", "start": "2026-10-08T00:00:00+09:00", "end": "2026-10-09T00:00:00+09:00"},
    ]
    return plan


@pytest.fixture
def api(empty_database: Database, influx_settings: InfluxSettings, tmp_path: Path) -> Iterator[TestClient]:
    devices = [{"site": SITE, "line": LINE, "device": VICTIM, "profile": "cobot_arm"}]
    devices += [{"site": SITE, "line": LINE, "device": d, "profile": "cobot_arm"} for d in STORABLE]
    devices += [{"site": i, "line": i, "device": i, "profile": "cobot_arm"} for i in STORABLE[:3]]
    registry = tmp_path / "devices.yaml"
    registry.write_text(yaml.safe_dump({"devices": devices}, allow_unicode=True), encoding="utf-8")
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        tags = (("site", SITE), ("line", LINE), ("device", VICTIM))
        lines = []
        for day in range(2):
            start = BASELINE_MS + day * DAY_MS + 9 * 3_600_000
            lines.append(
                encode_point(
                    STATE_MEASUREMENT, tags, [("state", "running"), ("time_class", "production"), ("seq", day)], start
                )
            )
            for cycle in range(100):
                fields = [
                    ("produced", 1),
                    ("good", 1),
                    ("scrap", 0),
                    ("rework", 0),
                    ("cycle_time_s", 40.0),
                    ("seq", day * 100 + cycle),
                ]
                lines.append(
                    encode_point(
                        PRODUCTION_MEASUREMENT, (*tags, ("product", "BRK-100")), fields, start + cycle * 40_000
                    )
                )
        assert influx.write(lines).status == 204
    settings = CollectorSettings(
        influx=influx_settings,
        devices_file=registry,
        database_url=empty_database.engine.url.render_as_string(hide_password=False),
    )
    app = create_app(settings, database=empty_database)
    with TestClient(app, headers=key_headers(app)) as client:
        yield client


def _victim_points(api: TestClient) -> int:
    settings: CollectorSettings = api.app.state.pilot.settings  # type: ignore[attr-defined]
    with InfluxClient(settings.influx) as influx:
        return count_points(influx, PRODUCTION_MEASUREMENT)


def test_injected_ids_read_nothing_of_other_devices_and_change_nothing(api: TestClient) -> None:
    assert _victim_points(api) == 200
    victim = api.post("/v1/demonstrations", json=hostile_plan(devices=[VICTIM]))
    assert victim.status_code == 201, victim.text
    produced = api.get(f"/v1/demonstrations/{victim.json()['id']}/kpis").json()["phases"]["baseline"]["counts"]
    assert produced["produced"] == 100  # the victim's own data is there to be read

    cases = [hostile_plan(), *(hostile_plan(site=i, line=i, devices=[i]) for i in STORABLE[:3])]
    for plan in cases:
        created = api.post("/v1/demonstrations", json=plan)
        assert created.status_code == 201, created.text
        for path in ("kpis", "comparison"):
            response = api.get(f"/v1/demonstrations/{created.json()['id']}/{path}")
            assert response.status_code == 200, response.text
        document = api.get(f"/v1/demonstrations/{created.json()['id']}/kpis").json()
        for phase in document["phases"].values():
            assert phase["counts"]["produced"] == 0, plan["devices"]
            assert all(c["telemetry_received"] == 0 for c in phase["coverage"])
        assert {c["device"] for c in document["phases"]["pilot"]["coverage"]} == set(plan["devices"])
    assert _victim_points(api) == 200
    status = api.get("/v1/devices/status")
    assert status.status_code == 200 and {d["device"] for d in status.json()} >= {VICTIM, *STORABLE}


def test_an_id_line_protocol_cannot_carry_is_refused_in_the_plan(api: TestClient) -> None:
    refused = api.post("/v1/demonstrations", json=hostile_plan(devices=["x\\"]))
    assert refused.status_code == 422
    assert "backslash" in refused.json()["detail"]


@pytest.mark.parametrize("value", ["1; DROP DATABASE pilot", "72 OR 1=1", "1e999", "-1", "nan", "inf"])
def test_the_status_lookback_takes_only_a_number_in_range(api: TestClient, value: str) -> None:
    response = api.get("/v1/devices/status", params={"since_hours": value})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "since_hours"]
    assert _victim_points(api) == 200


@pytest.mark.parametrize("ref", [*INJECTIONS, "1 OR 1=1", "0x1", "1; DELETE FROM plan_versions", "9" * 40])
def test_references_in_the_path_name_nothing_but_themselves(api: TestClient, ref: str) -> None:
    created = api.post("/v1/demonstrations", json=hostile_plan(devices=[VICTIM])).json()
    for suffix in ("", "/versions", "/kpis", "/audit"):
        response = api.get(f"/v1/demonstrations/{ref}{suffix}")
        assert response.status_code in (404, 422), (ref, suffix, response.text)
    assert api.get(f"/v1/demonstrations/{created['id']}").status_code == 200
    assert len(api.get("/v1/demonstrations").json()) == 1


def test_names_stored_in_sql_come_back_as_they_were_sent(api: TestClient) -> None:
    for name in INJECTIONS:
        created = api.post("/v1/api-keys", json={"name": name, "role": "evaluator", "organisation": "operator"})
        assert created.status_code == 201, created.text
        assert created.json()["name"] == name
    refused = api.post("/v1/organisations", json={"slug": "x'); DROP TABLE organisations; --", "name": "x"})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/invalid-slug")
    assert [k["name"] for k in api.get("/v1/api-keys").json()][-len(INJECTIONS) :] == INJECTIONS


def test_a_body_too_large_is_refused_before_it_is_read(api: TestClient) -> None:
    body = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    declared = api.post("/v1/demonstrations", content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["type"].endswith("/body-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    streamed = api.post("/v1/demonstrations", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert api.get("/v1/demonstrations").json() == []


@pytest.mark.parametrize("depth", [1_000, 200_000])
def test_a_body_nested_too_deeply_gets_a_clear_error(api: TestClient, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    for method, path in (("POST", "/v1/demonstrations"), ("POST", "/v1/organisations")):
        response = api.request(method, path, content=body, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text
        assert response.json()["detail"]
        if response.status_code == 400:
            assert "nested too deeply" in response.json()["detail"]
    plan = json.dumps(hostile_plan()).encode()
    nested = plan[:-1] + b', "extra": ' + b'{"deep": ' * 5_000 + b"null" + b"}" * 5_000 + b"}"
    response = api.post("/v1/demonstrations", content=nested, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert api.get("/v1/demonstrations").json() == []


@pytest.mark.parametrize(
    "zone", ["Asia", "America", "Etc", "x" * 300, "ü" * 200, "localtime", "Factory", "right/UTC", "../../etc/passwd"]
)
def test_a_time_zone_not_in_tzdata_is_refused_with_422(api: TestClient, zone: str) -> None:
    plan = hostile_plan()
    plan["calendar"]["timezone"] = zone
    response = api.post("/v1/demonstrations", json=plan)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "calendar", "timezone"]
    assert "use an IANA name such as Asia/Seoul" in response.json()["detail"]


def test_a_plan_longer_than_the_limit_is_neither_stored_nor_evaluated(api: TestClient, tmp_path: Path) -> None:
    settings: CollectorSettings = api.app.state.pilot.settings  # type: ignore[attr-defined]
    settings.signing_key_file = tmp_path / "signing.key"  # not the working directory's
    created = api.post("/v1/demonstrations", json=hostile_plan(devices=[VICTIM]))
    assert created.status_code == 201, created.text
    ref = created.json()["id"]
    settings.max_window_days = 1.5  # lowered after the two-day plan was stored
    try:
        replaced = api.put(f"/v1/demonstrations/{ref}", json=hostile_plan(devices=[VICTIM]))
        assert replaced.status_code == 422, replaced.text
        assert "the windows cover 2 days together; at most 1.5 are allowed" in replaced.json()["detail"]
        for path in ("kpis", "comparison", "report", "evidence"):
            refused = api.get(f"/v1/demonstrations/{ref}/{path}")
            assert refused.status_code == 422, (path, refused.text)
            assert "windows covering 2 days together; at most 1.5 are evaluated" in refused.json()["detail"]
    finally:
        settings.max_window_days = 400
    assert api.get(f"/v1/demonstrations/{ref}/kpis").status_code == 200


def _duplicated(key: str) -> bytes:
    """A valid plan whose ``key`` is given twice: JSON readers would keep one of the two silently."""
    text = json.dumps(hostile_plan(), ensure_ascii=False)
    first = json.dumps(hostile_plan()[key], ensure_ascii=False)
    return ("{" + json.dumps(key) + ": " + first + ", " + text[1:]).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_duplicated("name"), 'Detected duplicate key "name"'),
        (json.dumps(hostile_plan()).encode("utf-16"), "not valid UTF-8"),
        (json.dumps(hostile_plan()).encode("utf-16-le"), "not UTF-8: it holds NUL bytes"),
        (json.dumps(hostile_plan()).encode("utf-32"), "not valid UTF-8"),
        (json.dumps(hostile_plan()).encode()[:-20], "not valid JSON: EOF while parsing"),
        (b'{"name": "x",}', "not valid JSON: trailing comma"),
        (b"\xef\xbb\xbf" + json.dumps(hostile_plan()).encode(), "byte order mark"),
    ],
)
def test_a_body_that_is_not_one_utf8_json_document_is_refused_with_400(
    api: TestClient, body: bytes, reason: str
) -> None:
    # The same strict reading as the collector's: UTF-8 only, every key once, the whole document.
    for path in ("/v1/demonstrations", "/v1/organisations"):
        response = api.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["title"] == "Bad Request" and reason in problem["detail"], problem
        assert response.headers["content-type"] == "application/problem+json"
    assert api.get("/v1/demonstrations").json() == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
def test_a_body_of_another_content_type_is_refused_naming_it(api: TestClient, content_type: str | None) -> None:
    body = json.dumps(hostile_plan()).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    response = api.post("/v1/demonstrations", content=body, headers=headers)
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert "application/json" in detail and (content_type or "no Content-Type") in detail, detail
    assert "dictionary" not in detail
    assert api.get("/v1/demonstrations").json() == []
    # JSON under its own names is taken.
    for taken in ("application/json", "application/json; charset=utf-8", "application/problem+json"):
        created = api.post(
            "/v1/organisations", content=b'{"slug": "o-%d", "name": "O"}' % len(taken), headers={"content-type": taken}
        )
        assert created.status_code == 201, created.text


def test_a_query_parameter_given_twice_is_refused(api: TestClient) -> None:
    response = api.get("/v1/devices/status?since_hours=1&since_hours=1000")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"loc": ["query", "since_hours"], "msg": "given more than once; give it once"}]


def _served_api(
    tmp_path: Path, influx_settings: InfluxSettings, devices: list[str]
) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """`pilot api` as its own process over a SQLite file, and a startup's key for it."""
    registry = tmp_path / "devices.yaml"
    entries = [{"site": SITE, "line": LINE, "device": d, "profile": "cobot_arm"} for d in devices]
    registry.write_text(yaml.safe_dump({"devices": entries}), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'pilot.db'}"
    database = Database(url)
    database.upgrade()
    access = AccessRepository(database)
    access.create_organisation("startup", "A startup", actor=TESTS)
    _, token = access.create_key("startup's key", Role.STARTUP, "startup", actor=TESTS)
    database.dispose()
    port = local_services.free_port()
    env = {
        **os.environ,
        "PILOT_INFLUX__URL": influx_settings.url,
        "PILOT_INFLUX__DATABASE": influx_settings.database,
        "PILOT_DEVICES_FILE": str(registry),
        "PILOT_DATABASE_URL": url,
    }
    command = [sys.executable, "-m", "pilot", "api", "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    return process, f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}


def _long_plan(devices: list[str], days: int, name: str) -> dict[str, Any]:
    """A plan whose windows cover ``days`` days up to an hour ago, the baseline and the pilot half each."""
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    middle, start = end - dt.timedelta(days=days / 2), end - dt.timedelta(days=days)
    plan = hostile_plan(devices=devices)
    plan["name"] = name
    plan["windows"] = [
        {"name": "baseline", "phase": "baseline", "start": start.isoformat(), "end": middle.isoformat()},
        {"name": "pilot", "phase": "pilot", "start": middle.isoformat(), "end": end.isoformat()},
    ]
    return plan


def test_a_startup_key_cannot_stall_the_api(tmp_path: Path, influx_settings: InfluxSettings) -> None:
    """The attack of issue 17: plans from year 1 or to year 9999, then long evaluations while others use the API,
    then SIGTERM. The API is a real `pilot api` process reading the real InfluxDB."""
    devices = [f"cell-{n}" for n in range(8)]
    now_ms = int(time.time() * 1000)
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        tags = (("site", SITE), ("line", LINE), ("device", devices[0]))
        # A little data, a month ago: most hours of a long window have none.
        start = now_ms - 30 * DAY_MS
        lines = [
            encode_point(
                STATE_MEASUREMENT, tags, [("state", "running"), ("time_class", "production"), ("seq", 0)], start
            )
        ]
        fields = [("produced", 1), ("good", 1), ("scrap", 0), ("rework", 0), ("cycle_time_s", 40.0)]
        lines += [
            encode_point(
                PRODUCTION_MEASUREMENT, (*tags, ("product", "BRK-100")), [*fields, ("seq", 1 + n)], start + n * 40_000
            )
            for n in range(50)
        ]
        assert influx.write(lines).status == 204
    process, base, key = _served_api(tmp_path, influx_settings, devices)
    lines_out: list[str] = []
    reader = threading.Thread(target=lambda: lines_out.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        with httpx.Client(base_url=base, headers=key, timeout=600) as client:
            wait_until(lambda: _answers(client), what="the API to answer")
            # 1. The hostile windows are refused when the plan is stored, each with the reason.
            for window, key_name, moment in (
                (0, "start", "0001-01-01T00:00:00+00:00"),
                (1, "end", "9999-12-31T23:00:00+00:00"),
            ):
                plan = hostile_plan(devices=devices)
                plan["windows"][window][key_name] = moment
                refused = client.post("/v1/demonstrations", json=plan)
                assert refused.status_code == 422, refused.text
                assert "must lie within 2000-01-01 and 2100-01-01" in refused.json()["detail"]
            too_long = client.post("/v1/demonstrations", json=_long_plan(devices, 401, "Too long"))
            assert too_long.status_code == 422, too_long.text
            assert "cover 401 days together; at most 400 are allowed" in too_long.json()["detail"]
            assert too_long.json()["errors"][0]["loc"] == ["body", "windows"]

            # 2. Plans as long as allowed are evaluated while every other request is answered.
            ids = []
            for n in range(2):
                created = client.post("/v1/demonstrations", json=_long_plan(devices[:4], 400, f"Long {n}"))
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])
            answers: dict[int, httpx.Response] = {}

            def evaluate(ref: int) -> None:
                answers[ref] = client.get(f"/v1/demonstrations/{ref}/kpis", params={"refresh": "true"})

            evaluations = [threading.Thread(target=evaluate, args=(ref,)) for ref in ids]
            for thread in evaluations:
                thread.start()
            answered_during = 0
            with httpx.Client(base_url=base, headers=key, timeout=10) as other:  # a stalled server times this out
                while any(t.is_alive() for t in evaluations):
                    assert other.get("/health").json() == {"status": "ok"}
                    assert other.get("/v1/demonstrations").status_code == 200
                    answered_during += any(t.is_alive() for t in evaluations)
            for thread in evaluations:
                thread.join()
            assert answered_during >= 1  # the other requests were answered while an evaluation ran
            for ref in ids:
                assert answers[ref].status_code == 200, answers[ref].text
                document = answers[ref].json()
                produced = sum(p["counts"]["produced"] for p in document["phases"].values())
                assert produced == 50  # the few hours with data are all read

            # 3. SIGTERM stops the server while an evaluation runs: one of other devices, whose hours it is storing.
            others = devices[4:]
            created = client.post("/v1/demonstrations", json=_long_plan(others, 400, "Long, other devices"))
            assert created.status_code == 201, created.text
            running = threading.Thread(
                target=_ignoring_disconnects(lambda: evaluate(created.json()["id"])), daemon=True
            )
            running.start()
            wait_until(lambda: _stored_hours(tmp_path / "pilot.db", others) > 0, what="the evaluation to store hours")
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            running.join(60)
            assert not running.is_alive()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(10)
    # uvicorn raises the signal again once it has shut down: the process ends as SIGTERM's.
    assert process.returncode in (0, -signal.SIGTERM), "".join(lines_out)
    assert "Waiting for application shutdown" in "".join(lines_out)


def _stored_hours(database: Path, devices: list[str]) -> int:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        marks = ", ".join("?" * len(devices))
        query = f"SELECT count(*) FROM rollups WHERE device IN ({marks})"
        return int(connection.execute(query, devices).fetchone()[0])


def _ignoring_disconnects(request: Callable[[], None]) -> Callable[[], None]:
    """``request``, whose connection the stopping server may close without an answer."""

    def run() -> None:
        with contextlib.suppress(httpx.TransportError):
            request()

    return run


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(plan: dict[str, Any]) -> None:
        target: Any = plan
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


_FAR = "9999-12-31T23:59:59-14:00"  # a moment Python cannot even move to UTC


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        (_set(("products", 0, "ideal_cycle_time_s"), float("inf")), ["products", 0, "ideal_cycle_time_s"], "finite"),
        (_set(("products", 0, "per_device"), {VICTIM: 1e308}), ["products", 0, "per_device", VICTIM], "at most"),
        (_set(("telemetry_interval_s",), {VICTIM: float("inf")}), ["telemetry_interval_s", VICTIM], "finite"),
        (
            _set(
                ("corrections",),
                [
                    {
                        "kind": "counts",
                        "device": VICTIM,
                        "at": "2026-10-07T10:00:00+09:00",
                        "product": "BRK-100",
                        "produced": 10**30,
                        "good": 10**30,
                        "reason": "a typing error",
                    }
                ],
            ),
            ["corrections", 0, "counts", "produced"],
            "a count correction changes a count by at most 1,000,000,000 either way",
        ),
        (
            _set(("exclusions",), [{"start": "2026-10-07T10:00:00+09:00", "end": _FAR, "reason": "far"}]),
            ["exclusions", 0, "end"],
            "must lie within 2000-01-01 and 2100-01-01",
        ),
        (
            _set(
                ("corrections",),
                [
                    {
                        "kind": "state",
                        "device": VICTIM,
                        "start": "0001-01-01T00:00:00+14:00",
                        "end": "2026-10-07T11:00:00+09:00",
                        "time_class": "production",
                        "reason": "far",
                    }
                ],
            ),
            ["corrections", 0, "state", "start"],
            "must lie within 2000-01-01 and 2100-01-01",
        ),
        (
            _set(
                ("exclusions",),
                [
                    {
                        "start": "2026-10-07T10:00:00+09:00",
                        "end": "2026-10-07T11:00:00+09:00",
                        "reason": "a typo",
                        "devices": ["cobot-1"],
                    }
                ],
            ),
            [],
            "exclusions must be devices in scope; not in scope: cobot-1",
        ),
        (
            _set(
                ("state_overrides",),
                [{"state": "running", "time_class": "unplanned_delay", "device": "cobot-1", "reason": "a typo"}],
            ),
            [],
            "state_overrides must be devices in scope; not in scope: cobot-1",
        ),
    ],
)
def test_a_plan_value_no_evaluation_can_use_is_refused_when_the_plan_is_sent(
    api: TestClient, change: Callable[[dict[str, Any]], None], loc: list[str | int], message: str
) -> None:
    """Each of these was stored, and then every evaluation of the plan failed with 500 (an infinite or absurd ideal
    cycle time or count, a date Python cannot convert), or it silently did nothing (a misspelt device)."""
    plan = hostile_plan(devices=[VICTIM])
    change(plan)
    refused = api.post(
        "/v1/demonstrations", content=json.dumps(plan).encode(), headers={"content-type": "application/json"}
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["errors"][0]
    assert error["loc"] == ["body", *loc], error
    assert message in error["msg"], error
    assert api.get("/v1/demonstrations").json() == []
    created = api.post("/v1/demonstrations", json=hostile_plan(devices=[VICTIM]))
    assert created.status_code == 201, created.text
    ref = created.json()["id"]
    replaced = api.put(
        f"/v1/demonstrations/{ref}", content=json.dumps(plan), headers={"content-type": "application/json"}
    )
    assert replaced.status_code == 422, replaced.text
    assert api.get(f"/v1/demonstrations/{ref}/kpis").status_code == 200


def test_a_plan_stored_before_a_check_was_added_still_reads_as_it_was_accepted(api: TestClient) -> None:
    # The checks above were added after plans were stored; such a plan must not make listing every plan fail.
    created = api.post("/v1/demonstrations", json=hostile_plan(devices=[VICTIM]))
    assert created.status_code == 201, created.text
    stored = hostile_plan(devices=[VICTIM])
    stored["exclusions"] = [
        {"start": "2026-10-07T10:00:00+09:00", "end": "2026-10-07T11:00:00+09:00", "reason": "a typo", "devices": ["x"]}
    ]
    stored["telemetry_interval_s"] = {VICTIM: 1e9}
    database: Database = api.app.state.pilot.database  # type: ignore[attr-defined]
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE plan_versions SET plan = :plan"), {"plan": json.dumps(stored)})
    assert api.get("/v1/demonstrations").status_code == 200
    read = api.get(f"/v1/demonstrations/{created.json()['id']}")
    assert read.status_code == 200, read.text
    assert read.json()["plan"]["exclusions"][0]["devices"] == ["x"]


def test_a_count_correction_in_an_hour_without_those_units_gets_422_naming_it(api: TestClient, tmp_path: Path) -> None:
    api.app.state.pilot.settings.signing_key_file = tmp_path / "signing.key"  # type: ignore[attr-defined]
    plan = hostile_plan(devices=[VICTIM])
    plan["corrections"] = [
        {
            "kind": "counts",
            "device": VICTIM,
            "at": "2026-10-07T09:30:00+09:00",  # the victim made 90 units in that hour
            "product": "BRK-100",
            "produced": -1000,
            "good": -1000,
            "reason": "entered in the wrong hour",
        }
    ]
    created = api.post("/v1/demonstrations", json=plan)
    assert created.status_code == 201, created.text
    for path in ("kpis", "comparison", "report", "evidence"):
        refused = api.get(f"/v1/demonstrations/{created.json()['id']}/{path}")
        assert refused.status_code == 422, (path, refused.text)
        detail = refused.json()["detail"]
        assert (
            "'entered in the wrong hour'" in detail
            and "produced count of product 'BRK-100' below zero (-910)" in detail
        ), detail


_CONTROL = {"devices": [STORABLE[0]], "output_devices": [STORABLE[0]], "independence": "its own cell and operators"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(("output_devices",), [VICTIM, VICTIM]), "output_devices lists cobot-01 twice"),
        (_set(("energy_meters",), [STORABLE[1], STORABLE[1]]), f"energy_meters lists {STORABLE[1]} twice"),
        (
            _set(("control_line",), {**_CONTROL, "devices": [STORABLE[0], STORABLE[0]]}),
            f"control_line.devices lists {STORABLE[0]} twice",
        ),
        (
            _set(("control_line",), {**_CONTROL, "output_devices": [STORABLE[0], STORABLE[0]]}),
            f"control_line.output_devices lists {STORABLE[0]} twice",
        ),
    ],
)
def test_a_device_listed_twice_in_a_role_is_refused_not_counted_twice(
    api: TestClient, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    # Stored as sent before: the control line's hourly units and the output stations' product totals are summed
    # over these lists, so a device listed twice was summed twice there. `devices` itself was already checked.
    plan = hostile_plan(devices=[VICTIM, STORABLE[0], STORABLE[1]])
    plan["output_devices"] = [VICTIM]
    change(plan)
    refused = api.post("/v1/demonstrations", json=plan)
    assert refused.status_code == 422, refused.text
    assert message in refused.json()["detail"], refused.json()


def test_text_holding_a_nul_character_is_refused_wherever_it_is_sent(api: TestClient) -> None:
    # PostgreSQL's text cannot hold NUL: an amendment's reason with one failed with 500 there, after the checks.
    created = api.post("/v1/demonstrations", json=hostile_plan(devices=[VICTIM])).json()
    assert api.post(f"/v1/demonstrations/{created['id']}/freeze").status_code == 200
    named = hostile_plan(devices=[VICTIM])
    named["products"][0]["name"] = "Bracket\x00100"
    for method, path, body, where in (
        (
            "POST",
            f"/v1/demonstrations/{created['id']}/amendments",
            {"plan": hostile_plan(), "reason": "a\x00b"},
            "reason",
        ),
        ("POST", "/v1/demonstrations", named, "products.0.name"),
        ("POST", "/v1/api-keys", {"name": "k\x00", "role": "evaluator", "organisation": "operator"}, "name"),
        ("POST", "/v1/organisations", {"slug": "nul-org", "name": "N\x00"}, "name"),
        ("POST", "/v1/organisations", {"slug": "nul-org", "name": "N", "x\x00": 1}, "x\\u0000"),
    ):
        response = api.request(method, path, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert f"holds the NUL character (U+0000) in body.{where}" in response.json()["detail"], response.json()
    assert [d["version"] for d in api.get("/v1/demonstrations").json()] == [1]
    assert "nul-org" not in {o["slug"] for o in api.get("/v1/organisations").json()}
    # In the path or the query: looked up in SQL as sent, on PostgreSQL that failed with 500 too.
    for method, path, loc in (
        ("GET", "/v1/demonstrations/a%00b", ["path", "ref"]),
        ("GET", "/v1/demonstrations/a%00b/live", ["path", "ref"]),
        ("DELETE", f"/v1/demonstrations/{created['id']}/participants/x%00", ["path", "organisation"]),
        ("GET", "/v1/api-keys?organisation=x%00", ["query", "organisation"]),
    ):
        response = api.request(method, path)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["errors"] == [{"loc": loc, "msg": "holds the NUL character (U+0000)"}], response.json()


@pytest.mark.parametrize("number", [2**31, 2**62])
def test_a_number_beyond_the_database_s_integers_names_nothing(api: TestClient, number: int, tmp_path: Path) -> None:
    api.app.state.pilot.settings.signing_key_file = tmp_path / "signing.key"  # type: ignore[attr-defined]
    # PostgreSQL's ids and versions are 32-bit: 2**31 failed there with 500 (integer out of range).
    ref = api.post("/v1/demonstrations", json=hostile_plan(devices=[VICTIM])).json()["id"]
    for path in (
        f"/v1/demonstrations/{number}",
        f"/v1/demonstrations/{ref}/versions/{number}",
        f"/v1/demonstrations/{ref}/kpis?version={number}",
        f"/v1/demonstrations/{ref}/report?version={number}",
        f"/v1/demonstrations/{ref}/evidence?version={number}",
    ):
        response = api.get(path)
        assert response.status_code == 404, (path, response.text)
    for path in (f"/v1/audit?before={number}", f"/v1/demonstrations/{ref}/audit?before={number}"):
        response = api.get(path)
        assert response.status_code == 200 and response.json()["entries"], (path, response.text)

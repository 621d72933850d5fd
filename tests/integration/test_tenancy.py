"""Every role against every endpoint: allowed, denied, or not found.

One demonstration is owned by startup A and shared with a factory, an evaluating
body and a partner startup. Each caller below asks every endpoint about it; the
matrix says what each must get. A demonstration a caller cannot see is answered
404 exactly as one that does not exist, so no tenant learns of another's work.
Runs on SQLite and on the real PostgreSQL, against the real InfluxDB.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import AccessRepository, Database, DemonstrationRepository
from api.examples import PANGYO_AMENDMENT, PANGYO_PLAN
from api.main import create_app
from collector.settings import CollectorSettings
from pilot_core.access import Actor, Role
from pilot_core.demonstration import DemonstrationPlan

SETUP = Actor.system("test_tenancy")
CALLERS = (
    "anonymous",
    "admin",
    "owner",  # startup A, which owns the demonstration
    "outsider",  # startup B
    "partner",  # startup C, a participant
    "factory",  # the host factory's manager, a participant
    "other_factory",
    "evaluator",  # of the evaluating body, a participant
    "other_evaluator",
    "scoped",  # the evaluating body's key limited to another demonstration
)
KEYS = {
    "admin": (Role.ADMIN, "operator"),
    "owner": (Role.STARTUP, "startup-a"),
    "outsider": (Role.STARTUP, "startup-b"),
    "partner": (Role.STARTUP, "startup-c"),
    "factory": (Role.FACTORY_MANAGER, "factory"),
    "other_factory": (Role.FACTORY_MANAGER, "factory-2"),
    "evaluator": (Role.EVALUATOR, "evaluators"),
    "other_evaluator": (Role.EVALUATOR, "evaluators-2"),
    "scoped": (Role.EVALUATOR, "evaluators"),
}

# Status per caller, in the order of CALLERS.
READ = "401 200 200 404 200 200 404 200 404 404"
OWNER_WRITES = "401 200 200 404 403 403 404 403 404 404"
EVERYONE = "401 200 200 200 200 200 200 200 200 200"
ADMINS = "401 200 403 403 403 403 403 403 403 403"
MATRIX = {
    ("GET", "/health"): "200 200 200 200 200 200 200 200 200 200",
    ("GET", "/ready"): "200 200 200 200 200 200 200 200 200 200",
    ("GET", "/v1/me"): EVERYONE,
    ("GET", "/v1/contract/schema"): EVERYONE,
    ("GET", "/v1/profiles"): EVERYONE,
    ("GET", "/v1/profiles/{profile_id}"): EVERYONE,
    ("GET", "/v1/devices"): EVERYONE,
    ("GET", "/v1/devices/status"): EVERYONE,
    ("GET", "/v1/demonstrations"): EVERYONE,
    ("POST", "/v1/demonstrations"): "401 201 201 201 201 403 403 403 403 403",
    ("GET", "/v1/demonstrations/{ref}"): READ,
    ("PUT", "/v1/demonstrations/{ref}"): OWNER_WRITES,
    ("POST", "/v1/demonstrations/{ref}/freeze"): "401 200 200 404 403 403 404 200 404 404",
    ("POST", "/v1/demonstrations/{ref}/amendments"): "401 201 201 404 403 403 404 403 404 404",
    ("GET", "/v1/demonstrations/{ref}/versions"): READ,
    ("GET", "/v1/demonstrations/{ref}/versions/{number}"): READ,
    ("GET", "/v1/demonstrations/{ref}/participants"): READ,
    ("PUT", "/v1/demonstrations/{ref}/participants/{organisation}"): OWNER_WRITES,
    ("DELETE", "/v1/demonstrations/{ref}/participants/{organisation}"): OWNER_WRITES,
    ("GET", "/v1/demonstrations/{ref}/audit"): READ,
    ("GET", "/v1/demonstrations/{ref}/kpis"): READ,
    ("GET", "/v1/demonstrations/{ref}/comparison"): READ,
    ("GET", "/v1/demonstrations/{ref}/live"): READ,
    ("GET", "/v1/demonstrations/{ref}/report"): READ,
    ("GET", "/v1/demonstrations/{ref}/evidence"): READ,
    ("GET", "/v1/organisations"): ADMINS,
    ("POST", "/v1/organisations"): "401 201 403 403 403 403 403 403 403 403",
    ("GET", "/v1/api-keys"): ADMINS,
    ("POST", "/v1/api-keys"): "401 201 403 403 403 403 403 403 403 403",
    ("DELETE", "/v1/api-keys/{key_id}"): "401 204 403 403 403 403 403 403 403 403",
    ("GET", "/v1/audit"): ADMINS,
}


@dataclass
class World:
    client: TestClient
    database: Database
    tokens: dict[str, str]
    shared: str  # slug of a frozen demonstration of startup A, for the calls that change nothing

    def headers(self, caller: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[caller]}"} if caller in self.tokens else {}

    def demonstration(self, *, frozen: bool) -> str:
        """A new demonstration of startup A, shared with the partner startup, the factory and the evaluators."""
        demonstrations = DemonstrationRepository(self.database)
        created = demonstrations.create(DemonstrationPlan.model_validate(PANGYO_PLAN), actor=SETUP, owner="startup-a")
        for organisation in ("startup-c", "factory", "evaluators"):
            demonstrations.add_participant(created.id, organisation, actor=SETUP)
        if frozen:
            demonstrations.freeze(created.id, actor=SETUP)
        return created.slug


def registry_yaml() -> str:
    """The plan's devices, owned by startup A, and one device of startup B elsewhere."""
    profiles = {"cobot-01": "cobot_arm", "cnc-01": "cnc_machine", "amr-01": "amr", "conveyor-01": "conveyor"}
    profiles |= {"vision-01": "vision_inspection", "meter-01": "energy_meter", "env-01": "environment_sensor"}
    devices = [
        {
            "site": PANGYO_PLAN["site"],
            "line": PANGYO_PLAN["line"],
            "device": d,
            "profile": p,
            "organisation": "startup-a",
        }
        for d, p in profiles.items()
    ]
    devices.append(
        {"site": "시화", "line": "B-2", "device": "rival-01", "profile": "cobot_arm", "organisation": "startup-b"}
    )
    return yaml.safe_dump({"devices": devices}, allow_unicode=True)


@pytest.fixture
def world(empty_database: Database, influx_settings: InfluxSettings, tmp_path: Path) -> Iterator[World]:
    devices = tmp_path / "devices.yaml"
    devices.write_text(registry_yaml(), encoding="utf-8")
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
    settings = CollectorSettings(
        influx=influx_settings,
        devices_file=devices,
        database_url=empty_database.engine.url.render_as_string(hide_password=False),
        signing_key_file=tmp_path / "signing.key",
    )
    app = create_app(settings, database=empty_database)
    access = AccessRepository(empty_database)
    for slug in ("operator", "startup-a", "startup-b", "startup-c", "factory", "factory-2"):
        access.create_organisation(slug, slug, actor=SETUP)
    for slug in ("evaluators", "evaluators-2", "victims"):
        access.create_organisation(slug, slug, actor=SETUP)
    with TestClient(app) as client:
        world = World(client, empty_database, {}, "")
        world.shared = world.demonstration(frozen=True)
        elsewhere = world.demonstration(frozen=True)
        for caller, (role, organisation) in KEYS.items():
            scope = elsewhere if caller == "scoped" else None
            world.tokens[caller] = access.create_key(caller, role, organisation, actor=SETUP, demonstration=scope)[1]
        yield world


def _plan(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PANGYO_PLAN), **changes}


def _new_key(world: World) -> str:
    return AccessRepository(world.database).create_key("victim", Role.FACTORY_MANAGER, "victims", actor=SETUP)[0].key_id


# How to call each endpoint: (path, JSON body) for a caller, made fresh where the call changes something.
Call = Callable[[World], tuple[str, Any]]
CALLS: dict[tuple[str, str], Call] = {
    ("GET", "/health"): lambda w: ("/health", None),
    ("GET", "/ready"): lambda w: ("/ready", None),
    ("GET", "/v1/me"): lambda w: ("/v1/me", None),
    ("GET", "/v1/contract/schema"): lambda w: ("/v1/contract/schema", None),
    ("GET", "/v1/profiles"): lambda w: ("/v1/profiles", None),
    ("GET", "/v1/profiles/{profile_id}"): lambda w: ("/v1/profiles/cobot_arm", None),
    ("GET", "/v1/devices"): lambda w: ("/v1/devices", None),
    ("GET", "/v1/devices/status"): lambda w: ("/v1/devices/status", None),
    ("GET", "/v1/demonstrations"): lambda w: ("/v1/demonstrations", None),
    ("POST", "/v1/demonstrations"): lambda w: ("/v1/demonstrations", _plan()),
    ("GET", "/v1/demonstrations/{ref}"): lambda w: (f"/v1/demonstrations/{w.shared}", None),
    ("PUT", "/v1/demonstrations/{ref}"): lambda w: (
        f"/v1/demonstrations/{w.demonstration(frozen=False)}",
        _plan(name="Changed"),
    ),
    ("POST", "/v1/demonstrations/{ref}/freeze"): lambda w: (
        f"/v1/demonstrations/{w.demonstration(frozen=False)}/freeze",
        None,
    ),
    ("POST", "/v1/demonstrations/{ref}/amendments"): lambda w: (
        f"/v1/demonstrations/{w.demonstration(frozen=True)}/amendments",
        PANGYO_AMENDMENT,
    ),
    ("GET", "/v1/demonstrations/{ref}/versions"): lambda w: (f"/v1/demonstrations/{w.shared}/versions", None),
    ("GET", "/v1/demonstrations/{ref}/versions/{number}"): lambda w: (
        f"/v1/demonstrations/{w.shared}/versions/1",
        None,
    ),
    ("GET", "/v1/demonstrations/{ref}/participants"): lambda w: (f"/v1/demonstrations/{w.shared}/participants", None),
    ("PUT", "/v1/demonstrations/{ref}/participants/{organisation}"): lambda w: (
        f"/v1/demonstrations/{w.demonstration(frozen=True)}/participants/factory-2",
        None,
    ),
    ("DELETE", "/v1/demonstrations/{ref}/participants/{organisation}"): lambda w: (
        f"/v1/demonstrations/{w.demonstration(frozen=True)}/participants/factory",
        None,
    ),
    ("GET", "/v1/demonstrations/{ref}/audit"): lambda w: (f"/v1/demonstrations/{w.shared}/audit", None),
    ("GET", "/v1/demonstrations/{ref}/kpis"): lambda w: (f"/v1/demonstrations/{w.shared}/kpis", None),
    ("GET", "/v1/demonstrations/{ref}/comparison"): lambda w: (f"/v1/demonstrations/{w.shared}/comparison", None),
    ("GET", "/v1/demonstrations/{ref}/live"): lambda w: (f"/v1/demonstrations/{w.shared}/live", None),
    ("GET", "/v1/demonstrations/{ref}/report"): lambda w: (f"/v1/demonstrations/{w.shared}/report", None),
    ("GET", "/v1/demonstrations/{ref}/evidence"): lambda w: (f"/v1/demonstrations/{w.shared}/evidence", None),
    ("GET", "/v1/organisations"): lambda w: ("/v1/organisations", None),
    ("POST", "/v1/organisations"): lambda w: (
        "/v1/organisations",
        {"slug": f"new-{len(w.tokens)}-{id(w)}", "name": "N"},
    ),
    ("GET", "/v1/api-keys"): lambda w: ("/v1/api-keys", None),
    ("POST", "/v1/api-keys"): lambda w: (
        "/v1/api-keys",
        {"name": "Park", "role": "evaluator", "organisation": "evaluators"},
    ),
    ("DELETE", "/v1/api-keys/{key_id}"): lambda w: (f"/v1/api-keys/{_new_key(w)}", None),
    ("GET", "/v1/audit"): lambda w: ("/v1/audit", None),
}


def test_the_matrix_covers_every_endpoint(world: World) -> None:
    document = world.client.get("/openapi.json").json()
    operations = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert operations == set(MATRIX) == set(CALLS)


def test_every_caller_against_every_endpoint(world: World) -> None:
    failures = []
    organisations = 0
    for (method, route), expected in MATRIX.items():
        for caller, status in zip(CALLERS, expected.split(), strict=True):
            path, body = CALLS[(method, route)](world)
            if route == "/v1/organisations" and method == "POST":
                organisations += 1
                body = {"slug": f"new-org-{organisations}", "name": "New"}
            response = world.client.request(method, path, json=body, headers=world.headers(caller))
            if response.status_code != int(status):
                failures.append(
                    f"{caller:>15} {method} {path}: {response.status_code}, expected {status}: {response.text[:200]}"
                )
            elif status == "401":
                assert response.headers["www-authenticate"] == "Bearer"
    assert not failures, "\n".join(failures)


def test_what_a_caller_cannot_see_looks_exactly_like_what_does_not_exist(world: World) -> None:
    for caller in ("outsider", "other_factory", "other_evaluator", "scoped"):
        headers = world.headers(caller)
        for suffix in ("", "/versions", "/audit", "/kpis", "/comparison", "/live", "/participants"):
            hidden = world.client.get(f"/v1/demonstrations/{world.shared}{suffix}", headers=headers)
            missing = world.client.get(f"/v1/demonstrations/no-such-demo{suffix}", headers=headers)
            assert (hidden.status_code, missing.status_code) == (404, 404)
            assert hidden.json()["detail"].replace(world.shared, "X") == missing.json()["detail"].replace(
                "no-such-demo", "X"
            )
            assert hidden.json()["type"] == missing.json()["type"]


def test_lists_hold_only_what_the_caller_may_see(world: World) -> None:
    def slugs(caller: str) -> set[str]:
        return {d["slug"] for d in world.client.get("/v1/demonstrations", headers=world.headers(caller)).json()}

    def devices(caller: str, path: str = "/v1/devices") -> set[str]:
        return {d["device"] for d in world.client.get(path, headers=world.headers(caller)).json()}

    everything = slugs("admin")
    assert len(everything) == 2 and world.shared in everything
    assert slugs("owner") == slugs("factory") == slugs("evaluator") == slugs("partner") == everything
    assert slugs("outsider") == slugs("other_factory") == slugs("other_evaluator") == set()
    assert slugs("scoped") == everything - {world.shared}

    plan_devices = set(PANGYO_PLAN["devices"])
    assert devices("admin") == plan_devices | {"rival-01"}
    assert devices("owner") == devices("factory") == devices("evaluator") == plan_devices
    assert devices("outsider") == {"rival-01"}
    assert devices("other_factory") == devices("other_evaluator") == set()
    assert devices("outsider", "/v1/devices/status") == {"rival-01"}
    assert devices("other_factory", "/v1/devices/status") == set()


def test_a_revoked_or_forged_key_is_refused(world: World) -> None:
    keys = world.client.get("/v1/api-keys", headers=world.headers("admin")).json()
    (factory,) = [k["key_id"] for k in keys if k["name"] == "factory"]
    assert world.client.delete(f"/v1/api-keys/{factory}", headers=world.headers("admin")).status_code == 204
    refused = world.client.get("/v1/me", headers=world.headers("factory"))
    assert refused.status_code == 401 and "not valid" in refused.json()["detail"]
    token = world.tokens["owner"]
    for forged in (token[:-2] + "xx", token.replace("pt_", "pk_"), "pt_" + "0" * 12 + token[15:]):
        assert world.client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert world.client.get("/v1/me", headers={"X-API-Key": token}).json()["role"] == "startup"
    both = {"Authorization": f"Bearer {token}", "X-API-Key": world.tokens["admin"]}
    assert world.client.get("/v1/me", headers=both).status_code == 401  # which one is meant is a guess
    same = {"Authorization": f"Bearer {token}", "X-API-Key": token}
    assert world.client.get("/v1/me", headers=same).json()["role"] == "startup"
    assert world.client.get("/v1/me", headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_an_evaluator_freezes_but_never_alters_a_frozen_plan(world: World) -> None:
    headers = world.headers("evaluator")
    draft = world.demonstration(frozen=False)
    frozen = world.client.post(f"/v1/demonstrations/{draft}/freeze", headers=headers)
    assert frozen.status_code == 200 and frozen.json()["frozen"]
    assert world.client.put(f"/v1/demonstrations/{draft}", json=_plan(), headers=headers).status_code == 403
    amendment = world.client.post(f"/v1/demonstrations/{draft}/amendments", json=PANGYO_AMENDMENT, headers=headers)
    assert amendment.status_code == 403
    trail = world.client.get(f"/v1/demonstrations/{draft}/audit", headers=headers).json()["entries"]
    assert trail[0]["action"] == "plan.frozen" and trail[0]["actor"]["role"] == "evaluator"
    assert trail[0]["actor"]["organisation"] == "evaluators"

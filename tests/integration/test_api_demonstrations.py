"""The demonstrations API over HTTP, on SQLite and on the real PostgreSQL (``empty_database`` in conftest.py)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.sql import Database, DemonstrationRepository
from api.examples import PANGYO_AMENDMENT, PANGYO_PLAN
from api.main import create_app
from api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES
from collector.settings import CollectorSettings
from pilot_core.demonstration import DemonstrationPlan, plan_hash
from tests.api_support import admin_client


def settings_for(database: Database, tmp_path: Path) -> CollectorSettings:
    return CollectorSettings(
        devices_file=tmp_path / "no-devices.yaml",
        database_url=database.engine.url.render_as_string(hide_password=False),
    )


@pytest.fixture
def client(empty_database: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The API as `pilot api` builds it: from settings, migrating the empty database at start."""
    with admin_client(create_app(settings_for(empty_database, tmp_path))) as client:
        yield client


def plan(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PANGYO_PLAN), **changes}


def as_json(raw: dict[str, Any]) -> dict[str, Any]:
    """The plan as the API returns it: validated, defaults filled in."""
    return DemonstrationPlan.model_validate(raw).model_dump(mode="json")


def problem(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["instance"] == response.request.url.path
    if kind is not None:
        assert body["type"] == PROBLEM_TYPES + kind
    return body


def test_create_read_and_list(client: TestClient) -> None:
    created = client.post("/v1/demonstrations", json=PANGYO_PLAN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"].endswith(f"/v1/demonstrations/{body['id']}")
    assert {k: body[k] for k in ("slug", "version", "frozen", "frozen_at")} == {
        "slug": "pangyo-cobot-assembly-cell",
        "version": 1,
        "frozen": False,
        "frozen_at": None,
    }
    assert body["plan"] == as_json(PANGYO_PLAN)
    assert body["plan_hash"] == plan_hash(DemonstrationPlan.model_validate(PANGYO_PLAN))

    assert client.get(created.headers["location"]).json() == body
    assert client.get("/v1/demonstrations/pangyo-cobot-assembly-cell").json() == body

    named = client.post("/v1/demonstrations", params={"slug": "pangyo-2026"}, json=plan(name="Second cell"))
    assert named.status_code == 201 and named.json()["slug"] == "pangyo-2026"
    assert client.get("/v1/demonstrations").json() == [
        {
            "id": body["id"],
            "slug": "pangyo-cobot-assembly-cell",
            "name": "Pangyo cobot assembly cell",
            "name_ko": "판교 협동로봇 조립 셀",
            "organisation": None,
            "version": 1,
            "frozen": False,
        },
        {
            "id": named.json()["id"],
            "slug": "pangyo-2026",
            "name": "Second cell",
            "name_ko": "판교 협동로봇 조립 셀",
            "organisation": None,
            "version": 1,
            "frozen": False,
        },
    ]


def test_korean_names_make_korean_slugs(client: TestClient) -> None:
    korean = plan(name="판교 협동로봇 셀 2차 실증", site="판교", line="조립-2라인")
    created = client.post("/v1/demonstrations", json=korean)
    assert created.status_code == 201, created.text
    assert created.json()["slug"] == "판교-협동로봇-셀-2차-실증"
    found = client.get("/v1/demonstrations/판교-협동로봇-셀-2차-실증")
    assert found.status_code == 200
    assert found.json()["plan"]["name"] == "판교 협동로봇 셀 2차 실증"
    assert found.json()["plan"]["line"] == "조립-2라인"


def test_slugs_are_checked(client: TestClient) -> None:
    assert client.post("/v1/demonstrations", params={"slug": "cell-a"}, json=PANGYO_PLAN).status_code == 201
    taken = client.post("/v1/demonstrations", params={"slug": "cell-a"}, json=PANGYO_PLAN)
    assert "cell-a" in problem(taken, 409, "duplicate-slug")["detail"]
    problem(client.post("/v1/demonstrations", params={"slug": "Cell A"}, json=PANGYO_PLAN), 422, "invalid-slug")
    problem(client.post("/v1/demonstrations", params={"slug": "2026"}, json=PANGYO_PLAN), 422, "invalid-slug")


def test_a_draft_is_replaced_in_place(client: TestClient) -> None:
    created = client.post("/v1/demonstrations", json=PANGYO_PLAN).json()
    longer = plan(name="Pangyo cobot assembly cell, three weeks")
    replaced = client.put(f"/v1/demonstrations/{created['id']}", json=longer)
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["version"], replaced.json()["frozen"]) == (1, False)
    assert replaced.json()["plan"] == as_json(longer)
    assert replaced.json()["plan_hash"] != created["plan_hash"]
    assert client.get(f"/v1/demonstrations/{created['slug']}").json() == replaced.json()


def test_freezing_fixes_the_hash_and_refuses_replacement(client: TestClient) -> None:
    created = client.post("/v1/demonstrations", json=PANGYO_PLAN).json()
    frozen = client.post(f"/v1/demonstrations/{created['id']}/freeze")
    assert frozen.status_code == 200, frozen.text
    body = frozen.json()
    assert body["frozen"] and body["frozen_at"] is not None
    assert body["plan_hash"] == created["plan_hash"]
    assert client.post(f"/v1/demonstrations/{created['slug']}/freeze").json() == body  # again: nothing changes

    refused = client.put(f"/v1/demonstrations/{created['id']}", json=plan(name="Quiet edit"))
    detail = problem(refused, 409, "plan-frozen")["detail"]
    assert created["plan_hash"] in detail and "amend" in detail
    assert client.get(f"/v1/demonstrations/{created['id']}").json() == body


def test_an_amendment_needs_a_frozen_plan_and_a_reason(client: TestClient) -> None:
    created = client.post("/v1/demonstrations", json=PANGYO_PLAN).json()
    amendments = f"/v1/demonstrations/{created['id']}/amendments"
    problem(client.post(amendments, json=PANGYO_AMENDMENT), 409, "not-frozen-yet")
    client.post(f"/v1/demonstrations/{created['id']}/freeze")

    missing = problem(client.post(amendments, json={"plan": PANGYO_AMENDMENT["plan"]}), 422, "invalid-request")
    assert {"loc": ["body", "reason"], "msg": "Field required"} in missing["errors"]
    problem(client.post(amendments, json={**PANGYO_AMENDMENT, "reason": "   "}), 422, "amendment-needs-reason")

    amended = client.post(amendments, json=PANGYO_AMENDMENT)
    assert amended.status_code == 201, amended.text
    body = amended.json()
    assert (body["version"], body["frozen"]) == (2, True)
    assert body["plan"] == as_json(PANGYO_AMENDMENT["plan"]) and body["plan_hash"] != created["plan_hash"]
    assert amended.headers["location"].endswith(f"/v1/demonstrations/{created['id']}/versions/2")
    assert client.get(f"/v1/demonstrations/{created['id']}").json() == body


def test_versions_are_listed_and_kept(client: TestClient) -> None:
    created = client.post("/v1/demonstrations", json=PANGYO_PLAN).json()
    ref = f"/v1/demonstrations/{created['slug']}"
    client.post(f"{ref}/freeze")
    client.post(f"{ref}/amendments", json=PANGYO_AMENDMENT)

    versions = client.get(f"{ref}/versions").json()
    assert [(v["version"], v["frozen"], v["reason"]) for v in versions] == [
        (1, True, None),
        (2, True, PANGYO_AMENDMENT["reason"]),
    ]
    assert versions[0]["plan_hash"] == created["plan_hash"]
    assert all(v["frozen_at"] is not None and "plan" not in v for v in versions)

    first = client.get(f"{ref}/versions/1").json()
    assert first["plan"] == as_json(PANGYO_PLAN) and first["plan_hash"] == created["plan_hash"]
    assert client.get(f"{ref}/versions/2").json()["plan"] == as_json(PANGYO_AMENDMENT["plan"])
    assert "no plan version 3" in problem(client.get(f"{ref}/versions/3"), 404, "not-found")["detail"]
    problem(client.get(f"{ref}/versions/0"), 422, "invalid-request")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/demonstrations/4242", None),
        ("GET", "/v1/demonstrations/no-such-demonstration", None),
        ("GET", "/v1/demonstrations/99999999999999999999999999", None),  # beyond any integer column
        ("PUT", "/v1/demonstrations/4242", PANGYO_PLAN),
        ("POST", "/v1/demonstrations/4242/freeze", None),
        ("POST", "/v1/demonstrations/4242/amendments", PANGYO_AMENDMENT),
        ("GET", "/v1/demonstrations/4242/versions", None),
        ("GET", "/v1/demonstrations/4242/versions/1", None),
    ],
)
def test_unknown_demonstrations_are_404_problems(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    found = problem(client.request(method, path, json=body), 404, "not-found")
    assert found["title"] == "Not found" and "no demonstration" in found["detail"]


def test_an_invalid_plan_is_a_422_problem_listing_every_error(client: TestClient) -> None:
    broken = plan(
        windows=[{**PANGYO_PLAN["windows"][0], "start": "2026-10-05T00:00:00"}, PANGYO_PLAN["windows"][1]],  # naive
        confidence_level=0.5,
        colour="blue",
    )
    body = problem(client.post("/v1/demonstrations", json=broken), 422, "invalid-request")
    assert body["title"] == "Invalid request"
    locations = [tuple(error["loc"]) for error in body["errors"]]
    assert ("body", "windows", 0, "start") in locations
    assert ("body", "confidence_level") in locations
    assert ("body", "colour") in locations
    assert body["detail"].startswith(f"{len(locations)} invalid values: ")
    assert all(set(error) == {"loc", "msg"} for error in body["errors"])  # never the refused input
    assert client.get("/v1/demonstrations").json() == []

    # Truncated JSON cannot be parsed at all: 400, as docs/access.md says, not a 422 about some value.
    unparsable = client.post("/v1/demonstrations", content=b"{", headers={"content-type": "application/json"})
    assert "the body is not valid JSON: EOF while parsing" in problem(unparsable, 400)["detail"]


def test_the_openapi_document_has_the_examples_and_the_problem_schema(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    for path, method in (("/v1/demonstrations", "post"), ("/v1/demonstrations/{ref}", "put")):
        examples = paths[path][method]["requestBody"]["content"]["application/json"]["examples"]
        assert examples["pangyo"]["value"] == PANGYO_PLAN, (path, method)
    amendment = paths["/v1/demonstrations/{ref}/amendments"]["post"]["requestBody"]["content"]["application/json"]
    assert amendment["examples"]["power-cut"]["value"] == PANGYO_AMENDMENT

    declared = {
        (path, method): set(operation["responses"])
        for path, item in paths.items()
        for method, operation in item.items()
        if "demonstrations" in operation.get("tags", [])
    }
    assert len(declared) == 12
    body_errors = {"400", "413", "415"}  # unparsable, too large, not sent as JSON
    assert declared[("/v1/demonstrations", "post")] == {"201", "401", "403", "409", "422"} | body_errors
    assert declared[("/v1/demonstrations/{ref}", "put")] == {"200", "401", "403", "404", "409", "422"} | body_errors
    assert (
        declared[("/v1/demonstrations/{ref}/amendments", "post")]
        == {"201", "401", "403", "404", "409", "422"} | body_errors
    )
    assert all("404" in statuses for (path, _), statuses in declared.items() if "{ref}" in path)
    assert all("401" in statuses for statuses in declared.values())
    assert {"api_key", "api_key_header"} <= set(document["components"]["securitySchemes"])
    conflict = paths["/v1/demonstrations/{ref}"]["put"]["responses"]["409"]
    assert conflict["content"] == {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert "amend" in conflict["description"]

    schemas = document["components"]["schemas"]
    assert set(schemas["Problem"]["required"]) == {"title", "status"}
    assert schemas["Problem"]["examples"][0]["type"] == PROBLEM_TYPES + "plan-frozen"
    assert schemas["Demonstration"]["examples"][0]["plan"] == PANGYO_PLAN
    assert paths["/v1/demonstrations"]["post"]["tags"] == ["demonstrations"]


def test_a_database_passed_in_is_the_one_used(empty_database: Database, tmp_path: Path) -> None:
    unused = tmp_path / "unused.db"
    settings = settings_for(empty_database, tmp_path).model_copy(update={"database_url": f"sqlite:///{unused}"})
    client = admin_client(create_app(settings, database=empty_database))
    created = client.post("/v1/demonstrations", json=PANGYO_PLAN).json()
    assert DemonstrationRepository(empty_database).get(created["id"]).plan_hash == created["plan_hash"]
    assert not unused.exists()


def test_the_complete_example_plan_is_taken_and_workdays_are_always_shown(client: TestClient) -> None:
    example = (Path(__file__).resolve().parents[2] / "examples" / "plan.json").read_bytes()
    created = client.post("/v1/demonstrations", content=example, headers={"content-type": "application/json"})
    assert created.status_code == 201, created.text
    assert created.json()["plan"] == as_json(DemonstrationPlan.model_validate_json(example).model_dump(mode="json"))

    without = plan(name="No workdays sent")
    del without["calendar"]["workdays"]
    shown = client.post("/v1/demonstrations", json=without)
    assert shown.status_code == 201, shown.text
    assert shown.json()["plan"]["calendar"]["workdays"] == ["mon", "tue", "wed", "thu", "fri"]

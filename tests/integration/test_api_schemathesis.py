"""Schemathesis over the whole OpenAPI document: whatever it sends, the API never answers 5xx, and every answer
has a status, media type and body that the document declares.

Every check runs but one: that schema-valid requests are accepted. A plan the schema allows may still be refused,
rightly, with 422 for a rule JSON Schema cannot state (windows that overlap, a target's direction that worsens its
KPI, an organisation that does not exist); those refusals are themselves checked to be documented problems.

The API runs on a SQLite database and the real InfluxDB, called with an admin key so that generated requests
reach every operation's logic instead of stopping at authentication; a registered device and a demonstration
exist, so generated references sometimes hit something. One test per operation of the document.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import positive_data_acceptance

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from api.examples import PANGYO_PLAN
from api.main import create_app
from collector.settings import CollectorSettings
from tests.api_support import key_headers

EXAMPLES_PER_OPERATION = 60


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """Every operation of the document, from an app on an in-memory database at collection time, with each way
    of generating requests for it: schema-valid ones, and ones that break the schema on purpose (which needs
    something to break: a parameter or a body)."""
    app = create_app(CollectorSettings(database_url="sqlite://", devices_file=Path("no-devices.yaml")))
    document = app.openapi()
    app.state.pilot.database.dispose()
    cases = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            breakable = bool(operation.get("parameters")) or "requestBody" in operation
            cases += [(method.upper(), path, mode) for mode in GenerationMode if breakable or mode.value == "positive"]
    return sorted(cases)


@pytest.fixture(scope="module")
def api(
    influxdb: local_services.InfluxService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BaseSchema, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("schemathesis")
    influx = InfluxSettings(url=influxdb.url, database="schemathesis")
    with InfluxClient(influx) as client:
        client.ensure_database()
    devices = folder / "devices.yaml"
    devices.write_text(
        "devices:\n"
        + "".join(
            f"  - {{site: 판교, line: 조립-1라인, device: {d}, profile: cobot_arm, organisation: operator}}\n"
            for d in PANGYO_PLAN["devices"]
        ),
        encoding="utf-8",
    )
    app = create_app(
        CollectorSettings(
            influx=influx,
            devices_file=devices,
            database_url=f"sqlite:///{folder / 'pilot.db'}",
            signing_key_file=folder / "signing.key",
        )
    )
    headers = key_headers(app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema, headers
    app.state.pilot.database.dispose()


@pytest.mark.parametrize(("method", "path", "mode"), _operations(), ids=str)
def test_the_api_never_fails_and_keeps_to_its_document(
    api: tuple[BaseSchema, dict[str, str]], method: str, path: str, mode: GenerationMode
) -> None:
    """Positive requests fit the schema; negative ones break it on purpose and must be refused with a 4xx."""
    schema, headers = api
    operation = schema[path][method]

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,  # the same requests on every run, so a failure in CI reproduces here
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    call()

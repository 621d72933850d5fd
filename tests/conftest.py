"""Fixtures that start private Mosquitto and InfluxDB servers on free ports.

A missing binary is an error, never a skip: the tests that claim the pipeline
works must run against real servers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings

_counter = itertools.count()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_services.LocalService]:
    service = local_services.mosquitto(tmp_path_factory.mktemp("mosquitto"))
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_services.InfluxService]:
    service = local_services.influxdb(tmp_path_factory.mktemp("influxdb"))
    service.start()
    yield service
    service.stop()


@pytest.fixture
def mqtt_settings(mosquitto: local_services.LocalService) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=mosquitto.port)


@pytest.fixture
def influx_settings(influxdb: local_services.InfluxService) -> Iterator[InfluxSettings]:
    """A fresh database per test, dropped afterwards."""
    settings = InfluxSettings(url=influxdb.url, database=f"test_{next(_counter)}")
    yield settings
    with InfluxClient(settings) as client:
        client.query(f'DROP DATABASE "{settings.database}"', method="POST", database=None)


@pytest.fixture
def unique_id(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40]}-{next(_counter)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.services)

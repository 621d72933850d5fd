"""TLS to a real Mosquitto that requires client certificates, and to a real InfluxDB over https."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxError, InfluxSettings, WriteOutcome
from adapters.mqtt import MqttConnectError, MqttSettings, connect_and_wait, new_client
from collector.service import Collector
from pilot_core.contract import topic_for
from pilot_core.registry import DeviceEntry, DeviceRegistry
from tests.certificates import Certificates, make_certificates
from tests.support import collector_settings, count_points, publish_all, running_collector, wait_until

TS = 1_793_700_000_000


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[local_services.LocalService]:
    tls = local_services.ServerTls(certs.server_cert, certs.server_key, certs.ca_file, require_certificate=True)
    broker = local_services.mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), tls=tls)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def https_influx(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[local_services.InfluxService]:
    service = local_services.influxdb(
        tmp_path_factory.mktemp("influxdb-https"), https=local_services.ServerTls(certs.server_cert, certs.server_key)
    )
    service.start()
    yield service
    service.stop()


def mutual(broker: local_services.LocalService, certs: Certificates, **changes: Path | None) -> MqttSettings:
    """Settings with the CA and the client certificate, less or other ``changes``."""
    values = {"ca_file": certs.ca_file, "cert_file": certs.client_cert, "key_file": certs.client_key, **changes}
    return MqttSettings.model_validate({"port": broker.port, **values})


def test_the_collector_collects_over_mutual_tls_into_influxdb_over_https(
    tls_broker: local_services.LocalService,
    https_influx: local_services.InfluxService,
    certs: Certificates,
    unique_id: str,
) -> None:
    assert https_influx.url.startswith("https://")
    influx = InfluxSettings(url=https_influx.url, database=f"tls_{unique_id[-8:]}", ca_file=certs.ca_file)
    registry = DeviceRegistry(
        [DeviceEntry(site="시화", line="L1", device=unique_id, profile="conveyor")], load_profiles()
    )
    mqtt = mutual(tls_broker, certs)
    with running_collector(collector_settings(mqtt, influx, f"{unique_id}-c"), registry), InfluxClient(influx) as db:
        topic = topic_for("시화", "L1", unique_id, "telemetry")
        payloads = [
            json.dumps({"seq": i, "ts": TS + i, "metrics": {"belt_speed": 2.0, "jam_detected": False}}).encode()
            for i in range(30)
        ]
        publish_all(mqtt, [(topic, p) for p in payloads], f"{unique_id}-p")
        wait_until(lambda: count_points(db, "telemetry_conveyor") == 30, what="30 points over https")
        db.query(f'DROP DATABASE "{influx.database}"', method="POST", database=None)


def test_the_collector_without_a_client_certificate_is_refused_clearly(
    tls_broker: local_services.LocalService, influx_settings: InfluxSettings, certs: Certificates, unique_id: str
) -> None:
    registry = DeviceRegistry([DeviceEntry(site="s", line="l", device=unique_id, profile="conveyor")], load_profiles())
    settings = collector_settings(mutual(tls_broker, certs, cert_file=None, key_file=None), influx_settings, unique_id)
    collector = Collector(settings, registry)
    try:
        with pytest.raises(MqttConnectError, match=r"closed the connection before accepting it .*client certificate"):
            collector.start()
    finally:
        collector.stop()


def test_a_client_certificate_from_another_ca_and_an_untrusted_broker_are_refused(
    tls_broker: local_services.LocalService, certs: Certificates, unique_id: str
) -> None:
    stranger = mutual(tls_broker, certs, cert_file=certs.stranger_cert, key_file=certs.stranger_key)
    with pytest.raises(MqttConnectError, match="may not trust our client certificate"):
        connect_and_wait(new_client(stranger, unique_id), stranger)
    wrong_ca = mutual(tls_broker, certs, ca_file=certs.other_ca_file)
    with pytest.raises(MqttConnectError, match=r"TLS .* failed: the server's certificate was not trusted"):
        connect_and_wait(new_client(wrong_ca, unique_id), wrong_ca)
    plain = MqttSettings(port=tls_broker.port)  # TLS off, against a TLS listener
    with pytest.raises(MqttConnectError):
        connect_and_wait(new_client(plain, unique_id), plain, timeout_s=3)


def test_influx_client_writes_and_queries_over_https_with_the_ca_and_refuses_without(
    https_influx: local_services.InfluxService, certs: Certificates, unique_id: str
) -> None:
    trusted = InfluxSettings(url=https_influx.url, database=f"https_{unique_id[-8:]}", ca_file=certs.ca_file)
    with InfluxClient(trusted) as client:
        assert client.ensure_database()
        assert client.write(["m,device=a v=1i 1000", "m,device=a v=2i 2000"]).outcome is WriteOutcome.WRITTEN
        assert client.query('SELECT "v" FROM "m"')[0].values == [[1000, 1], [2000, 2]]
        client.query(f'DROP DATABASE "{trusted.database}"', method="POST", database=None)
    for untrusted in (
        trusted.model_copy(update={"ca_file": None}),
        trusted.model_copy(update={"ca_file": certs.other_ca_file}),
    ):
        with InfluxClient(untrusted) as client:
            with pytest.raises(InfluxError, match="the server's certificate was not trusted"):
                client.ping()
            result = client.write(["m v=1i 1000"])
            assert result.outcome is WriteOutcome.RETRY
            assert "influx.ca_file" in result.message

"""TLS settings and secrets in settings, without servers."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, new_client
from adapters.tls import TlsConfigError, client_context
from collector.settings import CollectorSettings
from pilot.cli import app
from tests.certificates import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_the_context_trusts_the_ca_and_presents_the_client_certificate(certs: Certificates) -> None:
    context = client_context("mqtt", certs.ca_file, certs.client_cert, certs.client_key)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "pilot test CA"),),)]
    insecure = client_context("influx", verify=False)
    assert insecure.verify_mode is ssl.CERT_NONE


def test_unusable_tls_files_are_named(tmp_path: Path, certs: Certificates) -> None:
    with pytest.raises(TlsConfigError, match=r"mqtt.ca_file /nowhere/ca.pem does not exist"):
        client_context("mqtt", "/nowhere/ca.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match=r"influx.ca_file .*garbage.pem holds no usable PEM certificate"):
        client_context("influx", garbage)
    with pytest.raises(TlsConfigError, match=r"mqtt.cert_file .*client.pem with key .*server.key cannot be used"):
        client_context("mqtt", certs.ca_file, certs.client_cert, certs.server_key)
    with pytest.raises(TlsConfigError, match=r"key_file is set without mqtt\.cert_file"):
        client_context("mqtt", certs.ca_file, None, certs.client_key)
    with pytest.raises(TlsConfigError, match=r"mqtt\.cert_file /nowhere/c\.pem does not exist"):
        new_client(MqttSettings(cert_file=Path("/nowhere/c.pem")), "x")


def test_influx_credentials_in_the_url_move_out_of_it() -> None:
    settings = InfluxSettings(url="https://pilot:s%40cret@influx.plant.local:8086/")
    assert settings.url == "https://influx.plant.local:8086/"
    assert settings.username == "pilot"
    assert settings.password is not None and settings.password.get_secret_value() == "s@cret"
    assert "s@cret" not in repr(settings) and "s%40cret" not in repr(settings)
    with pytest.raises(ValidationError, match="not both") as both:
        InfluxSettings(url="http://pilot:hunter2@influx:8086", password=SecretStr("hunter3"))
    assert "hunter2" not in str(both.value) and "hunter3" not in str(both.value)


def test_credentials_as_url_query_parameters_are_refused() -> None:
    with pytest.raises(ValidationError, match="takes no query") as query:
        InfluxSettings(url="http://influx:8086/?u=pilot&p=hunter2")
    assert "hunter2" not in str(query.value)


def test_setting_errors_do_not_echo_the_values() -> None:
    with pytest.raises(ValidationError) as influx:
        InfluxSettings(url="http://pilot:hunter2@influx:8086", timeout_s="hunter2")  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as mqtt:
        MqttSettings(password=SecretStr("hunter2"), port="hunter2")  # type: ignore[arg-type]
    assert "hunter2" not in str(influx.value) and "hunter2" not in str(mqtt.value)


def test_tls_files_with_a_plain_http_url_are_refused() -> None:
    with pytest.raises(ValidationError, match="cert_file set, but the url is not https"):
        InfluxSettings(url="http://influx:8086", cert_file=Path("client.pem"))


def test_an_https_client_is_built_from_the_settings(certs: Certificates) -> None:
    settings = InfluxSettings(
        url="https://127.0.0.1:1", ca_file=certs.ca_file, cert_file=certs.client_cert, key_file=certs.client_key
    )
    with InfluxClient(settings):
        pass
    with pytest.raises(TlsConfigError, match=r"influx\.ca_file"):
        InfluxClient(InfluxSettings(url="https://127.0.0.1:1", ca_file=Path("/nowhere.pem")))


def test_the_agent_command_names_an_unusable_tls_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOT_MQTT__CA_FILE", str(tmp_path / "missing-ca.pem"))
    where = ["--site", "판교", "--line", "L1", "--profile", "conveyor", "--outbox", str(tmp_path / "outbox")]
    result = CliRunner().invoke(app, ["agent", "conveyor-01", *where, "--count", "1"])
    assert result.exit_code == 1
    assert "missing-ca.pem does not exist" in result.output and "Traceback" not in result.output


def test_a_database_password_stays_out_of_the_settings_repr() -> None:
    settings = CollectorSettings(database_url="postgresql+psycopg://pilot:s3cret-pw@db/pilot")
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings)

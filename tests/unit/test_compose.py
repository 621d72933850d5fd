"""docker-compose.yml and the files it uses, checked without Docker: against the Compose specification's
schema, then for what the schema cannot see (variables, mounts, dependencies, health checks), and against
what the code expects (settings, broker files, Grafana provisioning).

Pure unit tests; tests/integration/test_compose_stack.py runs the stack's broker set-up for real.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from adapters.broker_accounts import ACL_FILE, DEFAULT_BROKER_DIR, PASSWORD_FILE
from collector.settings import CollectorSettings
from tests.compose_support import (
    ENV_EXAMPLE,
    INIT_SCRIPT,
    ROOT,
    MissingVariable,
    compose,
    env_example,
    environment,
    interpolate,
    mosquitto_directives,
    mount_source,
    mounts,
    services,
    stack_env,
    strings,
    variables_used,
)

SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
GRAFANA = ROOT / "deploy" / "grafana"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SECRETS = {name for name in env_example() if name.endswith(("_PASSWORD", "_TOKEN"))}
INIT_ACCOUNT = re.compile(r"^account (?P<name>\S+) (?P<role>\S+) (?P<variable>\S+)", re.MULTILINE)


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # The schema names draft-07 by an https URL that jsonschema's lookup does not know: pick the draft by name.
    assert schema["$schema"].split("://", 1)[1].rstrip("#") == "json-schema.org/draft-07/schema"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def built_services() -> dict[str, dict[str, Any]]:
    """The services that run the `pilot` image built from the Dockerfile."""
    return {name: service for name, service in services().items() if "build" in service}


def init_accounts() -> dict[str, tuple[str, str]]:
    """username → (role, password variable) of the accounts deploy/init/init.sh makes."""
    text = INIT_SCRIPT.read_text(encoding="utf-8")
    return {m["name"]: (m["role"], m["variable"]) for m in INIT_ACCOUNT.finditer(text)}


def variable_of(raw: str) -> str:
    """The variable a value like ${NAME:?message} is made of."""
    names = variables_used(raw)
    assert len(names) == 1, raw
    return names.pop()


# --- the specification ----------------------------------------------------------------------------------------


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_catches_a_broken_file() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["collector"]["restart_policy"] = "always"  # not a service key
    broken["services"]["api"]["depends_on"]["influxdb"]["condition"] = "service_ready"
    broken["services"]["mosquitto"]["healthcheck"]["retries"] = [5]
    errors = schema_errors(broken)
    assert len(errors) == 3, errors
    assert any("restart_policy" in e for e in errors)


# --- what the schema cannot see -------------------------------------------------------------------------------


def test_every_variable_used_is_in_env_example_and_every_secret_is_required() -> None:
    used, example = variables_used(compose()), env_example()
    assert used - set(example) == set(), "used by docker-compose.yml, missing from .env.example"
    assert set(example) - used == set(), "in .env.example, used nowhere"
    assert {
        "MQTT_COLLECTOR_PASSWORD", "MQTT_SIMULATOR_PASSWORD", "MQTT_HEALTHCHECK_PASSWORD",
        "INFLUX_TOKEN", "INFLUXDB_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
    } == SECRETS  # fmt: skip
    for text in strings(compose()):
        for name in variables_used(text) & SECRETS:
            # ${NAME:?…}: no default password, and Compose stops with the message while .env lacks it.
            assert re.search(rf"\$\{{{name}:\?[^}}]*\.env", text), text
    for name in SECRETS:
        assert example[name] == "", f".env.example must not hold a usable {name}"
    for text in strings(compose()):
        for name in variables_used(text) - SECRETS:
            default = re.search(rf"\$\{{{name}:-([^}}]*)\}}", text)
            assert default is not None and default.group(1) == example[name], (name, text)


def test_without_a_filled_env_compose_stops_with_the_variable_named() -> None:
    collector = services()["collector"]
    with pytest.raises(MissingVariable, match=r"MQTT_COLLECTOR_PASSWORD: set MQTT_COLLECTOR_PASSWORD in \.env"):
        environment(collector, {**stack_env(), "MQTT_COLLECTOR_PASSWORD": ""})
    assert environment(collector, stack_env())["PILOT_INFLUX__URL"] == "http://influxdb:8086"


def test_env_stays_out_of_git_and_out_of_the_image() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ENV_EXAMPLE.is_file()


def test_host_paths_exist_and_named_volumes_are_declared_and_used() -> None:
    declared = set(compose()["volumes"])
    named = set()
    for name, service in services().items():
        for mount in mounts(service):
            if mount.is_bind:
                assert (ROOT / mount.source).exists(), f"{name} mounts {mount.source}, which is not in the repository"
                assert mount.read_only, f"{name} may write to the checkout through {mount.source}"
            else:
                assert mount.source in declared, f"{name} mounts the undeclared volume {mount.source}"
                named.add(mount.source)
    assert named == declared, "declared volumes nobody mounts"


def test_dependencies_wait_for_what_they_need_and_every_long_runner_has_a_health_check() -> None:
    every = services()
    for name, service in every.items():
        if service.get("restart") == "unless-stopped" and "simulate" not in service.get("command", []):
            assert "healthcheck" in service, f"{name} runs for good but says nothing of its health"
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in every, (name, dependency)
            target = every[dependency]
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency} to be healthy, which it never is"
            if rule["condition"] == "service_completed_successfully":
                assert target["restart"] == "no", f"{name} waits for {dependency} to end, which it never does"
            if not service.get("profiles"):
                assert not target.get("profiles"), f"{name} always runs but needs {dependency}, a profile's"
    # Whatever reads the broker's accounts or the registry starts after the init made them.
    for name in ("mosquitto", "collector", "api"):
        assert every[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert every["collector"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"


def test_the_demo_profile_simulates_the_example_line_through_the_publisher_account() -> None:
    every = services()
    profiled = {name: s for name, s in every.items() if s.get("profiles")}
    assert set(profiled) == {"simulator-backfill", "simulator"}
    publisher = [name for name, (role, _) in init_accounts().items() if role == "publisher"]
    for name, service in profiled.items():
        assert service["profiles"] == ["demo"]
        assert service["command"][:3] == ["pilot", "simulate", "pangyo_cobot_cell"], name
        assert environment(service, stack_env())["PILOT_MQTT__USERNAME"] in publisher
    # Both publish as pilot-simulator-<scenario>: the live one starts once the backfill is over.
    assert every["simulator"]["depends_on"]["simulator-backfill"]["condition"] == "service_completed_successfully"
    assert "--realtime" in every["simulator"]["command"]
    # The backfill waits until the collector is subscribed, or what it sends first would go nowhere.
    assert every["simulator-backfill"]["depends_on"]["collector"]["condition"] == "service_healthy"
    assert "pilot_collector_healthy 1.0" in str(every["collector"]["healthcheck"]["test"])  # connected, too
    # The line simulated is the one the init registers.
    assert mount_source(every["init"], "/opt/pilot/demo-devices.yaml") == "./examples/devices.yaml"


# --- what the code expects ------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PILOT_* variables from the caller's shell, and no ./pilot.yaml picked up by accident."""
    for name in list(os.environ):
        if name.upper().startswith("PILOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def nested(variables: dict[str, str]) -> dict[str, Any]:
    """PILOT_MQTT__HOST=x as {"mqtt": {"host": "x"}}, the way the settings read the environment."""
    document: dict[str, Any] = {}
    for key, value in variables.items():
        *parents, leaf = key.removeprefix("PILOT_").lower().split("__")
        node = document
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return document


@pytest.mark.parametrize("name", sorted(built_services()))
def test_every_pilot_variable_is_a_collector_setting(
    name: str, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(built_services()[name], stack_env())
    pilot_variables = {k: v for k, v in env.items() if k.startswith("PILOT_")}
    assert pilot_variables, f"{name} sets no PILOT_* variables"
    # The settings class refuses unknown keys (extra="forbid"), also in its nested mqtt and influx sections.
    expected = CollectorSettings.model_validate(nested(pilot_variables))
    for key, value in pilot_variables.items():
        monkeypatch.setenv(key, value)
    assert CollectorSettings.load() == expected  # and the environment is read as these values
    if "PILOT_MQTT__HOST" in pilot_variables:
        assert (expected.mqtt.host, expected.mqtt.port) == ("mosquitto", 1883)
    if "PILOT_INFLUX__URL" in pilot_variables:
        assert expected.influx.url == "http://influxdb:8086"
        assert expected.influx.password is not None
        assert expected.influx.password.get_secret_value() == stack_env()["INFLUX_TOKEN"]


def test_the_init_and_the_clients_agree_on_the_accounts() -> None:
    every, env = services(), stack_env()
    accounts = init_accounts()
    assert accounts == {
        "pilot-collector": ("collector", "MQTT_COLLECTOR_PASSWORD"),
        "simulator": ("publisher", "MQTT_SIMULATOR_PASSWORD"),
        "pilot-healthcheck": ("monitor", "MQTT_HEALTHCHECK_PASSWORD"),
    }
    init_raw = every["init"]["environment"]
    for _, variable in accounts.values():
        assert variable_of(init_raw[variable]) == variable  # the init is given each password from .env
    for name in ("collector", "simulator-backfill", "simulator"):
        raw = every[name]["environment"]
        _, variable = accounts[environment(every[name], env)["PILOT_MQTT__USERNAME"]]
        assert variable_of(raw["PILOT_MQTT__PASSWORD"]) == variable, name
    # The collector's account grants its heartbeat and dead letters from the same settings it runs with.
    init_env, collector_env = environment(every["init"], env), environment(every["collector"], env)
    # And its Sparkplug host's topics from the same Sparkplug settings.
    for key in (
        "PILOT_CLIENT_ID", "PILOT_DEAD_LETTER_TOPIC", "PILOT_DEVICES_FILE",
        "PILOT_SPARKPLUG__ENABLED", "PILOT_SPARKPLUG__HOST_ID",
    ):  # fmt: skip
        assert init_env[key] == collector_env[key], key
    # The broker makes the username the client id: the collector's heartbeat topic must use that name.
    assert collector_env["PILOT_CLIENT_ID"] == collector_env["PILOT_MQTT__USERNAME"]
    # The broker's health check logs in as the monitor, with the password the init gave it.
    check = " ".join(every["mosquitto"]["healthcheck"]["test"])
    assert '-u pilot-healthcheck -P "$$MQTT_HEALTHCHECK_PASSWORD"' in check
    assert variable_of(every["mosquitto"]["environment"]["MQTT_HEALTHCHECK_PASSWORD"]) == "MQTT_HEALTHCHECK_PASSWORD"


def test_mosquitto_conf_matches_the_mounts_and_the_files_pilot_devices_writes() -> None:
    every, env = services(), stack_env()
    broker, init = every["mosquitto"], every["init"]
    settings = dict(mosquitto_directives())
    single = [directive for directive, _ in mosquitto_directives() if directive != "log_type"]
    assert len(single) == len(set(single)), "a directive given twice: only the last would count"
    assert settings["listener"] == "1883"
    assert any(str(port).endswith(":1883") for port in broker["ports"])
    assert environment(every["collector"], env)["PILOT_MQTT__PORT"] == "1883"
    assert mount_source(broker, "/mosquitto/config/mosquitto.conf") == "./deploy/mosquitto/mosquitto.conf"
    # Accounts only, from the files `pilot devices` writes, in the volume the init writes them to.
    assert settings["allow_anonymous"] == "false"
    password_file, acl_file = PurePosixPath(settings["password_file"]), PurePosixPath(settings["acl_file"])
    assert (password_file.name, acl_file.name) == (PASSWORD_FILE, ACL_FILE)
    assert password_file.parent == acl_file.parent
    volume = mount_source(broker, str(password_file.parent))
    assert volume == "broker-auth"
    assert next(m for m in mounts(broker) if m.source == volume).read_only
    init_dir = PurePosixPath(init["working_dir"]) / environment(init, env).get("BROKER_DIR", str(DEFAULT_BROKER_DIR))
    assert mount_source(init, str(init_dir)) == volume
    # No account can take another's client id, and with it the session the broker keeps for it.
    assert settings["use_username_as_clientid"] == "true"
    # Sessions and queued messages outlive the container; queues are large enough for an outage.
    assert settings["persistence"] == "true"
    assert mount_source(broker, settings["persistence_location"].rstrip("/")) == "mosquitto-data"
    assert int(settings["max_queued_messages"]) >= 100_000
    # Saved after a number of changes, not of seconds: what a crash loses is bounded (docs/deploy.md).
    assert settings["autosave_on_changes"] == "true"
    assert settings["autosave_interval"] == "1000"


def test_the_init_writes_the_broker_files_as_their_owner_in_volumes_the_image_prepares() -> None:
    init = services()["init"]
    assert init["user"] == "1883:1883"  # eclipse-mosquitto's uid and gid: Mosquitto owns what it reads
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for mount in mounts(init):
        if not mount.is_bind:
            # A new volume takes its owner from the image's folder: it must exist, the init's own.
            assert re.search(rf"mkdir -p [^\n]*{re.escape(mount.target)}(\s|$)", dockerfile), mount.target
            assert re.search(rf"chown 1883:1883 [^\n]*{re.escape(mount.target)}(\s|$)", dockerfile), mount.target
    assert init["command"] == ["sh", "/opt/pilot/init.sh"]
    assert mount_source(init, "/opt/pilot/init.sh") == "./deploy/init/init.sh"


def grafana_file(relative: str) -> tuple[str, dict[str, Any]]:
    path = GRAFANA / "provisioning" / relative
    text = path.read_text(encoding="utf-8")
    return text, yaml.safe_load(text)


def test_grafana_provisioning_is_configured_by_compose_and_reads_the_bundled_influxdb() -> None:
    every, env = services(), stack_env()
    grafana = every["grafana"]
    grafana_env = environment(grafana, env)
    assert mount_source(grafana, "/etc/grafana/provisioning") == "./deploy/grafana/provisioning"
    text, datasources = grafana_file("datasources/pilot-influxdb.yaml")
    # Grafana expands ${NAME} in provisioning files from its own environment: each must be set there.
    assert variables_used(datasources) == {
        "PILOT_GRAFANA_INFLUX_URL", "PILOT_GRAFANA_INFLUX_DATABASE", "PILOT_GRAFANA_INFLUX_TOKEN"
    }  # fmt: skip
    assert variables_used(datasources) <= set(grafana_env)
    (source,) = yaml.safe_load(interpolate(text, grafana_env))["datasources"]
    assert (source["uid"], source["type"], source["jsonData"]["version"]) == ("pilot-influxdb", "influxdb", "InfluxQL")
    # The URL is the influxdb service on its container port; the database is the bucket its init made.
    assert source["url"] == "http://influxdb:8086"
    assert any(str(port).endswith(":8086") for port in every["influxdb"]["ports"])
    influxdb_env = environment(every["influxdb"], env)
    assert source["jsonData"]["dbName"] == influxdb_env["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert source["jsonData"]["dbName"] == environment(every["collector"], env)["PILOT_INFLUX__DATABASE"]
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"] == f"Token {influxdb_env['DOCKER_INFLUXDB_INIT_ADMIN_TOKEN']}"
    # The dashboards provider reads the folder compose mounts the committed dashboards at.
    _, dashboards = grafana_file("dashboards/pilot.yaml")
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert mount_source(grafana, provider["options"]["path"]) == "./deploy/grafana/dashboards"
    assert list((GRAFANA / "dashboards").glob("*.json")), "no dashboards to provision"


def test_the_deploy_doc_names_every_service_volume_and_port() -> None:
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    for name in [*services(), *compose()["volumes"], *(k for k in env_example() if k.endswith("_PORT"))]:
        assert f"`{name}`" in doc, f"docs/deploy.md does not mention {name}"

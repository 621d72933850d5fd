"""`pilot devices` without a broker: what it writes, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from adapters.broker_accounts import BrokerFiles
from adapters.catalog import load_profiles, load_registry
from pilot.cli import app
from pilot_core.broker_accounts import verify_password
from pilot_core.site_bridge import SiteBridge


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    where = ["--broker-dir", str(tmp_path / "auth")]
    if args[0] in ("provision", "revoke"):
        where += ["--devices", str(tmp_path / "devices.yaml")]
    return CliRunner().invoke(app, ["devices", *args, *where], env=env)


def test_provision_writes_the_account_the_files_and_the_registry(tmp_path: Path) -> None:
    result = run(tmp_path, "provision", "cobot 01", "--site", "판교", "--line", "조립", "--profile", "cobot_arm",
                 "--org", "pangyo-robotics", "--name", "협동로봇", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["username"] == "판교/조립/cobot 01" and created["registered"] is True
    account = BrokerFiles(tmp_path / "auth").load().get(created["username"])
    assert account is not None and verify_password(created["password"], account.password_hash)
    (entry,) = [d.entry for d in load_registry(tmp_path / "devices.yaml", load_profiles())]
    assert (entry.device, entry.profile, entry.organisation, entry.name) == (
        "cobot 01", "cobot_arm", "pangyo-robotics", "협동로봇"
    )  # fmt: skip
    assert "reload the broker" in result.stderr


def test_provision_refuses_what_it_cannot_do_safely(tmp_path: Path) -> None:
    where = ["--site", "판교", "--line", "조립"]
    assert run(tmp_path, "provision", "cobot-01", *where, "--profile", "cobot_arm").exit_code == 0
    cases = [
        (["provision", "cobot-01", *where, "--profile", "conveyor"], "registers device 'cobot-01' with profile"),
        (["provision", "cnc:01", *where, "--profile", "cnc_machine"], "contains ':'"),
        (["provision", "cnc-01", *where, "--profile", "no_such_profile"], "no device profile 'no_such_profile'"),
        (["provision", "cnc-01", *where, "--profile", "cnc_machine", "--rotate"], "no broker credentials to rotate"),
        (["service-account", "pilot collector", "--role", "collector"], "letters, digits"),
        (["service-account", "sim", "--role", "admin"], "--role must be collector, publisher or monitor"),
        (["revoke", "cnc-01", *where], "there is no broker account '판교/조립/cnc-01'"),
        (["revoke-service", "cobot-01"], "there is no service account"),
    ]
    for args, message in cases:
        result = run(tmp_path, *args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    assert len(BrokerFiles(tmp_path / "auth").load()) == 1
    assert len(load_registry(tmp_path / "devices.yaml", load_profiles())) == 1


def test_revoke_unregister_and_sync(tmp_path: Path) -> None:
    where = ["--site", "판교", "--line", "조립"]
    assert run(tmp_path, "provision", "cobot-01", *where, "--profile", "cobot_arm").exit_code == 0
    assert run(tmp_path, "service-account", "pilot-collector", "--role", "collector").exit_code == 0
    result = run(tmp_path, "revoke", "cobot-01", *where, "--unregister")
    assert result.exit_code == 0, result.output
    assert len(load_registry(tmp_path / "devices.yaml", load_profiles())) == 0
    files = BrokerFiles(tmp_path / "auth")
    assert "cobot-01" not in files.password_file.read_text(encoding="utf-8")
    files.acl_file.write_text("user someone\ntopic readwrite #\n", encoding="utf-8")  # a hand edit, overwritten
    assert run(tmp_path, "sync").exit_code == 0
    assert files.acl_file.read_text(encoding="utf-8") == files.load().acl_text()
    listed = run(tmp_path, "list")
    assert listed.exit_code == 0 and "pilot-collector" in listed.stdout and "$7$" not in listed.stdout


CHOSEN = "a-chosen-password-of-32-characters"


def test_a_service_password_from_the_environment_is_not_printed_and_asking_again_changes_nothing(
    tmp_path: Path,
) -> None:
    env = {"COLLECTOR_PASSWORD": CHOSEN}
    args = ["service-account", "pilot-collector", "--role", "collector", "--password-env", "COLLECTOR_PASSWORD"]
    first = run(tmp_path, *args, "--json", env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {
        "username": "pilot-collector", "role": "collector", "password_from": "env:COLLECTOR_PASSWORD", "changed": True
    }  # fmt: skip
    files = BrokerFiles(tmp_path / "auth")
    account = files.load().get("pilot-collector")
    assert account is not None and verify_password(CHOSEN, account.password_hash)
    again = run(tmp_path, *args, env=env)
    assert again.exit_code == 0, again.output
    assert "password: from $COLLECTOR_PASSWORD (not shown)" in again.stdout and "already as asked" in again.stderr
    assert files.load().get("pilot-collector") == account  # the same hash: an init step may run at every start
    assert CHOSEN not in first.output + again.output


def test_a_different_chosen_password_needs_rotate(tmp_path: Path) -> None:
    args = ["service-account", "simulator", "--role", "publisher", "--password-env", "SIM_PASSWORD"]
    assert run(tmp_path, *args, env={"SIM_PASSWORD": CHOSEN}).exit_code == 0
    changed = run(tmp_path, *args, env={"SIM_PASSWORD": CHOSEN + "-new"})
    assert changed.exit_code == 1 and "exists with another password" in changed.output and "--rotate" in changed.output
    files = BrokerFiles(tmp_path / "auth")
    assert verify_password(CHOSEN, files.load().get("simulator").password_hash)  # type: ignore[union-attr]
    rotated = run(tmp_path, *args, "--rotate", env={"SIM_PASSWORD": CHOSEN + "-new"})
    assert rotated.exit_code == 0, rotated.output
    assert verify_password(CHOSEN + "-new", files.load().get("simulator").password_hash)  # type: ignore[union-attr]
    # The same password with other grants (another dead-letter root) is a change as well.
    collector = ["service-account", "c", "--role", "collector", "--password-env", "SIM_PASSWORD"]
    assert run(tmp_path, *collector, env={"SIM_PASSWORD": CHOSEN}).exit_code == 0
    other_root = run(tmp_path, *collector, env={"SIM_PASSWORD": CHOSEN, "PILOT_DEAD_LETTER_TOPIC": "pilot/dl2"})
    assert other_root.exit_code == 1 and "other grants" in other_root.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "the environment variable P is empty"),
        ("", "the environment variable P is empty"),
        ("short", "is 5 characters; use at least 16"),
        (CHOSEN + "\n", "control character"),
        (" " + CHOSEN, "starts or ends with a space"),
    ],
)
def test_an_unusable_chosen_password_is_refused_and_nothing_is_written(
    tmp_path: Path, value: str | None, message: str
) -> None:
    env = {} if value is None else {"P": value}
    result = run(tmp_path, "service-account", "sim", "--role", "publisher", "--password-env", "P", env=env)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "auth").exists()


def test_a_monitor_account_reads_only_the_brokers_sys_topics(tmp_path: Path) -> None:
    result = run(tmp_path, "service-account", "pilot-healthcheck", "--role", "monitor", "--json")
    assert result.exit_code == 0, result.output
    acl = BrokerFiles(tmp_path / "auth").acl_file.read_text(encoding="utf-8")
    assert "user pilot-healthcheck\ntopic read $SYS/#\n" in acl


def test_site_bridge_writes_the_bridge_and_an_account_that_may_publish_only_its_site(tmp_path: Path) -> None:
    output = tmp_path / "bridge" / "bridge-pangyo.conf"
    centre = "mqtt.centre.example"
    args = ["site-bridge", "bridge-pangyo", "--site", "판교", "--central-host", centre, "-o", str(output)]
    result = run(tmp_path, *args)
    assert result.exit_code == 0, result.output
    assert output.stat().st_mode & 0o777 == 0o600  # it holds the password
    config = dict(line.split(" ", 1) for line in output.read_text(encoding="utf-8").splitlines() if line[:1] != "#")
    assert config["address"] == "mqtt.centre.example:8883"
    assert config["topic"] == "pilot/v1/판교/# out 1"
    assert (config["cleansession"], config["bridge_protocol_version"]) == ("false", "mqttv50")
    assert config["remote_clientid"] == config["remote_username"] == "bridge-pangyo"
    account = BrokerFiles(tmp_path / "auth").load().get("bridge-pangyo")
    assert account is not None and verify_password(config["remote_password"], account.password_hash)
    assert config["remote_password"] not in result.output
    acl = (tmp_path / "auth" / "acl").read_text(encoding="utf-8")
    grants = "topic write pilot/v1/판교/#\ntopic write $SYS/broker/connection/bridge-pangyo/state\n"
    assert f"user bridge-pangyo\n{grants}" in acl
    # Asked again, it refuses to replace the password silently; --rotate replaces it, and the bridge file with it.
    again = run(tmp_path, *args)
    assert again.exit_code == 1 and "pass --rotate" in again.output
    assert run(tmp_path, *args, "--rotate").exit_code == 0
    rotated = dict(line.split(" ", 1) for line in output.read_text(encoding="utf-8").splitlines() if line[:1] != "#")
    assert rotated["remote_password"] != config["remote_password"]


def test_site_bridge_refuses_what_a_bridge_cannot_hold(tmp_path: Path) -> None:
    output = str(tmp_path / "b.conf")
    cases = [
        (["site-bridge", "b", "--site", "판교 1", "--central-host", "c", "-o", output], "white space"),
        (["site-bridge", "b", "--site", "a/b", "--central-host", "c", "-o", output], "contains a slash"),
        (["site-bridge", "b", "--site", "s", "--central-host", "c", "-o", output, "--cert-file", "x"], "its key"),
        (["site-bridge", "b c", "--site", "s", "--central-host", "c", "-o", output], "letters, digits"),
        (["site-bridge", "b", "--site", "s", "--central-host", "c", "--central-port", "99999", "-o", output], "65535"),
        (["site-bridge", "b", "--site", "s", "--central-host", "c", "--central-port", "0", "-o", output], "65535"),
        (["service-account", "b", "--role", "bridge"], "pilot devices site-bridge"),
    ]
    for args, message in cases:
        result = run(tmp_path, *args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    assert not Path(output).exists()
    # A bridge file that cannot be written leaves no account behind, whose password would be lost.
    (tmp_path / "blocker").touch()  # a file where the folder would be: refused even to root
    unwritable = str(tmp_path / "blocker" / "b.conf")
    result = run(tmp_path, "site-bridge", "b", "--site", "s", "--central-host", "c", "-o", unwritable)
    assert result.exit_code == 1 and "the account was not made" in result.output, result.output
    assert len(BrokerFiles(tmp_path / "auth").load()) == 0


def test_the_shipped_example_bridge_is_what_the_command_writes() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "site-bridge.example.conf"
    bridge = SiteBridge(name="bridge-pangyo", site="판교", central_host="mqtt.centre.example")
    assert example.read_text(encoding="utf-8") == bridge.config_text("<made by pilot devices site-bridge>")


def test_site_bridge_with_a_chosen_password_can_run_again_unchanged(tmp_path: Path) -> None:
    chosen = "a-chosen-bridge-password-0123456789"
    output = tmp_path / "b.conf"
    args = ["site-bridge", "bridge-sihwa", "--site", "시화", "--central-host", "c", "-o", str(output)]
    for _ in range(2):  # the second time finds the same account and changes nothing
        result = run(tmp_path, *args, "--password-env", "BRIDGE_PASSWORD", env={"BRIDGE_PASSWORD": chosen})
        assert result.exit_code == 0, result.output
        assert chosen not in result.output
        assert f"remote_password {chosen}\n" in output.read_text(encoding="utf-8")
    account = BrokerFiles(tmp_path / "auth").load().get("bridge-sihwa")
    assert account is not None and verify_password(chosen, account.password_hash)


def test_sparkplug_node_makes_an_account_for_one_edge_node_and_revoke_removes_it(tmp_path: Path) -> None:
    made = run(tmp_path, "sparkplug-node", "line-3", "--group", "plant-a", "--json")
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["username"] == "spBv1.0/plant-a/line-3"
    files = BrokerFiles(tmp_path / "auth")
    account = files.load().get("spBv1.0/plant-a/line-3")
    assert account is not None and verify_password(created["password"], account.password_hash)
    assert "user spBv1.0/plant-a/line-3\ntopic write spBv1.0/plant-a/NBIRTH/line-3\n" in files.acl_file.read_text(
        encoding="utf-8"
    )
    again = run(tmp_path, "sparkplug-node", "line-3", "--group", "plant-a")
    assert again.exit_code == 1 and "--rotate" in again.output
    assert run(tmp_path, "sparkplug-node", "a/b", "--group", "plant-a").exit_code == 1
    listed = run(tmp_path, "list")
    assert "sparkplug node" in listed.output
    assert run(tmp_path, "revoke-sparkplug-node", "line-3", "--group", "plant-a").exit_code == 0
    assert files.load().get("spBv1.0/plant-a/line-3") is None
    gone = run(tmp_path, "revoke-sparkplug-node", "line-3", "--group", "plant-a")
    assert gone.exit_code == 1 and "no Sparkplug edge node account" in gone.output


def test_a_collector_account_gets_the_sparkplug_host_topics_only_when_its_configuration_enables_it(
    tmp_path: Path,
) -> None:
    files = BrokerFiles(tmp_path / "auth")
    assert run(tmp_path, "service-account", "plain", "--role", "collector").exit_code == 0
    assert not any(topic.startswith("spBv1.0") for _, topic in files.load().get("plain").grants())  # type: ignore[union-attr]
    env = {
        "PILOT_SPARKPLUG__ENABLED": "true",
        "PILOT_SPARKPLUG__HOST_ID": "host-a",
        "PILOT_SPARKPLUG__GROUPS": '["plant-a"]',
    }
    assert run(tmp_path, "service-account", "host", "--role", "collector", env=env).exit_code == 0
    grants = files.load().get("host").grants()  # type: ignore[union-attr]
    assert [g for g in grants if g[1].startswith("spBv1.0")] == [
        ("read", "spBv1.0/plant-a/#"),
        ("write", "spBv1.0/plant-a/NCMD/+"),
        ("readwrite", "spBv1.0/STATE/host-a"),
    ]
    # An init step with a chosen password sees the new grants as a change: --rotate applies them.
    chosen = ["service-account", "plain", "--role", "collector", "--password-env", "P"]
    assert run(tmp_path, *chosen, "--rotate", env={"P": CHOSEN}).exit_code == 0
    changed = run(tmp_path, *chosen, env={"P": CHOSEN, **env})
    assert changed.exit_code == 1 and "other grants" in changed.output
    assert run(tmp_path, *chosen, "--rotate", env={"P": CHOSEN, **env}).exit_code == 0
    assert ("readwrite", "spBv1.0/STATE/host-a") in files.load().get("plain").grants()  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["a file", "a folder under a file"])
def test_a_broker_folder_that_cannot_be_used_is_said_in_one_line(tmp_path: Path, kind: str) -> None:
    (tmp_path / "blocker").touch()
    folder = tmp_path / "blocker" if kind == "a file" else tmp_path / "blocker" / "auth"
    for args in (
        ["sparkplug-node", "node-1", "--group", "plant"],
        ["revoke-sparkplug-node", "node-1", "--group", "plant"],
        ["service-account", "sim", "--role", "publisher"],
        ["site-bridge", "b", "--site", "s", "--central-host", "c", "-o", str(tmp_path / "b.conf")],
    ):
        result = CliRunner().invoke(app, ["devices", *args, "--broker-dir", str(folder)])
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        assert f"the broker's account folder {folder} cannot be used" in result.output, (args, result.output)

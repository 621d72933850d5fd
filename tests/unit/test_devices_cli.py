"""`pilot devices` without a broker: what it writes, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from adapters.broker_accounts import BrokerFiles
from adapters.catalog import load_profiles, load_registry
from pilot.cli import app
from pilot_core.broker_accounts import verify_password


def run(tmp_path: Path, *args: str) -> Result:
    where = ["--broker-dir", str(tmp_path / "auth")]
    if args[0] in ("provision", "revoke"):
        where += ["--devices", str(tmp_path / "devices.yaml")]
    return CliRunner().invoke(app, ["devices", *args, *where])


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
        (["service-account", "sim", "--role", "admin"], "--role must be collector or publisher"),
        (["service-account", "sim", "--role", "publisher", "--client-id", "x"], "--client-id is for collector"),
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

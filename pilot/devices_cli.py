"""`pilot devices`: broker accounts for devices and services (Mosquitto password file and ACL).

A new password is printed once, to standard output, and never logged; only its hash is kept.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from adapters.broker_accounts import DEFAULT_BROKER_DIR
from pilot.output import console, errors, fail, table
from pilot_core.site_bridge import DEFAULT_CA_FILE

if TYPE_CHECKING:
    from adapters.broker_accounts import BrokerFiles
    from collector.settings import CollectorSettings
    from pilot_core.profiles import ProfileCatalog

devices_app = typer.Typer(
    no_args_is_help=True,
    help="Broker accounts: each device publishes only under its own topic; services by role (docs/broker.md).",
)

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML configuration file (default ./pilot.yaml)")
]
BrokerDir = Annotated[
    Path,
    typer.Option(
        "--broker-dir",
        envvar="PILOT_BROKER_DIR",
        help="Folder of accounts.yaml and the broker's passwd and acl files made from it",
    ),
]
DevicesFile = Annotated[
    Path | None, typer.Option("--devices", help="Device registry to update (default: the configured devices_file)")
]
Site = Annotated[str, typer.Option(help="Site id (topic level 3)")]
Line = Annotated[str, typer.Option(help="Line id (topic level 4)")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object, for automation")]
Rotate = Annotated[
    bool, typer.Option(help="Replace the password of an existing account (the old one stops at the broker's reload)")
]

RELOAD_HINT = (
    "reload the broker so it reads the new files: `kill -HUP <mosquitto pid>`, `systemctl reload mosquitto`"
    " or `docker compose kill -s SIGHUP mosquitto`"
)


def _settings(config: Path | None) -> CollectorSettings:
    from collector.settings import CollectorSettings

    try:
        return CollectorSettings.load(config)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None


def _catalog(settings: CollectorSettings) -> ProfileCatalog:
    from adapters.catalog import load_profiles
    from pilot_core.profiles import ProfileErrors

    try:
        return load_profiles(settings.profiles_dir)
    except ProfileErrors as exc:
        raise fail(f"invalid profiles:\n{exc}") from None


def _files(broker_dir: Path) -> BrokerFiles:
    from adapters.broker_accounts import BrokerFiles

    return BrokerFiles(broker_dir)


def _remove_account(broker_dir: Path, username: str, kind: type, what: str) -> None:
    """Remove the account ``username``, which must be a ``kind`` (``what`` names that kind in the error)."""
    from pilot_core.broker_accounts import AccountError
    from pilot_core.profiles import ProfileErrors

    try:
        with _files(broker_dir).editing() as book:
            if not isinstance(book.get(username), kind):
                raise AccountError(f"there is no {what} {username!r}")
            book.remove(username)
    except (AccountError, ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None


def _say(message: str) -> None:
    errors.print(message, highlight=False, markup=False)


def _print_credentials(result: dict[str, object], json_output: bool) -> None:
    """The one place a new password is shown: standard output, once."""
    if json_output:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    console.print(f"username: {result['username']}", highlight=False, markup=False)
    console.print(f"password: {result['password']}", highlight=False, markup=False)
    _say("the password is shown only now: store it where the client reads it (only its hash is kept)")


@devices_app.command("provision")
def provision(
    device: Annotated[str, typer.Argument(help="Device id (topic level 5)")],
    site: Site,
    line: Line,
    profile: Annotated[str, typer.Option(help="Device profile id (see `pilot profiles list`)")],
    org: Annotated[str | None, typer.Option(help="Slug of the organisation that owns the device")] = None,
    name: Annotated[str, typer.Option(help="Free-text label for the registry")] = "",
    devices: DevicesFile = None,
    broker_dir: BrokerDir = DEFAULT_BROKER_DIR,
    rotate: Rotate = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
) -> None:
    """Give a device broker credentials that may publish only under pilot/v1/SITE/LINE/DEVICE/, and register it."""
    from pydantic import ValidationError

    from adapters.broker_accounts import new_password, new_password_hash, now_text
    from adapters.catalog import load_registry
    from adapters.registry_file import add_device
    from pilot_core.broker_accounts import AccountError, DeviceAccount
    from pilot_core.profiles import ProfileErrors
    from pilot_core.registry import DeviceEntry

    settings = _settings(config)
    registry_file = devices or settings.devices_file
    catalog = _catalog(settings)
    if catalog.get(profile) is None:
        raise fail(f"no device profile {profile!r} in {settings.profiles_dir}; see `pilot profiles list`")
    password = new_password()
    try:
        entry = DeviceEntry(site=site, line=line, device=device, profile=profile, name=name, organisation=org)
        account = DeviceAccount(
            site=site, line=line, device=device, password_hash=new_password_hash(password), password_set_at=now_text()
        )
    except ValidationError as exc:
        raise fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
    try:
        registered = load_registry(registry_file, catalog).get(entry.key) if registry_file.is_file() else None
    except (ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    if registered is not None and registered.entry.profile != profile:
        raise fail(
            f"{registry_file} registers device {device!r} with profile {registered.entry.profile!r}, not"
            f" {profile!r}; change it there, or provision with --profile {registered.entry.profile}"
        )
    try:
        with _files(broker_dir).editing() as book:
            book.put(account, rotate=rotate)
    except (AccountError, ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    kept_comments = True
    if registered is None:
        kept_comments = add_device(registry_file, entry, catalog)
    _print_credentials(
        {
            "username": account.username,
            "password": password,
            "site": site,
            "line": line,
            "device": device,
            "registered": registered is None,
            "devices_file": str(registry_file),
            "broker_dir": str(broker_dir),
        },
        json_output,
    )
    if registered is None:
        _say(f"registered in {registry_file}" + ("" if kept_comments else " (rewritten: its comments were lost)"))
        _say("restart the collector so it reads the registry again")
    _say(f"{'rotated' if rotate else 'wrote'} {broker_dir}/passwd and {broker_dir}/acl; {RELOAD_HINT}")
    _say("the agent connects with mqtt.username and mqtt.password (PILOT_MQTT__USERNAME, PILOT_MQTT__PASSWORD)")


@devices_app.command("revoke")
def revoke(
    device: Annotated[str, typer.Argument(help="Device id")],
    site: Site,
    line: Line,
    unregister: Annotated[
        bool, typer.Option(help="Also remove the device from the registry (its stored data stays in InfluxDB)")
    ] = False,
    devices: DevicesFile = None,
    broker_dir: BrokerDir = DEFAULT_BROKER_DIR,
    config: ConfigFile = None,
) -> None:
    """Remove a device's broker account: after the broker's reload it can neither connect nor publish."""
    from adapters.registry_file import remove_device
    from pilot_core.broker_accounts import AccountError, device_username
    from pilot_core.profiles import ProfileErrors
    from pilot_core.registry import DeviceKey

    settings = _settings(config)
    try:
        with _files(broker_dir).editing() as book:
            book.remove(device_username(site, line, device))
    except (AccountError, ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    _say(f"removed the broker account of device {device!r}; {RELOAD_HINT}")
    if unregister:
        registry_file = devices or settings.devices_file
        try:
            kept = remove_device(registry_file, DeviceKey(site, line, device), _catalog(settings))
        except (KeyError, OSError, ValueError) as exc:
            raise fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
        _say(f"removed it from {registry_file}" + ("" if kept else " (rewritten: its comments were lost)"))


@devices_app.command("service-account")
def service_account(
    name: Annotated[str, typer.Argument(help="Account name, the MQTT username (letters, digits, '.', '_', '-')")],
    role: Annotated[
        str,
        typer.Option(
            help="collector: reads pilot/v1/#, writes dead letters, and with sparkplug.enabled in the configuration"
            " its Sparkplug host's topics; publisher: writes pilot/v1/#; monitor: reads $SYS/# (health checks)"
        ),
    ],
    password_env: Annotated[
        str | None,
        typer.Option(
            help="Take the password from this environment variable instead of making one (it is not printed);"
            " asking again with the same password and grants changes nothing, so an init step may run at every"
            " start",
        ),
    ] = None,
    broker_dir: BrokerDir = DEFAULT_BROKER_DIR,
    rotate: Rotate = False,
    json_output: JsonOutput = False,
    config: ConfigFile = None,
) -> None:
    """Create (or, with --rotate, re-key) an account for the collector, a publisher or a monitor."""
    from pydantic import ValidationError

    from adapters.broker_accounts import new_password, new_password_hash, now_text
    from pilot_core.broker_accounts import (
        AccountError,
        Role,
        ServiceAccount,
        SparkplugHostGrant,
        check_given_password,
    )
    from pilot_core.profiles import ProfileErrors

    roles = [r.value for r in Role if r is not Role.BRIDGE]
    if role == Role.BRIDGE.value:
        raise fail("a site's bridge account is made with `pilot devices site-bridge NAME --site SITE …`")
    if role not in roles:
        raise fail(f"--role must be {', '.join(roles[:-1])} or {roles[-1]}, not {role!r}")
    collector = Role(role) is Role.COLLECTOR
    settings = _settings(config) if collector else None
    given = None
    if password_env is not None:
        given = os.environ.get(password_env, "")
        try:
            check_given_password(given, f"the environment variable {password_env}")
        except AccountError as exc:
            raise fail(str(exc)) from None
    password = given if given is not None else new_password()
    try:
        account = ServiceAccount(
            name=name,
            role=Role(role),
            password_hash=new_password_hash(password),
            password_set_at=now_text(),
            dead_letter_topic=settings.dead_letter_topic if settings else None,
            # Only a collector configured as a Sparkplug host may touch spBv1.0 topics (least privilege).
            sparkplug=SparkplugHostGrant(host_id=settings.sparkplug.host_id, groups=settings.sparkplug.groups)
            if settings and settings.sparkplug.enabled
            else None,
        )
    except ValidationError as exc:
        raise fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
    unchanged = False
    try:
        with _files(broker_dir).editing() as book:
            existing = book.get(account.username)
            unchanged = given is not None and not rotate and account.matches(existing, given)
            if existing is not None and given is not None and not rotate and not unchanged:
                raise AccountError(
                    f"the broker account {name!r} exists with another password or other grants than"
                    f" ${password_env} and these options give; pass --rotate to replace it (the old password"
                    " stops working once the broker reloads)"
                )
            if not unchanged:
                book.put(account, rotate=rotate)
    except (AccountError, ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    if given is None:
        _print_credentials({"username": account.username, "password": password, "role": role}, json_output)
    else:
        _print_chosen(account.username, role, password_env or "", changed=not unchanged, json_output=json_output)
    if unchanged:
        _say(f"the {role} account {name!r} is already as asked; {broker_dir} is unchanged")
    else:
        _say(f"{'rotated' if rotate else 'wrote'} {broker_dir}/passwd and {broker_dir}/acl; {RELOAD_HINT}")


@devices_app.command("site-bridge")
def site_bridge(
    name: Annotated[
        str, typer.Argument(help="The bridge's account at the central broker, its client id there (e.g. bridge-pangyo)")
    ],
    site: Annotated[str, typer.Option(help="Site id: the bridge may publish only pilot/v1/SITE/# at the centre")],
    central_host: Annotated[str, typer.Option(help="The central broker's host name, as its certificate names it")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Write the bridge's configuration here (mode 0600: it holds the password)"),
    ],
    central_port: Annotated[int, typer.Option(help="The central broker's TLS listener")] = 8883,
    ca_file: Annotated[
        str,
        typer.Option(
            help="The CA of the central broker's certificate, as the site's broker sees the path (default: the"
            " container's tls/central-ca.pem)",
            show_default=False,
        ),
    ] = str(DEFAULT_CA_FILE),
    cert_file: Annotated[
        str | None, typer.Option(help="A client certificate, for a centre that requires one (path at the site)")
    ] = None,
    key_file: Annotated[str | None, typer.Option(help="The client certificate's key (path at the site)")] = None,
    password_env: Annotated[
        str | None,
        typer.Option(help="Take the password from this environment variable instead of making one"),
    ] = None,
    broker_dir: BrokerDir = DEFAULT_BROKER_DIR,
    rotate: Rotate = False,
) -> None:
    """Give a factory's broker an account at the centre, which may publish only pilot/v1/SITE/#, and its bridge."""
    from pathlib import PurePosixPath

    from pydantic import ValidationError

    from adapters.broker_accounts import new_password, new_password_hash, now_text, write_private
    from pilot_core.broker_accounts import AccountError, Role, ServiceAccount, check_given_password
    from pilot_core.profiles import ProfileErrors
    from pilot_core.site_bridge import SiteBridge

    given = os.environ.get(password_env, "") if password_env is not None else None
    try:
        if given is not None:
            check_given_password(given, f"the environment variable {password_env}")
        bridge = SiteBridge(
            name=name,
            site=site,
            central_host=central_host,
            central_port=central_port,
            ca_file=PurePosixPath(ca_file),
            cert_file=PurePosixPath(cert_file) if cert_file else None,
            key_file=PurePosixPath(key_file) if key_file else None,
        )
    except (AccountError, ValueError) as exc:
        raise fail(str(exc)) from None
    password = given if given is not None else new_password()
    try:
        account = ServiceAccount(
            name=name,
            role=Role.BRIDGE,
            site=site,
            password_hash=new_password_hash(password),
            password_set_at=now_text(),
        )
    except ValidationError as exc:
        raise fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
    try:
        with _files(broker_dir).editing() as book:
            existing = book.get(account.username)
            if not (given is not None and not rotate and account.matches(existing, given)):
                book.put(account, rotate=rotate)
            # Inside: an account whose bridge file could not be written is not kept (its password would be lost).
            write_private(output, bridge.config_text(password))
    except (AccountError, ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}; the account was not made") from None
    console.print(f"username: {name}", highlight=False, markup=False)
    _say(f"wrote {output}: put it in the site broker's /mosquitto/config/bridge/ (deploy/mosquitto/site.conf)")
    _say(f"the account {name!r} may publish {bridge.topic} at the centre; {broker_dir}/acl says so; {RELOAD_HINT}")


@devices_app.command("sparkplug-node")
def sparkplug_node(
    edge_node: Annotated[str, typer.Argument(help="The Sparkplug edge node id (topic level 4)")],
    group: Annotated[str, typer.Option(help="The Sparkplug group id (topic level 2)")],
    broker_dir: BrokerDir = DEFAULT_BROKER_DIR,
    rotate: Rotate = False,
    json_output: JsonOutput = False,
) -> None:
    """Give a Sparkplug B edge node credentials that may publish only its own births, data and deaths."""
    from pydantic import ValidationError

    from adapters.broker_accounts import new_password, new_password_hash, now_text
    from pilot_core.broker_accounts import AccountError, SparkplugNodeAccount
    from pilot_core.profiles import ProfileErrors

    password = new_password()
    try:
        account = SparkplugNodeAccount(
            group=group, edge_node=edge_node, password_hash=new_password_hash(password), password_set_at=now_text()
        )
    except ValidationError as exc:
        raise fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
    try:
        with _files(broker_dir).editing() as book:
            book.put(account, rotate=rotate)
    except (AccountError, ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    result: dict[str, object] = {
        "username": account.username,
        "password": password,
        "group": group,
        "edge_node": edge_node,
    }
    _print_credentials(result, json_output)
    _say(f"{'rotated' if rotate else 'wrote'} {broker_dir}/passwd and {broker_dir}/acl; {RELOAD_HINT}")
    _say(
        "set this username and password in the edge node's MQTT server settings; the broker makes the username its"
        " client id, whatever client id the node sends (docs/sparkplug.md)"
    )


@devices_app.command("revoke-sparkplug-node")
def revoke_sparkplug_node(
    edge_node: Annotated[str, typer.Argument(help="The Sparkplug edge node id")],
    group: Annotated[str, typer.Option(help="The Sparkplug group id")],
    broker_dir: BrokerDir = DEFAULT_BROKER_DIR,
) -> None:
    """Remove a Sparkplug edge node's account: after the broker's reload it can neither connect nor publish."""
    from pilot_core.broker_accounts import AccountError, SparkplugNodeAccount, sparkplug_node_username

    try:
        username = sparkplug_node_username(group, edge_node)
    except AccountError as exc:
        raise fail(str(exc)) from None
    _remove_account(broker_dir, username, SparkplugNodeAccount, "Sparkplug edge node account")
    _say(f"removed the broker account of Sparkplug edge node {edge_node!r} (group {group!r}); {RELOAD_HINT}")


def _print_chosen(username: str, role: str, password_env: str, *, changed: bool, json_output: bool) -> None:
    """What became of an account whose password the caller chose: never the password itself."""
    if json_output:
        document = {"username": username, "role": role, "password_from": f"env:{password_env}", "changed": changed}
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
        return
    console.print(f"username: {username}", highlight=False, markup=False)
    console.print(f"password: from ${password_env} (not shown)", highlight=False, markup=False)


@devices_app.command("revoke-service")
def revoke_service(
    name: Annotated[str, typer.Argument(help="Service account name")],
    broker_dir: BrokerDir = DEFAULT_BROKER_DIR,
) -> None:
    """Remove a service account."""
    from pilot_core.broker_accounts import ServiceAccount

    _remove_account(broker_dir, name, ServiceAccount, "service account")
    _say(f"removed the service account {name!r}; {RELOAD_HINT}")


@devices_app.command("list")
def list_accounts(broker_dir: BrokerDir = DEFAULT_BROKER_DIR) -> None:
    """List the broker accounts and what each may do (no secrets)."""
    from pilot_core.broker_accounts import DeviceAccount, SparkplugNodeAccount
    from pilot_core.profiles import ProfileErrors

    try:
        book = _files(broker_dir).load()
    except (ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    listed = table(f"Broker accounts in {broker_dir}", ("username", "kind", "topics", "password set"), whole=("kind",))
    for account in book:
        kind = (
            "device"
            if isinstance(account, DeviceAccount)
            else "sparkplug node"
            if isinstance(account, SparkplugNodeAccount)
            else account.role.value
        )
        topics = "\n".join(f"{access} {topic}" for access, topic in account.grants())
        listed.add_row(Text(account.username), kind, Text(topics), account.password_set_at)
    console.print(listed)


@devices_app.command("sync")
def sync(broker_dir: BrokerDir = DEFAULT_BROKER_DIR) -> None:
    """Write passwd and acl again from accounts.yaml (after editing it by hand)."""
    from pilot_core.profiles import ProfileErrors

    try:
        with _files(broker_dir).editing() as book:
            count = len(book)
    except (ProfileErrors, ValueError) as exc:
        raise fail(str(exc)) from None
    _say(f"wrote {broker_dir}/passwd and {broker_dir}/acl for {count} account(s); {RELOAD_HINT}")

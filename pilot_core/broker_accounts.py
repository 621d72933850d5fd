"""Broker accounts: who may connect to Mosquitto, and which topics each may use.

The accounts document (``accounts.yaml``) is the source of truth; the Mosquitto
password file and ACL are made from it, whole. The broker gives every client its
username as client id (``use_username_as_clientid``), so an account's client id,
and the session the broker keeps under it, is the account's alone. A device may publish only below
its own ``pilot/v1/{site}/{line}/{device}/``; the collector reads ``pilot/v1/#``
and writes dead letters and its heartbeat; a publisher (simulators, backfills)
writes ``pilot/v1/#``; a collector that is a Sparkplug host also reads its groups' ``spBv1.0`` messages,
sends their edge nodes NCMDs and keeps its own ``spBv1.0/STATE/{host_id}``; a Sparkplug edge node publishes only
its own births, data and deaths and reads its commands and the hosts' STATE; a monitor (health checks,
exporters) reads the broker's ``$SYS/#``; a site's bridge
(the Mosquitto in a factory, bridged to the central broker) writes only ``pilot/v1/{its site}/#`` and its
connection state.

Pure: the caller supplies salts and times.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pilot_core.contract import CONTRACT_VERSION, TOPIC_ROOT
from pilot_core.ids import check_id
from pilot_core.profiles import ProfileErrors
from pilot_core.sparkplug import NAMESPACE as SPARKPLUG
from pilot_core.yaml_text import SourceError, parse_yaml

# What Mosquitto 2's mosquitto_passwd writes: PBKDF2-SHA512, 101 iterations, a 12-byte salt, a 64-byte key.
HASH_ITERATIONS = 101
SALT_BYTES = 12
_KEY_BYTES = 64
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Mosquitto trims these from both ends of a username in its password and ACL files.
_TRIMMED = " \t\n\v\f\r"


class AccountError(ValueError):
    """An account that cannot be created, changed or removed as asked."""


class Role(enum.StrEnum):
    COLLECTOR = "collector"
    PUBLISHER = "publisher"
    MONITOR = "monitor"
    BRIDGE = "bridge"


def bridge_state_topic(name: str) -> str:
    """Where a site's bridge says whether it is connected (1) or not (0): Mosquitto's own default topic."""
    return f"$SYS/broker/connection/{name}/state"


def check_bridge_site(site: str) -> str:
    """A site id that a Mosquitto bridge's ``topic`` line can hold: the id rules, and no white space."""
    check_id(site, "site")
    if any(char.isspace() for char in site):
        raise ValueError(
            f"site {site!r} contains white space, which a Mosquitto bridge's topic line cannot hold; bridge a site"
            " whose id has none"
        )
    return site


# A password the operator chooses (an init step, from a secret store) rather than one we make.
MIN_GIVEN_PASSWORD_LENGTH = 16


def check_given_password(password: str, source: str) -> None:
    """Refuse a chosen password that is empty, short or holds what a client cannot send intact."""
    if not password:
        raise AccountError(f"{source} is empty; set it to the password the client will use")
    if len(password) < MIN_GIVEN_PASSWORD_LENGTH:
        raise AccountError(
            f"{source} is {len(password)} characters; use at least {MIN_GIVEN_PASSWORD_LENGTH}, e.g. from"
            " `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    if password != password.strip() or any(ord(char) < 32 or ord(char) == 127 for char in password):
        raise AccountError(f"{source} starts or ends with a space or holds a control character (a newline?)")


def heartbeat_topic(client_id: str) -> str:
    """Where a collector publishes to itself so that its watchdog sees deliveries stop."""
    return f"{TOPIC_ROOT}/collector/{client_id}/heartbeat"


def device_username(site: str, line: str, device: str) -> str:
    """``{site}/{line}/{device}``: unique, since an id never contains '/', and readable in the broker's log."""
    for value, what in ((site, "site"), (line, "line"), (device, "device")):
        check_id(value, what)
        if ":" in value:
            raise AccountError(
                f"{what} {value!r} contains ':', which a Mosquitto password file cannot hold in a username;"
                " choose an id without it to give this device broker credentials"
            )
    username = f"{site}/{line}/{device}"
    if username != username.strip(_TRIMMED):
        raise AccountError(
            f"the username {username!r} starts or ends with a space, which Mosquitto would trim away;"
            " the site id must not start, nor the device id end, with one"
        )
    return username


def check_sparkplug_id(value: str, what: str) -> str:
    """A Sparkplug group, edge node or host id an ACL line can hold exactly (Sparkplug 3.0 forbids '/', '+', '#')."""
    if not value or value != value.strip(_TRIMMED):
        raise AccountError(f"{what} {value!r} is empty or starts or ends with white space, which Mosquitto trims away")
    bad = sorted({char for char in value if char in "/+#:" or ord(char) < 32 or ord(char) == 127})
    if bad:
        raise AccountError(
            f"{what} {value!r} contains {', '.join(repr(c) for c in bad)}: Sparkplug forbids '/', '+' and '#' in an"
            " id, and a Mosquitto password file cannot hold ':' or a control character in a username"
        )
    return value


def sparkplug_node_username(group: str, edge_node: str) -> str:
    """``spBv1.0/{group}/{edge_node}``: never a device's (three levels) nor a service's (no '/') username."""
    return f"{SPARKPLUG}/{check_sparkplug_id(group, 'group')}/{check_sparkplug_id(edge_node, 'edge node')}"


def hash_password(password: str, salt: bytes) -> str:
    """The password-file hash ``$7$101$<salt>$<key>``, as Mosquitto 2's mosquitto_passwd makes it."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt must be {SALT_BYTES} bytes")
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, HASH_ITERATIONS, _KEY_BYTES)
    return f"$7${HASH_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (ours or mosquitto_passwd's)."""
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt, key = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(key))
    return hmac.compare_digest(candidate, key)


def _check_hash(value: str) -> str:
    parts = value.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        raise ValueError("password_hash is not a Mosquitto 2 hash ($7$iterations$salt$key)")
    return value


# A password-file hash field: every account's is checked the same way.
MosquittoHash = Annotated[str, AfterValidator(_check_hash)]


class DeviceAccount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    line: str
    device: str
    password_hash: MosquittoHash
    password_set_at: str = Field(default="", description="When the password was made, RFC 3339 UTC")

    @model_validator(mode="after")
    def _usable_username(self) -> DeviceAccount:
        device_username(self.site, self.line, self.device)
        return self

    @property
    def username(self) -> str:
        return device_username(self.site, self.line, self.device)

    def grants(self) -> list[tuple[str, str]]:
        return [("write", f"{TOPIC_ROOT}/{CONTRACT_VERSION}/{self.site}/{self.line}/{self.device}/+")]


class SparkplugNodeAccount(BaseModel):
    """A Sparkplug B edge node (Ignition Edge, a gateway): it speaks for its own group and edge node id only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str
    edge_node: str
    password_hash: MosquittoHash
    password_set_at: str = Field(default="", description="When the password was made, RFC 3339 UTC")

    @model_validator(mode="after")
    def _usable_username(self) -> SparkplugNodeAccount:
        sparkplug_node_username(self.group, self.edge_node)
        return self

    @property
    def username(self) -> str:
        return sparkplug_node_username(self.group, self.edge_node)

    def grants(self) -> list[tuple[str, str]]:
        own = f"{SPARKPLUG}/{self.group}"
        node_messages = [("write", f"{own}/{kind}/{self.edge_node}") for kind in ("NBIRTH", "NDATA", "NDEATH")]
        device_messages = [("write", f"{own}/{kind}/{self.edge_node}/+") for kind in ("DBIRTH", "DDATA", "DDEATH")]
        return [
            *node_messages,
            *device_messages,
            ("read", f"{own}/NCMD/{self.edge_node}"),
            ("read", f"{own}/DCMD/{self.edge_node}/+"),
            # Every host's STATE: a node waits for its primary host, whatever that host's id.
            ("read", f"{SPARKPLUG}/STATE/+"),
        ]


class SparkplugHostGrant(BaseModel):
    """A collector that is a Sparkplug host (the collector's ``sparkplug`` settings): the same host id and groups."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host_id: str
    groups: list[str] = Field(default_factory=list, description="Empty: every group, as the settings say")

    @model_validator(mode="after")
    def _ids(self) -> SparkplugHostGrant:
        check_sparkplug_id(self.host_id, "sparkplug host_id")
        for group in self.groups:
            check_sparkplug_id(group, "sparkplug group")
        return self

    def grants(self) -> list[tuple[str, str]]:
        # The host sends only NCMD Node Control/Rebirth, never a DCMD: it gets no write to DCMD topics.
        groups = self.groups or ["+"]
        reads = [("read", f"{SPARKPLUG}/#")] if not self.groups else [("read", f"{SPARKPLUG}/{g}/#") for g in groups]
        commands = [("write", f"{SPARKPLUG}/{g}/NCMD/+") for g in groups]
        # Its STATE: published retained, with a will; read to answer an offline STATE left by an old session.
        return [*reads, *commands, ("readwrite", f"{SPARKPLUG}/STATE/{self.host_id}")]


class ServiceAccount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    password_hash: MosquittoHash
    password_set_at: str = ""
    # Read from older documents only: the broker makes the username the client id, so a collector's is its name.
    client_ids: list[str] = Field(default_factory=list)
    dead_letter_topic: str | None = None
    # A bridge's site: the one topic subtree it may publish, pilot/v1/{site}/#.
    site: str | None = None
    # A collector that is also a Sparkplug host application: what its sparkplug settings subscribe and publish.
    sparkplug: SparkplugHostGrant | None = None

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SERVICE_NAME.fullmatch(value):
            raise ValueError(
                f"service account name {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a"
                " letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _collector_topics(self) -> ServiceAccount:
        if self.role is Role.COLLECTOR:
            if self.client_ids and self.client_ids != [self.name]:
                raise ValueError(
                    f"the collector account {self.name!r} lists client_ids {self.client_ids}, but the broker gives"
                    f" every client its username as client id (use_username_as_clientid), so this account's is"
                    f" {self.name!r}: give each collector process its own account (`pilot devices service-account"
                    " NAME --role collector`, then PILOT_MQTT__USERNAME=NAME) and remove client_ids"
                )
            if not self.dead_letter_topic:
                raise ValueError("a collector account needs dead_letter_topic (the collectors' setting)")
            if any(char in self.dead_letter_topic for char in "+#") or not self.dead_letter_topic.strip():
                raise ValueError(f"{self.dead_letter_topic!r} cannot be part of a topic: it is empty or has '+' or '#'")
        elif self.client_ids or self.dead_letter_topic or self.sparkplug:
            raise ValueError(
                f"client_ids, dead_letter_topic and sparkplug are for collector accounts, not {self.role.value}"
            )
        if self.role is Role.BRIDGE:
            if not self.site:
                raise ValueError("a bridge account needs the site whose messages it carries")
            check_bridge_site(self.site)
        elif self.site is not None:
            raise ValueError(f"site is for bridge accounts, not {self.role.value}")
        return self

    @property
    def username(self) -> str:
        return self.name

    def grants(self) -> list[tuple[str, str]]:
        data = f"{TOPIC_ROOT}/{CONTRACT_VERSION}/#"
        if self.role is Role.PUBLISHER:
            return [("write", data)]
        if self.role is Role.MONITOR:
            return [("read", "$SYS/#")]
        if self.role is Role.BRIDGE:
            # Its own site only: a factory's broker cannot speak for another factory's devices.
            site_data = f"{TOPIC_ROOT}/{CONTRACT_VERSION}/{self.site}/#"
            return [("write", site_data), ("write", bridge_state_topic(self.name))]
        # Reading pilot/v1/# also covers $share/<group>/pilot/v1/...: Mosquitto checks the message's topic.
        dead_letters = f"{(self.dead_letter_topic or '').rstrip('/')}/#"
        own = [("read", data), ("write", dead_letters), ("readwrite", heartbeat_topic(self.name))]
        return own + (self.sparkplug.grants() if self.sparkplug else [])

    def matches(self, existing: Account | None, password: str) -> bool:
        """Whether ``existing`` already is this account with ``password``: asking again changes nothing."""
        return (
            isinstance(existing, ServiceAccount)
            and existing.grants() == self.grants()
            and verify_password(password, existing.password_hash)
        )


Account = DeviceAccount | ServiceAccount | SparkplugNodeAccount


class AccountsDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceAccount] = Field(default_factory=list)
    services: list[ServiceAccount] = Field(default_factory=list)
    sparkplug_nodes: list[SparkplugNodeAccount] = Field(default_factory=list)


_HEADER = (
    "# The broker's accounts, kept by `pilot devices` (docs/broker.md). The password file\n"
    "# and the ACL beside this file are made from it, whole.\n"
)


class AccountBook:
    """Every account, by username; changes refuse what would silently overwrite or lose one."""

    def __init__(self, accounts: Iterable[Account] = ()) -> None:
        self._accounts: dict[str, Account] = {}
        for account in accounts:
            if account.username in self._accounts:
                raise AccountError(f"the username {account.username!r} is used by two accounts")
            self._accounts[account.username] = account

    def __iter__(self) -> Iterator[Account]:
        return iter(self._accounts.values())

    def __len__(self) -> int:
        return len(self._accounts)

    def get(self, username: str) -> Account | None:
        return self._accounts.get(username)

    def put(self, account: Account, *, rotate: bool = False) -> None:
        """Add ``account``; with ``rotate``, replace the one of that username (and only then)."""
        existing = self._accounts.get(account.username)
        if existing is not None and not rotate:
            raise AccountError(
                f"{_describe(existing)} already has broker credentials; pass --rotate to replace its password"
                " (the old one stops working once the broker reloads)"
            )
        if existing is None and rotate:
            raise AccountError(f"{_describe(account)} has no broker credentials to rotate; leave out --rotate")
        if existing is not None and type(existing) is not type(account):
            raise AccountError(f"the username {account.username!r} belongs to {_describe(existing)}")
        self._accounts[account.username] = account

    def remove(self, username: str) -> Account:
        account = self._accounts.pop(username, None)
        if account is None:
            raise AccountError(f"there is no broker account {username!r}")
        return account

    def document_text(self) -> str:
        document = AccountsDocument(
            devices=sorted((a for a in self if isinstance(a, DeviceAccount)), key=lambda a: a.username),
            services=sorted((a for a in self if isinstance(a, ServiceAccount)), key=lambda a: a.username),
            sparkplug_nodes=sorted((a for a in self if isinstance(a, SparkplugNodeAccount)), key=lambda a: a.username),
        )
        body = yaml.safe_dump(
            document.model_dump(mode="json", exclude_defaults=True), allow_unicode=True, sort_keys=False
        )
        return _HEADER + body

    def password_file_text(self) -> str:
        """Mosquitto's password file: ``username:hash`` per line."""
        return "".join(f"{account.username}:{account.password_hash}\n" for account in self._sorted())

    def acl_text(self) -> str:
        """Mosquitto's ACL: a ``user`` block per account; anything not granted is refused."""
        lines = ["# Made by `pilot devices` from accounts.yaml; edits here are overwritten.", ""]
        for account in self._sorted():
            lines.append(f"user {account.username}")
            lines.extend(f"topic {access} {topic}" for access, topic in account.grants())
            lines.append("")
        return "\n".join(lines)

    def _sorted(self) -> list[Account]:
        return sorted(self, key=lambda a: (not isinstance(a, ServiceAccount), a.username))


def _describe(account: Account) -> str:
    if isinstance(account, DeviceAccount):
        return f"device {account.device!r} (site {account.site!r}, line {account.line!r})"
    if isinstance(account, SparkplugNodeAccount):
        return f"Sparkplug edge node {account.edge_node!r} (group {account.group!r})"
    return f"{account.role.value} service account {account.name!r}"


def parse_accounts(text: str, source: str) -> AccountBook:
    """Read an accounts document; errors name the file and line (ProfileErrors, like the registry's)."""
    document = parse_yaml(text, source)
    try:
        parsed = AccountsDocument.model_validate(document.data or {})
    except ValidationError as exc:
        raise ProfileErrors(document.errors(exc)) from None
    try:
        return AccountBook([*parsed.devices, *parsed.services, *parsed.sparkplug_nodes])
    except AccountError as exc:
        raise ProfileErrors([SourceError(source, None, str(exc))]) from None

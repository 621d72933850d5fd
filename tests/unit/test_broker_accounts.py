"""Broker accounts without a broker: the password hash, usernames, the ACL text, the files, the registry edits."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from adapters.broker_accounts import BrokerFiles, new_password, new_password_hash
from adapters.catalog import load_profiles
from adapters.registry_file import add_device, remove_device
from pilot_core.broker_accounts import (
    AccountBook,
    AccountError,
    DeviceAccount,
    Role,
    ServiceAccount,
    SparkplugHostGrant,
    SparkplugNodeAccount,
    check_given_password,
    device_username,
    hash_password,
    heartbeat_topic,
    parse_accounts,
    verify_password,
)
from pilot_core.profiles import ProfileErrors
from pilot_core.registry import DeviceEntry, DeviceKey

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def _device(site: str, line: str, device: str, password: str = "pw") -> DeviceAccount:
    return DeviceAccount(site=site, line=line, device=device, password_hash=new_password_hash(password))


def _collector(name: str = "pilot-collector", dead_letter_topic: str = "pilot/deadletter/v1") -> ServiceAccount:
    return ServiceAccount(
        name=name, role=Role.COLLECTOR, password_hash=new_password_hash("pw"), dead_letter_topic=dead_letter_topic
    )


def test_the_hash_is_mosquitto_passwds_format() -> None:
    salt = bytes(range(12))
    expected_key = hashlib.pbkdf2_hmac("sha512", "비밀 pw".encode(), salt, 101, 64)
    assert hash_password("비밀 pw", salt) == (
        f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(expected_key).decode()}"
    )
    assert verify_password("비밀 pw", hash_password("비밀 pw", salt))
    assert not verify_password("비밀 pw ", hash_password("비밀 pw", salt))
    assert not verify_password("x", "$6$abc$def")


def test_a_hash_made_by_the_real_mosquitto_passwd_verifies(tmp_path: Path) -> None:
    password_file = tmp_path / "passwd"
    password = new_password()
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(password_file), "판교/조립 1/cobot-01", password], check=True)
    username, password_hash = password_file.read_text(encoding="utf-8").strip().split(":", 1)
    assert username == "판교/조립 1/cobot-01"
    assert verify_password(password, password_hash)
    assert not verify_password(password + "x", password_hash)
    # Same parameters as ours: iterations, salt and key lengths.
    _, scheme, iterations, salt, key = password_hash.split("$")
    assert (scheme, iterations, len(base64.b64decode(salt)), len(base64.b64decode(key))) == ("7", "101", 12, 64)


def test_new_passwords_are_long_random_and_plain() -> None:
    passwords = {new_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(p) == 32 and p.replace("-", "").replace("_", "").isalnum() for p in passwords)


def test_device_usernames_are_site_line_device() -> None:
    assert device_username("판교", "조립 1라인", "cobot 01") == "판교/조립 1라인/cobot 01"
    # An id never holds '/', so two devices never share a username.
    assert device_username("a b", "c", "d") != device_username("a", "b c", "d")


@pytest.mark.parametrize(
    ("site", "line", "device", "message"),
    [
        ("판교", "조립", "robot:1", "contains ':'"),
        (" 판교", "조립", "robot", "starts or ends with a space"),
        ("판교", "조립", "robot ", "starts or ends with a space"),
        ("판교", "조립/2", "robot", "a slash"),
        ("판교", "조립", "", "empty"),
    ],
)
def test_ids_mosquitto_cannot_hold_in_a_username_are_refused(site: str, line: str, device: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        device_username(site, line, device)


def test_acl_for_awkward_ids_grants_each_device_its_own_topic_only() -> None:
    book = AccountBook(
        [
            _device("판교", "조립 1라인", "cobot 01"),
            _device("시흥", "L,1", "비전 \"검사\" 'A'"),
            _device("site", "100%", "back\\slash"),
            _collector(),
            _collector("collector-b"),
            ServiceAccount(name="simulator", role=Role.PUBLISHER, password_hash=new_password_hash("pw")),
        ]
    )
    assert book.acl_text().splitlines() == [
        "# Made by `pilot devices` from accounts.yaml; edits here are overwritten.",
        "",
        "user collector-b",
        "topic read pilot/v1/#",
        "topic write pilot/deadletter/v1/#",
        "topic readwrite pilot/collector/collector-b/heartbeat",
        "",
        "user pilot-collector",
        "topic read pilot/v1/#",
        "topic write pilot/deadletter/v1/#",
        "topic readwrite pilot/collector/pilot-collector/heartbeat",
        "",
        "user simulator",
        "topic write pilot/v1/#",
        "",
        "user site/100%/back\\slash",
        "topic write pilot/v1/site/100%/back\\slash/+",
        "",
        "user 시흥/L,1/비전 \"검사\" 'A'",
        "topic write pilot/v1/시흥/L,1/비전 \"검사\" 'A'/+",
        "",
        "user 판교/조립 1라인/cobot 01",
        "topic write pilot/v1/판교/조립 1라인/cobot 01/+",
    ]
    assert heartbeat_topic("collector-a") == "pilot/collector/collector-a/heartbeat"
    passwd = book.password_file_text().splitlines()
    assert [line.split(":", 1)[0] for line in passwd][-1] == "판교/조립 1라인/cobot 01"
    assert all(line.count(":") == 1 for line in passwd)


def test_an_existing_account_is_replaced_only_with_rotate() -> None:
    book = AccountBook([_device("판교", "조립", "cobot-01", "old")])
    with pytest.raises(AccountError, match="already has broker credentials; pass --rotate"):
        book.put(_device("판교", "조립", "cobot-01", "new"))
    assert verify_password("old", book.get("판교/조립/cobot-01").password_hash)  # type: ignore[union-attr]
    book.put(_device("판교", "조립", "cobot-01", "new"), rotate=True)
    assert verify_password("new", book.get("판교/조립/cobot-01").password_hash)  # type: ignore[union-attr]
    with pytest.raises(AccountError, match="no broker credentials to rotate"):
        book.put(_device("판교", "조립", "cobot-02"), rotate=True)
    with pytest.raises(AccountError, match="no broker account"):
        book.remove("판교/조립/cobot-02")
    book.remove("판교/조립/cobot-01")
    assert len(book) == 0


def test_a_monitor_reads_sys_only_and_a_service_account_matches_only_itself() -> None:
    monitor = ServiceAccount(name="pilot-healthcheck", role=Role.MONITOR, password_hash=new_password_hash("pw"))
    assert monitor.grants() == [("read", "$SYS/#")]
    assert monitor.matches(monitor, "pw")
    assert not monitor.matches(monitor, "other")
    assert not monitor.matches(None, "pw")
    assert not _collector().matches(_collector(dead_letter_topic="pilot/other/v1"), "pw")
    assert not monitor.matches(_device("s", "l", "d", "pw"), "pw")
    with pytest.raises(ValueError, match="for collector accounts"):
        ServiceAccount(name="m", role=Role.MONITOR, password_hash=new_password_hash("pw"), dead_letter_topic="d")


def test_chosen_passwords_must_be_long_and_plain() -> None:
    check_given_password("x" * 16, "P")
    for bad, message in [
        ("", "is empty"),
        ("x" * 15, "15 characters"),
        ("x" * 16 + "\r", "control"),
        ("x" * 16 + " ", "space"),
    ]:
        with pytest.raises(AccountError, match=message):
            check_given_password(bad, "P")


def test_service_accounts_are_checked() -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        ServiceAccount(name="a b", role=Role.PUBLISHER, password_hash=new_password_hash("pw"))
    with pytest.raises(ValueError, match="needs dead_letter_topic"):
        ServiceAccount(name="c", role=Role.COLLECTOR, password_hash=new_password_hash("pw"))
    with pytest.raises(ValueError, match="'\\+' or '#'"):
        _collector(dead_letter_topic="pilot/+/v1")
    with pytest.raises(ValueError, match="for collector accounts"):
        ServiceAccount(name="p", role=Role.PUBLISHER, password_hash=new_password_hash("pw"), client_ids=["x"])
    with pytest.raises(ValueError, match="not a Mosquitto 2 hash"):
        ServiceAccount(name="p", role=Role.PUBLISHER, password_hash="plain text")


def test_a_collector_accounts_client_id_is_its_name_and_serves_one_collector() -> None:
    """The broker makes every client's username its client id: a collector account's heartbeat is its name's."""
    assert ("readwrite", "pilot/collector/collector-b/heartbeat") in _collector("collector-b").grants()
    # An older document that listed the account's own client id still reads; other ids cannot work any more.
    older = ServiceAccount(
        name="c", role=Role.COLLECTOR, password_hash=new_password_hash("pw"), client_ids=["c"], dead_letter_topic="d"
    )
    assert older.grants() == ServiceAccount(**{**older.model_dump(), "client_ids": []}).grants()
    with pytest.raises(ValueError, match="give each collector process its own account"):
        ServiceAccount(
            name="c", role=Role.COLLECTOR, password_hash=new_password_hash("pw"), client_ids=["a", "b"],
            dead_letter_topic="d",
        )  # fmt: skip


def test_the_accounts_file_round_trips_and_its_errors_name_the_line(tmp_path: Path) -> None:
    files = BrokerFiles(tmp_path / "auth")
    with files.editing() as book:
        book.put(_device("판교", "조립 1", "cobot-01"))
        book.put(_collector())
    assert {a.username for a in files.load()} == {"판교/조립 1/cobot-01", "pilot-collector"}
    assert files.password_file.stat().st_mode & 0o777 == 0o600
    assert files.acl_file.stat().st_mode & 0o777 == 0o600  # Mosquitto warns of, then refuses, readable ones
    assert files.acl_file.read_text(encoding="utf-8") == files.load().acl_text()
    files.password_file.chmod(0o640)  # the operator's choice survives a rewrite
    with files.editing() as book:
        book.remove("pilot-collector")
    assert files.password_file.stat().st_mode & 0o777 == 0o640
    assert files.password_file.read_text(encoding="utf-8").startswith("판교/조립 1/cobot-01:$7$101$")

    files.accounts_file.write_text(
        "devices:\n- site: 판교\n  line: 조립\n  device: 'a:b'\n  password_hash: $7$101$x$y\n", encoding="utf-8"
    )
    with pytest.raises(ProfileErrors, match=r"accounts.yaml:2: devices.0: .*contains ':'"):
        files.load()
    with pytest.raises(ProfileErrors, match="used by two accounts"):
        parse_accounts(
            "services:\n"
            + "".join(f"- {{name: p, role: publisher, password_hash: '{new_password_hash('x')}'}}\n" for _ in range(2)),
            "accounts.yaml",
        )


def test_failed_edits_write_nothing(tmp_path: Path) -> None:
    files = BrokerFiles(tmp_path)
    with files.editing() as book:
        book.put(_device("s", "l", "d"))
    before = files.accounts_file.read_text(encoding="utf-8")
    with pytest.raises(AccountError), files.editing() as book:
        book.put(_device("s", "l", "d2"))
        book.put(_device("s", "l", "d"))
    assert files.accounts_file.read_text(encoding="utf-8") == before


def test_registry_edits_keep_comments(tmp_path: Path) -> None:
    catalog = load_profiles()
    path = tmp_path / "devices.yaml"
    path.write_text(
        "# our line\ndevices:\n  # the cobot\n"
        "  - site: 판교\n    line: 조립\n    device: cobot-01\n    profile: cobot_arm\n"
        "  # the conveyor\n  - {site: 판교, line: 조립, device: conveyor-01, profile: conveyor}\n",
        encoding="utf-8",
    )
    new = DeviceEntry(site="판교", line="조립", device="vision 01", profile="vision_inspection", organisation="acme")
    assert add_device(path, new, catalog)
    assert remove_device(path, DeviceKey("판교", "조립", "cobot-01"), catalog)
    text = path.read_text(encoding="utf-8")
    assert "# our line" in text and "# the conveyor" in text and "cobot-01" not in text
    assert "  - site: 판교\n    line: 조립\n    device: vision 01\n" in text
    with pytest.raises(KeyError):
        remove_device(path, DeviceKey("판교", "조립", "cobot-01"), catalog)
    fresh = tmp_path / "new.yaml"
    assert add_device(fresh, new, catalog)
    assert "vision 01" in fresh.read_text(encoding="utf-8")


def test_a_bridge_account_writes_only_its_own_sites_data_and_its_state() -> None:
    bridge = ServiceAccount(name="bridge-pangyo", role=Role.BRIDGE, site="판교", password_hash=new_password_hash("pw"))
    assert bridge.grants() == [
        ("write", "pilot/v1/판교/#"),
        ("write", "$SYS/broker/connection/bridge-pangyo/state"),
    ]
    with pytest.raises(ValueError, match="needs the site"):
        ServiceAccount(name="b", role=Role.BRIDGE, password_hash=new_password_hash("pw"))
    with pytest.raises(ValueError, match="white space"):
        ServiceAccount(name="b", role=Role.BRIDGE, site="판교 1", password_hash=new_password_hash("pw"))
    with pytest.raises(ValueError, match="wildcard"):
        ServiceAccount(name="b", role=Role.BRIDGE, site="#", password_hash=new_password_hash("pw"))
    with pytest.raises(ValueError, match="site is for bridge accounts"):
        ServiceAccount(name="p", role=Role.PUBLISHER, site="판교", password_hash=new_password_hash("pw"))
    # It reads back from accounts.yaml as it was written.
    assert parse_accounts(AccountBook([bridge]).document_text(), "accounts.yaml").get("bridge-pangyo") == bridge


def test_a_sparkplug_edge_node_publishes_only_its_own_messages_and_reads_its_commands_and_hosts_states() -> None:
    node = SparkplugNodeAccount(group="판교 A", edge_node="line-3", password_hash=new_password_hash("pw"))
    book = AccountBook([node, _collector()])
    assert book.acl_text().splitlines()[-10:] == [
        "user spBv1.0/판교 A/line-3",
        "topic write spBv1.0/판교 A/NBIRTH/line-3",
        "topic write spBv1.0/판교 A/NDATA/line-3",
        "topic write spBv1.0/판교 A/NDEATH/line-3",
        "topic write spBv1.0/판교 A/DBIRTH/line-3/+",
        "topic write spBv1.0/판교 A/DDATA/line-3/+",
        "topic write spBv1.0/판교 A/DDEATH/line-3/+",
        "topic read spBv1.0/판교 A/NCMD/line-3",
        "topic read spBv1.0/판교 A/DCMD/line-3/+",
        "topic read spBv1.0/STATE/+",
    ]
    assert book.password_file_text().splitlines()[-1].startswith("spBv1.0/판교 A/line-3:$7$101$")


@pytest.mark.parametrize(
    ("group", "edge_node", "message"),
    [
        ("g/1", "n", "Sparkplug forbids"),
        ("g", "n+", "Sparkplug forbids"),
        ("g", "#", "Sparkplug forbids"),
        ("g", "a:b", "cannot hold ':'"),
        (" g", "n", "white space"),
        ("", "n", "empty"),
    ],
)
def test_sparkplug_ids_an_acl_line_cannot_hold_exactly_are_refused(group: str, edge_node: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SparkplugNodeAccount(group=group, edge_node=edge_node, password_hash=new_password_hash("pw"))


def test_a_collector_that_is_a_sparkplug_host_gets_its_groups_commands_and_own_state_only() -> None:
    every_group = ServiceAccount(
        **{**_collector().model_dump(), "sparkplug": SparkplugHostGrant(host_id="pilot-collector")}
    )
    assert every_group.grants()[3:] == [
        ("read", "spBv1.0/#"),
        ("write", "spBv1.0/+/NCMD/+"),  # rebirth requests; the host never sends a DCMD
        ("readwrite", "spBv1.0/STATE/pilot-collector"),
    ]
    two_groups = SparkplugHostGrant(host_id="h1", groups=["plant A", "plant-b"])
    assert two_groups.grants() == [
        ("read", "spBv1.0/plant A/#"),
        ("read", "spBv1.0/plant-b/#"),
        ("write", "spBv1.0/plant A/NCMD/+"),
        ("write", "spBv1.0/plant-b/NCMD/+"),
        ("readwrite", "spBv1.0/STATE/h1"),
    ]
    assert _collector().grants() == every_group.grants()[:3]  # no Sparkplug configured: no spBv1.0 topic
    with pytest.raises(ValueError, match="for collector accounts"):
        ServiceAccount(
            name="p",
            role=Role.PUBLISHER,
            password_hash=new_password_hash("pw"),
            sparkplug=SparkplugHostGrant(host_id="h"),
        )
    with pytest.raises(ValueError, match="Sparkplug forbids"):
        SparkplugHostGrant(host_id="h", groups=["a/b"])


def test_sparkplug_node_accounts_round_trip_through_the_accounts_file(tmp_path: Path) -> None:
    files = BrokerFiles(tmp_path / "auth")
    node = SparkplugNodeAccount(group="g", edge_node="n", password_hash=new_password_hash("pw"))
    host = ServiceAccount(**{**_collector().model_dump(), "sparkplug": SparkplugHostGrant(host_id="h", groups=["g"])})
    with files.editing() as book:
        book.put(node)
        book.put(host)
    loaded = files.load()
    assert loaded.get("spBv1.0/g/n") == node and loaded.get("pilot-collector") == host
    assert "sparkplug_nodes:" in files.accounts_file.read_text(encoding="utf-8")
    with pytest.raises(AccountError, match="Sparkplug edge node 'n' \\(group 'g'\\) already has broker credentials"):
        loaded.put(node)

"""Private Mosquitto and InfluxDB processes on free ports in a state folder.

`pilot demo` and the tests use these, so that nothing depends on (or
disturbs) a broker or database someone else runs on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pilot_core.influxql import quote_identifier, quote_literal

APT_HINT = "install it with: sudo apt-get install -y mosquitto influxdb"


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, *candidates: str) -> str:
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (
            candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
        )
        if found:
            return found
    raise ServiceError(f"{name} is not installed; {APT_HINT}")


@dataclass
class LocalService:
    name: str
    folder: Path
    port: int
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"  # where it is ready, seen from here
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.folder / f"{self.name}.log"

    def start(self, timeout_s: float = 20.0) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_path}:\n{self.tail()}"
                )
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"{self.name} did not become ready on port {self.port} within {timeout_s:g} s; see {self.log_path}"
        )

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop gracefully (SIGTERM), as an operator's restart would."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 5.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files, as after `pilot devices provision`."""
        if self.process is None or self.process.poll() is not None:
            raise ServiceError(f"{self.name} is not running")
        self.process.send_signal(signal.SIGHUP)

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True)
class ServerTls:
    """A TLS listener: the server's certificate and key, and the CA its clients' certificates must come from."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_certificate: bool = False  # Mosquitto only: refuse clients without a certificate from ca_file


def mosquitto(
    folder: Path,
    port: int | None = None,
    *,
    persistence: bool = True,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    tls: ServerTls | None = None,
    more_listeners: Sequence[tuple[str, int]] = (),
) -> LocalService:
    """A Mosquitto 2 broker configured for the collector: large queues, MQTT 5.

    Anonymous and plain by default. With ``password_file`` only its accounts may connect, each with its
    username as client id (as deploy/mosquitto/mosquitto.conf), and with ``acl_file`` each may use only the
    topics it grants; ``tls`` makes the listener TLS-only. ``more_listeners`` (address, port) listen
    there too, alike (e.g. where sites' bridges reach a central broker).
    """
    binary = find_binary("mosquitto", "/usr/sbin/mosquitto")
    folder = folder.resolve()  # the process runs in the folder, so relative paths would break
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    # As in deploy/mosquitto/mosquitto.conf: no account can take another's client id, and with it its session.
    access = [f"password_file {password_file.resolve()}", "use_username_as_clientid true"] if password_file else []
    access += [f"acl_file {acl_file.resolve()}"] if acl_file else []
    listener_tls = []
    if tls is not None:
        listener_tls = [f"certfile {tls.cert_file.resolve()}", f"keyfile {tls.key_file.resolve()}"]
        listener_tls += [f"cafile {tls.ca_file.resolve()}"] if tls.ca_file else []
        listener_tls += ["require_certificate true"] if tls.require_certificate else []
    listeners = [
        line
        for address, listener_port in [("127.0.0.1", port), *more_listeners]
        for line in (f"listener {listener_port} {address}", *listener_tls)
    ]
    config = folder / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                *listeners,
                f"allow_anonymous {'false' if password_file else 'true'}",
                *access,
                f"persistence {'true' if persistence else 'false'}",
                f"persistence_location {folder}/",
                "autosave_interval 10",
                # The default of 1000 queued messages per client silently drops the
                # rest; a collector that is restarting must be able to catch up.
                "max_queued_messages 1000000",
                "max_queued_bytes 0",
                "max_inflight_messages 0",
                "message_size_limit 1048576",
                "log_dest stdout",
                "log_type error",
                "log_type warning",
                "log_type notice",
                # Started as root, Mosquitto would drop to its own user, who cannot write this
                # folder: its sessions would not survive a restart. It is ours alone, so keep our user.
                *(["user root"] if os.geteuid() == 0 else []),
                "",
            ]
        ),
        encoding="utf-8",
    )
    return LocalService("mosquitto", folder, port, [binary, "-c", str(config)])


def influxdb(
    folder: Path, port: int | None = None, *, https: ServerTls | None = None, admin: tuple[str, str] | None = None
) -> InfluxService:
    """An InfluxDB 1.x server with its data in ``folder``: plain HTTP with auth off by default.

    ``https`` serves HTTPS only, with that certificate. ``admin`` (user, password) turns
    authentication on and creates that admin user at the first start.
    """
    binary = find_binary("influxd", "/usr/bin/influxd")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    rpc_port = free_port()
    http_tls = ""
    if https is not None:
        http_tls = (
            f'  https-enabled = true\n  https-certificate = "{https.cert_file.resolve()}"\n'
            f'  https-private-key = "{https.key_file.resolve()}"\n'
        )
    config = folder / "influxdb.conf"
    config.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{folder}/meta"
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
  query-log-enabled = false
  cache-max-memory-size = "256m"
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 26214400
  auth-enabled = {"true" if admin else "false"}
{http_tls}[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""",
        encoding="utf-8",
    )
    return InfluxService(
        "influxdb", folder, port, [binary, "run", "-config", str(config)], https=https is not None, admin=admin
    )


@dataclass
class InfluxService(LocalService):
    https: bool = False
    admin: tuple[str, str] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        super().start(timeout_s)
        if self.admin:
            self._create_admin(*self.admin)

    def ready(self) -> bool:
        try:
            # Only whether it answers: the tests check the certificate with their own clients.
            return httpx.get(f"{self.url}/ping", timeout=0.5, verify=False).status_code == 204
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    def _create_admin(self, user: str, password: str) -> None:
        """InfluxDB lets anyone create the first user, an admin; later starts find it there."""
        statement = f"CREATE USER {quote_identifier(user)} WITH PASSWORD {quote_literal(password)} WITH ALL PRIVILEGES"
        response = httpx.post(f"{self.url}/query", data={"q": statement}, auth=(user, password), verify=False)
        if response.status_code != 200 or "error" in response.text:
            raise ServiceError(f"could not create the InfluxDB admin user {user!r}: HTTP {response.status_code}")

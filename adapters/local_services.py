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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

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
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
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


def mosquitto(folder: Path, port: int | None = None, *, persistence: bool = True) -> LocalService:
    """A Mosquitto 2 broker configured for the collector: large queues, MQTT 5."""
    binary = find_binary("mosquitto", "/usr/sbin/mosquitto")
    folder = folder.resolve()  # the process runs in the folder, so relative paths would break
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "allow_anonymous true",
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


def influxdb(folder: Path, port: int | None = None) -> InfluxService:
    """An InfluxDB 1.x server with auth off and its data in ``folder``."""
    binary = find_binary("influxd", "/usr/bin/influxd")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    rpc_port = free_port()
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
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""",
        encoding="utf-8",
    )
    service = InfluxService("influxdb", folder, port, [binary, "run", "-config", str(config)])
    return service


class InfluxService(LocalService):
    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

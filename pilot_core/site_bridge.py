"""The bridge section of a factory's Mosquitto: it forwards the site's ``pilot/v1/{site}/#`` to the central
broker, topics unchanged, with QoS 1 and a persistent session on both sides, over TLS with the bridge's
own account (docs/deploy.md#sites-that-bridge).

Pure: the caller supplies the password and writes the text where the site's broker includes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from pilot_core.broker_accounts import bridge_state_topic, check_bridge_site
from pilot_core.contract import CONTRACT_VERSION, TOPIC_ROOT

# Where the site's broker container finds the CA that signed the central broker's certificate.
DEFAULT_CA_FILE = PurePosixPath("/mosquitto/config/tls/central-ca.pem")


@dataclass(frozen=True)
class SiteBridge:
    name: str  # the bridge's account at the centre, also its client id there (use_username_as_clientid)
    site: str
    central_host: str
    central_port: int = 8883
    ca_file: PurePosixPath = DEFAULT_CA_FILE
    cert_file: PurePosixPath | None = None  # a client certificate, for a centre that requires one
    key_file: PurePosixPath | None = None
    keepalive_s: int = 10  # a dead WAN is noticed within two of these

    def __post_init__(self) -> None:
        check_bridge_site(self.site)
        for value, what in ((self.central_host, "the central host"), (str(self.ca_file), "the CA file")):
            if not value or any(char.isspace() for char in value):
                raise ValueError(f"{what} {value!r} is empty or contains white space, which the bridge cannot hold")
        if not 1 <= self.central_port <= 65535:
            raise ValueError(f"the central port {self.central_port} is not a TCP port: give 1 to 65535")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both a client certificate and its key, or neither")

    @property
    def topic(self) -> str:
        return f"{TOPIC_ROOT}/{CONTRACT_VERSION}/{self.site}/#"

    def config_text(self, password: str) -> str:
        client_tls = [f"bridge_certfile {self.cert_file}", f"bridge_keyfile {self.key_file}"] if self.cert_file else []
        lines = [
            f"# The bridge of site {self.site} to the central broker, made by `pilot devices site-bridge`.",
            "# Include it from the site broker's configuration (deploy/mosquitto/site.conf reads",
            "# /mosquitto/config/bridge/). It holds the bridge's password: keep it mode 0600.",
            f"connection {self.name}",
            f"address {self.central_host}:{self.central_port}",
            "bridge_protocol_version mqttv50",
            # The central broker makes every username its client id: ask for the same, so the log reads true.
            f"remote_clientid {self.name}",
            f"remote_username {self.name}",
            f"remote_password {password}",
            f"local_clientid {self.name}.local",
            f"bridge_cafile {self.ca_file}",
            *client_tls,
            "bridge_insecure false",
            # Outward only, topics kept whole, QoS 1: each message is PUBACKed by the centre before the site
            # forgets it. Nothing flows back to the factory.
            f"topic {self.topic} out 1",
            # Persistent sessions on both sides: what is queued or in flight survives a reconnection, and
            # (with the site broker's persistence) its restart.
            "cleansession false",
            "local_cleansession false",
            "start_type automatic",
            f"keepalive_interval {self.keepalive_s}",
            "restart_timeout 2 30",
            # 1 while connected, 0 otherwise (the centre's copy is the bridge's will), on both brokers.
            "notifications true",
            f"notification_topic {bridge_state_topic(self.name)}",
            "",
        ]
        return "\n".join(lines)

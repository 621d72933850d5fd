"""A factory on its own network, made by a test: a Linux network namespace joined to this one by two veth
pairs, a WAN (the factory's link to the centre, which the test cuts) and a LAN (where the test reaches the
factory's broker, never cut). Traffic uses only these addresses. Needs root (CAP_NET_ADMIN) and `ip`; without
them the test fails, it never skips."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def ip(*args: str) -> None:
    binary = shutil.which("ip") or "/usr/sbin/ip"
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


@dataclass(frozen=True)
class Factory:
    namespace: str
    wan_link: str  # our end of the WAN veth: down is the WAN cut
    centre_address: str  # ours, on the WAN: where the factory reaches the centre
    factory_lan_address: str  # the factory's, on the LAN: where we reach its broker

    def run_inside(self, command: list[str]) -> list[str]:
        """``command`` run in the factory's namespace."""
        return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.namespace, *command]

    def cut_wan(self) -> None:
        ip("link", "set", self.wan_link, "down")

    def restore_wan(self) -> None:
        ip("link", "set", self.wan_link, "up")


@contextmanager
def factory_network() -> Iterator[Factory]:
    tag = secrets.token_hex(3)
    namespace, wan, lan = f"pilot-site-{tag}", f"pw{tag}", f"pl{tag}"
    # A random /29 in 10.250.0.0/16: the WAN pair in its first /30, the LAN pair in its second.
    block = secrets.randbelow(8192) * 8
    base = f"10.250.{block // 256}."
    first = block % 256
    centre, factory_wan = f"{base}{first + 1}", f"{base}{first + 2}"
    here_lan, factory_lan = f"{base}{first + 5}", f"{base}{first + 6}"
    ip("netns", "add", namespace)
    try:
        ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        for link, address, theirs in ((wan, centre, factory_wan), (lan, here_lan, factory_lan)):
            ip("link", "add", link, "type", "veth", "peer", "name", f"{link}f")
            ip("link", "set", f"{link}f", "netns", namespace)
            ip("addr", "add", f"{address}/30", "dev", link)
            ip("link", "set", link, "up")
            ip("netns", "exec", namespace, "ip", "addr", "add", f"{theirs}/30", "dev", f"{link}f")
            ip("netns", "exec", namespace, "ip", "link", "set", f"{link}f", "up")
        yield Factory(namespace, wan, centre, factory_lan)
    finally:
        for link in (wan, lan):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        ip("netns", "del", namespace)

"""docker-compose.yml read as Compose reads it: YAML with merge keys, then ${VAR} interpolation from .env.

Shared by the unit tests of the stack's files and the integration test that runs its broker for real.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
INIT_SCRIPT = ROOT / "deploy" / "init" / "init.sh"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; "$$" is a literal "$".
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
_TOKEN = re.compile(r"\$\$|" + _VARIABLE.pattern + r"|\$")


class MissingVariable(KeyError):
    """A ${NAME:?message} whose variable is unset or empty, as Compose refuses it."""


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def strings(node: Any) -> list[str]:
    """Every string value of a parsed document: what Compose interpolates (keys and comments it leaves)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings(value)]
    return []


def variables_used(document: Any) -> set[str]:
    """Every ${NAME} interpolated (a "$$" escape is not one)."""
    return {m.group("name") for text in strings(document) for m in _TOKEN.finditer(text) if m.group("name")}


def env_example() -> dict[str, str]:
    """KEY=VALUE lines of .env.example, comments left out."""
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$$":
            return "$"
        name = match.group("name")
        if name is None:
            raise ValueError(f"a lone '$' in {value!r}: write '$$' for a literal one")
        given, op, arg = env.get(name), match.group("op"), match.group("arg") or ""
        present = given is not None and (given != "" or op in (None, "-", "?"))
        if op in (":?", "?") and not present:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and not present:
            return arg
        return given or ""

    return _TOKEN.sub(one, value)


def environment(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """A service's container environment, after interpolation."""
    raw = service.get("environment") or {}
    pairs = dict(item.split("=", 1) for item in raw) if isinstance(raw, list) else raw
    return {str(key): interpolate(str(value), env) for key, value in pairs.items()}


@dataclass(frozen=True)
class Mount:
    source: str  # a host path (starting with "."), or a named volume
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes", []):
        source, target, *options = str(volume).split(":")
        found.append(Mount(source, target, "ro" in options))
    return found


def mount_source(service: dict[str, Any], target: str) -> str:
    """What is mounted at ``target`` (or at the folder holding it) in ``service``."""
    for mount in sorted(mounts(service), key=lambda m: -len(m.target)):
        if target == mount.target or target.startswith(mount.target.rstrip("/") + "/"):
            return mount.source + target[len(mount.target) :]
    raise AssertionError(f"nothing is mounted at {target}")


def mosquitto_directives(text: str | None = None) -> list[tuple[str, str]]:
    """(directive, value) of mosquitto.conf, in order, comments left out."""
    lines = (text if text is not None else MOSQUITTO_CONF.read_text(encoding="utf-8")).splitlines()
    found = []
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            directive, _, value = line.strip().partition(" ")
            found.append((directive, value.strip()))
    return found


def stack_env(**overrides: str) -> dict[str, str]:
    """.env.example with every empty secret given a test value of its own, as a user's .env would be."""
    env = env_example()
    for key, value in env.items():
        if value == "":
            env[key] = f"test-{key.lower().replace('_', '-')}-0123456789"
    env.update(overrides)
    return env

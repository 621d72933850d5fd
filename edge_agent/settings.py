"""The edge agent's part of the deployment's configuration: the broker, and where the profiles are.

The same file and PILOT_* variables as the collector's (``collector.settings``); the agent ignores the
server's keys (InfluxDB, the database) so an edge box neither needs nor loads what serves them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.catalog import BUNDLED_PROFILES
from adapters.mqtt import MqttSettings
from adapters.settings_file import load_settings


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PILOT_", env_nested_delimiter="__", extra="ignore")

    mqtt: MqttSettings = MqttSettings()
    profiles_dir: Path = BUNDLED_PROFILES

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> AgentSettings:
        return load_settings(cls, config_file, **overrides)

"""Settings from a YAML file (default ./pilot.yaml), overridden by PILOT_* environment variables.

One loader for every process that reads the deployment's configuration: the collector and the server side
read all of it (``collector.settings``), the edge agent only its part (``edge_agent.settings``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, YamlConfigSettingsSource

DEFAULT_CONFIG_FILE = Path("pilot.yaml")
S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], config_file: Path | None = None, **overrides: Any) -> S:
    """``cls`` from ``config_file`` (default ./pilot.yaml if present), the environment and ``overrides``."""
    path = config_file or (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None)
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"configuration file {config_file} does not exist")

    class _FromFile(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            return tuple(sources)

    try:
        return cls.model_validate(_FromFile(**overrides).model_dump())
    except ValidationError as exc:
        source = f"{path} or the PILOT_* environment" if path else "the PILOT_* environment"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: "
            + ("unknown setting" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors(include_url=False)
        )
        raise ValueError(f"invalid configuration in {source}: {problems}") from None

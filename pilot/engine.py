"""The KPI engine for commands run on the server: the configured database, device registry and InfluxDB.

Such a command needs no API key: whoever can read the configuration can read
every demonstration. Failures to open or read any of them end the command with
one clear line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pilot.output import fail

if TYPE_CHECKING:
    from adapters.sql import Database
    from collector.settings import CollectorSettings
    from kpi_engine.service import KpiService


@contextmanager
def kpi_engine(config: Path | None) -> Iterator[tuple[KpiService, Database, CollectorSettings]]:
    """The engine, its database and the settings; errors inside the block become one-line failures too."""
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.catalog import load_profiles, load_registry
    from adapters.influxdb import InfluxClient, InfluxError
    from adapters.sql import Database, DemonstrationRepository, NotFound, ResultCache, RollupRepository
    from collector.settings import CollectorSettings
    from kpi_engine.service import HourStore, KpiService
    from pilot_core.device_hours import CorrectionOutOfRange
    from pilot_core.profiles import ProfileErrors

    try:
        settings = CollectorSettings.load(config)
        registry = load_registry(settings.devices_file, load_profiles(settings.profiles_dir))
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    except ProfileErrors as exc:
        raise fail(f"the device registry (what each device's states mean) could not be read:\n{exc}") from None
    try:
        with Database(settings.database_url) as database, InfluxClient(settings.influx) as influx:
            database.upgrade()
            service = KpiService(
                DemonstrationRepository(database),
                HourStore(RollupRepository(database), influx, registry),
                ResultCache(database),
            )
            yield service, database, settings
    except NotFound as exc:
        raise fail(str(exc)) from None
    except SQLAlchemyError as exc:
        raise fail(f"the demonstrations database could not be opened: {exc}") from None
    except InfluxError as exc:
        raise fail(f"InfluxDB could not be read: {exc}") from None
    except (LookupError, CorrectionOutOfRange) as exc:
        raise fail(str(exc)) from None

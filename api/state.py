"""What the API's routers share: settings, the profiles, the registry, the store and the database."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from fastapi import Request

from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient
from adapters.sql import AccessRepository, AuditLog, Database, DemonstrationRepository, RollupRepository
from api.console.sessions import SessionStore
from collector.settings import CollectorSettings
from kpi_engine.rollups import roll_up
from kpi_engine.service import DecodedHours, EvaluationStopped, HourStore, StoredSummaries
from pilot_core.profiles import ProfileCatalog
from pilot_core.registry import DeviceRegistry


@dataclass
class ApiState:
    settings: CollectorSettings
    profiles: ProfileCatalog
    registry: DeviceRegistry | None
    database: Database
    decoded_hours: DecodedHours = field(default_factory=DecodedHours)  # kept across requests
    stored_summaries: StoredSummaries = field(default_factory=StoredSummaries)  # likewise
    # Set when the server shuts down: evaluations still running in worker threads give up at their next read.
    stopping: threading.Event = field(default_factory=threading.Event)
    sessions: SessionStore = field(init=False)  # the console's, signed in with API keys, in the database
    _polled: InfluxClient | None = field(default=None, repr=False)
    _polled_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.sessions = SessionStore(self.database)

    @classmethod
    def from_settings(cls, settings: CollectorSettings, database: Database | None = None) -> ApiState:
        """The state for ``settings``; ``database`` replaces the one at ``settings.database_url``."""
        profiles = load_profiles(settings.profiles_dir)
        registry = load_registry(settings.devices_file, profiles) if settings.devices_file.is_file() else None
        return cls(settings, profiles, registry, database if database is not None else Database(settings.database_url))

    def polled_influx(self) -> InfluxClient:
        """One client kept for the whole process, for what is polled every few seconds (the live line): its
        connections stay open between requests. Closed with the app (``close``)."""
        with self._polled_lock:
            if self._polled is None:
                self._polled = InfluxClient(self.settings.influx)
            return self._polled

    def close(self) -> None:
        with self._polled_lock:
            if self._polled is not None:
                self._polled.close()
                self._polled = None

    def influx(self) -> InfluxClient:
        return InfluxClient(self.settings.influx)

    def demonstrations(self) -> DemonstrationRepository:
        return DemonstrationRepository(self.database)

    def access(self) -> AccessRepository:
        return AccessRepository(self.database)

    def audit(self) -> AuditLog:
        return AuditLog(self.database)


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.pilot
    return state


_log = logging.getLogger("pilot.api.rollups")


def rollup_loop(state: ApiState) -> None:
    """Every ``rollup_every_s``, build the device-hours of every demonstration (``kpi_engine.rollups``), until the
    server stops. Replicas may each run it: the build locks make an hour built once whichever runs first."""
    while not state.stopping.wait(state.settings.rollup_every_s):
        if state.registry is None:
            continue  # no registry, no profiles: nothing can be read
        try:
            with state.influx() as influx:
                hours = HourStore(
                    RollupRepository(state.database), influx, state.registry, stopping=state.stopping.is_set
                )
                run = roll_up(state.demonstrations(), hours, late_days=state.settings.rollup_late_days or None)
        except EvaluationStopped:
            return
        except Exception:  # the next pass tries again; a request still builds what it needs
            _log.exception("the roll-up pass failed")
            continue
        for slug, reason in run.failed.items():
            _log.warning("roll-up of %s failed: %s", slug, reason)
        if any(run.stored.values()):
            _log.info("roll-ups stored: %s", ", ".join(f"{s} {n}" for s, n in run.stored.items() if n))

"""`pilot demo`: a whole pipeline on this machine, from simulated devices to InfluxDB.

Starts a private Mosquitto and InfluxDB in a state folder on free ports,
runs the collector in-process, backfills a scenario's periods through MQTT,
waits until every record has landed, and reports what landed per device
against what was published.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import bundle_archive, local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from adapters.signing import SigningKey
from adapters.sql import (
    AccessRepository,
    AuditLog,
    Database,
    DemonstrationRepository,
    ResultCache,
    RollupRepository,
    default_url,
)
from collector.service import Collector
from collector.settings import CollectorSettings
from evidence.export import export
from kpi_engine.service import Evaluation, HourStore, KpiService
from pilot_core.access import Actor, Role
from pilot_core.contract import Channel
from pilot_core.demonstration import DemonstrationPlan, Phase
from pilot_core.influxql import quote_identifier
from pilot_core.profiles import ProfileCatalog
from pilot_core.registry import DeviceRegistry
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT, STATUS_MEASUREMENT
from simulators.line_model import SimMessage, render_runs, simulate_periods
from simulators.plan import demonstration_plan
from simulators.publish import PublishReport, publish
from simulators.scenario import Scenario
from simulators.truth import scenario_truth

DATABASE = "pilot"
LANDING_TIMEOUT_S = 300.0
DEMO = Actor.system("pilot demo")
OPERATOR = "demo-operator"  # the organisation of the demo's admin key
# Kept across runs, so that a public key saved from one run verifies the next run's bundle.
SIGNING_KEY = "signing.key"
PUBLIC_KEY = "signing-key.pub"  # beside the bundle: what `pilot verify --public-key` trusts
SIGN_IN_LINK_VALID = dt.timedelta(minutes=30)  # long enough to read the table first


@dataclass
class LandedRow:
    device: str
    profile: str
    channel: Channel
    published: int
    landed: int

    @property
    def complete(self) -> bool:
        return self.published == self.landed


@dataclass
class DemoResult:
    state_dir: Path
    influx_url: str
    mqtt_port: int
    metrics_url: str | None
    publish: PublishReport
    rows: list[LandedRow] = field(default_factory=list)
    truth_file: Path | None = None
    database_url: str = ""  # the demonstrations database (SQLite in the state folder)
    evaluation: Evaluation | None = None  # None unless a baseline and a pilot period were run
    evidence_file: Path | None = None  # its signed evidence bundle, with the evaluation
    public_key_file: Path | None = None  # the public key that verifies it

    @property
    def complete(self) -> bool:
        return all(row.complete for row in self.rows)


@contextmanager
def private_services(
    state_dir: Path, *, fresh: bool = True
) -> Iterator[tuple[local_services.LocalService, local_services.InfluxService]]:
    """Mosquitto and InfluxDB of our own, stopped on exit. Fresh: the last run's files go, but not its signing key."""
    if fresh and state_dir.exists():
        for entry in state_dir.iterdir():
            if entry.name == SIGNING_KEY and entry.is_file():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    broker = local_services.mosquitto(state_dir / "mosquitto")
    database = local_services.influxdb(state_dir / "influxdb")
    broker.start()
    try:
        database.start()
        try:
            yield broker, database
        finally:
            database.stop()
    finally:
        broker.stop()


def run_demo(
    scenario: Scenario,
    catalog: ProfileCatalog,
    broker: local_services.LocalService,
    database: local_services.InfluxService,
    state_dir: Path,
    *,
    periods: list[str] | None = None,
    batch_records: int = 100,
    metrics_port: int = 0,
    influx_database: str = DATABASE,
    say: Callable[[str], None] = print,
) -> DemoResult:
    registry = DeviceRegistry(scenario.registry_entries(), catalog)
    database_url = default_url(state_dir)
    (state_dir / "devices.yaml").write_text(scenario.registry_yaml(), encoding="utf-8")
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
    influx = InfluxSettings(url=database.url, database=influx_database)
    settings = CollectorSettings(
        mqtt=mqtt,
        influx=influx,
        client_id="pilot-demo-collector",
        # A clean session: the demo collects what it publishes, not what a shared broker queued since the last run.
        session_expiry_s=0,
        devices_file=state_dir / "devices.yaml",
        metrics_port=metrics_port,
        spool_dir=state_dir / "spool",
    )
    log_file = logging.FileHandler(state_dir / "collector.log", encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logger = logging.getLogger("pilot")
    logger.addHandler(log_file)
    logger.setLevel(logging.INFO)
    collector = Collector(settings, registry)
    collector.start()
    try:
        say(f"simulating {scenario.name} ({', '.join(periods or [p.name for p in scenario.periods])})")
        runs = simulate_periods(scenario, catalog, periods)
        truth_file = state_dir / "truth.json"
        truth_file.write_text(json.dumps(scenario_truth(runs, catalog), indent=2, ensure_ascii=False), encoding="utf-8")
        published: Counter[tuple[str, Channel]] = Counter()

        def counted(messages: Iterator[SimMessage]) -> Iterator[SimMessage]:
            for message in messages:
                published[(message.device, message.channel)] += message.records
                yield message

        report = publish(
            mqtt,
            counted(render_runs(runs, catalog, batch_records=batch_records)),
            client_id="pilot-demo-simulator",
            progress=lambda r: say(f"  published {r.messages:,} messages ({r.records:,} records), {r.rate:,.0f} msg/s"),
        )
        say(f"published {report.messages:,} messages ({report.records:,} records) in {report.seconds:.1f} s")
        expected = sum(published.values())
        _wait_for_points(collector, expected, say)
        with InfluxClient(influx) as client:
            rows = _landed(client, scenario, catalog, published)
            evaluation = evidence_file = None
            plan = demonstration_plan(scenario, catalog)
            chosen = set(periods or [p.name for p in scenario.periods])
            if {w.phase for w in plan.windows if w.name in chosen} == set(Phase):
                say("computing KPIs from the stored data")
                plan = plan.model_copy(update={"windows": [w for w in plan.windows if w.name in chosen]})
                evaluation, evidence_file = _evaluate(database_url, client, plan, registry, say, state_dir)
    finally:
        collector.stop()
        logger.removeHandler(log_file)
        log_file.close()
    metrics_url = f"http://{settings.metrics_host}:{metrics_port}/metrics" if metrics_port else None
    return DemoResult(
        state_dir,
        database.url,
        broker.port,
        metrics_url,
        report,
        rows,
        truth_file,
        database_url,
        evaluation,
        evidence_file,
        state_dir / PUBLIC_KEY if evidence_file else None,
    )


def _evaluate(
    database_url: str,
    client: InfluxClient,
    plan: DemonstrationPlan,
    registry: DeviceRegistry,
    say: Callable[[str], None],
    state_dir: Path,
) -> tuple[Evaluation, Path]:
    """Store the scenario's plan as a frozen demonstration and evaluate it, as the API would; write its evidence."""
    with Database(database_url) as database:
        database.upgrade()
        demonstrations = DemonstrationRepository(database)
        stored = demonstrations.freeze(demonstrations.create(plan, actor=DEMO).id, actor=DEMO)
        service = KpiService(
            demonstrations, HourStore(RollupRepository(database), client, registry), ResultCache(database)
        )
        evaluation = service.evaluate(stored.id, progress=say)
        say(f"demonstration {stored.slug!r}: plan version {stored.version} frozen as {stored.plan_hash}")
        key = SigningKey.load_or_create(state_dir / SIGNING_KEY)
        (state_dir / PUBLIC_KEY).write_bytes(key.public_pem)
        bundle = export(service, AuditLog(database), key, stored.id, created_by="pilot demo")
        bundle_archive.write(state_dir / bundle.name, bundle.files)
        return evaluation, state_dir / bundle.name


def verify_command(bundle: Path, public_key: Path) -> str:
    """The shell command that verifies ``bundle``, as this user would type it here."""
    return shlex.join([_pilot_command(), "verify", _as_typed(bundle), "--public-key", _as_typed(public_key)])


def _pilot_command() -> str:
    script = Path(sys.argv[0])
    if script.name != "pilot":  # python -m pilot, or a test
        script = Path(".venv/bin/pilot")
        if not script.is_file():
            return "pilot"
    typed = _as_typed(script)  # .venv/bin/pilot, from the project's folder
    found = shutil.which("pilot")
    if Path(typed).is_absolute() and found and os.path.samefile(found, script):  # installed elsewhere, on the PATH
        return "pilot"
    return typed


def _as_typed(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def api_settings(result: DemoResult, mqtt_port: int, influx_url: str) -> CollectorSettings:
    """The settings the demo's API serves with: its broker, InfluxDB, registry and demonstrations database."""
    return CollectorSettings(
        mqtt=MqttSettings(host="127.0.0.1", port=mqtt_port),
        influx=InfluxSettings(url=influx_url, database=DATABASE),
        devices_file=result.state_dir / "devices.yaml",
        database_url=result.database_url,
        metrics_port=0,
    )


@dataclass(frozen=True, slots=True)
class DemoAccess:
    key_file: Path  # the admin API key, readable by this user only
    sign_in_token: str  # signs the console in once, as that key, within SIGN_IN_LINK_VALID


def admin_key(result: DemoResult) -> DemoAccess:
    """An admin API key for the demo's API, in a file only this user can read, and a one-time console sign-in
    link's token for it (the key itself never goes into a URL)."""
    with Database(result.database_url) as database:
        access = AccessRepository(database)
        access.create_organisation(OPERATOR, "pilot demo operator", actor=DEMO)
        key, token = access.create_key("pilot demo", Role.ADMIN, OPERATOR, actor=DEMO)
        link_token = access.create_sign_in_link(key.key_id, SIGN_IN_LINK_VALID)
    path = result.state_dir / "api-key"
    path.touch(mode=0o600)
    path.write_text(token + "\n", encoding="ascii")
    return DemoAccess(path, link_token)


def _wait_for_points(collector: Collector, expected: int, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + LANDING_TIMEOUT_S
    last_said = 0.0
    while time.monotonic() < deadline:
        totals = collector.metrics.totals()
        written, rejected = totals.points_written, totals.rejected
        if written >= expected and collector.backlog == 0:
            return
        if rejected and written + rejected >= expected:
            return  # nothing more is coming; the table shows the shortfall
        if time.monotonic() - last_said > 2:
            say(f"  waiting for the collector: {written:,} of {expected:,} points written")
            last_said = time.monotonic()
        time.sleep(0.2)
    say(f"  gave up waiting after {LANDING_TIMEOUT_S:g} s; the table shows what landed")


def _landed(
    client: InfluxClient, scenario: Scenario, catalog: ProfileCatalog, published: Counter[tuple[str, Channel]]
) -> list[LandedRow]:
    measurements = {
        Channel.STATE: STATE_MEASUREMENT,
        Channel.PRODUCTION: PRODUCTION_MEASUREMENT,
        Channel.STATUS: STATUS_MEASUREMENT,
    }
    counts: dict[tuple[str, Channel], int] = {}
    queried: set[str] = set()
    for device in scenario.devices:
        profile = catalog[device.profile]
        for channel in Channel:
            measurement = profile.measurement if channel is Channel.TELEMETRY else measurements[channel]
            if measurement in queried:
                continue
            queried.add(measurement)
            for series in client.query(f'SELECT count("seq") FROM {quote_identifier(measurement)} GROUP BY "device"'):
                device_id = (series.tags or {}).get("device", "")
                counts[(device_id, channel)] = int(series.values[0][1])
    rows = []
    for device in scenario.devices:
        for channel in Channel:
            sent = published.get((device.id, channel), 0)
            if sent or counts.get((device.id, channel)):
                rows.append(LandedRow(device.id, device.profile, channel, sent, counts.get((device.id, channel), 0)))
    return rows


def result_json(result: DemoResult) -> dict[str, Any]:
    return {
        "complete": result.complete,
        "published_messages": result.publish.messages,
        "published_records": result.publish.records,
        "rows": [
            {
                "device": r.device,
                "profile": r.profile,
                "channel": r.channel.value,
                "published": r.published,
                "landed": r.landed,
            }
            for r in result.rows
        ],
    }

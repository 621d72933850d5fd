"""Evidence bundles: exported from a demonstration run through Mosquitto, the collector and InfluxDB, verified
offline (in a process with no network at all), and refused, naming what was altered, when one byte changes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters import bundle_archive, local_services
from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from adapters.signing import SigningKey
from adapters.sql import AuditLog, Database, DemonstrationRepository, ResultCache, RollupRepository
from api.main import create_app
from collector.settings import CollectorSettings
from evidence.export import Bundle, export
from evidence.verify import verify
from kpi_engine.results import comparison_document
from kpi_engine.service import HourStore, KpiService
from pilot.demo import run_demo
from pilot_core import evidence
from pilot_core.access import Actor, Role
from pilot_core.contract import TimeClass
from pilot_core.demonstration import CountCorrection, Design, Exclusion, StateCorrection
from pilot_core.device_hours import DeviceHour
from simulators.scenario import load_scenario
from tests.api_support import key_headers
from tests.integration.test_cli_demo import short_scenario

LEE = Actor("Lee (Pangyo Robotics)", Role.STARTUP, "pangyo-robotics", "0123456789ab")
REASON = "The evaluator asked to leave out the power cut and to count the unlogged maintenance as planned"


@dataclass
class Exported:
    bundle: Bundle
    settings: CollectorSettings
    folder: Path
    slug: str
    api_comparison: dict[str, object]


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: local_services.LocalService,
    influxdb: local_services.InfluxService,
) -> Iterator[Exported]:
    """Two days of baseline and two of pilot, amended with an exclusion and two corrections, then exported."""
    folder = tmp_path_factory.mktemp("evidence")
    catalog = load_profiles()
    scenario = load_scenario(short_scenario(folder), catalog)
    database_name = f"evidence_{uuid.uuid4().hex[:12]}"
    result = run_demo(scenario, catalog, mosquitto, influxdb, folder, influx_database=database_name, say=lambda _: None)
    assert result.complete and result.evaluation is not None and result.evidence_file is not None
    settings = CollectorSettings(
        mqtt=MqttSettings(host="127.0.0.1", port=mosquitto.port),
        influx=InfluxSettings(url=influxdb.url, database=database_name),
        devices_file=folder / "devices.yaml",
        database_url=result.database_url,
        signing_key_file=folder / "signing.key",
        metrics_port=0,
    )
    slug = result.evaluation.slug
    plan = result.evaluation.plan
    pilot_start = next(w for w in plan.windows if w.phase == "pilot").start
    registry = load_registry(settings.devices_file, catalog)
    with Database(settings.database_url) as database, InfluxClient(settings.influx) as influx:
        hours = HourStore(RollupRepository(database), influx, registry)
        # Two parts scrapped at inspection are taken from an hour that made them: a correction that takes its hour's
        # good count below zero is refused (it was put in the wrong hour, device or product).
        scrapped_at, scrapped = _an_hour_with_good_parts(
            hours.read(plan)[plan.output_devices[0]], pilot_start + dt.timedelta(hours=12), 2
        )
        amended = plan.model_copy(
            update={
                "exclusions": [
                    Exclusion(start=pilot_start, end=pilot_start + dt.timedelta(hours=3), reason="site-wide power cut")
                ],
                "design": Design(expected_change_pct={plan.targets[0].kpi: 2 * plan.targets[0].change_pct}),
                "product_mix": True,
                "corrections": [
                    StateCorrection(
                        device=plan.devices[0],
                        start=pilot_start + dt.timedelta(hours=10),
                        end=pilot_start + dt.timedelta(hours=11),
                        time_class=TimeClass.PLANNED_DOWNTIME,
                        reason="preventive maintenance the cell did not log",
                    ),
                    CountCorrection(
                        device=plan.output_devices[0],
                        at=scrapped_at,
                        product=scrapped,
                        good=-2,
                        scrap=2,
                        reason="two parts scrapped at final inspection",
                    ),
                ],
            }
        )
        DemonstrationRepository(database).amend(slug, amended, REASON, actor=LEE)
        service = KpiService(DemonstrationRepository(database), hours, ResultCache(database))
        bundle = export(
            service, AuditLog(database), SigningKey.load_or_create(settings.signing_key_file), slug, created_by="tests"
        )
        api = comparison_document(service.evaluate(slug)).model_dump(mode="json")
    yield Exported(bundle, settings, folder, slug, api)


def _an_hour_with_good_parts(hours: list[DeviceHour], after: dt.datetime, parts: int) -> tuple[dt.datetime, str]:
    """The first hour from ``after`` on in which the device made at least ``parts`` good units of a product."""
    for hour in sorted(hours, key=lambda h: h.start_ms):
        for product, made in sorted(hour.production.items()):
            if hour.start_ms >= after.timestamp() * 1000 and made.good >= parts:
                return dt.datetime.fromtimestamp(hour.start_ms / 1000, after.tzinfo), product
    raise AssertionError(f"no hour from {after} on made {parts} good parts")


def test_export_then_verify_gives_the_same_numbers_bit_for_bit(exported: Exported) -> None:
    report = verify(exported.bundle.files)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert [c.name for c in report.checks] == ["manifest", "signature", "files", "plan", "recomputation"]
    bundled = json.loads(exported.bundle.files[evidence.COMPARISON])
    # The bundle's numbers are the API's, byte for byte once written: only where they came from differs.
    assert evidence.json_bytes(bundled["kpis"]) == evidence.json_bytes(exported.api_comparison["kpis"])
    assert bundled["coverage"] == exported.api_comparison["coverage"]
    assert bundled["source"]["plan_version"] == 2 and bundled["source"]["data_fingerprint"].startswith("evidence:")


def test_the_bundle_holds_what_an_evaluator_needs(exported: Exported) -> None:
    files = exported.bundle.files
    manifest = exported.bundle.manifest
    assert set(manifest.files) == set(files) - {evidence.MANIFEST, evidence.SIGNATURE}
    assert {evidence.plan_file(1), evidence.plan_file(2), *evidence.DATA_FILES} <= set(files)
    versions = json.loads(files[evidence.PLAN_VERSIONS])
    assert [(v["version"], v["reason"]) for v in versions] == [(1, None), (2, REASON)]
    environment = json.loads(files[evidence.ENVIRONMENT])
    assert environment["software"]["pilot-telemetry"] and environment["libraries"]["statsmodels"]
    assert "seeds" in environment
    production = files[evidence.PRODUCTION].decode().splitlines()
    assert production[0].startswith("device,chunk_ms,ts_ms,product") and len(production) > 100
    assert manifest.signing_key == SigningKey.load(exported.settings.signing_key_file).fingerprint


def test_every_amendment_exclusion_and_correction_says_who_when_and_why(exported: Exported) -> None:
    trail = json.loads(exported.bundle.files[evidence.AUDIT_CHANGES])
    first, second = trail["versions"]
    assert first["made"]["name"] == "pilot demo" and first["frozen"]["name"] == "pilot demo"
    assert second["reason"] == REASON and second["made"]["name"] == LEE.name
    assert second["made"]["organisation"] == "pangyo-robotics" and second["made"]["at"]
    items = trail["exclusions_and_corrections"]
    assert [(i["kind"], i["why"]) for i in items] == [
        ("exclusion", "site-wide power cut"),
        ("correction", "preventive maintenance the cell did not log"),
        ("correction", "two parts scrapped at final inspection"),
    ]
    assert all(i["version"] == 2 and i["made"]["name"] == LEE.name and i["amendment_reason"] == REASON for i in items)
    entries = json.loads(exported.bundle.files[evidence.AUDIT_ENTRIES])
    assert [e["action"] for e in entries] == ["demonstration.created", "plan.frozen", "plan.amended"]


def _altered(files: dict[str, bytes], name: str, offset: int | None = None) -> dict[str, bytes]:
    data = bytearray(files[name])
    at = len(data) // 2 if offset is None else offset
    while not chr(data[at]).isdigit():  # a digit, so the file still parses and the numbers change
        at += 1
    data[at] = ord("7") if data[at] != ord("7") else ord("8")
    return {**files, name: bytes(data)}


@pytest.mark.parametrize("name", [evidence.PRODUCTION, evidence.STATES, evidence.plan_file(2), evidence.COMPARISON])
def test_one_altered_byte_fails_verification_and_is_named(exported: Exported, name: str) -> None:
    report = verify(_altered(exported.bundle.files, name))
    assert not report.passed
    failed = {c.name: c.details for c in report.checks if not c.passed}
    assert any(detail.startswith(f"{name} was altered") for detail in failed["files"])


def test_altering_a_file_and_its_hash_breaks_the_signature_and_the_recomputation(exported: Exported) -> None:
    files = _altered(exported.bundle.files, evidence.PRODUCTION)
    manifest = json.loads(files[evidence.MANIFEST])
    manifest["files"][evidence.PRODUCTION] = evidence.entry(files[evidence.PRODUCTION]).model_dump()
    files[evidence.MANIFEST] = evidence.json_bytes(manifest)
    report = verify(files)
    failed = {c.name: c.details for c in report.checks if not c.passed}
    assert set(failed) == {"signature", "recomputation"}
    assert "manifest.json was altered after it was signed" in failed["signature"][0]
    assert any("fingerprint" in d or "the bundle says" in d for d in failed["recomputation"])


def test_a_bundle_resigned_by_another_key_is_caught_by_the_trusted_key(exported: Exported, tmp_path: Path) -> None:
    forger = SigningKey.load_or_create(tmp_path / "forger.key")
    files = dict(exported.bundle.files)
    files[evidence.PUBLIC_KEY] = forger.public_pem
    manifest = json.loads(files[evidence.MANIFEST])
    manifest["signing_key"] = forger.fingerprint
    manifest["files"][evidence.PUBLIC_KEY] = evidence.entry(forger.public_pem).model_dump()
    files[evidence.MANIFEST] = evidence.json_bytes(manifest)
    files[evidence.SIGNATURE] = base64.b64encode(forger.sign(files[evidence.MANIFEST]))
    assert verify(files).passed  # self-consistent: only the deployment's published key tells
    trusted = SigningKey.load(exported.settings.signing_key_file).public_pem
    report = verify(files, trusted)
    assert not report.passed
    assert {c.name for c in report.checks if not c.passed} == {"signature"}


def _offline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`pilot …` in a network namespace of its own: not even loopback, so no service could be reached."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PILOT_")}
    command = ["unshare", "--net", sys.executable, "-m", "pilot", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False)


def test_pilot_verify_runs_with_no_network_and_its_exit_status_says(exported: Exported, tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    bundle_archive.write(good, exported.bundle.files)
    passed = _offline("verify", str(good), cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "passed" in passed.stdout and "compare it with the fingerprint" in passed.stderr

    bad = tmp_path / "bad.zip"
    bundle_archive.write(bad, _altered(exported.bundle.files, evidence.TELEMETRY))
    failed = _offline("verify", str(bad), "--json", cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    document = json.loads(failed.stdout)
    assert not document["passed"]
    assert any(evidence.TELEMETRY in d for c in document["checks"] for d in c["details"])

    raw = bytearray(good.read_bytes())  # a byte flipped in the zip itself, not in a file's contents
    raw[len(raw) // 3] ^= 0xFF
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(bytes(raw))
    broken = _offline("verify", str(flipped), cwd=tmp_path)
    assert broken.returncode == 1 and "data/" in broken.stdout + broken.stderr


def test_the_demo_bundle_verifies_offline(exported: Exported) -> None:
    demo_bundle = next(exported.folder.glob("*-evidence.zip"))
    key = exported.folder / "signing.key"
    public = exported.folder / "signing.pub"
    public.write_bytes(SigningKey.load(key).public_pem)
    result = _offline("verify", str(demo_bundle), "--public-key", str(public), cwd=exported.folder)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_api_and_the_command_export_bundles_that_verify(exported: Exported, tmp_path: Path) -> None:
    app = create_app(exported.settings)
    with TestClient(app, headers=key_headers(app, Role.EVALUATOR, "pangyo-robotics")) as client:
        hidden = client.get(f"/v1/demonstrations/{exported.slug}/evidence")
        assert hidden.status_code == 404  # the evaluators' organisation does not take part yet
    with TestClient(app, headers=key_headers(app)) as client:
        response = client.get(f"/v1/demonstrations/{exported.slug}/evidence")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["x-pilot-signing-key"] == exported.bundle.manifest.signing_key
    downloaded = tmp_path / "downloaded.zip"
    downloaded.write_bytes(response.content)
    assert verify(bundle_archive.read(downloaded)).passed
    app.state.pilot.database.dispose()

    config = tmp_path / "pilot.yaml"
    config.write_text(exported.settings.model_dump_json(), encoding="utf-8")  # YAML reads JSON
    written = tmp_path / "cli.zip"
    command = [
        sys.executable,
        "-m",
        "pilot",
        "evidence",
        "export",
        exported.slug,
        "-o",
        str(written),
        "-c",
        str(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pilot verify" in result.stderr
    assert _offline("verify", str(written), cwd=tmp_path).returncode == 0


def test_the_bundles_kpis_carry_units_and_reasons_and_the_comparisons_numbers(exported: Exported) -> None:
    kpis = json.loads(exported.bundle.files[evidence.KPIS])
    comparison = json.loads(exported.bundle.files[evidence.COMPARISON])
    for phase, window in kpis["phases"].items():
        assert set(window["units"]) == set(window["kpis"])
        assert set(window["reasons"]) == {k for k, v in window["kpis"].items() if v is None}
        for change in comparison["kpis"]:
            assert change[phase]["value"] == window["kpis"][change["kpi"]], change["kpi"]  # one number, bit for bit
            assert change["unit"] == window["units"][change["kpi"]]


def test_the_design_before_data_is_in_the_bundle_and_a_forged_mde_fails_the_recomputation(exported: Exported) -> None:
    """The design (each target's minimum detectable change, from the baseline alone) and the figures at the
    baseline's product mix travel in results/comparison.json as the API gives them; a smaller MDE written into the
    bundle and signed again with the deployment's own key still fails: verify recomputes it from the rows."""
    files = dict(exported.bundle.files)
    comparison = json.loads(files[evidence.COMPARISON])
    assert comparison["design"] == exported.api_comparison["design"]
    assert comparison.get("product_mix") == exported.api_comparison.get("product_mix")
    targets = comparison["design"]["targets"]
    assert targets and all(t["mde"] is not None and t["baseline_n"] > 0 for t in targets)
    forged = targets[0]["mde"] / 2
    comparison["design"]["targets"][0]["mde"] = forged
    files[evidence.COMPARISON] = evidence.json_bytes(comparison)
    manifest = json.loads(files[evidence.MANIFEST])
    manifest["files"][evidence.COMPARISON] = evidence.entry(files[evidence.COMPARISON]).model_dump()
    files[evidence.MANIFEST] = evidence.json_bytes(manifest)
    key = SigningKey.load(exported.settings.signing_key_file)
    files[evidence.SIGNATURE] = base64.b64encode(key.sign(files[evidence.MANIFEST]))
    report = verify(files, key.public_pem)
    failed = {c.name: c.details for c in report.checks if not c.passed}
    assert set(failed) == {"recomputation"}
    assert any(d.startswith(f"{evidence.COMPARISON} design.targets[0].mde: the bundle says {forged!r}") for d in
               failed["recomputation"]), failed  # fmt: skip

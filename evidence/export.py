"""Exporting a demonstration's evidence bundle: plan versions, audit trail, rows, results, signed manifest.

The results in the bundle are computed from the very rows in it, by the same
engine the API uses, and written as the same documents (``kpi_engine.results``);
the export checks that they equal what the engine answers for the stored hours
(after re-reading every hour from InfluxDB), so the bundle and the API never
tell two stories.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata
import platform
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from adapters.signing import SigningKey
from adapters.sql import AuditLog
from kpi_engine.evaluation import DemonstrationResult, evaluate
from kpi_engine.results import comparison_document, kpis_document
from kpi_engine.service import ENGINE_VERSION, Evaluation, KpiService, telemetry_intervals
from pilot_core import evidence
from pilot_core.audit import AuditEntryModel
from pilot_core.demonstration import DemonstrationPlan, canonical_json
from pilot_core.device_hours import DeviceHour
from pilot_core.device_rows import DeviceRows, build_hours
from pilot_core.registry import DeviceKey, DeviceRegistry

_RESULT = TypeAdapter(DemonstrationResult)
_ATTEMPTS = 3  # data landing while we export makes the two readings differ: read again
NUMERIC_LIBRARIES = ("numpy", "scipy", "statsmodels", "pydantic")


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class Bundle:
    files: dict[str, bytes]
    manifest: evidence.Manifest

    @property
    def name(self) -> str:
        return f"{self.manifest.slug}-v{self.manifest.plan_version}-evidence.zip"


def software_version() -> str:
    try:
        return importlib.metadata.version("pilot-telemetry")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def environment() -> dict[str, object]:
    """What produced the numbers: results are bit for bit only under the same engine and numeric libraries."""
    libraries: dict[str, str | None] = {}
    for name in NUMERIC_LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libraries[name] = None
    return {
        "software": {"pilot-telemetry": software_version(), "kpi_engine": ENGINE_VERSION},
        "python": platform.python_version(),
        "libraries": libraries,
        "seeds": {},
        "seeds_note": "the engine draws no random numbers: intervals are Newey-West (HAC) with fixed-b critical values",
    }


def hours_of(all_rows: list[DeviceRows]) -> dict[str, list[DeviceHour]]:
    hours: dict[str, list[DeviceHour]] = defaultdict(list)
    for rows in all_rows:
        hours[rows.device].extend(build_hours(rows))
    return hours


def results(
    demonstration_id: int,
    slug: str,
    plan_version: int,
    frozen: bool,
    plan: DemonstrationPlan,
    result: DemonstrationResult,
    fingerprint: str,
    hours: dict[str, list[DeviceHour]],
) -> dict[str, bytes]:
    """The results files: the engine's documents of ``result`` (``kpi_engine.results``), from a bundle's rows."""
    evaluation = Evaluation(
        demonstration_id=demonstration_id,
        slug=slug,
        plan_version=plan_version,
        frozen=frozen,
        plan=plan,
        result=result,
        data_fingerprint=fingerprint,
        hours_refreshed=sum(len(device_hours) for device_hours in hours.values()),
        cached=False,
    )
    return {
        evidence.KPIS: evidence.json_bytes(_as_bundled(kpis_document(evaluation).model_dump(mode="json"))),
        evidence.COMPARISON: evidence.json_bytes(_as_bundled(comparison_document(evaluation).model_dump(mode="json"))),
    }


def _as_bundled(document: dict[str, Any]) -> dict[str, Any]:
    """A result document as a bundle holds it: without the serving side's late-data marks, which rows cannot carry
    (a result recomputed from them has none), so bundles signed before late data was tracked stay true; likewise
    a design or an adjusted baseline recomputed as kpi_engine 3 computed it, without the keys it had not."""
    source = document["source"]
    if not source.get("late_hours") and source.get("late_data") is None:
        source.pop("late_hours", None)
        source.pop("late_data", None)
    # Nor a design of revision 1 (kpi_engine 3) the keys it never had: such a bundle is verified as it was signed.
    for target in (document.get("design") or {}).get("targets", []):
        if target.get("method") is None:
            target.pop("method", None)
            target.pop("degrees_of_freedom", None)
    adjusted = document.get("adjusted_baseline")
    if adjusted and adjusted.get("conditions") is None:  # nor an adjusted baseline of revision 1 its conditions
        adjusted.pop("conditions", None)
    return document


def export(
    kpi: KpiService,
    audit: AuditLog,
    key: SigningKey,
    ref: int | str,
    version: int | None = None,
    *,
    created_by: str,
) -> Bundle:
    """The bundle of demonstration ``ref`` under plan ``version`` (default: the latest)."""
    for _ in range(_ATTEMPTS):
        evaluation = kpi.evaluate(ref, version, refresh=True)
        plan = evaluation.plan
        registry = kpi.hours.registry
        all_rows = list(kpi.hours.rows(plan))
        hours = hours_of(all_rows)
        result = evaluate(plan, evaluation.result.plan_hash, hours, telemetry_intervals(plan, registry))
        if _RESULT.dump_json(result) == _RESULT.dump_json(evaluation.result):
            break
    else:
        raise ExportError(f"the data of {evaluation.slug!r} kept changing while it was exported; try again later")

    files = evidence.rows_to_csv(all_rows)
    fingerprint = evidence.data_fingerprint(files)
    files.update(
        results(
            evaluation.demonstration_id,
            evaluation.slug,
            evaluation.plan_version,
            evaluation.frozen,
            plan,
            result,
            fingerprint,
            hours,
        )
    )

    stored = kpi.demonstrations.get(evaluation.demonstration_id)
    versions = kpi.demonstrations.versions(stored.id)
    listed = []
    for plan_version in versions:
        text = canonical_json(plan_version.plan).encode("utf-8")
        if "sha256:" + evidence.sha256(text) != plan_version.plan_hash:
            raise ExportError(f"plan version {plan_version.version} no longer hashes to its stored hash")
        files[evidence.plan_file(plan_version.version)] = text
        listed.append(
            {
                "version": plan_version.version,
                "plan_hash": plan_version.plan_hash,
                "frozen": plan_version.frozen,
                "frozen_at": plan_version.frozen_at.isoformat() if plan_version.frozen_at else None,
                "reason": plan_version.reason,
                "created_at": plan_version.created_at.isoformat(),
                "file": evidence.plan_file(plan_version.version),
            }
        )
    files[evidence.PLAN_VERSIONS] = evidence.json_bytes(listed)
    entries = list(reversed(audit.entries(stored.id, limit=1_000_000)))
    files[evidence.AUDIT_ENTRIES] = evidence.json_bytes(
        [AuditEntryModel.of(e).model_dump(mode="json") for e in entries]
    )
    trail = evidence.change_trail([(v.version, v.plan_hash, v.reason, v.plan) for v in versions], entries)
    files[evidence.AUDIT_CHANGES] = evidence.json_bytes(trail)
    files.update(_devices(registry, plan.site, plan.line, plan.devices))
    files[evidence.ENVIRONMENT] = evidence.json_bytes(environment())
    files[evidence.PUBLIC_KEY] = key.public_pem

    manifest = evidence.Manifest(
        demonstration_id=stored.id,
        slug=stored.slug,
        organisation=stored.organisation,
        plan_version=evaluation.plan_version,
        plan_hash=evaluation.result.plan_hash,
        frozen=evaluation.frozen,
        created_at=dt.datetime.now(dt.UTC),
        created_by=created_by,
        software_version=software_version(),
        data_fingerprint=fingerprint,
        api_data_fingerprint=evaluation.data_fingerprint,
        signing_key=key.fingerprint,
        files={name: evidence.entry(data) for name, data in sorted(files.items())},
    )
    files[evidence.MANIFEST] = evidence.json_bytes(manifest.model_dump(mode="json"))
    files[evidence.SIGNATURE] = base64.b64encode(key.sign(files[evidence.MANIFEST])) + b"\n"
    return Bundle(files, manifest)


def _devices(registry: DeviceRegistry, site: str, line: str, devices: list[str]) -> dict[str, bytes]:
    """The registry entries and the profiles of the devices in scope: what their hours were read and judged by."""
    entries = []
    profiles = {}
    for device in devices:
        registered = registry.get(DeviceKey(site, line, device))
        if registered is None:
            raise ExportError(f"device {device!r} of the plan is not in the device registry")
        entries.append(registered.entry.model_dump(mode="json"))
        profiles[registered.profile.id] = registered.profile
    files = {evidence.REGISTRY: evidence.json_bytes(entries)}
    for profile_id, profile in profiles.items():
        files[evidence.profile_file(profile_id)] = evidence.json_bytes(profile.model_dump(mode="json"))
    return files

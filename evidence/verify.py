"""Verifying an evidence bundle offline: signature, hashes, plan, and every KPI recomputed from the bundled rows.

Nothing here reaches a network or a database: what is checked is the bundle
alone, against a public key the evaluator trusts (or, failing that, the one in
the bundle, whose fingerprint they should compare with the one published).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from adapters import signing
from evidence.export import environment, hours_of, results
from kpi_engine.evaluation import evaluate
from kpi_engine.service import ENGINE_VERSION, method_revisions, telemetry_intervals
from pilot_core import evidence
from pilot_core.audit import json_changes
from pilot_core.demonstration import STORED, DemonstrationPlan
from pilot_core.profiles import DeviceProfile, ProfileCatalog
from pilot_core.registry import DeviceEntry, DeviceRegistry

_SHOWN_DIFFERENCES = 20


@dataclass
class Check:
    name: str
    passed: bool
    details: list[str] = field(default_factory=list)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def add(self, name: str, problems: list[str]) -> bool:
        self.checks.append(Check(name, not problems, problems))
        return not problems


def verify(files: Mapping[str, bytes], trusted_key: bytes | None = None) -> Report:
    """Every check of the bundle's ``files``; those that cannot run after a failure are reported as not run."""
    report = Report()
    manifest = _manifest(files, report)
    if manifest is None:
        return report
    _signature(files, manifest, trusted_key, report)
    if not report.add("files", _files(files, manifest)):
        report.notes.append("the altered files are named above; the recomputation below still runs on them")
    plan = _plan(files, manifest, report)
    if plan is not None:
        _recompute(files, manifest, plan, report)
    _environment(files, report)
    return report


def _manifest(files: Mapping[str, bytes], report: Report) -> evidence.Manifest | None:
    try:
        manifest = evidence.Manifest.model_validate_json(files[evidence.MANIFEST])
    except KeyError:
        report.add("manifest", [f"the bundle has no {evidence.MANIFEST}"])
        return None
    except ValidationError as exc:
        report.add(
            "manifest", [f"{evidence.MANIFEST} is not a manifest of {evidence.FORMAT}: {exc.errors()[0]['msg']}"]
        )
        return None
    if manifest.format != evidence.FORMAT:
        report.add("manifest", [f"the bundle is {manifest.format!r}; this verifier reads {evidence.FORMAT!r}"])
        return None
    report.add("manifest", [])
    return manifest


def _signature(
    files: Mapping[str, bytes], manifest: evidence.Manifest, trusted_key: bytes | None, report: Report
) -> None:
    embedded = files.get(evidence.PUBLIC_KEY)
    key = trusted_key or embedded
    if key is None:
        report.add("signature", [f"the bundle has no {evidence.PUBLIC_KEY}, and no trusted key was given"])
        return
    problems = []
    try:
        shown = signing.fingerprint(key)
        signature = base64.b64decode(files.get(evidence.SIGNATURE, b"").strip(), validate=True)
        if not signature:
            problems.append(f"the bundle has no {evidence.SIGNATURE}")
        elif not signing.verify(key, signature, files[evidence.MANIFEST]):
            problems.append(
                f"{evidence.MANIFEST} was altered after it was signed, or signed by another key than {shown}"
            )
    except (signing.SigningKeyError, binascii.Error) as exc:
        report.add("signature", [f"the signature cannot be checked: {exc}"])
        return
    if manifest.signing_key != shown:
        problems.append(f"the manifest names the signing key {manifest.signing_key}, but the key used is {shown}")
    if trusted_key is None:
        report.notes.append(
            f"signed with the key inside the bundle, {shown}: compare it with the fingerprint the deployment publishes,"
            " or pass --public-key"
        )
    elif embedded is not None and embedded != trusted_key:
        problems.append(f"the bundle carries another public key than the trusted one ({shown})")
    report.add("signature", problems)


def _files(files: Mapping[str, bytes], manifest: evidence.Manifest) -> list[str]:
    problems = []
    for name, listed in sorted(manifest.files.items()):
        data = files.get(name)
        if data is None:
            problems.append(f"{name} is missing")
        elif evidence.sha256(data) != listed.sha256:
            problems.append(
                f"{name} was altered: its SHA-256 is {evidence.sha256(data)}, the manifest says {listed.sha256}"
            )
    unlisted = set(files) - set(manifest.files) - {evidence.MANIFEST, evidence.SIGNATURE}
    problems += [f"{name} is not in the manifest" for name in sorted(unlisted)]
    return problems


def _plan(files: Mapping[str, bytes], manifest: evidence.Manifest, report: Report) -> DemonstrationPlan | None:
    problems = []
    chosen: DemonstrationPlan | None = None
    try:
        versions = json.loads(files[evidence.PLAN_VERSIONS])
        for listed in versions:
            text = files[listed["file"]]
            if "sha256:" + evidence.sha256(text) != listed["plan_hash"]:
                problems.append(f"{listed['file']} does not hash to the plan hash of version {listed['version']}")
                continue
            if listed["version"] == manifest.plan_version:
                chosen = DemonstrationPlan.model_validate_json(text, context=STORED)  # as it was accepted
                if listed["plan_hash"] != manifest.plan_hash:
                    problems.append(f"plan version {listed['version']} is not the one the results name")
    except (KeyError, ValueError, TypeError) as exc:
        problems.append(f"the plan versions cannot be read: {exc}")
    if chosen is None and not problems:
        problems.append(f"the bundle has no plan version {manifest.plan_version}, which the results name")
    report.add("plan", problems)
    return chosen if not problems else None


def _recompute(
    files: Mapping[str, bytes], manifest: evidence.Manifest, plan: DemonstrationPlan, report: Report
) -> None:
    try:
        all_rows = evidence.rows_from_csv(files)
        entries = [DeviceEntry.model_validate(e) for e in json.loads(files[evidence.REGISTRY])]
        profiles = ProfileCatalog(
            DeviceProfile.model_validate_json(data)
            for name, data in files.items()
            if name.startswith("devices/profiles/")
        )
        registry = DeviceRegistry(entries, profiles)
        bundled = {name: json.loads(files[name]) for name in (evidence.KPIS, evidence.COMPARISON)}
    except (evidence.EvidenceError, KeyError, ValueError) as exc:
        problems = [f"the bundle cannot be read to recompute it: {exc}"]
        if all(name in files for name in evidence.DATA_FILES):  # the fingerprint needs only the files' bytes
            problems += _fingerprint_problems(evidence.data_fingerprint(files), manifest)
        report.add("recomputation", problems)
        return
    fingerprint = evidence.data_fingerprint(files)
    hours = hours_of(all_rows)
    engine = _engine_version(files)
    revisions, present = method_revisions(engine), method_revisions(ENGINE_VERSION)
    result = evaluate(plan, manifest.plan_hash, hours, telemetry_intervals(plan, registry), revisions=revisions)
    if revisions.design != present.design and plan.design is not None:
        report.notes.append(
            f"the bundle was made by kpi_engine {engine}: its design before data is recomputed as that engine"
            f" computed it (revision {revisions.design}); this engine ({ENGINE_VERSION}) designs each target by its"
            " method and allows for a short pilot's variance estimate, so a new export's figures differ"
        )
    if revisions.adjusted_baseline != present.adjusted_baseline and plan.adjusted_baseline is not None:
        report.notes.append(
            f"the bundle was made by kpi_engine {engine}: its adjusted baseline is recomputed as that engine computed"
            f" it (revision {revisions.adjusted_baseline}: HAC bandwidth half the sample, a verdict whatever the"
            f" pilot's conditions); this engine ({ENGINE_VERSION}) takes the full sample and draws no verdict on"
            " conditions beyond the baseline's, so a new export's figures differ"
        )
    recomputed = results(
        manifest.demonstration_id,
        manifest.slug,
        manifest.plan_version,
        manifest.frozen,
        plan,
        result,
        fingerprint,
        hours,
    )
    problems = []
    last_bits = 0
    for name, text in recomputed.items():
        # As JSON text both sides: what is compared is the numbers as written, bit for bit, but for the last bits
        # of a float, which another CPU's floating-point kernels may round otherwise.
        every_change = json_changes(bundled[name], json.loads(text))
        changes = [c for c in every_change if not evidence.last_bits_apart(c["before"], c["after"])]
        last_bits += len(every_change) - len(changes)
        for change in changes[:_SHOWN_DIFFERENCES]:
            problems.append(
                f"{name} {change['path']}: the bundle says {change['before']!r}, recomputed {change['after']!r}"
            )
        if len(changes) > _SHOWN_DIFFERENCES:
            problems.append(f"{name}: and {len(changes) - _SHOWN_DIFFERENCES} more differences")
    if last_bits:
        report.notes.append(
            f"{last_bits} recomputed numbers differ from the bundle's in their last bits only (within "
            f"{evidence.RECOMPUTATION_RELATIVE_TOLERANCE:g} relative): this machine's floating-point kernels round "
            "otherwise than the exporter's; every other value, and every verdict, is the bundle's exactly"
        )
    report.add("recomputation", problems + _fingerprint_problems(fingerprint, manifest))


def _engine_version(files: Mapping[str, bytes]) -> str | None:
    """The kpi_engine version the bundle's environment names (signed with it: the manifest lists its hash)."""
    try:
        software = json.loads(files[evidence.ENVIRONMENT]).get("software", {})
    except (KeyError, ValueError, AttributeError):
        return None
    version = software.get("kpi_engine") if isinstance(software, dict) else None
    return version if isinstance(version, str) else None


def _fingerprint_problems(fingerprint: str, manifest: evidence.Manifest) -> list[str]:
    if fingerprint == manifest.data_fingerprint:
        return []
    return [f"the data files' fingerprint is {fingerprint}; the manifest says {manifest.data_fingerprint}"]


def _environment(files: Mapping[str, bytes], report: Report) -> None:
    try:
        recorded = json.loads(files[evidence.ENVIRONMENT])
    except (KeyError, ValueError):
        return
    here = environment()
    for kind in ("software", "libraries"):
        ours = here[kind]
        for name, version in recorded.get(kind, {}).items():
            mine = ours.get(name) if isinstance(ours, dict) else None
            if mine != version:
                report.notes.append(
                    f"exported with {name} {version}, verified with {mine}: numbers may differ in the last bits"
                )

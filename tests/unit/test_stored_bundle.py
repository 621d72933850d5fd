"""A bundle signed before the result documents moved below the API (tests/bundles/README.md) verifies now, and
what this code writes from its rows is the bundle's bytes exactly: a refactoring never changes a signed bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from adapters import bundle_archive
from evidence.export import hours_of, results
from evidence.verify import verify
from kpi_engine.evaluation import MethodRevisions, evaluate
from kpi_engine.service import method_revisions, telemetry_intervals
from pilot.cli import app
from pilot_core import evidence
from pilot_core.audit import AuditEntryModel
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.profiles import DeviceProfile, ProfileCatalog
from pilot_core.registry import DeviceEntry, DeviceRegistry

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
BUNDLE = BUNDLES / "pangyo-one-day-v1-evidence.zip"
PUBLIC_KEY = BUNDLES / "pangyo-one-day-signing-key.pub"
# Signed by kpi_engine 3 with a design before data (revision 1) of a control-line target: see tests/bundles/README.md.
ENGINE_3_BUNDLE = BUNDLES / "plant-two-day-engine3-v1-evidence.zip"
ENGINE_3_KEY = BUNDLES / "plant-two-day-engine3-signing-key.pub"
# Signed by kpi_engine 3 with an adjusted baseline (revision 1) of an energy target: see tests/bundles/README.md.
ENGINE_3_ADJUSTED_BUNDLE = BUNDLES / "energy-two-day-engine3-v1-evidence.zip"
ENGINE_3_ADJUSTED_KEY = BUNDLES / "energy-two-day-engine3-signing-key.pub"


def test_the_stored_bundle_verifies_against_its_key() -> None:
    report = verify(bundle_archive.read(BUNDLE), PUBLIC_KEY.read_bytes())
    assert report.passed, [c for c in report.checks if not c.passed]
    assert [c.name for c in report.checks] == ["manifest", "signature", "files", "plan", "recomputation"]


def test_pilot_verify_passes_the_stored_bundle() -> None:
    result = CliRunner().invoke(app, ["verify", str(BUNDLE), "--public-key", str(PUBLIC_KEY)])
    assert result.exit_code == 0, result.output


def test_the_results_written_from_the_stored_rows_are_the_bundles_bytes() -> None:
    """Verification compares the numbers; this compares the files byte for byte, key order and all."""
    _assert_written_as_stored(BUNDLE)


def test_a_bundle_of_kpi_engine_3_with_a_design_verifies_and_says_its_design_is_engine_3s() -> None:
    """kpi_engine 4 designs each target by its method and allows for a short pilot's variance estimate, so its
    figures differ from what an engine-3 bundle signed; verify recomputes such a bundle's design as engine 3 did
    (the engine version is in its signed environment.json), passes it, and says so."""
    report = verify(bundle_archive.read(ENGINE_3_BUNDLE), ENGINE_3_KEY.read_bytes())
    assert report.passed, [c for c in report.checks if not c.passed]
    assert any("made by kpi_engine 3: its design before data is recomputed as that engine computed it" in note
               for note in report.notes), report.notes  # fmt: skip
    result = CliRunner().invoke(app, ["verify", str(ENGINE_3_BUNDLE), "--public-key", str(ENGINE_3_KEY)])
    assert result.exit_code == 0, result.output
    _assert_written_as_stored(ENGINE_3_BUNDLE)


def test_the_present_engine_designs_the_engine_3_bundles_control_line_target_otherwise() -> None:
    """The revision matters: recomputed by the present design, the control-line target's figures are not the
    bundle's (they come from the paired log gap now, not the treated line alone)."""
    files = bundle_archive.read(ENGINE_3_BUNDLE)
    stored = json.loads(files[evidence.COMPARISON])["design"]["targets"][0]
    assert "method" not in stored  # engine 3 knew no method
    present = json.loads(_written(files, method_revisions(None))[evidence.COMPARISON])["design"]["targets"][0]
    assert present["method"] == "control_line" and present["degrees_of_freedom"] > 0
    assert present["baseline_relative_se"] != stored["baseline_relative_se"] and present["mde"] != stored["mde"]


def test_a_bundle_of_kpi_engine_3_with_an_adjusted_baseline_verifies_and_says_its_adjusted_baseline_is_engine_3s() -> (
    None
):
    """kpi_engine 4 takes the adjusted baseline's HAC bandwidth over the whole sample and refuses a verdict on
    conditions beyond the baseline's, so its interval differs from what an engine-3 bundle signed; verify recomputes
    such a bundle's adjusted baseline as engine 3 did, passes it, and says so."""
    report = verify(bundle_archive.read(ENGINE_3_ADJUSTED_BUNDLE), ENGINE_3_ADJUSTED_KEY.read_bytes())
    assert report.passed, [c for c in report.checks if not c.passed]
    assert any("made by kpi_engine 3: its adjusted baseline is recomputed as that engine computed it" in note
               for note in report.notes), report.notes  # fmt: skip
    result = CliRunner().invoke(
        app, ["verify", str(ENGINE_3_ADJUSTED_BUNDLE), "--public-key", str(ENGINE_3_ADJUSTED_KEY)]
    )
    assert result.exit_code == 0, result.output
    _assert_written_as_stored(ENGINE_3_ADJUSTED_BUNDLE)


def test_the_present_engine_computes_the_engine_3_bundles_adjusted_baseline_otherwise() -> None:
    """The revision matters: recomputed by the present method, the adjusted baseline's interval is not the bundle's
    (the bandwidth is the full sample now), and it shows the conditions engine 3 never reported."""
    files = bundle_archive.read(ENGINE_3_ADJUSTED_BUNDLE)
    stored = json.loads(files[evidence.COMPARISON])["adjusted_baseline"]
    assert "conditions" not in stored and "bandwidth 0.5 n" in stored["method"]
    present = json.loads(_written(files, method_revisions(None))[evidence.COMPARISON])["adjusted_baseline"]
    assert [c["variable"] for c in present["conditions"]] == ["production_volume", "shift_hours"]
    assert present["relative_interval"] != stored["relative_interval"] and present["method"] != stored["method"]
    # The same model, projected alike: only its interval moved.
    assert evidence.last_bits_apart(present["relative_change"], stored["relative_change"])


def _written(files: dict[str, bytes], revisions: MethodRevisions) -> dict[str, bytes]:
    manifest = evidence.Manifest.model_validate_json(files[evidence.MANIFEST])
    plan = DemonstrationPlan.model_validate_json(files[evidence.plan_file(manifest.plan_version)])
    profiles = ProfileCatalog(
        DeviceProfile.model_validate_json(data) for name, data in files.items() if name.startswith("devices/profiles/")
    )
    registry = DeviceRegistry([DeviceEntry.model_validate(e) for e in json.loads(files[evidence.REGISTRY])], profiles)
    hours = hours_of(evidence.rows_from_csv(files))
    result = evaluate(plan, manifest.plan_hash, hours, telemetry_intervals(plan, registry), revisions=revisions)
    return results(
        manifest.demonstration_id,
        manifest.slug,
        manifest.plan_version,
        manifest.frozen,
        plan,
        result,
        manifest.data_fingerprint,
        hours,
    )


def _assert_written_as_stored(bundle: Path) -> None:
    """The results this code writes from a bundle's rows, with the method revisions its engine computed, are its
    bytes but for a float's last bits."""
    files = bundle_archive.read(bundle)
    engine = json.loads(files[evidence.ENVIRONMENT])["software"]["kpi_engine"]
    written = _written(files, method_revisions(engine))
    assert set(written) == {evidence.KPIS, evidence.COMPARISON}
    for name, text in written.items():
        # Only a float's last bits may differ (this CPU's BLAS kernels round otherwise than the exporter's); with
        # those taken from the bundle, every byte must be the bundle's.
        as_stored = evidence.json_bytes(_last_bits_from(json.loads(files[name]), json.loads(text)))
        assert as_stored == files[name], f"{name} is no longer written as the stored bundle has it"


def _last_bits_from(stored: Any, written: Any) -> Any:
    """``written`` with each float that is ``stored``'s but for its last bits replaced by ``stored``'s."""
    if isinstance(stored, dict) and isinstance(written, dict):
        return {k: _last_bits_from(stored[k], v) if k in stored else v for k, v in written.items()}
    if isinstance(stored, list) and isinstance(written, list) and len(stored) == len(written):
        return [_last_bits_from(s, w) for s, w in zip(stored, written, strict=True)]
    return stored if evidence.last_bits_apart(stored, written) else written


def test_only_the_last_bits_of_a_float_are_forgiven() -> None:
    assert evidence.last_bits_apart(0.01015380601365377, 0.010153806013653774)
    assert evidence.last_bits_apart(-0.0019042252066365163, -0.001904225206636516)
    assert not evidence.last_bits_apart(0.0101538060, 0.0101538061)  # the eighth digit
    assert not evidence.last_bits_apart(1, 1.0000000000000002)  # an int is an int
    assert not evidence.last_bits_apart(True, 1.0)
    assert not evidence.last_bits_apart("0.5", 0.5)


def test_the_audit_trail_is_written_as_the_stored_bundle_has_it() -> None:
    files = bundle_archive.read(BUNDLE)
    entries = [AuditEntryModel.model_validate(e) for e in json.loads(files[evidence.AUDIT_ENTRIES])]
    assert entries, "the stored bundle records its demonstration's creation and freezing"
    assert evidence.json_bytes([e.model_dump(mode="json") for e in entries]) == files[evidence.AUDIT_ENTRIES]


def test_rows_that_cannot_be_read_still_have_their_fingerprint_checked() -> None:
    """A data file altered so that its rows no longer parse, its hash updated in the manifest: the signature fails,
    and the recomputation says both that the rows cannot be read and that they are not the data the results saw."""
    files = bundle_archive.read(BUNDLE)
    header, first, rest = files[evidence.PRODUCTION].split(b"\n", 2)
    device, chunk_ms, remainder = first.split(b",", 2)
    files[evidence.PRODUCTION] = b"\n".join([header, b",".join([device, b"1" + chunk_ms, remainder]), rest])
    manifest = json.loads(files[evidence.MANIFEST])
    manifest["files"][evidence.PRODUCTION] = evidence.entry(files[evidence.PRODUCTION]).model_dump()
    files[evidence.MANIFEST] = evidence.json_bytes(manifest)
    report = verify(files, PUBLIC_KEY.read_bytes())
    failed = {c.name: c.details for c in report.checks if not c.passed}
    assert set(failed) == {"signature", "recomputation"}
    assert any("cannot be read" in d and "chunks.csv" in d for d in failed["recomputation"]), failed
    assert any("fingerprint" in d for d in failed["recomputation"]), failed


def _with_comparison_value(scale: float) -> dict[str, bytes]:
    """The stored bundle with the first float standard error in its comparison multiplied by ``scale``."""
    files = dict(bundle_archive.read(BUNDLE))
    text = files[evidence.COMPARISON].decode()
    start = text.index('"std_error": ') + len('"std_error": ')
    end = text.index(",", start)
    value = float(text[start:end])
    files[evidence.COMPARISON] = (text[:start] + repr(value * scale) + text[end:]).encode()
    return files


def test_the_recomputation_forgives_a_results_floats_last_bits_and_says_so() -> None:
    report = verify(_with_comparison_value(1 + 4e-16), PUBLIC_KEY.read_bytes())
    recomputation = next(c for c in report.checks if c.name == "recomputation")
    assert recomputation.passed, recomputation.details
    assert any("in their last bits only" in note for note in report.notes), report.notes
    assert not next(c for c in report.checks if c.name == "files").passed  # the altered file is still named


def test_the_recomputation_refuses_a_results_float_changed_beyond_its_last_bits() -> None:
    report = verify(_with_comparison_value(1 + 1e-7), PUBLIC_KEY.read_bytes())
    recomputation = next(c for c in report.checks if c.name == "recomputation")
    assert not recomputation.passed
    assert "std_error" in recomputation.details[0]

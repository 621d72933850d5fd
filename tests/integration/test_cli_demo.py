"""`pilot demo` and `pilot simulate` as a user runs them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from pilot.cli import app
from pilot.output import console
from tests.support import first_answer, served_demo, short_scenario

runner = CliRunner()


def test_demo_lands_every_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 80)  # an 80-column terminal: the landed table still shows every name whole
    report = tmp_path / "landed.json"
    result = runner.invoke(
        app,
        [
            "demo",
            str(short_scenario(tmp_path)),
            "--state-dir",
            str(tmp_path / "state"),
            "--json",
            str(report),
            "--no-serve",
        ],
    )
    assert result.exit_code == 0, result.output
    landed = json.loads(report.read_text(encoding="utf-8"))
    assert landed["complete"]
    assert len({row["profile"] for row in landed["rows"]}) == 7
    assert all(row["published"] == row["landed"] > 0 for row in landed["rows"])
    assert sum(row["landed"] for row in landed["rows"]) == landed["published_records"]
    devices = {row["device"] for row in landed["rows"]}
    # The landed table's rows (the before/after table's station rows name devices too, inside its borders).
    table_lines = [line for line in result.stdout.splitlines() if line.split()[:1] and line.split()[0] in devices]
    for row in landed["rows"]:
        assert any(line.split()[:3] == [row["device"], row["profile"], row["channel"]] for line in table_lines), row
    assert all(len(line) <= 80 and "…" not in line for line in table_lines), table_lines
    truth = json.loads((tmp_path / "state" / "truth.json").read_text(encoding="utf-8"))
    assert [p["period"] for p in truth["periods"]] == ["baseline", "pilot"]


def test_demo_ends_with_the_comparison_and_leaves_the_api_serving(tmp_path: Path) -> None:
    with served_demo(short_scenario(tmp_path), tmp_path / "state", wait_s=240) as demo:
        address, text = demo.address, demo.printed
        assert "Before and after" in text and "verdict" in text and "설비종합효율" in text
        # Every generated plan is pre-registered and standardises the product mix (issue 21).
        assert "Design before data" in text and "detectable change" in text, text
        assert "At the baseline's product mix" in text or "Product mix (제품 구성): unchanged" in text, text
        assert demo.link.startswith(f"{address}/sign-in/link?token="), demo.link_line
        assert "pt_" not in demo.link_line  # never an API key in a URL
        token = demo.key_file.read_text(encoding="ascii").strip()
        assert demo.key_file.stat().st_mode & 0o077 == 0  # only its owner reads the key
        assert demo.curl.startswith(f'curl -H "Authorization: Bearer $(cat {demo.key_file})" {address}'), demo.curl
        comparison_url = demo.curl.rsplit(" ", 1)[1]
        assert comparison_url.endswith("/comparison")
        anonymous = first_answer(comparison_url, timeout=30)
        assert anonymous.status_code == 401, anonymous.text
        response = httpx.get(comparison_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 200, response.text
        document = response.json()
        assert document["source"]["frozen"] and {k["kpi"] for k in document["kpis"]} >= {"oee", "mtbf", "mttr"}
        # The printed link signs in to the console once: a session cookie, then the demonstrations.
        signed = httpx.get(demo.link, timeout=30)
        landing = "/demonstrations/pangyo-cobot-assembly-cell"
        assert signed.status_code == 303 and signed.headers["location"] == landing, signed.text
        assert "pilot_session=" in signed.headers["set-cookie"] and "httponly" in signed.headers["set-cookie"].lower()
        session = {"pilot_session": signed.cookies["pilot_session"]}
        assert httpx.get(f"{address}{landing}", cookies=session, timeout=60).status_code == 200
        assert httpx.get(demo.link, timeout=30).status_code == 401  # spent
    assert demo.process.returncode == 0


def test_the_demo_keeps_its_signing_key_and_prints_the_verify_command(tmp_path: Path) -> None:
    """A public key saved from one run verifies the next run's bundle, with the exact command the demo prints."""
    scenario, state, saved = str(short_scenario(tmp_path)), tmp_path / "state", tmp_path / "saved.pub"
    commands = []
    for _ in range(2):
        result = runner.invoke(app, ["demo", scenario, "--state-dir", str(state), "--no-serve"])
        assert result.exit_code == 0, result.output
        printed = re.search(r"^\s*(\.venv/bin/pilot verify \S+ --public-key \S+)$", result.stdout, re.MULTILINE)
        assert printed, result.stdout
        commands.append(printed.group(1))
        if not saved.exists():
            saved.write_bytes((state / "signing-key.pub").read_bytes())
    bundle = state / "pangyo-cobot-assembly-cell-v1-evidence.zip"
    assert commands == [f".venv/bin/pilot verify {bundle} --public-key {state / 'signing-key.pub'}"] * 2
    assert (state / "signing-key.pub").read_bytes() == saved.read_bytes()
    verified = runner.invoke(app, ["verify", str(bundle), "--public-key", str(saved)])
    assert verified.exit_code == 0, verified.output
    assert Path(".venv/bin/pilot").is_file(), "the tests run from the project's folder, as scripts/test.sh does"
    command = shlex.split(commands[1])
    assert subprocess.run(command, capture_output=True, text=True, timeout=300, check=False).returncode == 0


def test_simulate_dry_run_and_outputs(tmp_path: Path) -> None:
    devices = tmp_path / "devices.yaml"
    result = runner.invoke(
        app,
        ["simulate", str(short_scenario(tmp_path)), "--dry-run", "--devices-out", str(devices), "--period", "pilot"],
    )
    assert result.exit_code == 0, result.output
    assert "messages" in result.output
    check = runner.invoke(app, ["profiles", "validate", "--devices", str(devices)])
    assert check.exit_code == 0, check.output


def test_unknown_period_and_scenario_fail_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", str(short_scenario(tmp_path)), "--dry-run", "--period", "later"])
    assert result.exit_code == 1
    assert "no period 'later'" in result.output
    result = runner.invoke(app, ["simulate", "no_such_scenario", "--dry-run"])
    assert result.exit_code == 1
    assert "bundled scenarios: " in result.output

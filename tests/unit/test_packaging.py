"""The package builds without setuptools' warnings, and scripts/setup.sh installs it only when something changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = (".venv", ".git", "build", "dist", "*.egg-info", ".pilot", "__pycache__", "*_cache", "spool", "pilot.db")


def test_the_wheel_builds_without_warnings_and_holds_every_data_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIPPED))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "wheel"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert "is absent from the `packages` configuration" not in output, output
    assert "BuildBackendWarning" not in output, output
    (wheel,) = (tmp_path / "wheel").glob("pilot_telemetry-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data_file in (
        "reports/templates/report.html",
        "reports/templates/report.css",
        "device_profiles/cobot_arm.yaml",
        "simulators/scenarios/pangyo_cobot_cell.yaml",
        "adapters/sql/alembic.ini",
        "adapters/sql/migrations/script.py.mako",
    ):
        assert data_file in names, data_file


FAKE_PYTHON = """#!/bin/sh
# Stands in for .venv/bin/python: notes each call; "imports the package" once an install has run.
here=$(dirname "$0")
echo "$*" >>"$here/calls"
case "$1" in
    -m) case "$*" in *" -e "*) touch "$here/installed" ;; esac; exit 0 ;;
    -c) [ -f "$here/installed" ] ;;
esac
"""


def test_setup_installs_the_package_only_when_something_changed(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", project / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON, encoding="utf-8")
    (bin_dir / "python").chmod(0o755)
    calls = bin_dir / "calls"

    def setup() -> tuple[list[str], str]:
        calls.write_text("", encoding="utf-8")
        done = subprocess.run(
            ["bash", str(project / "scripts" / "setup.sh")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PYTHON": sys.executable},
        )
        assert done.returncode == 0, done.stderr
        installs = [line for line in calls.read_text(encoding="utf-8").splitlines() if line.startswith("-m pip")]
        return installs, done.stdout + done.stderr

    # The package with its dev tools, then the Sparkplug tests' edge node without its paho-mqtt<2 pin (setup.sh).
    everything = [
        "-m pip install -q --upgrade pip",
        "-m pip install -q -e .[dev]",
        "-m pip install -q --no-deps pysparkplug==0.6.1",
    ]
    installs, _ = setup()  # a fresh machine
    assert installs == everything
    installs, output = setup()  # nothing changed: nothing installed, nothing printed
    assert installs == [] and output == ""
    with (project / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write("\n# a dependency changed\n")
    installs, output = setup()
    assert installs == everything and "installing" in output
    assert setup()[0] == []
    (bin_dir / "installed").unlink()  # the environment lost the package
    assert setup()[0] == everything
    assert setup()[0] == []

#!/usr/bin/env bash
# Set up (with Chromium and chromedriver for the report's browser tests), then
# run the linters and every test against real Mosquitto and InfluxDB processes
# that the fixtures start. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PILOT_BROWSER=1 scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy .
exec .venv/bin/pytest "$@"

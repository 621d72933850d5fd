#!/usr/bin/env bash
# Set up, then run the whole pipeline on private services:
# simulated line → MQTT → collector → InfluxDB, and what landed per device.
# Arguments go to `pilot demo` (e.g. a scenario file, --keep-running).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pilot demo "$@"

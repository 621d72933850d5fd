#!/usr/bin/env bash
# Set up, then run the whole pipeline on private services:
# simulated line → MQTT → collector → InfluxDB → KPIs, the before/after table,
# then the API serving on the demo's data until Ctrl-C.
# Arguments go to `pilot demo` (e.g. a scenario file, --no-serve).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pilot demo "$@"

#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine, safe to run again:
# Mosquitto and InfluxDB binaries (the demo and the tests start private
# instances of them on free ports), the Korean font and the pango library the
# reports are drawn with, a virtual environment, and this package (again only
# when pyproject.toml has changed).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || need+=(influxdb)
[ -f /usr/share/fonts/truetype/nanum/NanumGothic.ttf ] || need+=(fonts-nanum)
# WeasyPrint draws the PDF report with pango and subsets its fonts with harfbuzz.
libraries=$(PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null || true)
grep 'libpangoft2-1.0.so.0' <<<"$libraries" >/dev/null || need+=(libpango-1.0-0 libpangoft2-1.0-0)
grep 'libharfbuzz-subset.so.0' <<<"$libraries" >/dev/null || need+=(libharfbuzz-subset0)
# Only the tests need a browser: they look at the report in headless Chromium (scripts/test.sh sets PILOT_BROWSER).
if [ "${PILOT_BROWSER:-}" = 1 ]; then
    command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: Python 3.11 or newer is needed ($("$python" --version 2>&1) found); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv" >&2
    "$python" -m venv .venv
fi
# Install (editable, with the dev tools) only when pyproject.toml changed since the last install here, or
# the environment cannot import this folder's package: every demo and test run calls this script.
stamp=.venv/pilot-install.sha256
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $PWD"
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] &&
    .venv/bin/python -c 'import os, sys, pilot.cli
sys.exit(not os.path.realpath(pilot.cli.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep))' "$PWD" 2>/dev/null; then
    exit 0
fi
rm -f "$stamp"
echo "installing pilot-telemetry and its dependencies into .venv" >&2
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
# The Sparkplug tests' edge node is a third-party library, pysparkplug. Its metadata pins paho-mqtt<2, which
# would break everything else here; it runs on paho-mqtt 2's VERSION1 callbacks, given back the one method paho 2
# dropped (tests/integration/test_sparkplug.py), so it is installed without its dependencies (protobuf comes
# with `server`).
.venv/bin/python -m pip install -q --no-deps 'pysparkplug==0.6.1'
echo "$wanted" >"$stamp"

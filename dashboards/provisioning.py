"""Grafana provisioning: the InfluxDB datasource, the dashboard provider and the dashboards, as files.

The layout (relative to ``deploy/grafana`` by default) is shared with
docker-compose, which mounts ``provisioning/`` at /etc/grafana/provisioning and
``dashboards/`` at /var/lib/grafana/dashboards/pilot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import PurePosixPath

from dashboards.demonstration import DemonstrationView, demonstration_dashboard
from dashboards.device import device_dashboard
from dashboards.grafana import DATASOURCE_UID, JSON
from dashboards.line_overview import line_overview
from pilot_core.profiles import ProfileCatalog

DATASOURCE_FILE = PurePosixPath("provisioning/datasources/pilot-influxdb.yaml")
PROVIDER_FILE = PurePosixPath("provisioning/dashboards/pilot.yaml")
DASHBOARD_DIR = PurePosixPath("dashboards")
CONTAINER_DASHBOARDS = "/var/lib/grafana/dashboards/pilot"
DATASOURCE_NAME = "pilot InfluxDB"
FOLDER_UID = "pilot-telemetry"
FOLDER_TITLE = "pilot-telemetry"

# Grafana expands ${VAR} in provisioning files from its own environment.
DATASOURCE_YAML = f"""\
# Written by `pilot grafana export`; the settings come from Grafana's environment.
# InfluxQL on the v1 API: InfluxDB 1.x natively, 2.x through DBRP mappings, 3.x through its v1 API.
apiVersion: 1
datasources:
  - name: {DATASOURCE_NAME}
    uid: {DATASOURCE_UID}
    type: influxdb
    access: proxy
    url: ${{PILOT_GRAFANA_INFLUX_URL}}
    isDefault: false
    editable: false
    jsonData:
      version: InfluxQL
      dbName: ${{PILOT_GRAFANA_INFLUX_DATABASE}}
      httpMode: GET
      # InfluxDB 2.x and 3.x: an API token with read access; 1.8+ with authentication: user:password.
      httpHeaderName1: Authorization
    secureJsonData:
      httpHeaderValue1: Token ${{PILOT_GRAFANA_INFLUX_TOKEN}}
"""

PROVIDER_YAML = f"""\
# Written by `pilot grafana export`: the generated dashboards, read from the folder docker-compose mounts.
apiVersion: 1
providers:
  - name: pilot-telemetry
    orgId: 1
    folder: {FOLDER_TITLE}
    folderUid: {FOLDER_UID}
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: {CONTAINER_DASHBOARDS}
      foldersFromFilesStructure: false
"""


def datasource_model(url: str, database: str, token: str | None) -> JSON:
    """The provisioned datasource, with its settings filled in, for Grafana's HTTP API."""
    model: JSON = {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": "influxdb",
        "access": "proxy",
        "url": url,
        "isDefault": False,
        "jsonData": {"version": "InfluxQL", "dbName": database, "httpMode": "GET"},
    }
    if token:
        model["jsonData"]["httpHeaderName1"] = "Authorization"
        model["secureJsonData"] = {"httpHeaderValue1": f"Token {token}"}
    return model


def all_dashboards(catalog: ProfileCatalog, demonstrations: Iterable[DemonstrationView] = ()) -> list[JSON]:
    """The line overview, a dashboard per profile, and one per demonstration."""
    return [
        line_overview(catalog),
        *(device_dashboard(profile) for profile in catalog),
        *(demonstration_dashboard(view) for view in demonstrations),
    ]


def dashboard_text(model: JSON) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def provisioning_files(dashboards: Iterable[JSON]) -> dict[PurePosixPath, str]:
    """Every file of the layout, by path relative to its root."""
    files = {DATASOURCE_FILE: DATASOURCE_YAML, PROVIDER_FILE: PROVIDER_YAML}
    for model in dashboards:
        files[DASHBOARD_DIR / f"{model['uid']}.json"] = dashboard_text(model)
    return files

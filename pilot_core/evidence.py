"""Evidence bundles: what one holds, and how its parts are written and read. No I/O here.

A bundle lets an evaluator recompute a demonstration's result without trusting
our servers: the frozen plan and every amendment, the rows every device-hour
was built from, the results, the audit trail, and a manifest of SHA-256 hashes
that the deployment signs. Rows are CSV with exact float text (Python's
shortest round-trip form), so that rebuilding the hours from them gives the
same bits as the engine saw.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pilot_core.audit import AuditAction, AuditEntry
from pilot_core.contract import TimeClass
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.device_rows import DeviceRows, ProductionRow, StateRow, StatusRow, TelemetryRow

FORMAT = "pilot-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signing-key.pub"
PLAN_VERSIONS = "plan/versions.json"
AUDIT_ENTRIES = "audit/entries.json"
AUDIT_CHANGES = "audit/changes.json"
REGISTRY = "devices/registry.json"
KPIS = "results/kpis.json"
COMPARISON = "results/comparison.json"
ENVIRONMENT = "environment.json"
CHUNKS, STATES, STATUSES, PRODUCTION, TELEMETRY = (
    "data/chunks.csv",
    "data/states.csv",
    "data/statuses.csv",
    "data/production.csv",
    "data/telemetry.csv",
)
DATA_FILES = (CHUNKS, STATES, STATUSES, PRODUCTION, TELEMETRY)


def plan_file(version: int) -> str:
    return f"plan/v{version}.json"


def profile_file(profile_id: str) -> str:
    return f"devices/profiles/{profile_id}.json"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str
    bytes: int


class Manifest(BaseModel):
    """What the signature covers: every other file of the bundle, by its SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    demonstration_id: int
    slug: str
    organisation: str | None
    plan_version: int = Field(description="The version the results were computed under")
    plan_hash: str
    frozen: bool
    created_at: dt.datetime
    created_by: str
    software_version: str
    data_fingerprint: str = Field(description="The results' data fingerprint: SHA-256 over the data files")
    api_data_fingerprint: str = Field(description="The fingerprint the API gave the same result, for reference")
    signing_key: str = Field(description="Fingerprint of the public key the manifest is signed with")
    files: dict[str, FileEntry]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(data: bytes) -> FileEntry:
    return FileEntry(sha256=sha256(data), bytes=len(data))


def json_bytes(document: Any) -> bytes:
    """Stable JSON: sorted keys, two-space indent, UTF-8, a final newline."""
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


# A recomputed number may differ from the exporter's in its last bits: the linear algebra (BLAS) picks its kernels
# by the CPU, and the order of a sum follows them. Nine significant digits is far above that noise (about 1e-16)
# and far below anything a KPI means; changed data is caught by the fingerprint, not by this. The absolute floor
# is for a difference of nearly equal numbers, which is noise around zero.
RECOMPUTATION_RELATIVE_TOLERANCE = 1e-9
RECOMPUTATION_ABSOLUTE_TOLERANCE = 1e-12


def last_bits_apart(before: Any, after: Any) -> bool:
    """Whether two values are floats that agree but for their last bits (neither an int, a bool nor a string)."""
    return (
        type(before) is float
        and type(after) is float
        and math.isclose(
            before, after, rel_tol=RECOMPUTATION_RELATIVE_TOLERANCE, abs_tol=RECOMPUTATION_ABSOLUTE_TOLERANCE
        )
    )


def data_fingerprint(files: Mapping[str, bytes]) -> str:
    """What the results saw, named by the data files alone, so that a verifier recomputes it from them."""
    digest = hashlib.sha256()
    for name in DATA_FILES:
        digest.update(f"{name}\0{sha256(files[name])}\n".encode())
    return "evidence:" + digest.hexdigest()


# --- rows as CSV

_COLUMNS = {
    CHUNKS: ("device", "machine", "start_ms", "end_ms"),
    STATES: ("device", "chunk_ms", "before", "ts_ms", "state", "time_class", "reason", "seq"),
    STATUSES: ("device", "chunk_ms", "ts_ms", "online", "seq"),
    PRODUCTION: (
        "device",
        "chunk_ms",
        "ts_ms",
        "product",
        "produced",
        "good",
        "scrap",
        "rework",
        "cycle_time_s",
        "seq",
    ),
    TELEMETRY: ("device", "chunk_ms", "before", "ts_ms", "energy_kwh", "seq", "ambient_c"),
}
# Columns an earlier bundle may have instead: its files are read as they were written (an absent column, none).
_EARLIER_COLUMNS = {TELEMETRY: ("device", "chunk_ms", "before", "ts_ms", "energy_kwh", "seq")}


class EvidenceError(ValueError):
    """A bundle file that cannot be read as the format says."""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, TimeClass):
        return value.value
    return str(value)


def rows_to_csv(all_rows: Iterable[DeviceRows]) -> dict[str, bytes]:
    """The data files of a bundle, from every device's rows, chunk by chunk."""
    buffers = {name: io.StringIO() for name in DATA_FILES}
    writers = {name: csv.writer(buffers[name], lineterminator="\n") for name in DATA_FILES}
    for name, columns in _COLUMNS.items():
        writers[name].writerow(columns)
    for rows in all_rows:
        chunk = (rows.device, rows.start_ms)
        writers[CHUNKS].writerow(map(_cell, (rows.device, rows.machine, rows.start_ms, rows.end_ms)))
        states = [(1, rows.state_before)] if rows.state_before else []
        for before, state in [*states, *((0, s) for s in rows.states)]:
            writers[STATES].writerow(map(_cell, (*chunk, before, *state)))
        for status in rows.statuses:
            writers[STATUSES].writerow(map(_cell, (*chunk, *status)))
        for record in rows.production:
            writers[PRODUCTION].writerow(map(_cell, (*chunk, *record)))
        points = [(1, rows.energy_before)] if rows.energy_before else []
        for before, point in [*points, *((0, p) for p in rows.telemetry)]:
            writers[TELEMETRY].writerow(map(_cell, (*chunk, before, *point)))
    return {name: buffer.getvalue().encode("utf-8") for name, buffer in buffers.items()}


def rows_from_csv(files: Mapping[str, bytes]) -> list[DeviceRows]:
    """The rows the data files hold, chunk by chunk, in the order they were written."""
    chunks: dict[tuple[str, int], DeviceRows] = {}
    for record in _records(files, CHUNKS):
        key = (record["device"], _int(record["start_ms"]))
        chunks[key] = DeviceRows(record["device"], _bool(record["machine"]) is True, key[1], _int(record["end_ms"]))

    def chunk_of(record: dict[str, str], name: str) -> DeviceRows:
        found = chunks.get((record["device"], _int(record["chunk_ms"])))
        if found is None:
            raise EvidenceError(
                f"{name}: a row of {record['device']!r} names a chunk {record['chunk_ms']} not in {CHUNKS}"
            )
        return found

    for record in _records(files, STATES):
        state = StateRow(
            _int(record["ts_ms"]),
            record["state"],
            TimeClass(record["time_class"]) if record["time_class"] else None,
            record["reason"] or None,
            _optional_int(record["seq"]),
        )
        target = chunk_of(record, STATES)
        if record["before"] == "1":
            target.state_before = state
        else:
            target.states.append(state)
    for record in _records(files, STATUSES):
        chunk_of(record, STATUSES).statuses.append(
            StatusRow(_int(record["ts_ms"]), _bool(record["online"]), _optional_int(record["seq"]))
        )
    for record in _records(files, PRODUCTION):
        chunk_of(record, PRODUCTION).production.append(
            ProductionRow(
                _int(record["ts_ms"]),
                record["product"],
                _int(record["produced"]),
                _int(record["good"]),
                _int(record["scrap"]),
                _int(record["rework"]),
                _optional_float(record["cycle_time_s"]),
                _optional_int(record["seq"]),
            )
        )
    for record in _records(files, TELEMETRY):
        point = TelemetryRow(
            _int(record["ts_ms"]),
            _optional_float(record["energy_kwh"]),
            _optional_int(record["seq"]),
            _optional_float(record.get("ambient_c", "")),
        )
        target = chunk_of(record, TELEMETRY)
        if record["before"] == "1":
            target.energy_before = point
        else:
            target.telemetry.append(point)
    return list(chunks.values())


def _records(files: Mapping[str, bytes], name: str) -> Iterable[dict[str, str]]:
    try:
        text = files[name].decode("utf-8")
    except KeyError:
        raise EvidenceError(f"the bundle has no {name}") from None
    except UnicodeDecodeError as exc:
        raise EvidenceError(f"{name} is not UTF-8 text: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) not in (_COLUMNS[name], _EARLIER_COLUMNS.get(name)):
        raise EvidenceError(f"{name} has the columns {reader.fieldnames}; the format says {list(_COLUMNS[name])}")
    for line, record in enumerate(reader, start=2):
        if None in record or any(v is None for v in record.values()):
            raise EvidenceError(f"{name}:{line}: the row does not have {len(_COLUMNS[name])} columns")
        yield record


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EvidenceError(f"{text!r} is not an integer") from None


def _optional_int(text: str) -> int | None:
    return None if text == "" else _int(text)


def _optional_float(text: str) -> float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise EvidenceError(f"{text!r} is not a number") from None


def _bool(text: str) -> bool | None:
    return {"true": True, "false": False, "": None}.get(text)


# --- the trail of changes, for evaluators


def change_trail(
    versions: Sequence[tuple[int, str, str | None, DemonstrationPlan]], entries: Sequence[AuditEntry]
) -> dict[str, Any]:
    """Who made each plan version, who froze it and why it was amended; and for every exclusion and data correction
    of each version, the version that brought it in, with who, when and why.

    ``versions``: (number, plan hash, amendment reason, plan) from first to last. ``entries``: the
    demonstration's audit trail, any order.
    """
    authored: dict[str, AuditEntry] = {}
    frozen: dict[str, AuditEntry] = {}
    for audit in sorted(entries, key=lambda e: e.id):
        made = str(audit.details.get("plan_hash"))
        if audit.action in (AuditAction.DEMONSTRATION_CREATED, AuditAction.DRAFT_REPLACED, AuditAction.PLAN_AMENDED):
            authored[made] = audit  # the last entry that made this content
        elif audit.action is AuditAction.PLAN_FROZEN:
            frozen.setdefault(made, audit)

    def who(audit: AuditEntry | None) -> dict[str, Any] | None:
        if audit is None:
            return None  # made before the audit trail existed
        actor = audit.actor
        return {
            "at": audit.at.isoformat(),
            "name": actor.name,
            "role": actor.role.value if actor.role else None,
            "organisation": actor.organisation,
            "key_id": actor.key_id,
        }

    trail_versions = []
    introduced: dict[str, int] = {}
    items: list[dict[str, Any]] = []
    for number, plan_hash, reason, plan in versions:
        trail_versions.append(
            {
                "version": number,
                "plan_hash": plan_hash,
                "reason": reason,
                "made": who(authored.get(plan_hash)),
                "frozen": who(frozen.get(plan_hash) or (authored.get(plan_hash) if number > 1 else None)),
            }
        )
        for kind, listed in (("exclusion", plan.exclusions), ("correction", plan.corrections)):
            for item in listed:
                document = item.model_dump(mode="json")
                key = json.dumps([kind, document], sort_keys=True)
                if key in introduced:
                    continue
                introduced[key] = number
                items.append(
                    {
                        "kind": kind,
                        "item": document,
                        "why": document["reason"],
                        "version": number,
                        "amendment_reason": reason,
                        "made": who(authored.get(plan_hash)),
                    }
                )
    return {"versions": trail_versions, "exclusions_and_corrections": items}

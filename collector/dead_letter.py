"""Refused messages, republished with their reason for an operator to inspect or replay."""

from __future__ import annotations

import base64
import hashlib
import json
import time

from pilot_core.validation import Rejection

# Enough of an oversized payload to recognise it; the whole would exceed the broker's limit too.
OVERSIZED_EXCERPT_BYTES = 4096


def dead_letter_topic(root: str, rejection: Rejection) -> str:
    t = rejection.topic
    if t is None:
        return f"{root}/_unrouted/{rejection.reason.value}"
    return f"{root}/{t.site}/{t.line}/{t.device}/{t.channel.value}"


def dead_letter_payload(topic: str, payload: bytes, rejection: Rejection, collector_id: str) -> bytes:
    body: dict[str, object] = {
        "reason": rejection.reason.value,
        "detail": rejection.detail,
        "topic": topic,
        "refused_at_ms": int(time.time() * 1000),
        "collector": collector_id,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    kept = payload[:OVERSIZED_EXCERPT_BYTES] if rejection.reason.value == "too_large" else payload
    body["payload_truncated"] = len(kept) < len(payload)
    try:
        body["payload"] = kept.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(kept).decode("ascii")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")

"""Hypothesis strategies for the text the contract lets through and the points it becomes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import strategies as st

from pilot_core.ids import InvalidIdError, check_id
from pilot_core.line_protocol import INT64_MAX, INT64_MIN, FieldValue

# What line protocol and InfluxQL escape, and what MQTT reserves, drawn often; then any Unicode at all.
SPECIAL = [*",= \\\"'#+/${}[]:;", "판", "교", "é", "\u00a0", "\u200b", "\ufeff", "🏭", "\U0010fffd"]
_CHARACTERS = st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8"))
_NOT_IN_IDS = re.compile(r"[/+#\x00-\x1f\x7f]")


def usable_id(text: str) -> bool:
    try:
        check_id(text)
    except InvalidIdError:
        return False
    return True


def _as_id(text: str) -> str:
    """Drop what ids may not hold, so that few drawn texts are thrown away."""
    return _NOT_IN_IDS.sub("", text).rstrip("\\").lstrip("$")


# Site, line, device and product ids, and so every tag value: what pilot_core.ids lets through.
ids = st.text(_CHARACTERS, min_size=1, max_size=24).map(_as_id).filter(usable_id)
# Profile and metric names (pilot_core.profiles), which make measurements and field keys.
names = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)
measurements = st.one_of(
    names.map(lambda name: f"telemetry_{name}"), st.sampled_from(["state", "production", "status"]), ids
)
# Free text of records (a reason, an agent version): no control characters.
free_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]) | st.sampled_from(SPECIAL))
field_values: st.SearchStrategy[FieldValue] = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    free_text,
)
timestamps = st.integers(10**12, 4_102_444_800_000)  # epoch ms the contract accepts: 2001-09-09 to 2100


@dataclass(frozen=True)
class PointSpec:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    timestamp: int


@st.composite
def points(draw: st.DrawFn, keys: st.SearchStrategy[str] = ids) -> PointSpec:
    """A point whose tag keys and field keys never clash (InfluxDB 3 refuses that, the contract avoids it).

    Never a key named ``time``: InfluxDB reserves it, and so do profiles.
    """
    keys = keys.filter(lambda key: key != "time")
    tag_keys = draw(st.lists(keys, max_size=4, unique=True))
    field_keys = draw(st.lists(keys.filter(lambda k: k not in tag_keys), min_size=1, max_size=5, unique=True))
    return PointSpec(
        draw(measurements),
        {key: draw(ids) for key in tag_keys},
        {key: draw(field_values) for key in field_keys},
        draw(timestamps),
    )

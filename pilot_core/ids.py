"""Rules for the ids that travel in topics and become InfluxDB tag values.

Site, line, device and product ids may be any Unicode text (Korean included),
with spaces, commas, quotes and backslashes. What is refused is what MQTT or
InfluxDB line protocol cannot carry faithfully.
"""

from __future__ import annotations

MAX_ID_LENGTH = 128

# MQTT reserves these in topic levels; a publish topic may not contain wildcards.
_TOPIC_RESERVED = {"/": "a slash", "+": "a '+' wildcard", "#": "a '#' wildcard"}


class InvalidIdError(ValueError):
    """An id that cannot be used as a topic level and a tag value."""


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` unchanged if it is a usable id, else raise InvalidIdError."""
    if not value:
        raise InvalidIdError(f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    for char, name in _TOPIC_RESERVED.items():
        if char in value:
            raise InvalidIdError(f"{what} {value!r} contains {name}, which MQTT reserves in topic levels")
    for char in value:
        if char in "\n\r":
            raise InvalidIdError(
                f"{what} {value!r} contains a newline, which InfluxDB line protocol cannot carry in a tag"
            )
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise InvalidIdError(f"{what} {value!r} contains the control character U+{ord(char):04X}")
    if value.endswith("\\"):
        # Line protocol has no escape for a trailing backslash in a tag value:
        # InfluxDB would read it as escaping the following separator.
        raise InvalidIdError(f"{what} {value!r} ends with a backslash, which line protocol cannot represent")
    if value.startswith("$"):
        raise InvalidIdError(f"{what} {value!r} starts with '$', which MQTT reserves for broker topics")
    return value

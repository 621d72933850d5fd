"""Shift calendars: when a line is planned to work, and its planned downtime.

The simulators build their timelines from a calendar, and the KPI engine
takes planned busy time (PBT) and planned downtime from the same one.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Window = tuple[int, int]  # [start, end) in epoch milliseconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weekday(enum.StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """Monday is 0, as in datetime.date.weekday()."""
        return _WEEKDAY_NUMBERS[self]


_WEEKDAY_NUMBERS = {day: number for number, day in enumerate(Weekday)}


class ClockSpan(_Strict):
    """A span of local clock time within one day, e.g. 12:00–13:00."""

    start: dt.time
    end: dt.time
    name: str = ""

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 12:00 as the sexagesimal number 720.
            raise ValueError("write clock times in quotes, e.g. '12:00'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(
                f"span {self.start}–{self.end} must end after it starts (split shifts that cross midnight)"
            )
        return self


class PlannedStop(ClockSpan):
    """Planned downtime on some weekdays: planned maintenance, cleaning, meetings."""

    weekdays: list[Weekday] = Field(min_length=1)


# Not a place: tzdata's zone for machines whose zone is not set yet.
_NOT_ZONES = frozenset({"Factory"})


@functools.cache
def iana_zones() -> frozenset[str]:
    """The zone names of the IANA database as the tzdata package lists them.

    Not what the host's zoneinfo directory holds: that also has directories (``Asia``), host-dependent files
    (``localtime``, ``right/UTC``), and a name a file system cannot take fails with an OSError.
    """
    listed = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(listed) - _NOT_ZONES


class Calendar(_Strict):
    timezone: str = Field(default="Asia/Seoul", description="An IANA zone name; the shifts are in its local time")
    workdays: list[Weekday] = Field(
        default_factory=lambda: [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI],
        description="Days the shifts are worked; default Monday to Friday (the stored plan always lists them)",
    )
    shifts: list[ClockSpan] = Field(min_length=1)
    breaks: list[ClockSpan] = Field(default_factory=list, description="Planned downtime inside every shift")
    planned_stops: list[PlannedStop] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in iana_zones():
            shown = value if len(value) <= 64 else value[:64] + "…"
            raise ValueError(f"unknown time zone {shown!r}; use an IANA name such as Asia/Seoul")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def shifts_between(self, start_ms: int, end_ms: int) -> Iterator[Shift]:
        """The shifts overlapping [start_ms, end_ms), clipped to it, in time order."""
        zone = self.zone
        workdays = {d.number for d in self.workdays}
        day = dt.datetime.fromtimestamp(start_ms / 1000, zone).date()
        last = dt.datetime.fromtimestamp(end_ms / 1000, zone).date()
        while day <= last:
            if day.weekday() in workdays:
                stops = [
                    *self.breaks,
                    *(s for s in self.planned_stops if day.weekday() in {w.number for w in s.weekdays}),
                ]
                for shift in self.shifts:
                    s0, s1 = _local_ms(day, shift.start, zone), _local_ms(day, shift.end, zone)
                    busy = [(s0, s1)]
                    for stop in stops:
                        busy = [
                            piece
                            for w in busy
                            for piece in subtract(w, (_local_ms(day, stop.start, zone), _local_ms(day, stop.end, zone)))
                        ]
                    if s1 > start_ms and s0 < end_ms:
                        yield Shift(
                            s0,
                            max(s0, start_ms),
                            min(s1, end_ms),
                            [clipped for w in busy if (clipped := clip(w, start_ms, end_ms))],
                        )
            day += dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Shift:
    scheduled_start_ms: int  # the shift's start, even where the range clips it
    start_ms: int
    end_ms: int
    busy: list[Window]  # planned busy windows: the shift minus breaks and planned stops

    @property
    def busy_ms(self) -> int:
        return sum(b - a for a, b in self.busy)


def _local_ms(day: dt.date, clock: dt.time, zone: ZoneInfo) -> int:
    return int(dt.datetime.combine(day, clock, zone).timestamp() * 1000)


def subtract(window: Window, cut: Window) -> list[Window]:
    a, b = window
    c, d = cut
    if d <= a or c >= b:
        return [window]
    return [piece for piece in ((a, c), (d, b)) if piece[1] > piece[0]]


def clip(window: Window, start_ms: int, end_ms: int) -> Window | None:
    a, b = max(window[0], start_ms), min(window[1], end_ms)
    return (a, b) if b > a else None

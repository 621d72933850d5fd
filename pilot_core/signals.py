"""From a machine's raw signals to the contract's states and production counts. Pure: no I/O.

Whatever read the signals (an OPC UA subscription, a Modbus or S7 poll, or later the collector itself),
the same rules turn them into what the KPI engine counts:

- ``CounterTracker``: one cumulative counter's readings become increments, through resets and wraps;
- ``ProductionCounters``: a part counter (or good and scrap counters) becomes produced/good/scrap counts;
- ``classify``, ``EnumStates``: signals become the state they call for (a PLC's state number, or rules
  on levels and bits such as a current clamp's amperes or a stack light's colours);
- ``StateDebouncer``: a called-for state becomes a state change only once it has held for its minimum
  duration, so a flicker is not a state change.

Counters: a reading below the last one is a wrap or a reset, never negative production. Which of the two
is decided by the size of the increase a wrap would mean: at most ``max_step`` (by default half the
register's range) is a wrap, more is a reset to zero followed by ``value`` new counts. The increments are
exact when the counter is read often enough that between two readings it wraps at most once, counts at most
``max_step``, and, after a reset, has not yet climbed back to the last reading (see ``CounterTracker``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

SignalValue = bool | int | float


# --- counters -------------------------------------------------------------


class CounterEvent(enum.StrEnum):
    FIRST = "first"  # no earlier reading to count from: nothing is counted
    STEADY = "steady"
    RISE = "rise"
    WRAP = "wrap"  # passed the register's top and started again at 0
    RESET = "reset"  # set back to 0 (a PLC restart, an operator), then counted ``value`` again


class CounterStep(NamedTuple):
    increment: int
    event: CounterEvent


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """How a counter behaves: its register width (``None``: it never wraps) and its largest plausible step."""

    bits: int | None = 32
    max_step: int | None = None  # None: half the register's range

    def __post_init__(self) -> None:
        if self.bits is not None and not 1 <= self.bits <= 64:
            raise ValueError(f"a counter is 1 to 64 bits wide, not {self.bits}")
        if self.max_step is not None:
            if self.max_step < 1:
                raise ValueError(f"max_step must be at least 1, not {self.max_step}")
            if self.modulus is not None and self.max_step >= self.modulus:
                raise ValueError(f"max_step ({self.max_step}) must be below the register's range ({self.modulus})")

    @property
    def modulus(self) -> int | None:
        """The number of values the register holds: it wraps from ``modulus - 1`` to 0."""
        return None if self.bits is None else 1 << self.bits

    @property
    def wrap_limit(self) -> int:
        """The largest increase across a wrap; a fall that would mean more is a reset."""
        if self.max_step is not None:
            return self.max_step
        return 0 if self.modulus is None else self.modulus // 2


def as_unsigned(value: int, bits: int) -> int:
    """A signed register's value as the unsigned count it holds (a 16-bit -1 is 65,535)."""
    return value % (1 << bits)


class CounterTracker:
    """Increments of one cumulative counter between its readings.

    Given the last reading ``p`` and a new one ``v`` (both in ``[0, modulus)``):

    - ``v >= p``: ``v - p`` (no wrap or reset is assumed);
    - ``v < p`` and ``modulus - p + v <= wrap_limit``: a wrap, ``modulus - p + v``;
    - otherwise a reset: ``v`` (the counts since it was set back to 0).

    So the increments equal what the machine really counted whenever, between two readings, it either
    counted ``k <= max_step`` parts (wrapping at most once), or was reset and then counted ``k`` parts with
    ``k < p`` and ``modulus - p + k > wrap_limit``. A reset followed by counting back up to ``p`` or beyond
    cannot be seen in the readings at all; sampling faster is the only cure.
    """

    def __init__(self, spec: CounterSpec, last: int | None = None) -> None:
        self.spec = spec
        self.last = None if last is None else self._checked(last)

    def observe(self, value: int) -> CounterStep:
        value = self._checked(value)
        last, self.last = self.last, value
        if last is None:
            return CounterStep(0, CounterEvent.FIRST)
        if value == last:
            return CounterStep(0, CounterEvent.STEADY)
        if value > last:
            return CounterStep(value - last, CounterEvent.RISE)
        modulus = self.spec.modulus
        if modulus is not None and modulus - last + value <= self.spec.wrap_limit:
            return CounterStep(modulus - last + value, CounterEvent.WRAP)
        return CounterStep(value, CounterEvent.RESET)

    def _checked(self, value: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"a counter reading is an integer, not {type(value).__name__} {value!r}")
        modulus = self.spec.modulus
        if value < 0 or (modulus is not None and value >= modulus):
            top = "" if modulus is None else f" to {modulus - 1:,}"
            raise ValueError(f"counter reading {value:,} is outside the register's range 0{top}")
        return value


class ProductionCounts(NamedTuple):
    produced: int
    good: int
    scrap: int


class CounterRole(enum.StrEnum):
    PRODUCED = "produced"  # every part made, good or not
    GOOD = "good"
    SCRAP = "scrap"


# Which counters make sense together: the produced counts follow from each set.
COUNTER_SETS = (
    frozenset({CounterRole.PRODUCED}),
    frozenset({CounterRole.GOOD}),
    frozenset({CounterRole.GOOD, CounterRole.SCRAP}),
    frozenset({CounterRole.PRODUCED, CounterRole.SCRAP}),
)


class ProductionCounters:
    """A machine's part counters (a total, or good and scrap, or a total and scrap) read together.

    A total and a scrap counter read at the same moment may disagree for a while (the reject is counted
    before the part reaches the total, or after): scrap not yet covered by the total is carried
    (``scrap_ahead``) until it is, so produced = good + scrap in every record and no count is lost.
    """

    def __init__(
        self,
        specs: Mapping[CounterRole, CounterSpec],
        last: Mapping[CounterRole, int | None] | None = None,
        scrap_ahead: int = 0,
    ) -> None:
        if frozenset(specs) not in COUNTER_SETS:
            raise ValueError(
                f"counters {sorted(specs)} do not say what was produced; use produced, good, good and scrap,"
                " or produced and scrap"
            )
        last = last or {}
        self.trackers = {role: CounterTracker(spec, last.get(role)) for role, spec in specs.items()}
        self.scrap_ahead = scrap_ahead

    @property
    def last(self) -> dict[CounterRole, int | None]:
        return {role: tracker.last for role, tracker in self.trackers.items()}

    def observe(self, readings: Mapping[CounterRole, int]) -> tuple[ProductionCounts, dict[CounterRole, CounterStep]]:
        """The counts since the previous readings, from one reading of every counter."""
        missing = set(self.trackers) - set(readings)
        if missing:
            raise ValueError(f"no reading of the {', '.join(sorted(missing))} counter")
        steps = {role: tracker.observe(readings[role]) for role, tracker in self.trackers.items()}
        step = {role: s.increment for role, s in steps.items()}
        if CounterRole.PRODUCED not in step:
            good, scrap = step[CounterRole.GOOD], step.get(CounterRole.SCRAP, 0)
            return ProductionCounts(good + scrap, good, scrap), steps
        produced = step[CounterRole.PRODUCED]
        waiting = self.scrap_ahead + step.get(CounterRole.SCRAP, 0)
        scrap = min(produced, waiting)
        self.scrap_ahead = waiting - scrap
        return ProductionCounts(produced, produced - scrap, scrap), steps


# --- states ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one signal: strictly above, strictly below, or equal to a value."""

    signal: str
    above: float | None = None
    below: float | None = None
    equals: SignalValue | None = None

    def __post_init__(self) -> None:
        if self.above is None and self.below is None and self.equals is None:
            raise ValueError(f"a condition on {self.signal!r} needs above, below or equals")
        if self.equals is not None and (self.above is not None or self.below is not None):
            raise ValueError(f"a condition on {self.signal!r} is either equals or a range, not both")
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ValueError(f"a condition on {self.signal!r} above {self.above} and below {self.below} never holds")

    def holds(self, value: SignalValue) -> bool:
        if self.equals is not None:
            return value == self.equals and isinstance(value, bool) == isinstance(self.equals, bool)
        if isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
            return False
        return (self.above is None or value > self.above) and (self.below is None or value < self.below)


@dataclass(frozen=True, slots=True)
class StateRule:
    """A state called for while all its conditions hold; it takes over once they have held ``min_duration_ms``."""

    state: str
    conditions: tuple[Condition, ...]
    min_duration_ms: int = 0

    def __post_init__(self) -> None:
        if not self.conditions:
            raise ValueError(f"the rule for {self.state!r} has no condition")
        if self.min_duration_ms < 0:
            raise ValueError(f"the rule for {self.state!r} has a negative minimum duration")

    def holds(self, signals: Mapping[str, SignalValue]) -> bool:
        return all(c.signal in signals and c.holds(signals[c.signal]) for c in self.conditions)


def classify(rules: Sequence[StateRule], signals: Mapping[str, SignalValue]) -> StateRule | None:
    """The first rule whose conditions all hold, or None: no rule holds, so the state stays as it is.

    Hysteresis is the gap between rules: with cutting above 4 A and idle below 0.5 A, a current between
    the two calls for neither, so a machine keeps the state it was in.
    """
    for rule in rules:
        if rule.holds(signals):
            return rule
    return None


class EnumStates:
    """A PLC's state number mapped to states: ``{1: cutting, 2: alarm}``; other numbers to ``otherwise``."""

    def __init__(self, states: Mapping[int, str], otherwise: str | None = None, min_duration_ms: int = 0) -> None:
        self.states = dict(states)
        self.otherwise = otherwise
        self.min_duration_ms = min_duration_ms

    def state_of(self, value: SignalValue) -> str | None:
        """The state ``value`` means; None for a number the map does not know and no ``otherwise``."""
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float):
            if not value.is_integer():
                return self.otherwise
            value = int(value)
        return self.states.get(value, self.otherwise)


class StateChange(NamedTuple):
    ts_ms: int  # when the called-for state started, not when its minimum duration was reached
    state: str


class StateDebouncer:
    """Turns the state the signals call for, sample by sample, into state changes.

    A called-for state becomes the state once it has been called for without a break for its minimum
    duration; the change is dated when it started. A sample calling for no state (``None``: the hysteresis
    band, or a number the map does not know) breaks a candidate but keeps the current state. ``forget`` is
    for when the source is lost: the next state is reported even if it is the one before the outage.
    """

    def __init__(
        self, current: str | None = None, candidate: str | None = None, since_ms: int = 0, last_ms: int | None = None
    ) -> None:
        self.current = current
        self._candidate = candidate
        self._since_ms = since_ms
        self._last_ms = last_ms

    @property
    def memory(self) -> tuple[str | None, str | None, int, int | None]:
        """What a new debouncer needs to carry on from here: ``StateDebouncer(*memory)``."""
        return self.current, self._candidate, self._since_ms, self._last_ms

    def observe(self, ts_ms: int, called_for: str | None, min_duration_ms: int = 0) -> StateChange | None:
        if self._last_ms is not None and ts_ms < self._last_ms:
            raise ValueError(f"sample at {ts_ms} ms is older than the last one at {self._last_ms} ms")
        self._last_ms = ts_ms
        if called_for is None or called_for == self.current:
            self._candidate = None
            return None
        if called_for != self._candidate:
            self._candidate, self._since_ms = called_for, ts_ms
        if ts_ms - self._since_ms < min_duration_ms:
            return None
        self.current, self._candidate = called_for, None
        return StateChange(self._since_ms, called_for)

    def forget(self) -> None:
        self.current = self._candidate = None
